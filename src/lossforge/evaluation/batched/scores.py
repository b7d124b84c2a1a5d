"""Vectorised scores of the screening stages on lists of expressions: pure functions.

Contract. :func:`checks_reasons`, :func:`fingerprints` and :func:`lrp_scores` are the vectorised
counterparts of :func:`~lossforge.evaluation.checks.numeric_reason`, the GEC fingerprint
(:meth:`~lossforge.evaluation.gec.GradientEquivalence.fingerprint`, formatted by the same
:func:`~lossforge.evaluation.gec.format_fingerprint`) and
:func:`~lossforge.evaluation.lrp.lrp_score`. They read expressions and probes and return one
answer per expression, in order; they change no candidate and no stage (the runners of
:mod:`~lossforge.evaluation.batched.runners` do). Each answers "not done" (``None`` /
``done=False``) for an expression the program cannot represent: the caller then uses the
reference for it. :func:`torch_threads` sets torch's intra-op threads for a block (the runners
and the forked LRP shares run under it).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from lossforge.evaluation.batched.box_lrp import box_lrp_scores
from lossforge.evaluation.batched.chunks import chunk_programs, stacked_copies, unique_exprs
from lossforge.evaluation.batched.optim import optimise
from lossforge.evaluation.checks import NOISE_GRADIENT, same_value_for_labels, zero_gradient
from lossforge.evaluation.gec import format_fingerprint
from lossforge.evaluation.lrp import improvement, metric_value
from lossforge.evaluation.probes import Probe
from lossforge.expr.expr import Expr


# ---- stage 1: checks ----------------------------------------------------------------------------
def checks_reasons(exprs: list[Expr], probe: Probe, pred: torch.Tensor, alt: Probe,
                   device=None, chunk: int | None = None) -> list[str | None]:
    """:func:`~lossforge.evaluation.checks.numeric_reason` of every expression, vectorised
    (``None`` for an expression the program does not support: use the reference for it)."""
    uniq, where = unique_exprs(exprs)
    res: list[str | None] = [None] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    with torch.inference_mode():
        for idx, prog in chunk_programs(uniq, probe, dev, chunk):
            X = stacked_copies(pred, len(idx), dev, prog.dtype)
            v1, g1 = prog.run(X)
            prog.bind(alt)
            v2, g2 = prog.run(X)
            flat1, flat2 = g1.flatten(1), g2.flatten(1)
            fin_v = torch.isfinite(v1)
            fin_g = torch.isfinite(flat1).all(1)
            # a gradient at rounding-noise level and two values equal up to rounding are judged
            # again by the reference's float64 tests (their float32 last bits depend on the
            # summation order, even on the memory layout)
            maybe_zero = flat1.abs().amax(1).double() <= NOISE_GRADIENT
            close = ((flat2 - flat1).abs() <= 1e-8 + 1e-5 * flat1.abs()).all(1)
            v1d, v2d = v1.double(), v2.double()
            near = torch.isfinite(v2) & fin_v & close & \
                ((v2d - v1d).abs() <= 1e-4 * (1 + v1d.abs()))
            zero = torch.zeros_like(maybe_zero)
            same_v = torch.zeros_like(near)
            for j in (maybe_zero & fin_v & fin_g).nonzero().flatten().tolist():
                zero[j] = zero_gradient(prog.exprs[j], probe, pred)  # run() keeps the order
            for j in near.nonzero().flatten().tolist():
                same_v[j] = same_value_for_labels(prog.exprs[j], probe, alt, pred)
            flags = torch.stack([fin_v, fin_g, zero, same_v]).cpu().tolist()  # same_v: close too
            for j, (fv, fg, zg, nodep) in zip(idx, zip(*flags)):
                if not fv:
                    res[j] = "non-finite value on the probe"
                elif not fg:
                    res[j] = "non-finite gradient on the probe"
                elif zg:
                    res[j] = "zero gradient with respect to the prediction"
                elif nodep:
                    res[j] = "does not depend on the label"
                else:
                    res[j] = ""
    return [res[w] for w in where]


# ---- stage 2: GEC -------------------------------------------------------------------------------
def fingerprints(exprs: list[Expr], probe: Probe, pred: torch.Tensor, device=None,
                 chunk: int | None = None) -> list[tuple[bool, str | None]]:
    """``(done, fingerprint)`` per expression, vectorised; ``done`` is False for an expression the
    program does not support (compute it with the reference)."""
    uniq, where = unique_exprs(exprs)
    res: list[tuple[bool, str | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    with torch.inference_mode():
        for idx, prog in chunk_programs(uniq, probe, dev, chunk):
            _, g = prog.run(stacked_copies(pred, len(idx), dev, prog.dtype))
            norms = g.flatten(2).norm(dim=2).cpu().tolist()
            for j, row in zip(idx, norms):
                res[j] = (True, format_fingerprint(row))
    return [res[w] for w in where]


# ---- stage 3: LRP -------------------------------------------------------------------------------
def lrp_scores(exprs: list[Expr], probe: Probe, metric, config, init: torch.Tensor,
               device=None, chunk: int | None = None) -> list[tuple[bool, float | None]]:
    """``(done, score)`` per expression as :func:`~lossforge.evaluation.lrp.lrp_score`, vectorised;
    ``done`` is False for an expression the program does not support (use the reference)."""
    if probe.kind == "box":  # not a Program: the stacked reference of batched/box_lrp.py
        return [(True, s) for s in box_lrp_scores(exprs, probe, metric, config, init)]
    uniq, where = unique_exprs(exprs)
    res: list[tuple[bool, float | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    target = probe.target.cpu().numpy()
    base = metric_value(metric, probe, init)
    with torch.inference_mode():
        for idx, prog in chunk_programs(uniq, probe, dev, chunk):
            X, alive = optimise(prog, init, config)
            ok = (alive & torch.isfinite(X).flatten(1).all(1)).cpu().tolist()
            # each candidate's metric, as lrp.metric_value (argmax of the logits)
            labels = (X.argmax(dim=2) if probe.kind == "classification" else X).cpu().numpy()
            for j, good, lab in zip(idx, ok, labels):
                if good:
                    res[j] = (True, improvement(metric, probe, base, float(metric.fn(lab, target))))
                else:
                    res[j] = (True, None)
    return [res[w] for w in where]


# ---- threads ------------------------------------------------------------------------------------
#: Default torch intra-op threads of :func:`~lossforge.evaluation.batched.runners.run_stage`.
#: The batched kernels work on small tensors: on a small shared machine, extra OpenMP threads
#: waiting for a busy core stall every parallel kernel (measured on 2 cores under load: 2 threads
#: ~9x slower than 1).
DEFAULT_THREADS = 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` and restore the previous count after (also
    on error). ``None``: leave the setting as it is. The setting is process-wide: concurrent
    callers in other Python threads see it too."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1 or None, not {n!r}")
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["DEFAULT_THREADS", "checks_reasons", "fingerprints", "lrp_scores", "torch_threads"]
