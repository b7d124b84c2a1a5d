"""Stage 3, ``lrp``: AutoLoss-Zero's Loss-Rejection Protocol.

Randomly initialised predictions ``ŷ`` (no network) for a few real training targets are optimised
directly with the candidate loss; the score is the improvement of the task's own metric,
``g = sign · (ξ(ŷ*) − ξ(ŷ₀))`` (``sign`` = +1 when higher is better). The candidate is rejected when
``g < threshold`` or when a loss value turns non-finite. The metric is only evaluated, never
differentiated, so non-differentiable metrics work. Defaults follow the third-party settings of
FIELD.md (5 samples, 500 SGD steps, lr 1e-3, momentum 0.9, threshold 0.6 for accuracy);
:func:`calibrate` checks that hand-made losses pass and lowers the threshold if they do not.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from lossforge.evaluation.candidate import REJECTED_LRP, Candidate
from lossforge.evaluation.probes import Probe
from lossforge.evaluation.stage import StageStats, timed
from lossforge.expr import Expr
from lossforge.expr.export import loss_value
from lossforge.tasks import Metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LRPConfig:
    """Settings of the protocol. ``samples``: targets in the probe; ``spatial_size``: probe width
    for dense tasks; ``optimizer``: ``"sgd"`` (with ``momentum``) or ``"adam"``."""

    samples: int = 5
    steps: int = 500
    lr: float = 1e-3
    momentum: float = 0.9
    optimizer: str = "sgd"
    threshold: float = 0.6
    seed: int = 2024
    spatial_size: int = 32


def metric_value(metric: Metric, probe: Probe, pred: torch.Tensor) -> float:
    """The metric of the predictions (argmax of logits for classification) on the probe targets."""
    out = pred.detach()
    labels = out.argmax(dim=1) if probe.kind == "classification" else out
    return float(metric.fn(labels.cpu().numpy(), probe.target.cpu().numpy()))


def lrp_score(expr: Expr, probe: Probe, metric: Metric, config: LRPConfig,
              init: torch.Tensor) -> float | None:
    """The improvement score of one loss; ``None`` when a loss value turned non-finite."""
    x = init.clone().requires_grad_(True)
    if config.optimizer == "sgd":
        opt = torch.optim.SGD([x], lr=config.lr, momentum=config.momentum)
    else:
        opt = torch.optim.Adam([x], lr=config.lr)
    for _ in range(config.steps):
        env, mask = probe.variables(x)
        value = loss_value(expr, env, mask)
        if not torch.isfinite(value):
            return None
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    if not torch.isfinite(x).all():
        return None
    return metric.sign * (metric_value(metric, probe, x) - metric_value(metric, probe, init))


class LossRejection:
    """Stage 3 (the per-candidate reference path; :mod:`batched` is the fast one)."""

    name = "lrp"

    def __init__(self, probe: Probe, metric: Metric, config: LRPConfig = LRPConfig()):
        self.probe, self.metric, self.config = probe, metric, config
        self.init = probe.random_pred(torch.Generator().manual_seed(config.seed))
        self.stats = StageStats(self.name)

    def score(self, expr: Expr) -> float | None:
        return lrp_score(expr, self.probe, self.metric, self.config, self.init)

    def decide(self, c: Candidate, score: float | None) -> None:
        self.stats.n_in += 1
        c.lrp_score = score
        if score is None:
            c.reject(REJECTED_LRP, "non-finite loss value while optimising the probe")
        elif score < self.config.threshold:
            c.reject(REJECTED_LRP, f"metric improved by {score:.3f} < {self.config.threshold:.3f}")
        else:
            self.stats.n_out += 1

    def __call__(self, candidates: list[Candidate]) -> None:
        with timed(self.stats):
            for c in candidates:
                if not c.done:
                    self.decide(c, self.score(c.expr))


def calibrate(stage: LossRejection, baselines: list[Expr], margin: float = 0.8) -> dict[str, float]:
    """Score the hand-made ``baselines``; if one fails, lower the threshold to ``margin`` times
    the lowest baseline score (with a warning). Returns the scores by formula."""
    scores = {str(b): stage.score(b) for b in baselines}
    finite = [s for s in scores.values() if s is not None and np.isfinite(s)]
    failing = [f for f, s in scores.items() if s is None or s < stage.config.threshold]
    if failing and finite and min(finite) > 0:
        new = margin * min(finite)
        log.warning("LRP threshold %.3f rejects hand-made losses %s; lowering it to %.3f",
                    stage.config.threshold, failing, new)
        stage.config = replace(stage.config, threshold=new)
    elif failing:
        log.warning("LRP: hand-made losses %s do not improve the metric on the probe; the protocol "
                    "cannot separate losses here (consider more steps or a larger lr)", failing)
    return scores
