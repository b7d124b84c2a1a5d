"""Shapes of stored values and which expressions a batched program can represent.

Contract. Pure functions of shapes (no tensors): the dimensions an aggregation reduces
(:func:`_agg_dims`), reduced and broadcast shapes, the representative copy of a value stored
broadcast to a larger shape (:func:`_rep`) and the dimensions holding its copies
(:func:`_copy_dims`). :func:`supported` / :func:`_check` decide whether an expression can be
vectorised on a probe kind: it must read at least one prediction variable and only variables the
probe provides; otherwise :class:`UnsupportedExpr` (the caller then uses the reference path).
"""
from __future__ import annotations

from lossforge.evaluation.probes import Probe
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr


# ---- shapes ----------------------------------------------------------------------------------
_AGGREGATIONS = frozenset(_ops.AGGREGATIONS)


def _agg_dims(op: str, nd: int) -> tuple[int, ...]:
    spatial = tuple(range(2, nd))
    return {"sum_c": (1,), "mean_c": (1,), "mean_s": spatial, "mean_bs": (0,) + spatial,
            "mean_b": (0,)}[op]


def _reduced(shape: tuple[int, ...], dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d in dims else n for d, n in enumerate(shape))


def _rep(key: tuple[int, ...], true: tuple[int, ...]):
    """Index of the representative copy of a value of shape ``true`` stored broadcast to ``key``
    (with a leading population dimension); ``None`` when the two shapes are equal."""
    if key == true:
        return None
    return (slice(None),) + tuple(slice(0, 1) if t == 1 and k != 1 else slice(None)
                                  for k, t in zip(key, true))


def _broadcast(shapes) -> tuple[int, ...]:
    """Broadcast shape of ``shapes`` (each ``()`` or of one common length, sizes 1 or n)."""
    full = [s for s in shapes if s]
    if not full:
        return ()
    return tuple(max(d) for d in zip(*full))


def _copy_dims(key, true) -> list[int]:
    """Dimensions (population dim first) along which ``key`` holds copies of a ``true`` value."""
    return [d + 1 for d, (k, t) in enumerate(zip(key, true)) if t == 1 and k != 1]


# ---- what a program can represent ----------------------------------------------------------------
class UnsupportedExpr(ValueError):
    """The expression cannot be vectorised (it goes through the reference path)."""



def _variables(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(variables a probe of ``kind`` provides, the prediction variables among them)."""
    if kind == "classification":
        return ("p", "y", "z"), ("p", "z")
    return ("f", "y"), ("f",)


def _check(e: Expr, kind: str) -> None:
    provided, pred = _variables(kind)
    v = e.variables()
    if v - set(provided):
        raise UnsupportedExpr(f"{e} reads {sorted(v - set(provided))}, which the probe does "
                              "not provide")
    if not v & set(pred):
        raise UnsupportedExpr(f"{e} does not read a prediction variable")


def supported(e: Expr, probe: Probe) -> bool:
    """Can :class:`Program` evaluate ``e`` on ``probe``? (Box probes: never; the reference
    path screens box losses.)"""
    if probe.kind not in ("classification", "regression"):
        return False
    try:
        _check(e, probe.kind)
        return True
    except UnsupportedExpr:
        return False
