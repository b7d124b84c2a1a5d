"""The funnel of a joint search: candidates are bundles (one loss per slot of the task).

Each part of a bundle is screened by its own slot's stages (a per-slot
:class:`~lossforge.evaluation.funnel.Funnel`: that slot's probes, checks, GEC fingerprint and LRP);
a bundle is rejected at the first stage where any part fails (reason ``"<slot>: <why>"``). GEC: the
bundle's fingerprint is its parts' fingerprints joined (``"cls=<fp>|box=<fp>"``; none if a part has
none), so a bundle reuses an earlier result only when every part is gradient-equivalent to the
matching part of one earlier bundle. ``lrp_score`` is the smallest part score. The proxy trains
the task's model with all the bundle's parts at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lossforge.evaluation.candidate import (GEC_HIT, REJECTED_CHECKS, REJECTED_LRP, STAGES,
                                            STOPPED_BY, Candidate)
from lossforge.evaluation.funnel import Funnel, FunnelConfig, train_and_report
from lossforge.evaluation.proxy import ProxyTraining
from lossforge.evaluation.stage import StageStats, timed
from lossforge.expr.bundle import Bundle
from lossforge.tasks import Task


class _StageTotals:
    """Stats of one screening stage summed over the slots (the study reads ``stats.seconds``)."""

    def __init__(self, name: str):
        self.name = name
        self.stats = StageStats(name)
        self.known: dict[str, str] = {}  # gec: joint fingerprint -> bundle text


@dataclass
class JointFunnel:
    """Screens and trains bundles; same protocol as :class:`Funnel` (``run``, ``calibrate``,
    ``calibration_state``/``load_calibration``, ``checks/gec/lrp/proxy`` with ``stats``)."""

    task: Task
    metric: str
    config: FunnelConfig = FunnelConfig()
    executor: object = None
    known_results: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self):
        self.parts = {s.name: Funnel(self.task, self.metric, self.config, None, slot=s.name)
                      for s in self.task.loss_slots()}
        # the screening stages (those that stop a candidate): checks, gec, lrp
        self.checks, self.gec, self.lrp = (_StageTotals(n) for n in STAGES if n in STOPPED_BY)
        self.proxy = ProxyTraining(self.task, self.metric, self.config.proxy, self.executor)
        self._batched = None
        if self.config.batched:
            from lossforge.evaluation import batched

            self._batched = batched
        self.calibration: dict[str, dict] = {}

    def calibrate(self) -> dict[str, dict]:
        """Calibrate every slot's LRP with the hand-made losses of its kind."""
        self.calibration = {name: f.calibrate() for name, f in self.parts.items()}
        return self.calibration

    def calibration_state(self) -> dict:
        return {"joint": True, "slots": {n: f.calibration_state() for n, f in self.parts.items()}}

    def load_calibration(self, state: dict) -> None:
        for n, f in self.parts.items():
            f.load_calibration(state["slots"][n])
        self.calibration = {n: f.calibration for n, f in self.parts.items()}

    # ---- stages --------------------------------------------------------------------------------
    def _screen(self, stage_of, totals: _StageTotals, cands: list[Candidate]) -> list:
        """Run one screening stage on every part of the pending bundles; returns
        ``[(candidate, {slot: part candidate})]``."""
        pending = [c for c in cands if not c.done]
        out: list[tuple[Candidate, dict[str, Candidate]]] = [(c, {}) for c in pending]
        with timed(totals.stats):
            totals.stats.n_in += len(pending)
            for name, funnel in self.parts.items():
                subs = [Candidate(c.expr[name]) for c in pending]
                stage = stage_of(funnel)
                if self._batched is not None:
                    self._batched.run_stage(stage, subs)
                else:
                    stage(subs)
                for (_, parts), sub in zip(out, subs):
                    parts[name] = sub
        return out

    def run(self, bundles: list[Bundle], on_result=None) -> list[Candidate]:
        """Evaluate ``bundles``; one finished :class:`Candidate` each, in order (see
        :meth:`Funnel.run` for ``on_result``)."""
        cands = [Candidate(b) for b in bundles]
        # checks: a part may come back re-oriented; any failing part rejects the bundle
        for cand, subs in self._screen(lambda f: f.checks, self.checks, cands):
            bad = [(n, s) for n, s in subs.items() if s.status == REJECTED_CHECKS]
            if bad:
                cand.reject(REJECTED_CHECKS, "; ".join(f"{n}: {s.reason}" for n, s in bad))
            else:
                self.checks.stats.n_out += 1
                cand.expr = Bundle(tuple((n, s.expr) for n, s in subs.items()))
        if self.config.use_gec:
            self._gec(cands)
        if self.config.use_lrp:
            for cand, subs in self._screen(lambda f: f.lrp, self.lrp, cands):
                scores = [s.lrp_score for s in subs.values()]
                cand.lrp_score = None if any(v is None for v in scores) else min(scores)
                bad = [(n, s) for n, s in subs.items() if s.status == REJECTED_LRP]
                if bad:
                    cand.reject(REJECTED_LRP, "; ".join(f"{n}: {s.reason}" for n, s in bad))
                else:
                    self.lrp.stats.n_out += 1
        return train_and_report(cands, self.proxy, self.known_results, on_result)

    def _gec(self, cands: list[Candidate]) -> None:
        pending = [c for c in cands if not c.done]
        with timed(self.gec.stats):
            parts = {n: [Candidate(c.expr[n]) for c in pending] for n in self.parts}
            for n, subs in parts.items():
                stage = self.parts[n].gec
                fps = (self._batched.fingerprints([s.expr for s in subs], stage.probe, stage.pred)
                       if self._batched is not None else [(False, None)] * len(subs))
                for s, (ok, fp) in zip(subs, fps):
                    s.fingerprint = fp if ok else stage.fingerprint(s.expr)
            for j, c in enumerate(pending):
                fps = [(n, parts[n][j].fingerprint) for n in self.parts]
                c.fingerprint = (None if any(fp is None for _, fp in fps)
                                 else "|".join(f"{n}={fp}" for n, fp in fps))
                self.gec.stats.n_in += 1
                known = self.gec.known
                if c.fingerprint is not None and c.fingerprint in known:
                    c.status, c.same_as = GEC_HIT, known[c.fingerprint]
                    c.reason = f"gradient-equivalent to {known[c.fingerprint]}"
                    continue
                if c.fingerprint is not None:
                    known.setdefault(c.fingerprint, str(c.expr))
                self.gec.stats.n_out += 1

    def stats(self) -> dict[str, dict]:
        """Each stage's counts and seconds (screens summed over the slots), in ``STAGES`` order."""
        return {name: getattr(self, name).stats.to_dict() for name in STAGES}


__all__ = ["JointFunnel"]
