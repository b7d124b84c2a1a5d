"""Batched runners of the screening stages (checks, GEC, LRP) and the entry point ``run_stage``.

Contract. ``run_stage(stage, candidates)`` takes the same decisions as ``stage(candidates)`` (the
per-candidate reference path), updates ``stage.stats`` the same way and sets the same candidate
fields. The runners get their numbers from the pure, vectorised
:mod:`~lossforge.evaluation.batched.scores` (the LRP's through
:mod:`~lossforge.evaluation.batched.forked`), call the reference for an expression those answer
"not done" for, and then let the stage decide (``stage.mark``, ``stage.decide``, rejections), as
the reference path does. ``run_stage`` runs with ``threads`` torch intra-op threads
(:func:`~lossforge.evaluation.batched.scores.torch_threads`; default 1) and restores the count
after.
"""
from __future__ import annotations

from lossforge.evaluation.batched.chunks import resolve_device
from lossforge.evaluation.batched.forked import forked_lrp_scores
from lossforge.evaluation.batched.scores import (
    DEFAULT_THREADS, checks_reasons, fingerprints, torch_threads)
from lossforge.evaluation.candidate import REJECTED_CHECKS, Candidate
from lossforge.evaluation.checks import Checks, integrity, numeric_reason, structural_reason
from lossforge.evaluation.gec import GradientEquivalence
from lossforge.evaluation.lrp import LossRejection
from lossforge.evaluation.stage import timed
from lossforge.expr import apply


# ---- stage 1: checks ----------------------------------------------------------------------------
def _run_checks(stage, candidates: list[Candidate], device, chunk) -> None:
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
def _run_gec(stage, candidates: list[Candidate], device, chunk) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        found = fingerprints([c.expr for c in pending], stage.probe, stage.pred, device, chunk)
        for c, (ok, fp) in zip(pending, found):
            c.fingerprint = fp if ok else stage.fingerprint(c.expr)
            stage.mark(c)


# ---- stage 3: LRP -------------------------------------------------------------------------------
def _run_lrp(stage, candidates: list[Candidate], device, chunk, processes: int = 1) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        # forked_lrp_scores is lrp_scores in this process for processes=1 (or a small population)
        found = forked_lrp_scores([c.expr for c in pending], stage.probe, stage.metric,
                                  stage.config, stage.init, processes, device, chunk)
        for c, (ok, score) in zip(pending, found):
            stage.decide(c, score if ok else stage.score(c.expr))


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
    :data:`~lossforge.evaluation.batched.scores.DEFAULT_THREADS`, restored after; ``None``: leave
    the setting as it is);
    ``processes``: CPU processes sharing the LRP (:mod:`~.forked`: this one and ``processes - 1``
    forked children, one thread each; same results).
    """
    if isinstance(stage, Checks):
        with torch_threads(threads):
            _run_checks(stage, candidates, resolve_device(stage, device), chunk)
    elif isinstance(stage, GradientEquivalence):
        with torch_threads(threads):
            _run_gec(stage, candidates, resolve_device(stage, device), chunk)
    elif isinstance(stage, LossRejection):
        with torch_threads(threads):
            _run_lrp(stage, candidates, resolve_device(stage, device), chunk, processes)
    else:
        stage(candidates)


__all__ = ["run_stage"]
