"""Shapes of the values a batched program stores: pure arithmetic on shape tuples (no tensors).

Contract. A value store holds rows ``(rows, *key)``; a value whose *true* shape is smaller than
its store's ``key`` is stored broadcast. :func:`agg_dims` gives the dimensions an aggregation
reduces, :func:`reduced_shape` / :func:`broadcast_shape` the shapes of results,
:func:`representative` the index of the representative copy of a value stored broadcast to a
larger shape, and :func:`copy_dims` the dimensions holding its copies.

(Not to be confused with :mod:`lossforge.data.shapes`, the synthetic shapes data set.)
"""
from __future__ import annotations

from lossforge.expr import ops as _ops

#: The aggregation ops (they reduce dimensions; every other op broadcasts).
AGGREGATIONS = frozenset(_ops.AGGREGATIONS)


def agg_dims(op: str, nd: int) -> tuple[int, ...]:
    """The dimensions of an ``nd``-dimensional value ``(N, C, *spatial)`` that aggregation ``op``
    reduces."""
    spatial = tuple(range(2, nd))
    return {"sum_c": (1,), "mean_c": (1,), "mean_s": spatial, "mean_bs": (0,) + spatial,
            "mean_b": (0,)}[op]


def reduced_shape(shape: tuple[int, ...], dims: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with the dimensions ``dims`` reduced to 1 (kept)."""
    return tuple(1 if d in dims else n for d, n in enumerate(shape))


def representative(key: tuple[int, ...], true: tuple[int, ...]):
    """Index of the representative copy of a value of shape ``true`` stored broadcast to ``key``
    (with a leading population dimension); ``None`` when the two shapes are equal."""
    if key == true:
        return None
    return (slice(None),) + tuple(slice(0, 1) if t == 1 and k != 1 else slice(None)
                                  for k, t in zip(key, true))


def broadcast_shape(shapes) -> tuple[int, ...]:
    """Broadcast shape of ``shapes`` (each ``()`` or of one common length, sizes 1 or n)."""
    full = [s for s in shapes if s]
    if not full:
        return ()
    return tuple(max(d) for d in zip(*full))


def copy_dims(key, true) -> list[int]:
    """Dimensions (population dim first) along which ``key`` holds copies of a ``true`` value."""
    return [d + 1 for d, (k, t) in enumerate(zip(key, true)) if t == 1 and k != 1]


__all__ = ["AGGREGATIONS", "agg_dims", "broadcast_shape", "copy_dims", "reduced_shape",
           "representative"]
