"""Exports of an :class:`Expr`: numeric evaluation, ``nn.Module``, standalone source, sympy, LaTeX."""
from __future__ import annotations

import inspect
import re

import sympy
import torch
from torch import nn

from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr, format_number

CLASSIFICATION_VARS = frozenset({"p", "y", "z"})
REGRESSION_VARS = frozenset({"f", "y"})
BOX_VARS = frozenset({"i", "u", "e"})
KINDS = ("classification", "regression", "box")


# ---- numeric evaluation ------------------------------------------------------------------------
def evaluate(expr: Expr, env: dict[str, torch.Tensor], mask: torch.Tensor | None = None,
             cache: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Element-wise value of ``expr`` on the variables in ``env`` (before the final mean).

    All tensors in ``env`` share one shape ``(N, C, *spatial)``; the result broadcasts against it.
    ``mask (N, 1, *spatial)`` marks the positions that count in aggregations (``None``: all).
    ``cache`` (``id(node) -> value``, for the same ``env`` and ``mask``) lets several calls share
    the values of common sub-expressions: nodes found there are not recomputed, new ones are added.
    """
    ref = next(iter(env.values()))
    values: dict[int, torch.Tensor] = {} if cache is None else cache
    for node in expr.nodes():
        if id(node) in values:
            continue
        if node.is_var:
            try:
                out = env[node.value]
            except KeyError:
                raise ValueError(f"the loss reads variable {node.value!r}, which this task does not "
                                 f"provide (it provides {', '.join(sorted(env))})") from None
        elif node.is_const:
            out = torch.tensor(node.value, dtype=ref.dtype, device=ref.device)
        else:
            spec = _ops.OPS[node.op]
            args = [values[id(a)] for a in node.args]
            if spec.aggregation:
                arg = args[0]
                if arg.dim() < ref.dim():
                    arg = arg.expand_as(ref)
                out = spec.torch_fn(arg, mask)
            else:
                out = spec.torch_fn(*args)
        values[id(node)] = out
    return values[id(expr)]


def loss_value(expr: Expr, env: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar loss: :func:`evaluate` followed by the mean over the positions that count."""
    return K.reduce_loss(evaluate(expr, env, mask), mask)


def loss_kind(expr: Expr) -> str:
    """``"classification"`` (variables among p, y, z), ``"regression"`` (f, y) or ``"box"``
    (i, u, e)."""
    v = expr.variables()
    if "f" in v and v <= REGRESSION_VARS:
        return "regression"
    if v and v <= BOX_VARS:
        return "box"
    if v <= CLASSIFICATION_VARS:
        return "classification"
    raise ValueError(f"cannot infer the loss kind from variables {sorted(v)}: use p, y, z for "
                     "classification/segmentation, f, y for regression or i, u, e for boxes, "
                     "or pass kind=")


# ---- nn.Module ---------------------------------------------------------------------------------
class ExprLoss(nn.Module):
    """A classification / segmentation loss from an expression, a drop-in for ``nn.CrossEntropyLoss``.

    ``forward(logits, target)``: logits ``(N, C, *spatial)``, class-index target ``(N, *spatial)``;
    positions labelled ``ignore_index`` do not count. Returns a scalar.
    """

    kind = "classification"

    def __init__(self, expr: Expr, ignore_index: int = 255):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        env, mask = K.prepare_classification(logits, target, self.ignore_index)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}, ignore_index={self.ignore_index}"


class RegressionExprLoss(nn.Module):
    """A regression loss from an expression over ``f`` (prediction) and ``y`` (target).

    ``forward(pred, target)`` with equal shapes ``(N,)`` or ``(N, D, ...)``; returns a scalar.
    """

    kind = "regression"

    def __init__(self, expr: Expr):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        env, mask = K.prepare_regression(pred, target)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}"


class BoxExprLoss(nn.Module):
    """A box-regression loss from an expression over ``i``, ``u``, ``e`` (intersection, union and
    smallest-enclosing-box areas, :func:`~lossforge.expr.kernels.prepare_box`).

    ``forward(pred_boxes, target_boxes)``: ``(M, 4)`` each as ``x1, y1, x2, y2``; the loss is the
    mean over the boxes. ``M = 0`` gives a differentiable 0 (``pred_boxes.sum() * 0``).
    """

    kind = "box"

    def __init__(self, expr: Expr):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)

    def forward(self, pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        if pred_boxes.shape[0] == 0 and pred_boxes.dim() == 2:
            return pred_boxes.sum() * 0
        env, mask = K.prepare_box(pred_boxes, target_boxes)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}"


def to_torch(expr: Expr, kind: str = "auto", ignore_index: int = 255) -> nn.Module:
    """The expression as an ``nn.Module`` (see :class:`ExprLoss`, :class:`RegressionExprLoss`,
    :class:`BoxExprLoss`); ``kind``: ``"classification"``, ``"regression"``, ``"box"`` or
    ``"auto"`` (from the variables, :func:`loss_kind`)."""
    kind = loss_kind(expr) if kind == "auto" else kind
    if kind == "classification":
        return ExprLoss(expr, ignore_index=ignore_index)
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
}


def _kernel_source(names: list[str]) -> str:
    seen: list[str] = []
    for name in names:
        for dep in _KERNEL_DEPS.get(name, []) + [name]:
            if dep not in seen:
                seen.append(dep)
    return "\n\n".join(inspect.getsource(getattr(K, n)).rstrip() for n in seen)


def to_source(expr: Expr, name: str = "SearchedLoss", kind: str = "auto") -> str:
    """Text of a standalone Python module (imports only torch) defining ``class <name>(nn.Module)``.

    The module's forward has the same signature and numerics as :func:`to_torch`.
    """
    if not name.isidentifier():
        raise ValueError(f"class name {name!r} is not a Python identifier")
    kind = loss_kind(expr) if kind == "auto" else kind
    lines: list[str] = []
    temp: dict[int, str] = {}
    kernels: list[str] = []
    for n, node in enumerate(expr.nodes()):
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
        init = "    def __init__(self, ignore_index=255):\n        super().__init__()\n        self.ignore_index = ignore_index\n"
        prep = "        v, mask = prepare_classification(logits, target, self.ignore_index)"
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
    formula = str(expr)
    return f'''"""{name}: a loss function found with lossforge.

Formula: {formula}

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
    square`` as an opaque function named after the op (what :func:`simplify` works on)."""
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
            if protected or node.op in exact or spec.aggregation:
                out = spec.sympy_fn(*args)
            else:
                out = sympy.Function(node.op)(*args)
        values[id(node)] = out
    return values[id(expr)]


def numpy_aggregations(shape: tuple[int, ...] | None = None) -> dict:
    """NumPy implementations of the aggregation functions for ``sympy.lambdify`` (no mask).

    ``shape``: the shape ``(N, C, *spatial)`` of the variables. Like :func:`evaluate`, an
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
