"""Splitting a population into programs that fit a memory budget, and shared helpers of the
stage runners.

Contract. :func:`chunk_size` estimates how many candidates fit :data:`MEMORY_BUDGET`;
:func:`chunk_programs` yields ``(indices, Program)`` per chunk for the supported expressions only
(the others are left for the reference path); :func:`unique_exprs` deduplicates a population
(identical candidates are evaluated once); :func:`stacked_copies` repeats one prediction for
every candidate; :func:`resolve_device` is where a stage's batched pass computes.
"""
from __future__ import annotations

import math

import torch

from lossforge.evaluation.batched.program import Program
from lossforge.evaluation.batched.support import supported
from lossforge.evaluation.probes import Probe
from lossforge.expr.expr import Expr


#: Default memory budget (bytes) for the value/gradient stores of one chunk.
MEMORY_BUDGET = 512 * 2**20
#: Upper bound on the candidates of one chunk (tiny probes).
MAX_CHUNK = 1024


# ---- chunking -----------------------------------------------------------------------------------
def chunk_size(exprs: list[Expr], probe: Probe, budget: int = MEMORY_BUDGET) -> int:
    """Candidates per chunk so that one chunk's buffers stay within ``budget`` bytes.

    Estimate: every node of a candidate (its tree size, an upper bound on its rows) costs about
    6 tensors of the prediction's size (value, gathered arguments, gradient edges, pulled
    gradients, saved intermediates).
    """
    if not exprs:
        return 1
    numel = math.prod(probe.pred_shape)
    sizes = [e.size() for e in exprs[:4096]]
    rows = sum(sizes) / len(sizes) + 0.05 * max(sizes) + 2
    per = rows * numel * 4 * 6
    return int(max(1, min(MAX_CHUNK, budget // per)))


def unique_exprs(exprs: list[Expr]) -> tuple[list[Expr], list[int]]:
    """(the distinct expressions in first-seen order, the index into them of every expression)."""
    first: dict[Expr, int] = {}
    uniq: list[Expr] = []
    where = []
    for e in exprs:
        if e not in first:
            first[e] = len(uniq)
            uniq.append(e)
        where.append(first[e])
    return uniq, where


def chunk_programs(exprs: list[Expr], probe: Probe, device, chunk: int | None):
    """Yield (indices into ``exprs``, Program) per chunk; unsupported expressions are left out
    (their result stays ``None`` for the caller to compute with the reference)."""
    ok = [j for j, e in enumerate(exprs) if supported(e, probe)]
    size = chunk or chunk_size([exprs[j] for j in ok], probe)
    for lo in range(0, len(ok), size):
        idx = ok[lo:lo + size]
        yield idx, Program([exprs[j] for j in idx], probe, device)


def resolve_device(stage, device) -> torch.device:
    """``device``, else the stage's ``device`` attribute, else the device of its probe."""
    if device is None:
        device = getattr(stage, "device", None)
    if device is None:
        return stage.probe.target.device
    return torch.device(device)


def stacked_copies(pred: torch.Tensor, n: int, device, dtype) -> torch.Tensor:
    """``n`` stacked copies of ``pred``, as a new tensor: callers update it in place (the LRP's
    optimiser), which must never reach ``pred`` (for ``n == 1`` a plain ``expand().contiguous()``
    would return a view of it)."""
    out = pred.to(device=device, dtype=dtype).unsqueeze(0).expand(n, *pred.shape)
    return out.clone(memory_format=torch.contiguous_format)


__all__ = ["MAX_CHUNK", "MEMORY_BUDGET", "chunk_programs", "chunk_size", "resolve_device",
           "stacked_copies", "unique_exprs"]
