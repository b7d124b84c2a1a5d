"""Batched runners of the screening stages (checks, GEC, LRP) and the entry point ``run_stage``.

Contract. ``run_stage(stage, candidates)`` takes the same decisions as ``stage(candidates)`` (the
per-candidate reference path), updates ``stage.stats`` the same way and sets the same candidate
fields. :func:`checks_reasons`, :func:`fingerprints` and :func:`lrp_scores` are the vectorised
counterparts of ``checks.numeric_reason``, ``gec`` fingerprints and ``lrp.lrp_score`` on lists of
expressions; each answers "not done" (``None`` / ``done=False``) for an expression the program
cannot represent, and the runners then call the reference for it. ``run_stage`` runs with
``threads`` torch intra-op threads (:func:`torch_threads`; default 1) and restores the count after.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from lossforge.evaluation.batched.chunks import (
    _programs, _reference_value, _resolve_device, _stacked, _unique)
from lossforge.evaluation.batched.optim import optimise
from lossforge.evaluation.candidate import REJECTED_CHECKS, Candidate
from lossforge.evaluation.probes import Probe
from lossforge.evaluation.stage import timed
from lossforge.expr import apply
from lossforge.expr.expr import Expr


# ---- stage 1: checks ----------------------------------------------------------------------------
def checks_reasons(exprs: list[Expr], probe: Probe, pred: torch.Tensor, alt: Probe,
                   device=None, chunk: int | None = None) -> list[str | None]:
    """:func:`~lossforge.evaluation.checks.numeric_reason` of every expression, vectorised
    (``None`` for an expression the program does not support: use the reference for it)."""
    uniq, where = _unique(exprs)
    res: list[str | None] = [None] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    with torch.inference_mode():
        for idx, prog in _programs(uniq, probe, dev, chunk):
            X = _stacked(pred, len(idx), dev, prog.dtype)
            v1, g1 = prog.run(X)
            prog.bind(alt)
            v2, g2 = prog.run(X)
            flat1, flat2 = g1.flatten(1), g2.flatten(1)
            fin_v = torch.isfinite(v1)
            fin_g = torch.isfinite(flat1).all(1)
            zero = flat1.abs().amax(1).double() <= 1e-12
            close = ((flat2 - flat1).abs() <= 1e-8 + 1e-5 * flat1.abs()).all(1)
            # label dependence: the reference compares the two values to ~1e-9, i.e. bit for bit
            # in float32, and its last bits depend on the summation order (even on the memory
            # layout). Values that are equal up to rounding are recomputed with the reference.
            v1d, v2d = v1.double(), v2.double()
            diff = (v2d - v1d).abs()
            same_v = torch.isfinite(v2) & (diff <= 1e-9 * (1 + v1d.abs()))
            near = torch.isfinite(v2) & fin_v & (diff <= 1e-4 * (1 + v1d.abs())) & close
            for j in near.nonzero().flatten().tolist():
                e = prog.exprs[j]   # run() answers in the given order
                a, b = _reference_value(e, probe, pred), _reference_value(e, alt, pred)
                same_v[j] = bool(torch.isfinite(b)) and \
                    abs(float(b - a)) <= 1e-9 * (1 + abs(float(a)))
            flags = torch.stack([fin_v, fin_g, zero, same_v & close]).cpu().tolist()
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


def _run_checks(stage, candidates: list[Candidate], device, chunk) -> None:
    from lossforge.evaluation.checks import integrity, numeric_reason, structural_reason

    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        reasons: dict[int, str | None] = {}
        numeric: list[Candidate] = []
        for c in pending:
            stage.stats.n_in += 1
            why = structural_reason(c.expr)
            if not why and stage.config.integrity and stage.probe.kind == "classification":
                why, flip = integrity(c.expr, stage.config.integrity_points)
                if not why and flip:
                    c.expr = apply("neg", c.expr)
            if why:
                reasons[id(c)] = why
            else:
                numeric.append(c)
        found = checks_reasons([c.expr for c in numeric], stage.probe, stage.pred, stage.alt,
                               device, chunk)
        for c, why in zip(numeric, found):
            if why is None:  # not vectorisable: the reference decides (and raises what it raises)
                why = numeric_reason(c.expr, stage.probe, stage.pred, stage.alt)
            reasons[id(c)] = why
        for c in pending:
            why = reasons[id(c)]
            if why:
                c.reject(REJECTED_CHECKS, why)
            else:
                stage.stats.n_out += 1


# ---- stage 2: GEC -------------------------------------------------------------------------------
def fingerprints(exprs: list[Expr], probe: Probe, pred: torch.Tensor, device=None,
                 chunk: int | None = None) -> list[tuple[bool, str | None]]:
    """``(done, fingerprint)`` per expression, vectorised; ``done`` is False for an expression the
    program does not support (compute it with the reference)."""
    uniq, where = _unique(exprs)
    res: list[tuple[bool, str | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    with torch.inference_mode():
        for idx, prog in _programs(uniq, probe, dev, chunk):
            _, g = prog.run(_stacked(pred, len(idx), dev, prog.dtype))
            norms = g.flatten(2).norm(dim=2).cpu().tolist()
            for j, row in zip(idx, norms):
                res[j] = (True, _format_fingerprint(row))
    return [res[w] for w in where]


def _format_fingerprint(norms: list[float]) -> str | None:
    """:func:`~lossforge.evaluation.gec.format_fingerprint` of a row of floats."""
    if not all(math.isfinite(v) for v in norms):
        return None
    return ",".join(f"{v:.1e}" for v in norms)


def _run_gec(stage, candidates: list[Candidate], device, chunk) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        found = fingerprints([c.expr for c in pending], stage.probe, stage.pred, device, chunk)
        for c, (ok, fp) in zip(pending, found):
            c.fingerprint = fp if ok else stage.fingerprint(c.expr)
            stage.mark(c)


# ---- stage 3: LRP -------------------------------------------------------------------------------
def lrp_scores(exprs: list[Expr], probe: Probe, metric, config, init: torch.Tensor,
               device=None, chunk: int | None = None) -> list[tuple[bool, float | None]]:
    """``(done, score)`` per expression as :func:`~lossforge.evaluation.lrp.lrp_score`, vectorised;
    ``done`` is False for an expression the program does not support (use the reference)."""
    from lossforge.evaluation.lrp import metric_value

    if probe.kind == "box":  # not a Program: the stacked reference of batched/boxes.py
        from lossforge.evaluation.batched.boxes import box_lrp_scores

        return [(True, s) for s in box_lrp_scores(exprs, probe, metric, config, init)]
    uniq, where = _unique(exprs)
    res: list[tuple[bool, float | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    target = probe.target.cpu().numpy()
    base = metric_value(metric, probe, init)
    with torch.inference_mode():
        for idx, prog in _programs(uniq, probe, dev, chunk):
            X, alive = optimise(prog, init, config)
            ok = (alive & torch.isfinite(X).flatten(1).all(1)).cpu().tolist()
            # each candidate's metric, as lrp.metric_value (argmax of the logits)
            labels = (X.argmax(dim=2) if probe.kind == "classification" else X).cpu().numpy()
            for j, good, lab in zip(idx, ok, labels):
                if good:
                    res[j] = (True, metric.sign * (float(metric.fn(lab, target)) - base))
                else:
                    res[j] = (True, None)
    return [res[w] for w in where]


def _run_lrp(stage, candidates: list[Candidate], device, chunk, processes: int = 1) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        # forked_lrp_scores is lrp_scores in this process for processes=1 (or a small population)
        from lossforge.evaluation.batched.forked import forked_lrp_scores

        found = forked_lrp_scores([c.expr for c in pending], stage.probe, stage.metric,
                                  stage.config, stage.init, processes, device, chunk)
        for c, (ok, score) in zip(pending, found):
            stage.decide(c, score if ok else stage.score(c.expr))


# ---- threads ------------------------------------------------------------------------------------
#: Default torch intra-op threads of :func:`run_stage`. The batched kernels work on small tensors:
#: on a small shared machine, extra OpenMP threads waiting for a busy core stall every parallel
#: kernel (measured on 2 cores under load: 2 threads ~9x slower than 1).
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
# ---- entry point --------------------------------------------------------------------------------
def run_stage(stage, candidates: list[Candidate], device=None, chunk: int | None = None,
              threads: int | None = DEFAULT_THREADS, processes: int = 1) -> None:
    """Run the screening ``stage`` on ``candidates`` with the vectorised path.

    ``stage``: a :class:`~lossforge.evaluation.checks.Checks`,
    :class:`~lossforge.evaluation.gec.GradientEquivalence` or
    :class:`~lossforge.evaluation.lrp.LossRejection` (any other stage runs as
    ``stage(candidates)``, untouched). Same decisions, candidate fields and ``stage.stats`` as the
    reference path. ``device``: where to compute (default: the stage's ``device`` attribute when it
    has one, else the device of its probe), e.g. ``"cuda"``; ``chunk``: candidates per vectorised
    pass (default: sized by :data:`~lossforge.evaluation.batched.chunks.MEMORY_BUDGET`);
    ``threads``: torch intra-op threads while a screening stage runs (default
    :data:`DEFAULT_THREADS`, restored after; ``None``: leave the setting as it is);
    ``processes``: CPU processes sharing the LRP (:mod:`~.forked`: this one and ``processes - 1``
    forked children, one thread each; same results).
    """
    from lossforge.evaluation.checks import Checks
    from lossforge.evaluation.gec import GradientEquivalence
    from lossforge.evaluation.lrp import LossRejection

    if isinstance(stage, Checks):
        with torch_threads(threads):
            _run_checks(stage, candidates, _resolve_device(stage, device), chunk)
    elif isinstance(stage, GradientEquivalence):
        with torch_threads(threads):
            _run_gec(stage, candidates, _resolve_device(stage, device), chunk)
    elif isinstance(stage, LossRejection):
        with torch_threads(threads):
            _run_lrp(stage, candidates, _resolve_device(stage, device), chunk, processes)
    else:
        stage(candidates)
