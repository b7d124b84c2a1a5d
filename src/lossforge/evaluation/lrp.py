"""Stage 3, ``lrp``: AutoLoss-Zero's Loss-Rejection Protocol.

Randomly initialised predictions ``ŷ`` (no network) for a few real training targets are optimised
directly with the candidate loss; the score is the improvement of the task's own metric,
``g = sign · (ξ(ŷ*) − ξ(ŷ₀))`` (``sign`` = +1 when higher is better). The candidate is rejected when
``g < threshold`` or when a loss value turns non-finite. The metric is only evaluated, never
differentiated, so non-differentiable metrics work. Defaults follow the third-party settings of
FIELD.md (5 samples, 500 SGD steps, lr 1e-3, momentum 0.9, threshold 0.6 for accuracy);
:func:`calibrate` checks that hand-made losses pass and lowers the threshold if they do not.
Box slots: the metric is the mean IoU with the real target boxes, and every second probe box
starts small and inside its target (:func:`~lossforge.evaluation.probes.box_lrp_start`).

Regression probes (:func:`improvement`, :func:`regression_config`). An error metric such as MAE,
RMSE or a keypoint error is lower-is-better, non-negative, 0 when the predictions equal the
targets, and carries the targets' units: an absolute gain of 0.6 means nothing on its own (0.6 of
what?). On a regression probe a lower-is-better metric is therefore scored by its *relative*
reduction ``g = 1 − ξ(ŷ*) / ξ(ŷ₀)``: the share of the random start's error that minimising the
loss removed, in ``(−∞, 1]`` whatever the units (1: the probe fitted exactly; 0: no better than the
start; negative: worse). The threshold keeps its meaning of "most of the attainable improvement":
``g ≥ 0.6`` means the loss removed at least 60 % of the start's error (on accuracy, where a random
start scores about 0.1 and a perfect fit 1, 0.6 is two thirds of the attainable gain). A
higher-is-better regression metric (R², a slot's stand-in) is already scale-free and keeps the
absolute gain; classification and box scores are unchanged.

A regression probe is optimised with Adam, not SGD, with a step in the targets' units
(``lr × REGRESSION_LR_SCALE × ξ₀`` where ``ξ₀`` is the start's mean absolute residual): whether a
loss is a regression loss is a question about the *direction* of its gradient (towards the
targets), while the *size* of a regression loss's gradient is arbitrary (in target units, to some
power; bounded for robust losses) and is absorbed by the Adam optimiser that every built-in
regression task trains with. Under the classification settings (SGD, lr 1e-3, a mean over 5
samples) a bounded-gradient loss moves a prediction at most ``500 · 1e-3 / (1 − 0.9) / 5 = 1``
target unit, less than the start's residuals: measured on ``friedman-heavy`` (Student-t df 1.5),
mse / mae / huber / barron removed 87 / 57 / 44 / 33 % of the start's error, so the robust losses
that family is about were rejected. With Adam at ``0.02 ξ₀`` per step all four remove ≥ 99 %
(``tests/test_lrp_regression.py``).

Where the protocol lives. This module is the protocol: its settings (:class:`LRPConfig`), its
score (:func:`lrp_score`, the per-candidate reference), the decision (:meth:`LossRejection.decide`)
and :func:`calibrate`. The funnel's default path computes the same scores faster, for a whole
population at once, in :mod:`lossforge.evaluation.batched` (same decisions; the stage still
decides): :func:`~lossforge.evaluation.batched.scores.lrp_scores` vectorises the optimisation of
every candidate (:mod:`~lossforge.evaluation.batched.optim`; box losses, whose probes are too
small for a vectorised program, in :mod:`~lossforge.evaluation.batched.box_lrp`);
:mod:`~lossforge.evaluation.batched.forked` splits a population over CPU processes (``processes=``);
and :func:`~lossforge.evaluation.batched.runners.run_stage` applies this stage's decision to the
results. Those modules are speed-ups of this one: each must give what :func:`lrp_score` gives.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from lossforge.evaluation.candidate import REJECTED_LRP, Candidate
from lossforge.evaluation.probes import Probe, box_lrp_start
from lossforge.evaluation.stage import StageStats, timed
from lossforge.expr import Expr
from lossforge.expr import kernels as K
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

    def with_steps(self, steps: int) -> "LRPConfig":
        """The protocol shortened (or lengthened) to ``steps`` with the same summed step:
        ``lr · self.steps / steps``. Measured (``benchmarks/lrp_steps.py``): 200 steps at lr ×2.5
        agree with the 500-step protocol on 99.5 % (digits) / 99.8 % (shapes-seg) of candidates
        and are 2.1-2.5x faster; at an unscaled lr short protocols lose 6-18 of ~40 accepted
        losses."""
        if steps <= 0:
            raise ValueError(f"LRP steps must be a positive number, got {steps}")
        return replace(self, steps=steps, lr=self.lr * self.steps / steps)


#: For box slots the LRP threshold is ``BOX_THRESHOLD_SCALE * LRPConfig.threshold`` (0.3 mean-IoU
#: improvement by default): ``threshold`` is stated for accuracy, and from the jittered start of a
#: box probe (mean IoU about 0.4) the attainable IoU gain is about half of what a classification
#: probe's accuracy can gain. :func:`calibrate` with the zoo's ``iou``/``giou`` checks it.
BOX_THRESHOLD_SCALE = 0.5
#: For box slots the LRP learning rate is ``BOX_LR_SCALE * LRPConfig.lr``: a box probe's loss is a
#: mean over a few boxes of gradients of order 1 in the probe's box parameters (measured: with the
#: default lr the zoo's iou/giou gain < 0.1 IoU in 500 steps, with 10x they gain 0.57/0.68).
BOX_LR_SCALE = 10.0
#: For regression probes the LRP runs Adam with the step ``lr * REGRESSION_LR_SCALE * ξ₀``
#: (``ξ₀``: mean absolute residual of the random start; 0.02 ξ₀ per step with the default lr, so
#: 500 steps can cross 10 ξ₀): see the module docstring (measured on friedman-heavy).
REGRESSION_LR_SCALE = 20.0


def mean_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean IoU of boxes ``(M, 4)`` (``x1, y1, x2, y2``; inverted boxes have area 0; a pair with
    an empty union counts 0), from the box-loss kernel's ``i`` and ``u``."""
    if len(pred) == 0:
        return 0.0
    env, _ = K.prepare_box(torch.as_tensor(np.asarray(pred, dtype=float)),
                           torch.as_tensor(np.asarray(target, dtype=float)))
    i, u = env["i"][:, 0], env["u"][:, 0]
    return float(torch.where(u > 0, i / torch.where(u > 0, u, torch.ones_like(u)), 0.0).mean())


def _accuracy(pred: np.ndarray, target: np.ndarray, ignore_index: int = 255) -> float:
    keep = target != ignore_index
    return float((pred[keep] == target[keep]).mean()) if keep.any() else 0.0


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    sst = float(((target - target.mean()) ** 2).sum())
    return 1.0 - float(((pred - target) ** 2).sum()) / (sst if sst > 0 else 1.0)


def slot_metric(kind: str) -> Metric:
    """The LRP metric of a loss slot that the task's own metric cannot score alone (slots of a
    multi-slot task, box slots): accuracy (classification), R² (regression), mean IoU (box)."""
    if kind == "box":
        return Metric("mean_iou", mean_iou)
    if kind == "classification":
        return Metric("accuracy", _accuracy)
    return Metric("r2", _r2)


def metric_value(metric: Metric, probe: Probe, pred: torch.Tensor) -> float:
    """The metric of the predictions (argmax of logits for classification, decoded boxes for box
    probes: :meth:`Probe.metric_input`) on the probe targets."""
    labels = probe.metric_input(pred.detach())
    return float(metric.fn(labels.cpu().numpy(), probe.target.cpu().numpy()))


def relative_error(metric: Metric, probe: Probe) -> bool:
    """Whether the LRP scores ``metric`` on ``probe`` as a relative error reduction: a
    lower-is-better metric on a regression probe (module docstring)."""
    return probe.kind == "regression" and metric.sign < 0


def improvement(metric: Metric, probe: Probe, start: float, end: float) -> float:
    """The LRP score of a metric value ``end`` after optimising from one of ``start``.

    ``sign · (end − start)`` (absolute gain; higher is better), except for a lower-is-better metric
    on a regression probe: ``1 − end / start``, the share of the start's error removed (a start
    with no error, ``start <= 0``, scores ``−end``: nothing to remove, any error is a loss)."""
    if relative_error(metric, probe):
        return 1.0 - end / start if start > 0 else -end
    return metric.sign * (end - start)


def regression_config(config: LRPConfig, probe: Probe, init: torch.Tensor) -> LRPConfig:
    """The protocol's settings on a regression probe: Adam with the step
    ``config.lr * REGRESSION_LR_SCALE * ξ₀`` (``ξ₀``: the mean absolute residual of ``init``, in
    target units; ``1.0`` when the start has no residual), other settings as ``config``."""
    scale = float((init - probe.target).abs().mean())
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    return replace(config, optimizer="adam", lr=config.lr * REGRESSION_LR_SCALE * scale)


#: How many further draws :func:`random_start` may take to find a start with room to improve.
MAX_START_DRAWS = 16


def random_start(probe: Probe, metric: Metric, seed: int) -> torch.Tensor:
    """The protocol's random start: standard-normal predictions from ``seed``. On a classification
    probe a draw whose argmax already scores what the targets themselves score leaves the
    protocol nothing to measure (every loss scores 0 and is rejected: with 2 classes and 5
    samples that is 1 draw in 32), so the next draws of the same generator are taken, at most
    :data:`MAX_START_DRAWS` (deterministic in ``seed``; any other start is the first draw)."""
    gen = torch.Generator().manual_seed(seed)
    start = probe.random_pred(gen)
    if probe.kind != "classification":
        return start
    target = probe.target.cpu().numpy()
    perfect = float(metric.fn(target, target))
    for _ in range(MAX_START_DRAWS):
        if metric_value(metric, probe, start) != perfect:
            break
        start = probe.random_pred(gen)
    return start


def lrp_score(expr: Expr, probe: Probe, metric: Metric, config: LRPConfig,
              init: torch.Tensor) -> float | None:
    """The improvement score of one loss (:func:`improvement`); ``None`` when a loss value turned
    non-finite."""
    x = init.clone().requires_grad_(True)
    if config.optimizer == "sgd":
        opt = torch.optim.SGD([x], lr=config.lr, momentum=config.momentum)
    else:
        opt = torch.optim.Adam([x], lr=config.lr)
    for _ in range(config.steps):
        value = probe.loss(expr, x)
        if not torch.isfinite(value):
            return None
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    if not torch.isfinite(x).all():
        return None
    return improvement(metric, probe, metric_value(metric, probe, init),
                       metric_value(metric, probe, x))


class LossRejection:
    """Stage 3 (the per-candidate reference path; :mod:`batched` is the fast one).

    On a regression probe ``config`` is turned into :func:`regression_config` here (Adam, a step
    in target units); ``self.config`` is the setting in force."""

    name = "lrp"

    def __init__(self, probe: Probe, metric: Metric, config: LRPConfig = LRPConfig()):
        self.probe, self.metric, self.config = probe, metric, config
        self.init = random_start(probe, metric, config.seed)
        if probe.kind == "box":
            self.init = box_lrp_start(self.init)
        if probe.kind == "regression":
            self.config = regression_config(config, probe, self.init)
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


def calibrate(stage: LossRejection, baselines: list[Expr], margin: float = 0.8,
              max_lr_raises: int = 3) -> dict[str, float | None]:
    """Make sure the hand-made ``baselines`` pass the protocol before a search starts.

    If a baseline fails: when the weakest still improves the metric by at least half the threshold,
    the threshold is lowered to ``margin`` times its score; otherwise the probe is optimised too
    little to tell, and the learning rate is raised ×10 (at most ``max_lr_raises`` times) before
    trying again. Every adjustment is logged as a warning. Returns the final scores by formula.
    """
    for attempt in range(max_lr_raises + 1):
        scores = {str(b): stage.score(b) for b in baselines}
        finite = [s for s in scores.values() if s is not None and np.isfinite(s)]
        threshold = stage.config.threshold
        if finite and len(finite) == len(scores) and min(finite) >= threshold:
            return scores
        weakest = min(finite) if len(finite) == len(scores) else float("-inf")
        if weakest > 0 and weakest >= 0.5 * threshold:
            log.warning("LRP threshold %.3f rejects a hand-made loss (weakest score %.3f); "
                        "lowering it to %.3f", threshold, weakest, margin * weakest)
            stage.config = replace(stage.config, threshold=margin * weakest)
            return scores
        if attempt < max_lr_raises:
            log.warning("LRP: hand-made losses barely improve the metric (scores %s) with lr %g; "
                        "raising lr to %g", {k: None if v is None else round(v, 3)
                                             for k, v in scores.items()},
                        stage.config.lr, stage.config.lr * 10)
            stage.config = replace(stage.config, lr=stage.config.lr * 10)
    log.warning("LRP: hand-made losses still fail after calibration (scores %s); the protocol "
                "cannot separate losses on this task — consider use_lrp=False", scores)
    return scores
