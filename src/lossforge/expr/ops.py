"""The registry of primitives: one list of every operator a loss expression may use.

Each :class:`Op` has a name (its text form), an arity, a protected torch implementation (from
:mod:`lossforge.expr.kernels`), the identical sympy form, and a complexity cost used by the
Pareto hall of fame. Protected forms guard the points where the plain function is undefined, with
``EPS = 1e-6``:

* ``log(x) = log(|x| + EPS)``, ``log10(x) = log10(|x| + EPS)``, ``sqrt(x) = sqrt(|x| + EPS)``;
* ``slog``/``ssqrt``: the sign-preserving forms of AutoLoss-Zero's third-party code,
  ``sign(x) * log(|x| + EPS)`` and ``sign(x) * sqrt(|x| + EPS)``;
* ``inv(x) = 1 / (x + EPS)`` and ``a / b = a / (b + EPS)`` (AutoLoss-Zero and NLFS): the zero is
  guarded, ``x = -EPS`` is not (the value is then infinite and the candidate is rejected);
* ``aq(a, b) = a / sqrt(1 + b^2)``, the analytic quotient of GP and EvoMAL.

**Exact log of the softmax.** One rewrite rule overrides the guard: ``log(p)``, ``slog(p)`` and
``log10(p)`` applied directly to the softmax variable ``p`` (or to a positive constant multiple
``c * p``: plus ``ln c``) are evaluated as ``log_softmax(z)`` over the classes (``log10``:
divided by ``ln 10``), exactly and stably, with no ``EPS``: so
``-sum_c(y * log(p))`` *is* ``torch.nn.functional.cross_entropy``, at any margin. The rule is
defined once, in :mod:`lossforge.expr.exact` (:func:`~lossforge.expr.exact.exact_form` rewrites
such nodes into the derived variable ``logp``); the interpreter, the exported module and
standalone source, and the batched screening evaluate that form, and sympy/LaTeX show ``log(p)``
without the guard. Any other argument (``log(1 - p)``, ``log(p * y)``) keeps the protected form.

``exp``, ``sinh`` and ``square`` are not clipped: overflow yields ``inf`` and the funnel rejects
the candidate (AutoLoss-Zero's early stop on invalid values). Gradients are finite everywhere
except: ``inv``/``div`` at ``-EPS``, overflow of ``exp``/``sinh``, ``abs``/``sign``/``max``/``min``
where their sub-gradient (0 or one side) is used.

Aggregations take the position mask into account (ignored pixels never count), keep their
dimensions and broadcast back: ``sum_c``, ``mean_c`` (over classes, dim 1), ``mean_s`` (over
spatial dims, per sample and class), ``mean_bs`` (over batch and spatial, per class), ``mean_b``
(over batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy
import torch

from lossforge.expr import kernels as K

EPS = K.EPS
_SEPS = sympy.Float(EPS)

#: Names of the loss-signature variables the parser knows (DESIGN.md §3).
VARIABLES: dict[str, str] = {
    "p": "softmax probabilities (N, C, *spatial)",
    "y": "one-hot ground truth (N, C, *spatial)",
    "z": "logits (N, C, *spatial)",
    "q": "class prior of the training set (N, C, *spatial), the same for every sample and position "
         "(uniform 1/C when the task gives none)",
    "f": "regression prediction (N, D)",
    "i": "box intersection area (N, 1)",
    "u": "box union area (N, 1)",
    "e": "smallest enclosing box area (N, 1)",
}


@dataclass(frozen=True)
class Op:
    """A primitive operator.

    The torch implementation is the function ``kernels.k_<name>`` (:attr:`torch_fn`; aggregations
    also take ``mask``); ``sympy_fn`` maps sympy expressions to the identical sympy expression.
    ``infix`` is the text operator for ``+ - * /``; ``tags`` name the search spaces using the op.
    """

    name: str
    arity: int
    sympy_fn: Callable[..., sympy.Expr]
    cost: float
    doc: str
    infix: str | None = None
    aggregation: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def kernel_name(self) -> str:
        return "k_" + self.name

    @property
    def torch_fn(self) -> Callable[..., torch.Tensor]:
        return getattr(K, self.kernel_name)


def _sig(x):
    return 1 / (1 + sympy.exp(-x))


def _agg(name: str) -> Callable[[sympy.Expr], sympy.Expr]:
    return lambda x: sympy.Function(name)(x)


_ALZ = "autoloss-zero"
_NLFS = "nlfs"
_GLO = "glo"

_OPS: list[Op] = [
    # binary arithmetic
    Op("add", 2, lambda a, b: a + b, 1, "a + b", "+", tags=frozenset({_ALZ, _NLFS, _GLO})),
    Op("sub", 2, lambda a, b: a - b, 1, "a - b", "-", tags=frozenset({_NLFS, _GLO})),
    Op("mul", 2, lambda a, b: a * b, 1, "a * b", "*", tags=frozenset({_ALZ, _NLFS, _GLO})),
    Op("div", 2, lambda a, b: a / (b + _SEPS), 1.5, "a / (b + eps)", "/",
       tags=frozenset({_NLFS, _GLO})),
    Op("max", 2, sympy.Max, 1.5, "max(a, b)", tags=frozenset({_NLFS, _GLO})),
    Op("min", 2, sympy.Min, 1.5, "min(a, b)", tags=frozenset({_NLFS, _GLO})),
    Op("aq", 2, lambda a, b: a / sympy.sqrt(1 + b**2), 2,
       "analytic quotient a / sqrt(1 + b^2)", tags=frozenset({_NLFS, _GLO})),
    # unary
    Op("neg", 1, lambda x: -x, 1, "-x", tags=frozenset({_ALZ, _NLFS})),
    Op("abs", 1, sympy.Abs, 1, "|x|", tags=frozenset({_ALZ, _NLFS, _GLO})),
    Op("sign", 1, sympy.sign, 1, "sign(x), 0 at 0", tags=frozenset({_GLO})),
    Op("square", 1, lambda x: x**2, 1, "x^2", tags=frozenset({_ALZ, _NLFS, _GLO})),
    Op("sqrt", 1, lambda x: sympy.sqrt(sympy.Abs(x) + _SEPS), 2, "sqrt(|x| + eps)",
       tags=frozenset({_NLFS, _GLO})),
    Op("ssqrt", 1, lambda x: sympy.sign(x) * sympy.sqrt(sympy.Abs(x) + _SEPS), 2,
       "sign(x) sqrt(|x| + eps) (AutoLoss-Zero's protected Sqrt)", tags=frozenset({_ALZ})),
    Op("inv", 1, lambda x: 1 / (x + _SEPS), 1.5, "1 / (x + eps)",
       tags=frozenset({_ALZ, _NLFS})),
    Op("log", 1, lambda x: sympy.log(sympy.Abs(x) + _SEPS), 2, "ln(|x| + eps)",
       tags=frozenset({_NLFS, _GLO})),
    Op("slog", 1, lambda x: sympy.sign(x) * sympy.log(sympy.Abs(x) + _SEPS), 2,
       "sign(x) ln(|x| + eps) (AutoLoss-Zero's protected Log)", tags=frozenset({_ALZ})),
    Op("log10", 1, lambda x: sympy.log(sympy.Abs(x) + _SEPS, 10), 2,
       "log10(|x| + eps)", tags=frozenset({_NLFS})),
    Op("exp", 1, sympy.exp, 2, "e^x (unclipped)", tags=frozenset({_ALZ, _NLFS})),
    Op("tanh", 1, sympy.tanh, 2, "tanh(x)", tags=frozenset({_ALZ, _NLFS, _GLO})),
    Op("sigmoid", 1, _sig, 2, "1 / (1 + e^-x)", tags=frozenset({_NLFS})),
    Op("softplus", 1, lambda x: sympy.log(1 + sympy.exp(x)), 2,
       "ln(1 + e^x)", tags=frozenset({_NLFS})),
    Op("erf", 1, sympy.erf, 2, "error function", tags=frozenset({_NLFS})),
    Op("erfc", 1, sympy.erfc, 2, "1 - erf(x)", tags=frozenset({_NLFS})),
    Op("sin", 1, sympy.sin, 2, "sin(x)", tags=frozenset({_NLFS})),
    Op("cos", 1, sympy.cos, 2, "cos(x)"),
    Op("sinh", 1, sympy.sinh, 2, "sinh(x) (unclipped)", tags=frozenset({_NLFS})),
    Op("asinh", 1, sympy.asinh, 2, "asinh(x)", tags=frozenset({_NLFS})),
    Op("atan", 1, sympy.atan, 2, "atan(x)", tags=frozenset({_NLFS})),
    Op("inv1pabs", 1, lambda x: 1 / (1 + sympy.Abs(x)), 1.5, "1 / (1 + |x|)",
       tags=frozenset({_NLFS})),
    Op("softsign", 1, lambda x: x / (1 + sympy.Abs(x)), 1.5, "x / (1 + |x|)",
       tags=frozenset({_NLFS})),
    Op("dtanh", 1, lambda x: 1 - sympy.tanh(x) ** 2, 2, "1 - tanh(x)^2",
       tags=frozenset({_NLFS})),
    Op("dsigmoid", 1, lambda x: _sig(x) * (1 - _sig(x)), 2,
       "sigmoid(x) (1 - sigmoid(x))", tags=frozenset({_NLFS})),
    Op("relu", 1, lambda x: sympy.Max(x, 0), 1, "max(x, 0)", tags=frozenset({_NLFS})),
    Op("negrelu", 1, lambda x: sympy.Min(x, 0), 1,
       "min(x, 0)", tags=frozenset({_NLFS})),
    Op("i0", 1, lambda x: sympy.besseli(0, x), 3,
       "modified Bessel function I0", tags=frozenset({_NLFS})),
    Op("i0e", 1, lambda x: sympy.exp(-sympy.Abs(x)) * sympy.besseli(0, x), 3,
       "exponentially scaled I0: e^-|x| I0(x)", tags=frozenset({_NLFS})),
    Op("i1", 1, lambda x: sympy.besseli(1, x), 3,
       "modified Bessel function I1", tags=frozenset({_NLFS})),
    Op("i1e", 1, lambda x: sympy.exp(-sympy.Abs(x)) * sympy.besseli(1, x), 3,
       "exponentially scaled I1: e^-|x| I1(x)", tags=frozenset({_NLFS})),
    # aggregations
    Op("sum_c", 1, _agg("sum_c"), 1, "sum over classes (dim 1)", aggregation=True),
    Op("mean_c", 1, _agg("mean_c"), 1, "mean over classes (dim 1)", aggregation=True),
    Op("mean_s", 1, _agg("mean_s"), 1,
       "mean over spatial positions, per sample and class", aggregation=True),
    Op("mean_bs", 1, _agg("mean_bs"), 1,
       "mean over batch and spatial positions, per class", aggregation=True),
    Op("mean_b", 1, _agg("mean_b"), 1, "mean over the batch", aggregation=True),
]

OPS: dict[str, Op] = {op.name: op for op in _OPS}
INFIX: dict[str, Op] = {op.infix: op for op in _OPS if op.infix}
AGGREGATIONS: tuple[str, ...] = tuple(op.name for op in _OPS if op.aggregation)


def get(name: str) -> Op:
    """The op called ``name``; ``KeyError`` naming the known ops otherwise."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def names(tag: str | None = None, arity: int | None = None, aggregation: bool = False) -> list[str]:
    """Op names, optionally only those of a search space ``tag`` and/or an ``arity``."""
    return [
        op.name
        for op in _OPS
        if (tag is None or tag in op.tags)
        and (arity is None or op.arity == arity)
        and op.aggregation == aggregation
    ]
