"""The funnel: cheap ➜ expensive stages, stopping each candidate at the first that rejects it.

``checks → gec → lrp → proxy`` (DESIGN.md §5; :data:`~lossforge.evaluation.candidate.STAGES`): a
funnel holds each stage as the attribute of that name. Every stage counts candidates in/out and
seconds.
GEC hits take the result of the loss they are equivalent to, whether that was evaluated in this
batch or earlier (``known_results``, filled by the study from its store on resume).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

from lossforge.evaluation.candidate import GEC_HIT, STAGES, Candidate
from lossforge.evaluation.checks import Checks, ChecksConfig
from lossforge.evaluation.gec import GECConfig, GradientEquivalence
from lossforge.evaluation.lrp import (BOX_LR_SCALE, BOX_THRESHOLD_SCALE, LossRejection,
                                      LRPConfig, calibrate, slot_metric)
from lossforge.evaluation.probes import slot_probe
from lossforge.evaluation.fidelity import make_proxy_stage
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.expr import Expr, parse
from lossforge.tasks import Task

log = logging.getLogger(__name__)

#: Hand-made losses that must pass the LRP, by loss kind (used by ``calibrate``).
BASELINES = {
    "classification": ["-sum_c(y * log(p))", "-sum_c(y * square(1 - p) * log(p))",
                       "sum_c(square(p - y))"],
    # mse, mae and the zoo's robust huber (delta 1) and barron (alpha 0, c 1): issue 17
    "regression": ["mean_c(square(f - y))", "mean_c(abs(f - y))",
                   "mean_c(0.5 * square(min(abs(f - y), 1)) + abs(f - y) - min(abs(f - y), 1))",
                   "mean_c(log(0.5 * square(f - y) + 1))"],
    "box": ["1 - i / u", "1 - i / u + (e - u) / e"],  # the zoo's iou and giou
}


@dataclass(frozen=True)
class FunnelConfig:
    """Which stages run and their settings. JSON-friendly via :meth:`to_dict`."""

    checks: ChecksConfig = ChecksConfig()
    gec: GECConfig = GECConfig()
    lrp: LRPConfig = LRPConfig()
    proxy: ProxyStageConfig = ProxyStageConfig()
    use_gec: bool = True
    use_lrp: bool = True
    probe_samples: int = 8
    batched: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FunnelConfig":
        return cls(checks=ChecksConfig(**d.get("checks", {})), gec=GECConfig(**d.get("gec", {})),
                   lrp=LRPConfig(**d.get("lrp", {})), proxy=ProxyStageConfig(**d.get("proxy", {})),
                   **{k: v for k, v in d.items() if k not in STAGES})


@dataclass
class Funnel:
    """Runs candidates through the stages. ``known_results``: formula -> fitness (or ``None``) of
    every loss evaluated so far, so that GEC hits can reuse them.

    ``slot``: the loss slot the candidates are for (default: the task's only slot; required for a
    multi-slot task); ``fixed``: losses of the other slots during proxy training (slot -> zoo name
    or formula; slots not named use their ``default``). The screening stages use the slot's probe
    (:func:`~lossforge.evaluation.probes.slot_probe`, targets from
    :meth:`~lossforge.tasks.Task.probe_targets`: the screening never needs the task's data loop,
    model or training function); the LRP scores the task's
    :meth:`~lossforge.tasks.Task.screening_metric` (its metric, or a stand-in when the metric is
    computed by the task's own loop) for a
    single-slot task, else the slot kind's :func:`~lossforge.evaluation.lrp.slot_metric` (box
    slots: mean IoU, threshold ``BOX_THRESHOLD_SCALE`` and lr ``BOX_LR_SCALE`` times the configured
    ones; box LRPs run stacked, :mod:`~lossforge.evaluation.batched.box_lrp`).
    """

    task: Task
    metric: str
    config: FunnelConfig = FunnelConfig()
    executor: object = None
    known_results: dict[str, float | None] = field(default_factory=dict)
    slot: str | None = None
    fixed: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        cfg = self.config
        slots = self.task.loss_slots()
        if self.slot is None:
            if len(slots) > 1:
                raise ValueError(f"task {self.task.name!r} has loss slots "
                                 f"{', '.join(s.name for s in slots)}: name the slot to screen")
            self.slot = slots[0].name
        slot = self.task.slot(self.slot)
        self.kind = slot.kind
        probe = slot_probe(self.task, slot.name, cfg.probe_samples, cfg.checks.seed,
                           cfg.lrp.spatial_size)
        lrp_probe = slot_probe(self.task, slot.name, cfg.lrp.samples, cfg.lrp.seed,
                               cfg.lrp.spatial_size)
        self.checks = Checks(probe, cfg.checks)
        self.gec = GradientEquivalence(probe, cfg.gec)
        # Dense probes: the loss is a mean over pixels, so scale the step by the pixels per sample
        # for a pixel's logits to move as a sample's do in classification. Regression probes
        # (dense or not) run Adam with a step in target units (lrp.regression_config): no scaling.
        dense = slot.kind == "classification"
        pixels = int(lrp_probe.target[0].numel()) if dense else 1
        if slot.kind == "box":
            pixels = BOX_LR_SCALE
        lrp_cfg = replace(cfg.lrp, lr=cfg.lrp.lr * pixels)
        if len(slots) == 1 and slot.kind != "box":  # a task with its own loop: maybe a stand-in
            metric = getattr(self.task, "screening_metric", self.task.metric)(self.metric)
        else:
            metric = slot_metric(slot.kind)
        if slot.kind == "box":
            lrp_cfg = replace(lrp_cfg, threshold=cfg.lrp.threshold * BOX_THRESHOLD_SCALE)
        self.lrp = LossRejection(lrp_probe, metric, lrp_cfg)
        fixed = dict(self.fixed) if len(slots) > 1 else None
        self.proxy = make_proxy_stage(self.task, self.metric, cfg.proxy, self.executor,
                                      slot=slot.name if fixed is not None else None, fixed=fixed)
        self._batched = None
        if cfg.batched:
            from lossforge.evaluation import batched

            self._batched = batched
        self.calibration: dict[str, float | None] = {}

    @property
    def stages(self) -> list:
        """The stages that run (GEC and LRP may be switched off), in :data:`STAGES` order."""
        off = {"gec": not self.config.use_gec, "lrp": not self.config.use_lrp}
        return [getattr(self, name) for name in STAGES if not off.get(name)]

    def calibrate(self) -> dict[str, float | None]:
        """Check that the hand-made losses pass the LRP (adjusting the threshold if not)."""
        if self.config.use_lrp:
            baselines = [parse(f) for f in BASELINES[self.kind]]
            self.calibration = calibrate(self.lrp, baselines)
        return self.calibration

    def run(self, exprs: list[Expr], on_result=None) -> list[Candidate]:
        """Evaluate ``exprs``; returns one finished :class:`Candidate` each, in order.

        ``on_result(index, candidate)`` is called the moment a candidate's result is final (GEC
        hits last, once the loss they reuse is finished), so the caller can persist it at once.
        """
        cands = [Candidate(e) for e in exprs]
        screens = [s for s in self.stages if s is not self.proxy]
        for stage in screens:
            if self._batched is not None:
                self._batched.run_stage(stage, cands)
                if stage is self.checks:  # the vectorised checks leave out the opt-in scale check
                    self.checks.screen_scale(cands)
            else:
                stage(cands)
        return train_and_report(cands, self.proxy, self.known_results, on_result)

    def stats(self) -> dict[str, dict]:
        """Each stage's counts and seconds, in :data:`STAGES` order."""
        return {name: getattr(self, name).stats.to_dict() for name in STAGES}

    # ---- what a study stores about the calibration -------------------------------------------
    def calibration_state(self) -> dict:
        """JSON: the calibration scores and the LRP settings in force (see :meth:`load_calibration`)."""
        return {"scores": self.calibration, "lrp": asdict(self.lrp.config)}

    def load_calibration(self, state: dict) -> None:
        """Restore what :meth:`calibration_state` wrote (a resumed study skips calibrating)."""
        self.lrp.config = LRPConfig(**state["lrp"])
        self.calibration = state.get("scores", {})


def train_and_report(cands: list[Candidate], proxy, known_results: dict[str, float | None],
                     on_result=None) -> list[Candidate]:
    """The end of a funnel run, shared by :class:`Funnel` and the joint funnel: report the
    screened-out candidates, proxy-train the rest (reporting each as it finishes), then resolve
    the GEC hits from ``known_results`` (canonical text -> fitness, updated here)."""
    index = {id(c): i for i, c in enumerate(cands)}
    notify = (lambda c: on_result(index[id(c)], c)) if on_result else (lambda c: None)
    for c in cands:
        if c.done and c.status != GEC_HIT:
            known_results.setdefault(str(c.expr), c.fitness)
            notify(c)

    def trained(c: Candidate) -> None:
        known_results.setdefault(str(c.expr), c.fitness)
        notify(c)

    proxy(cands, on_done=trained)
    for c in cands:
        if c.status == GEC_HIT:
            c.fitness = known_results.get(c.same_as)
            notify(c)
    return cands
