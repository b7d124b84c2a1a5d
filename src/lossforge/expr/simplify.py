"""``simplify``: a sympy-backed algebraic simplification that never returns a larger expression.

Only exact identities are used: ``+ - * neg square`` become sympy arithmetic; every other op
(protected ``/``, ``log``, ... and aggregations) stays an opaque function, so the result is
equivalent to the original for every input, protected forms included.
"""
from __future__ import annotations

import sympy

from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr, apply, const, var
from lossforge.expr.export import to_sympy


def simplify(expr: Expr) -> Expr:
    """An equivalent expression no larger (by :meth:`Expr.size`) than ``expr``."""
    try:
        s = sympy.expand(to_sympy(expr, protected=False))
        s = min((s, sympy.factor_terms(s)), key=sympy.count_ops)
        out = from_sympy(s)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return expr
    if out.size() < expr.size() or (out.size() == expr.size() and len(str(out)) < len(str(expr))):
        return out
    return expr


def from_sympy(s: sympy.Expr) -> Expr:
    """Convert the output of :func:`to_sympy` (``protected=False``) back to an :class:`Expr`.

    Raises ``ValueError`` for sympy constructs with no exact counterpart (e.g. fractional powers).
    """
    if isinstance(s, sympy.Symbol):
        return var(s.name)
    if s.is_Number:
        if not s.is_real:
            raise ValueError(f"non-real constant {s}")
        return const(float(s))
    if isinstance(s, sympy.Add):
        terms = sorted(s.args, key=lambda t: (_is_negative(t), sympy.default_sort_key(t)))
        out = from_sympy(terms[0])
        for t in terms[1:]:
            if _is_negative(t):
                out = apply("sub", out, from_sympy(-t))
            else:
                out = apply("add", out, from_sympy(t))
        return out
    if isinstance(s, sympy.Mul):
        coeff, rest = s.as_coeff_Mul()
        if coeff == -1:
            return apply("neg", from_sympy(rest))
        factors = [f for f in sympy.Mul.make_args(s)]
        out = from_sympy(factors[0])
        for f in factors[1:]:
            out = apply("mul", out, from_sympy(f))
        return out
    if isinstance(s, sympy.Pow):
        base, exp = s.args
        if not (exp.is_Integer and int(exp) >= 2):
            raise ValueError(f"no exact counterpart for power {s}")
        b = from_sympy(base)
        n = int(exp)
        sq = apply("square", b)
        out: Expr | None = None
        for _ in range(n // 2):
            out = sq if out is None else apply("mul", out, sq)
        if n % 2:
            out = b if out is None else apply("mul", out, b)
        return out
    if isinstance(s, sympy.Function):
        name = type(s).__name__
        if name in _ops.OPS:
            return apply(name, *(from_sympy(a) for a in s.args))
    raise ValueError(f"no lossforge op for sympy expression {s}")


def _is_negative(t: sympy.Expr) -> bool:
    coeff, _ = t.as_coeff_Mul()
    return bool(coeff.is_negative)
