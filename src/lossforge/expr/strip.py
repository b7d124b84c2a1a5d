"""Strip the terms of a classification loss that are constant w.r.t. the prediction.

Protected operators let a search build terms that are huge constants: in ``square(inv(p * y))``
every wrong class (``y = 0``) contributes ``inv(0)^2 = 1 / EPS^2 = 1e12`` whatever the
prediction, so the loss reads ~1e11 although its gradient is that of ``y * square(inv(p))``.
Rejecting such losses would lose good ones (``benchmarks/scale_check.py``: thresholds on the
eps-dominance of the value lose 7-14 of 49 losses that train well under Adam and SGD), so what a
user reads or takes (``lossforge show``, ``lossforge export``) is the loss without those terms:
the same gradient, a value of sensible scale. The stored formula never changes.

Contract of :func:`strip_constant_terms`, for a *classification* loss (variables among ``p y z
q``; the target ``y`` is one-hot or all zeros at an ignored position, so ``y`` is 0 or 1
everywhere; ``q`` is a constant; ``p`` and ``z`` are the prediction):

* **constant terms**: an additive term reached from the root through ``+``, ``-``, unary minus,
  the aggregations (all linear: sums and masked means), and multiplication (division) by a factor
  (denominator) that reads neither the prediction nor ``y``, is dropped when it reads no
  prediction variable, unless it is a plain number (``1 - dice`` keeps its ``1``);
* **the y-split**: any other such term ``t`` that reads ``y`` only element-wise (no aggregation
  over an argument that reads ``y``) equals ``y * t|y=1 + (1 - y) * t|y=0`` exactly, since
  ``y`` is 0 or 1 at each position. When ``t|y=0`` reads no prediction variable (after the exact
  folds ``x * 0 = 0``, ``x * 1 = x``, ``x + 0 = x``, integer arithmetic), the ``(1 - y)`` part is
  dropped and ``t`` becomes ``y * t|y=1``; symmetrically for ``t|y=1``. A protected operator at
  a constant argument is a constant (``inv(0) = 1e6``).
* a term is dropped only where the shape of what remains is the shape of what was there (an
  aggregation of a smaller tensor would weigh the rest differently); where the split is not
  exact (a reduction mixes ``y`` across classes or positions) the term is left alone and the
  reason says so.

What is dropped never depends on the prediction, so the gradient w.r.t. the logits is unchanged
and the value moves by an amount that does not depend on the prediction. Folding never creates a
node of the exact-log rule (:mod:`lossforge.expr.exact`) that the original did not have (that
would change ``log(p * y)``'s protected form into ``log_softmax``): when it would, ``y * t`` is
kept instead of ``y * t|y=1`` (equal for ``y`` in {0, 1}). As a last guard
(``verify=True``, the default) the stripped loss's gradient is compared with the original's on
two random probes (float64, a flat and a spatial one with ignored positions); a mismatch leaves
the loss unchanged and says so. Regression and box losses are returned unchanged: their targets
are not one-hot.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from dataclasses import dataclass

import torch

from lossforge.expr import kernels as K
from lossforge.expr.exact import is_softmax_log
from lossforge.expr.export import to_source
from lossforge.expr.expr import Expr, apply, const, var
from lossforge.expr.interpret import interpret, loss_kind, loss_value
from lossforge.expr.parse import parse

#: The prediction variables of a classification loss (``q`` is a constant, ``y`` the target).
PREDICTION = frozenset({"p", "z"})
TARGET = "y"
_ZERO, _ONE = const(0.0), const(1.0)
#: Shape of a node: per axis group (batch, class, spatial), whether it is full; None for 0-dim.
_Shape = "tuple[bool, bool, bool] | None"
_AGG_KEEPS = {"sum_c": (True, False, True), "mean_c": (True, False, True),
              "mean_s": (True, True, False), "mean_bs": (False, True, False),
              "mean_b": (False, True, True)}


@dataclass(frozen=True)
class DroppedTerm:
    """One part of the loss that was dropped: ``term`` (what was added to the loss, e.g.
    ``(1 - y) * square(inv(0))``) and ``what`` (a sentence saying which part it was and its
    value where that is a number)."""

    term: Expr
    what: str


@dataclass(frozen=True)
class StripResult:
    """The outcome of :func:`strip_constant_terms`.

    ``original``: the loss as given; ``expr``: the loss to show and export (``original`` itself
    when nothing was dropped); ``changed``: whether they differ; ``dropped``: the dropped parts;
    ``reason``: one human-readable paragraph (what was dropped and that the gradient is the same,
    or why nothing was)."""

    original: Expr
    expr: Expr
    changed: bool
    dropped: tuple[DroppedTerm, ...]
    reason: str


def strip_constant_terms(loss: Expr | str, kind: str = "auto", *,
                         verify: bool = True) -> StripResult:
    """``loss`` without its terms that are constant w.r.t. the prediction (module docstring).

    ``loss``: an expression or its text; ``kind``: the loss kind (``"auto"``: from its variables,
    :func:`~lossforge.expr.interpret.loss_kind`); only ``"classification"`` is stripped.
    ``verify``: compare the gradients on random probes before returning a changed loss.
    """
    expr = parse(loss, strict=False) if isinstance(loss, str) else loss
    try:
        kind = loss_kind(expr) if kind == "auto" else kind
    except ValueError:
        return _unchanged(expr, "not stripped: the loss kind is unknown")
    if kind != "classification":
        return _unchanged(expr, f"not stripped: a {kind} loss's target is not one-hot")
    if not expr.variables() & PREDICTION:
        return _unchanged(expr, "not stripped: the whole loss is constant w.r.t. the prediction")
    walker = _Stripper()
    kept = walker.linear(expr)
    if kept is None:
        return _unchanged(expr, "not stripped: the loss is constant w.r.t. the prediction for "
                                "one-hot targets")
    if kept is expr or not walker.dropped:
        notes = "; ".join(walker.notes)
        return _unchanged(expr, "nothing to strip" + (f" ({notes})" if notes else
                                                      ": no part is a constant w.r.t. the "
                                                      "prediction"))
    if verify and not gradients_match(expr, kept):
        return _unchanged(expr, "not stripped: the gradient check of the stripped loss failed "
                                "(numerical trouble in the original); shown as stored")
    parts = "; ".join(d.what for d in walker.dropped)
    reason = (f"dropped {parts}. The gradient w.r.t. the prediction is unchanged; the value moves "
              "by an amount that does not depend on the prediction.")
    if walker.notes:
        reason += " Left alone: " + "; ".join(walker.notes) + "."
    return StripResult(expr, kept, True, tuple(walker.dropped), reason)


def display_fields(formula: str) -> dict:
    """``{"display_formula": ..., "stripped": reason or None}`` for a stored formula: the
    stripped formula when something was dropped, else the formula itself with ``stripped: None``.
    Bundle texts (``slot: ... | slot: ...``) and formulas that do not parse are left as they are.
    """
    if ":" in formula:
        return {"display_formula": formula, "stripped": None}
    try:
        result = strip_constant_terms(formula)
    except (ValueError, KeyError, TypeError):
        return {"display_formula": formula, "stripped": None}
    if not result.changed:
        return {"display_formula": formula, "stripped": None}
    return {"display_formula": str(result.expr), "stripped": result.reason}


def export_note(result: StripResult) -> str:
    """The paragraph an exported module's docstring carries about a stripped loss ('' when nothing
    was stripped): the searched formula, what was dropped, and that the gradient is the same."""
    if not result.changed:
        return ""
    text = (f"Constant terms stripped: {result.reason} This module computes the formula above; "
            "its gradient is the searched loss's for one-hot targets (y of 0 or 1); with soft "
            "targets (label smoothing, mixup) use the searched formula instead.")
    return f"Searched formula: {result.original}\n" + textwrap.fill(text, width=96)


def stripped_source(expr: Expr, name: str = "SearchedLoss", kind: str = "auto") -> str:
    """:func:`~lossforge.expr.export.to_source` of ``expr`` without its constant terms
    (:func:`strip_constant_terms`), its docstring saying what was dropped (:func:`export_note`);
    exactly ``to_source(expr, name, kind)`` when nothing is dropped. The class's ``formula`` is
    the formula it computes."""
    result = strip_constant_terms(expr, kind)
    return to_source(result.expr, name=name, kind=kind, note=export_note(result))


def gradients_match(a: Expr, b: Expr, num_classes: int = 5, seed: int = 0,
                    rtol: float = 1e-6) -> bool:
    """Whether classification losses ``a`` and ``b`` have the same gradient w.r.t. the logits on
    two float64 probes: ``(8, C)`` and ``(2, C, 3, 4)`` with some ignored positions (relative
    tolerance ``rtol`` of the largest gradient entry); both must be finite. Then on confident
    logits (the flat probe times 30, in float64 and in float32, the training dtype): wherever
    ``a``'s value and gradient are finite, ``b``'s must be too, and equal. That catches a y-split
    ``y * t`` whose ``t`` overflows where ``y = 0`` (``0 * inf``) although ``a`` never reads it
    there: ``exp(y * z / -(p * y))`` is 1 at ``y = 0``, ``y * exp(z / -p)`` is NaN."""
    gen = torch.Generator().manual_seed(seed)
    flat = (torch.randn(8, num_classes, generator=gen, dtype=torch.float64) * 2,
            torch.randint(0, num_classes, (8,), generator=gen))
    target = torch.randint(0, num_classes, (2, 3, 4), generator=gen)
    target[0, 0, :2] = 255
    spatial = (torch.randn(2, num_classes, 3, 4, generator=gen, dtype=torch.float64) * 2, target)
    for logits, labels in (flat, spatial):
        ga, gb = (_logit_grad(e, logits, labels) for e in (a, b))
        if ga is None or gb is None:
            return False
        scale = max(float(ga.abs().max()), 1e-12)
        if not bool(((ga - gb).abs() <= rtol * scale).all()):
            return False
    for dtype in (torch.float64, torch.float32):
        logits = (flat[0] * 30).to(dtype)
        ga = _logit_grad(a, logits, flat[1])
        if ga is None:
            continue                     # a itself overflows here: nothing to compare
        gb = _logit_grad(b, logits, flat[1])
        if gb is None:
            return False
        scale = max(float(ga.abs().max()), 1e-12)
        if not bool(((ga - gb).abs() <= max(rtol, 1e-4 if dtype == torch.float32 else 0)
                     * scale).all()):
            return False
    return True


def _logit_grad(expr: Expr, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    x = logits.clone().requires_grad_(True)
    env, mask = K.prepare_classification(x, target)
    value = loss_value(expr, env, mask)
    if not bool(torch.isfinite(value)):
        return None
    (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    grad = torch.zeros_like(x) if grad is None else grad
    return grad if bool(torch.isfinite(grad).all()) else None


def _unchanged(expr: Expr, reason: str) -> StripResult:
    return StripResult(expr, expr, False, (), reason)


def _reads_prediction(e: Expr) -> bool:
    return bool(e.variables() & PREDICTION)


def _is_zero(e: Expr) -> bool:
    return e.is_const and e.value == 0.0


class _Stripper:
    """One pass over a loss: :meth:`linear` returns what is kept (None: all of it dropped) and
    collects :attr:`dropped` and :attr:`notes` (terms left alone, and why)."""

    def __init__(self):
        self.dropped: list[DroppedTerm] = []
        self.notes: list[str] = []

    def linear(self, node: Expr) -> Expr | None:
        """``node`` (reached through linear operations only) without its constant parts; the
        result has ``node``'s shape (or is None: ``node`` is constant w.r.t. the prediction)."""
        if node.is_const:
            return node  # a plain number (``1 - dice``) is a readable offset: kept
        if not _reads_prediction(node):
            self.dropped.append(DroppedTerm(node, f"the constant term {node}{_value_text(node)}"))
            return None
        op, args = node.op, node.args
        if op in ("add", "sub"):
            return self._sum(node)
        if op == "neg" or op in _AGG_KEEPS:
            inner = self.linear(args[0])
            return node if inner is args[0] else None if inner is None else apply(op, inner)
        scaled = _linear_factor(node)
        if scaled is not None:
            inner = self.linear(args[scaled])
            if inner is None:
                return None
            new = list(args)
            new[scaled] = inner
            return node if inner is args[scaled] else apply(op, *new)
        return self.split(node)

    def _sum(self, node: Expr) -> Expr | None:
        mark = len(self.dropped)
        a, b = (self.linear(x) for x in node.args)
        if a is None and b is None:
            return None
        if a is None:
            out = b if node.op == "add" else apply("neg", b)
        elif b is None:
            out = a
        elif a is node.args[0] and b is node.args[1]:
            return node
        else:
            out = apply(node.op, a, b)
        if _shape(out) != _shape(node):
            del self.dropped[mark:]
            self.notes.append(f"{node}: dropping a part would change the shape the remaining "
                              "terms are reduced over")
            return node
        return out

    def split(self, t: Expr) -> Expr | None:
        """``t`` as ``y * t|y=1`` or ``(1 - y) * t|y=0`` when the other part is constant."""
        if TARGET not in t.variables():
            return t
        if any(n.op in _AGG_KEEPS and TARGET in n.args[0].variables() for n in t.nodes()):
            self.notes.append(f"{t}: a class/sample reduction mixes y with the prediction, so "
                              "the y = 0 / y = 1 split is not exact")
            return t
        y = var(TARGET)
        t0, t1 = substitute(t, TARGET, 0.0), substitute(t, TARGET, 1.0)
        const0, const1 = not _reads_prediction(t0), not _reads_prediction(t1)
        if const0 and const1:  # constant for one-hot targets although it reads the prediction
            self.dropped.append(DroppedTerm(t, f"the term {t}, constant for one-hot targets"))
            return None
        if const0 and not _is_zero_valued(t0):
            self.dropped.append(DroppedTerm(
                apply("mul", apply("sub", _ONE, y), t0),
                f"the y = 0 part of {t} ({t0}{_value_text(t0)} at every wrong class, whatever "
                "the prediction)"))
            return apply("mul", y, _no_new_exact_log(t1, t))
        if const1 and not _is_zero_valued(t1):
            self.dropped.append(DroppedTerm(
                apply("mul", y, t1),
                f"the y = 1 part of {t} ({t1}{_value_text(t1)} at the true class, whatever "
                "the prediction)"))
            return apply("mul", apply("sub", _ONE, y), _no_new_exact_log(t0, t))
        return t


def _linear_factor(node: Expr) -> int | None:
    """Index of the argument ``node`` is linear in when it is ``a * c``, ``c * a`` or ``a / c``
    with ``c`` reading neither the prediction nor ``y``; None otherwise."""
    if node.op not in ("mul", "div"):
        return None
    a, b = node.args
    fixed = lambda e: not (e.variables() & (PREDICTION | {TARGET}))  # noqa: E731
    if fixed(b):
        return 0
    if node.op == "mul" and fixed(a):
        return 1
    return None


def _no_new_exact_log(folded: Expr, original: Expr) -> Expr:
    """``folded`` unless folding created a node of the exact-log rule that ``original`` lacks
    (then ``original``: equal to ``folded`` where the kept factor ``y`` / ``1 - y`` is not 0)."""
    before = {n for n in original.nodes() if is_softmax_log(n)}
    if all(n in before for n in folded.nodes() if is_softmax_log(n)):
        return folded
    return original


def substitute(expr: Expr, name: str, value: float) -> Expr:
    """``expr`` with the variable ``name`` replaced by the constant ``value``, folded with exact
    rules only: ``x * 0 = 0 * x = 0 / x = 0``, ``x * 1 = 1 * x = x``, ``x + 0 = 0 + x = x - 0 =
    x``, ``0 - x = -x``, and ``+ - * neg abs square`` of integer constants (when the result is
    below 2^24: exact in float32). The fold
    ``x * 0 = 0`` holds for finite ``x``."""
    done: dict[int, Expr] = {}
    for node in expr.nodes():
        if node.is_var and node.value == name:
            out = const(value)
        elif not node.args:
            out = node
        else:
            out = _fold(node.op, [done[id(a)] for a in node.args])
        done[id(node)] = out
    return done[id(expr)]


_INTEGER_FOLDS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
                  "neg": lambda a: -a, "abs": abs, "square": lambda a: a * a}


def _small_integer(e: Expr) -> bool:
    return e.is_const and float(e.value).is_integer() and abs(e.value) < 2 ** 24


def _fold(op: str, args: list[Expr]) -> Expr:
    if op in _INTEGER_FOLDS and all(_small_integer(a) for a in args):
        value = _INTEGER_FOLDS[op](*(a.value for a in args))
        if abs(value) < 2 ** 24:  # integers exact in float32 too
            return const(value)
    if op == "mul":
        a, b = args
        if _is_zero(a) or _is_zero(b):
            return _ZERO
        if a is _ONE:
            return b
        if b is _ONE:
            return a
    if op == "div" and _is_zero(args[0]):
        return _ZERO
    if op == "add":
        if _is_zero(args[0]):
            return args[1]
        if _is_zero(args[1]):
            return args[0]
    if op == "sub":
        if _is_zero(args[1]):
            return args[0]
        if _is_zero(args[0]):
            return apply("neg", args[1])
    return apply(op, *args)


def _shape(e: Expr) -> "tuple[bool, bool, bool] | None":
    """Which axis groups (batch, class, spatial) of ``(N, C, *spatial)`` ``e``'s value spans
    (the interpreter's broadcasting); None for a constant-only (0-dim) expression."""
    shapes: dict[int, tuple[bool, bool, bool] | None] = {}
    for node in e.nodes():
        if node.is_var:
            out = (True, True, True)
        elif node.is_const:
            out = None
        elif node.op in _AGG_KEEPS:
            arg = shapes[id(node.args[0])] or (True, True, True)  # 0-dim args are expanded first
            out = tuple(a and k for a, k in zip(arg, _AGG_KEEPS[node.op]))
        else:
            present = [shapes[id(a)] for a in node.args if shapes[id(a)] is not None]
            out = tuple(any(s[i] for s in present) for i in range(3)) if present else None
        shapes[id(node)] = out
    return shapes[id(e)]


def _constant_value(e: Expr) -> float | None:
    """The value of an expression of constants only, without aggregations (evaluated with the
    float32 kernels, as a loss is); None when it reads a variable or aggregates."""
    if e.variables() or any(n.op in _AGG_KEEPS for n in e.nodes()):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(interpret(e, {"_": torch.zeros((), dtype=torch.float32)}))


def _is_zero_valued(e: Expr) -> bool:
    return _constant_value(e) == 0.0


def _value_text(e: Expr) -> str:
    """`` = <value>`` for an expression of constants only (not a bare number), `` (reads only
    the class prior q)``; '' otherwise."""
    if "q" in e.variables():
        return " (reads only the class prior q)"
    value = None if e.is_const else _constant_value(e)
    return f" = {value:.3g}" if value is not None and math.isfinite(value) else ""


__all__ = ["DroppedTerm", "PREDICTION", "StripResult", "display_fields", "export_note",
           "gradients_match", "strip_constant_terms", "stripped_source", "substitute"]
