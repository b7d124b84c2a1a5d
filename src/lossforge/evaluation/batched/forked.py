"""The LRP of a population on several CPU cores: shares of the population in forked processes.

Contract. :func:`forked_lrp_scores` returns exactly what :func:`~.scores.lrp_scores` returns for
the same arguments: a candidate's score never depends on the other candidates (rows never mix),
so splitting the population into shares changes only the wall time. This process screens the
first share itself while ``processes - 1`` forked children screen the others; the children
inherit the expressions, probe and metric (nothing is pickled on the way in: metrics may be
lambdas) and send back only their ``(done, score)`` pairs. Each side runs one torch intra-op
thread. Forking needs a POSIX ``fork`` and a CPU computation: elsewhere (or with one process, or
fewer than ``MIN_SHARE`` candidates per share) the population is screened in this process.
"""
from __future__ import annotations

import multiprocessing as mp

import torch

from lossforge.evaluation.batched.scores import lrp_scores, torch_threads
from lossforge.evaluation.probes import Probe
from lossforge.expr.expr import Expr

#: Fewer candidates per share than this are not worth a fork (a fork and its pool cost ~10 ms).
MIN_SHARE = 16

#: The job the forked children read (set only while a pool is alive).
_JOB: tuple | None = None


def shares(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes differing by <= 1."""
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _screen_share(bounds: tuple[int, int]) -> list[tuple[bool, float | None]]:
    """The LRP scores of one share of the current job (``_JOB``: set by
    :func:`forked_lrp_scores` in this process, inherited by its forked children)."""
    assert _JOB is not None, "_screen_share runs only inside forked_lrp_scores"
    exprs, probe, metric, config, init, chunk = _JOB
    start, stop = bounds
    with torch_threads(1):
        return lrp_scores(exprs[start:stop], probe, metric, config, init, "cpu", chunk)


def can_fork(device=None) -> bool:
    """Whether shares can go to forked processes: POSIX ``fork`` exists and the device is a CPU."""
    cpu = device is None or torch.device(device).type == "cpu"
    return cpu and "fork" in mp.get_all_start_methods()


def forked_lrp_scores(exprs: list[Expr], probe: Probe, metric, config, init: torch.Tensor,
                      processes: int, device=None,
                      chunk: int | None = None) -> list[tuple[bool, float | None]]:
    """``(done, score)`` per expression, as :func:`~.scores.lrp_scores`, computed in ``processes``
    shares at once (this process and ``processes - 1`` forked children)."""
    global _JOB
    if processes < 1:
        raise ValueError(f"processes must be >= 1, not {processes!r}")
    k = min(processes, len(exprs) // MIN_SHARE)
    if k <= 1 or not can_fork(device if device is not None else probe.target.device):
        return lrp_scores(exprs, probe, metric, config, init, device, chunk)
    parts = shares(len(exprs), k)
    _JOB = (exprs, probe, metric, config, init, chunk)
    try:
        with mp.get_context("fork").Pool(k - 1) as pool:
            others = pool.map_async(_screen_share, parts[1:])
            first = _screen_share(parts[0])
            rest = others.get()
    finally:
        _JOB = None
    return first + [r for part in rest for r in part]


__all__ = ["forked_lrp_scores", "shares", "can_fork", "MIN_SHARE"]
