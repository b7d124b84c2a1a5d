"""Exports of an :class:`Expr`: ``nn.Module``, standalone source, sympy, LaTeX.

The tensor interpreter these exports agree with (``interpret``, ``loss_value``, the ``nn.Module``
losses) is :mod:`lossforge.expr.interpret`.
"""
from __future__ import annotations

import inspect
import re

import sympy
from torch import nn

from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops
from lossforge.expr.exact import LOGP, exact_form, is_softmax_log
from lossforge.expr.expr import Expr, format_number
from lossforge.expr.interpret import BoxExprLoss, ExprLoss, RegressionExprLoss, loss_kind


# ---- nn.Module ---------------------------------------------------------------------------------
def to_torch(expr: Expr, kind: str = "auto", ignore_index: int = 255, prior=None) -> nn.Module:
    """The expression as an ``nn.Module`` (see :mod:`lossforge.expr.interpret`'s
    :class:`ExprLoss`, :class:`RegressionExprLoss`, :class:`BoxExprLoss`); ``kind``:
    ``"classification"``, ``"regression"``, ``"box"`` or ``"auto"`` (from the variables,
    :func:`loss_kind`). ``prior``: the class prior ``(C,)`` that the variable ``q`` reads
    (classification only; ``None``: uniform, with a warning when ``q`` is read)."""
    kind = loss_kind(expr) if kind == "auto" else kind
    if prior is not None and kind != "classification":
        raise ValueError(f"prior= is the class prior of a classification loss; this is a {kind} loss")
    if kind == "classification":
        return ExprLoss(expr, ignore_index=ignore_index, prior=prior)
    if kind == "regression":
        return RegressionExprLoss(expr)
    if kind == "box":
        return BoxExprLoss(expr)
    raise ValueError(f"unknown loss kind {kind!r}; use 'classification', 'regression' or 'box'")


# ---- standalone source -------------------------------------------------------------------------
_KERNEL_DEPS = {
    "k_mean_s": ["_spatial_dims", "_fit_mask", "_masked_mean"],
    "k_mean_bs": ["_spatial_dims", "_fit_mask", "_masked_mean"],
    "k_mean_b": ["_spatial_dims", "_fit_mask", "_masked_mean"],
    "reduce_loss": ["_fit_mask"],
    "prepare_classification": ["prior_variable"],
}


def _kernel_source(names: list[str]) -> str:
    seen: list[str] = []
    for name in names:
        for dep in _KERNEL_DEPS.get(name, []) + [name]:
            if dep not in seen:
                seen.append(dep)
    return "\n\n".join(inspect.getsource(getattr(K, n)).rstrip() for n in seen)


def to_source(expr: Expr, name: str = "SearchedLoss", kind: str = "auto", note: str = "") -> str:
    """Text of a standalone Python module (imports only torch) defining ``class <name>(nn.Module)``.

    The module's forward has the same signature and numerics as :func:`to_torch` (``log(p)`` is
    ``log_softmax`` of the logits, the rule of :mod:`lossforge.expr.exact`). A classification
    module takes ``prior=`` (the class prior ``(C,)`` the variable ``q`` reads, kept as the buffer
    ``prior``; ``None``: uniform ``1 / C``) besides ``ignore_index``. ``note``: a paragraph added
    to the module docstring after the formula (e.g. what :mod:`lossforge.expr.strip` dropped).
    """
    if not name.isidentifier():
        raise ValueError(f"class name {name!r} is not a Python identifier")
    kind = loss_kind(expr) if kind == "auto" else kind
    formula = str(expr)
    expr = exact_form(expr)
    lines: list[str] = []
    temp: dict[int, str] = {}
    kernels: list[str] = []
    for n, node in enumerate(expr.nodes()):
        if node.is_var and node.value == LOGP:
            kernels.append("log_softmax_classes")
            lines.append(f'        t{n} = log_softmax_classes(v["z"])')
            temp[id(node)] = f"t{n}"
            continue
        if node.is_var:
            temp[id(node)] = f'v["{node.value}"]'
            continue
        if node.is_const:
            temp[id(node)] = f"torch.tensor({format_number(node.value)}, dtype=ref.dtype, device=ref.device)"
            continue
        spec = _ops.OPS[node.op]
        kernels.append(spec.kernel_name)
        args = [temp[id(a)] for a in node.args]
        if spec.aggregation:
            call = f"{spec.kernel_name}({args[0]}.expand_as(ref) if {args[0]}.dim() < ref.dim() else {args[0]}, mask)"
        else:
            call = f"{spec.kernel_name}({', '.join(args)})"
        lines.append(f"        t{n} = {call}")
        temp[id(node)] = f"t{n}"
    result = temp[id(expr)]
    if kind == "classification":
        kernels.append("prepare_classification")
        signature = "logits, target"
        init = ("    def __init__(self, ignore_index=255, prior=None):\n"
                "        super().__init__()\n"
                "        self.ignore_index = ignore_index\n"
                "        self.register_buffer(\"prior\", None if prior is None else "
                "torch.as_tensor(prior, dtype=torch.float32))\n")
        prep = "        v, mask = prepare_classification(logits, target, self.ignore_index, self.prior)"
    elif kind == "regression":
        kernels.append("prepare_regression")
        signature = "pred, target"
        init = ""
        prep = "        v, mask = prepare_regression(pred, target)"
    elif kind == "box":
        kernels.append("prepare_box")
        signature = "pred_boxes, target_boxes"
        init = ""
        prep = ("        if pred_boxes.dim() == 2 and pred_boxes.shape[0] == 0:\n"
                "            return pred_boxes.sum() * 0\n"
                "        v, mask = prepare_box(pred_boxes, target_boxes)")
    else:
        raise ValueError(f"unknown loss kind {kind!r}; use 'classification', 'regression' or 'box'")
    kernels.append("reduce_loss")
    body = "\n".join([prep, "        ref = next(iter(v.values()))", *lines,
                      f"        return reduce_loss({result}, mask)"])
    note_text = f"\n{note}\n" if note else ""
    return f'''"""{name}: a loss function found with lossforge.

Formula: {formula}
{note_text}
Standalone: imports only torch. Use it like ``torch.nn.CrossEntropyLoss``:
``loss = {name}()({signature})``.
"""
import torch

EPS = {K.EPS!r}


{_kernel_source(kernels)}


class {name}(torch.nn.Module):
    """Loss ``{formula}``."""

    formula = {formula!r}

{init}
    def forward(self, {signature}):
{body}
'''


# ---- sympy -------------------------------------------------------------------------------------
def _symbols(expr: Expr) -> dict[str, sympy.Symbol]:
    return {name: sympy.Symbol(name, real=True) for name in sorted(expr.variables())}


def to_sympy(expr: Expr, *, protected: bool = True) -> sympy.Expr:
    """The identical sympy expression (protected forms spelt out, aggregations as functions
    ``sum_c(.)``, ``mean_c(.)``, ...). ``protected=False`` keeps every op other than ``+ - * neg
    square`` as an opaque function named after the op (what :func:`simplify` works on).
    ``log(p)``, ``slog(p)``, ``log10(p)`` of the softmax ``p`` are exact (the rule of
    :mod:`lossforge.expr.exact`): ``log(p)`` / ``log(p, 10)``, without the guard."""
    syms = _symbols(expr)
    values: dict[int, sympy.Expr] = {}
    exact = {"add", "sub", "mul", "neg", "square"}
    for node in expr.nodes():
        if node.is_var:
            out = syms[node.value]
        elif node.is_const:
            v = node.value
            out = sympy.Integer(int(v)) if v == int(v) else sympy.Float(v)
        else:
            spec = _ops.OPS[node.op]
            args = [values[id(a)] for a in node.args]
            if protected and is_softmax_log(node):  # the argument is c * p with c > 0
                out = sympy.log(args[0], 10) if node.op == "log10" else sympy.log(args[0])
            elif protected or node.op in exact or spec.aggregation:
                out = spec.sympy_fn(*args)
            else:
                out = sympy.Function(node.op)(*args)
        values[id(node)] = out
    return values[id(expr)]


def numpy_aggregations(shape: tuple[int, ...] | None = None) -> dict:
    """NumPy implementations of the aggregation functions for ``sympy.lambdify`` (no mask).

    ``shape``: the shape ``(N, C, *spatial)`` of the variables. Like
    :func:`~lossforge.expr.interpret.interpret`, an
    aggregation of a lower-dimensional argument (a constant, e.g. ``sum_c(2)``, which is ``2 C``)
    first broadcasts it to that shape; without ``shape`` such arguments are not supported.
    """
    import numpy as np

    def full(x):
        if shape is not None and np.ndim(x) < len(shape):
            return np.broadcast_to(x, shape)
        return x

    def spatial(x):
        return tuple(range(2, np.ndim(x)))

    def mean_s(x):
        x = full(x)
        return np.mean(x, axis=spatial(x), keepdims=True) if spatial(x) else x

    return {
        "sum_c": lambda x: np.sum(full(x), axis=1, keepdims=True),
        "mean_c": lambda x: np.mean(full(x), axis=1, keepdims=True),
        "mean_s": mean_s,
        "mean_bs": lambda x: np.mean(full(x), axis=(0,) + spatial(full(x)), keepdims=True),
        "mean_b": lambda x: np.mean(full(x), axis=0, keepdims=True),
    }


# ---- LaTeX -------------------------------------------------------------------------------------
_LATEX_FN = {
    "log": r"\log", "log10": r"\log_{10}", "exp": r"\exp", "tanh": r"\tanh", "sin": r"\sin",
    "cos": r"\cos", "sinh": r"\sinh", "asinh": r"\operatorname{asinh}", "atan": r"\arctan",
    "erf": r"\operatorname{erf}", "erfc": r"\operatorname{erfc}", "sigmoid": r"\sigma",
    "softplus": r"\operatorname{softplus}", "sign": r"\operatorname{sign}", "max": r"\max",
    "min": r"\min", "slog": r"\operatorname{slog}", "ssqrt": r"\operatorname{ssqrt}",
    "softsign": r"\operatorname{softsign}", "dtanh": r"\tanh'", "dsigmoid": r"\sigma'",
    "relu": r"\operatorname{relu}", "negrelu": r"\min_0", "i0": "I_0", "i0e": r"I_0^{e}",
    "i1": "I_1", "i1e": r"I_1^{e}", "aq": r"\operatorname{aq}", "inv1pabs": r"\operatorname{inv1pabs}",
}
_LATEX_AGG = {"sum_c": r"\sum_{c}", "mean_c": r"\operatorname{mean}_{c}",
              "mean_s": r"\operatorname{mean}_{s}", "mean_bs": r"\operatorname{mean}_{b,s}",
              "mean_b": r"\operatorname{mean}_{b}"}
_LATEX_PREC = {"add": 1, "sub": 1, "mul": 2, "neg": 3}


def to_latex(expr: Expr) -> str:
    """LaTeX for a paper: protected ops written as their plain functions (``\\log p``, ``1/x``);
    the exact protected forms are in the op registry's documentation."""
    return _latex(expr)


def _latex_prec(e: Expr) -> int:
    if e.is_const and e.value < 0:
        return 3
    return _LATEX_PREC.get(e.op, 4)


def _wrap(e: Expr, cond: bool) -> str:
    s = _latex(e)
    return rf"\left({s}\right)" if cond else s


def _latex(e: Expr) -> str:
    if e.is_var:
        return e.value
    if e.is_const:
        text = format_number(e.value)
        m = re.fullmatch(r"(-?[\d.]+)e([+-]?\d+)", text)
        return rf"{m.group(1)} \cdot 10^{{{int(m.group(2))}}}" if m else text
    a = e.args
    if e.op in ("add", "sub"):
        sign = "+" if e.op == "add" else "-"
        return f"{_latex(a[0])} {sign} {_wrap(a[1], _latex_prec(a[1]) <= 1 or (a[1].is_const and a[1].value < 0))}"
    if e.op == "mul":
        return rf"{_wrap(a[0], _latex_prec(a[0]) < 2)} \cdot {_wrap(a[1], _latex_prec(a[1]) < 2 or (a[1].is_const and a[1].value < 0))}"
    if e.op == "div":
        return rf"\frac{{{_latex(a[0])}}}{{{_latex(a[1])}}}"
    if e.op == "inv":
        return rf"\frac{{1}}{{{_latex(a[0])}}}"
    if e.op == "neg":
        return "-" + _wrap(a[0], _latex_prec(a[0]) < 4)
    if e.op == "abs":
        return rf"\left|{_latex(a[0])}\right|"
    if e.op == "square":
        return rf"{_wrap(a[0], _latex_prec(a[0]) < 4 or a[0].is_const)}^{{2}}"
    if e.op == "sqrt":
        return rf"\sqrt{{{_latex(a[0])}}}"
    if e.op in _LATEX_AGG:
        return rf"{_LATEX_AGG[e.op]}\left[{_latex(a[0])}\right]"
    fn = _LATEX_FN.get(e.op, rf"\operatorname{{{e.op}}}")
    return rf"{fn}\left({', '.join(_latex(x) for x in a)}\right)"
