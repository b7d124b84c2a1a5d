"""Which expressions a batched program can represent on a probe kind.

Contract. An expression can be vectorised on a probe of kind ``classification`` or ``regression``
when it reads at least one prediction variable and only variables the probe provides
(:func:`probe_variables`). Expressions are checked in their exact form
(:func:`lossforge.expr.exact.exact_form`: ``log(p)`` reads the prediction variable ``logp``). :func:`check_supported` raises :class:`UnsupportedExprError` otherwise
(the compiler calls it); :func:`supported` answers the same question as a bool (box probes:
never). An unsupported expression goes through the per-candidate reference path, which keeps its
exact behaviour, errors included.
"""
from __future__ import annotations

from lossforge.evaluation.probes import Probe
from lossforge.expr.exact import LOGP, exact_form
from lossforge.expr.expr import Expr


class UnsupportedExprError(ValueError):
    """The expression cannot be vectorised (it goes through the reference path)."""


def probe_variables(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(variables a probe of ``kind`` provides, the prediction variables among them)."""
    if kind == "classification":
        return ("p", "y", "z", "q", LOGP), ("p", "z", LOGP)
    return ("f", "y"), ("f",)


def check_supported(e: Expr, kind: str) -> None:
    """Raise :class:`UnsupportedExprError` unless ``e`` can be vectorised on a probe of ``kind``."""
    provided, pred = probe_variables(kind)
    v = exact_form(e).variables()
    if v - set(provided):
        raise UnsupportedExprError(f"{e} reads {sorted(v - set(provided))}, which the probe does "
                                   "not provide")
    if not v & set(pred):
        raise UnsupportedExprError(f"{e} does not read a prediction variable")


def supported(e: Expr, probe: Probe) -> bool:
    """Can :class:`~lossforge.evaluation.batched.program.Program` evaluate ``e`` on ``probe``?
    (Box probes: never; the reference path screens box losses.)"""
    if probe.kind not in ("classification", "regression"):
        return False
    try:
        check_supported(e, probe.kind)
        return True
    except UnsupportedExprError:
        return False


__all__ = ["UnsupportedExprError", "check_supported", "probe_variables", "supported"]
