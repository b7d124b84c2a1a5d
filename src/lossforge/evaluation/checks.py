"""Stage 1, ``checks``: cheap validity tests on probe inputs (AutoLoss-Zero, EvoMAL, NLFS).

A candidate passes when (a) it reads both a prediction variable and the label ``y`` (box losses: one
of ``i, u, e``, each of which depends on both the predicted and the target box); (b) its value
and its gradient with respect to the prediction are finite on the probe; (c) the gradient is not
identically zero and the value or gradient changes when the labels change (these two are settled
in float64 where float32 rounding could decide them, so every machine gives the same answer:
``sum_c(p)`` is 1 exactly but its float32 gradient is ~1e-9 of noise). Optionally (NLFS, for
classification spaces without batch aggregations) the 2-class integrity check with automatic
orientation: the loss curve over ``p = [t, 1 - t]`` with label ``[0, 1]`` must not be flat, must not
have its extremum near ``t = 0.5``, must change monotonic direction at most once; a loss that
decreases as the prediction gets worse is negated. Optionally (``ChecksConfig.scale``, off by
default) scale sanity (:mod:`lossforge.evaluation.scale`): the gradient w.r.t. the prediction must be
within a factor of the reference loss's (CE, MSE, 1 - IoU) and the value must not be dominated by
the protection constants of ``inv``/``div``/``log``/``sqrt``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lossforge.evaluation.candidate import REJECTED_CHECKS, Candidate
from lossforge.evaluation.probes import Probe
from lossforge.evaluation.scale import ScaleLimits, measure_scale, reference_grad_norm, scale_reason
from lossforge.evaluation.stage import StageStats, timed
from lossforge.expr import Expr, apply
from lossforge.expr.interpret import interpret

PREDICTION_VARS = frozenset({"p", "z", "f", "i", "u", "e"})
#: Box-regression variables: each depends on the predicted and on the target box.
JOINT_VARS = frozenset({"i", "u", "e"})


@dataclass(frozen=True)
class ChecksConfig:
    """``seed`` draws the probe predictions; ``integrity`` enables NLFS's check and orientation;
    ``scale``: the limits of scale sanity (:class:`~lossforge.evaluation.scale.ScaleLimits`, a
    dict of its fields is accepted), ``None`` (the default) to skip it. ``None`` is also what
    study files written before the option existed hold, so they resume unchanged."""

    seed: int = 1234
    integrity: bool = False
    integrity_points: int = 1000
    scale: ScaleLimits | None = None

    def __post_init__(self):
        if isinstance(self.scale, dict):
            object.__setattr__(self, "scale", ScaleLimits(**self.scale))
        elif self.scale is not None and not isinstance(self.scale, ScaleLimits):
            raise TypeError(f"ChecksConfig.scale must be ScaleLimits, a dict of its fields or "
                            f"None, got {type(self.scale).__name__}")


def structural_reason(expr: Expr) -> str:
    """Why ``expr`` cannot be a loss by its structure alone ('' when it can)."""
    v = expr.variables()
    if v & JOINT_VARS:
        return ""
    if not v & PREDICTION_VARS:
        return "does not depend on the prediction"
    if "y" not in v:
        return "does not depend on the label y"
    return ""


#: A float32 gradient whose largest entry is at most this may be rounding noise (a loss whose
#: gradient is zero in exact arithmetic, such as ``sum_c(p)``): it is judged again in float64.
NOISE_GRADIENT = 1e-6


def zero_gradient(expr: Expr, probe: Probe, pred: torch.Tensor) -> bool:
    """True when ``dL/dpred`` at ``pred`` is zero, judged in float64 (largest entry <= 1e-12)."""
    with torch.inference_mode(False), torch.enable_grad():  # callers may be in inference mode
        _, grad = probe.loss_and_grad(expr, pred.double())
    return grad is None or float(grad.abs().max()) <= 1e-12


def same_value_for_labels(expr: Expr, probe: Probe, alt: Probe, pred: torch.Tensor) -> bool:
    """True when the loss at ``pred`` has the same value (to 1e-9, relative) on ``probe``'s labels
    and on ``alt``'s. Computed in float64: in float32 the comparison would read the last bits of
    the rounding, which depend on the summation order and so on the CPU and the memory layout."""
    x = pred.detach().double()
    with torch.no_grad():
        value, other = probe.loss(expr, x), alt.loss(expr, x)
    return bool(torch.isfinite(other)) and \
        abs(float(other - value)) <= 1e-9 * (1 + abs(float(value)))


def numeric_reason(expr: Expr, probe: Probe, pred: torch.Tensor, alt: Probe) -> str:
    """Why ``expr`` fails on the probe ('' when it passes): finiteness and dependence. Values and
    gradients are float32 (the precision losses train in); the two tests whose answer float32
    rounding could decide (a zero gradient, a value that does not read the label) are settled in
    float64, so that the answer is the same on every machine."""
    value, grad = probe.loss_and_grad(expr, pred)
    if not torch.isfinite(value):
        return "non-finite value on the probe"
    if grad is None or not torch.isfinite(grad).all():
        return "non-finite gradient on the probe"
    if float(grad.abs().max()) <= NOISE_GRADIENT and zero_gradient(expr, probe, pred):
        return "zero gradient with respect to the prediction"
    if same_value_for_labels(expr, probe, alt, pred):
        _, g2 = alt.loss_and_grad(expr, pred)
        if g2 is None or torch.allclose(g2, grad):
            return "does not depend on the label"
    return ""


def integrity(expr: Expr, points: int = 1000) -> tuple[str, bool]:
    """NLFS's 2-class integrity check. Returns (reason, flip): reason '' when the curve passes,
    ``flip`` when the loss must be negated to grow as the prediction gets worse."""
    t = torch.linspace(0.0005, 0.9995, points, dtype=torch.float64).unsqueeze(1)
    p = torch.cat([t, 1 - t], dim=1)
    y = torch.tensor([[0.0, 1.0]], dtype=torch.float64).expand_as(p)
    z = torch.log(p)
    with torch.no_grad():
        out = interpret(expr, {"p": p, "y": y, "z": z})
    curve = out.expand(points, -1).sum(dim=1) if out.dim() == 2 else out.expand(points)
    if not torch.isfinite(curve).all():
        return "non-finite on the integrity curve", False
    span = float(curve.max() - curve.min())
    if span <= 1e-6 * (1 + float(curve.abs().max())):
        return "flat integrity curve", False
    diffs = torch.diff(curve)
    flat = diffs.abs() <= 1e-9 * (1 + curve.abs()[1:])
    if int(flat.sum()) > 10:
        return "more than 10 flat steps on the integrity curve", False
    signs = torch.sign(diffs[~flat])
    if int((signs[1:] != signs[:-1]).sum()) > 1:
        return "changes monotonic direction more than once", False
    for idx in (int(curve.argmin()), int(curve.argmax())):
        if abs(float(t[idx]) - 0.5) < 0.05:
            return "extremum near t = 0.5", False
    # t grows = true-class probability 1 - t shrinks = worse prediction: the loss must grow
    flip = float(curve[-1]) < float(curve[0])
    return "", flip


class Checks:
    """Stage 1 on a list of candidates (the per-candidate reference path)."""

    name = "checks"

    def __init__(self, probe: Probe, config: ChecksConfig = ChecksConfig()):
        self.probe, self.config = probe, config
        gen = torch.Generator().manual_seed(config.seed)
        self.pred = probe.random_pred(gen)
        shifted = probe.target.roll(1, dims=0) if probe.kind == "classification" else -probe.target
        if probe.kind == "classification" and probe.num_classes:
            shifted = torch.where(probe.target == probe.ignore_index, probe.target,
                                  (probe.target + 1) % probe.num_classes)
        if probe.kind == "box":  # every target box moved by half its size (anchors stay)
            size = probe.target[:, 2:] - probe.target[:, :2]
            shifted = probe.target + torch.cat([size, size], dim=1) / 2
        self.alt = probe.with_target(shifted)
        self.stats = StageStats(self.name)
        self._reference_norm: float | None = None

    def scale_reason(self, expr: Expr) -> str:
        """Why ``expr`` fails scale sanity on the probe ('' when it passes or the check is off)."""
        limits = self.config.scale
        if limits is None:
            return ""
        if self._reference_norm is None:
            self._reference_norm = reference_grad_norm(self.probe, self.pred)
        reading = measure_scale(expr, self.probe, self.pred, limits.alt_eps, self._reference_norm)
        return scale_reason(reading, limits)

    def screen_scale(self, candidates: list[Candidate]) -> None:
        """Scale sanity on the candidates still pending (they passed the other checks): a failing
        one is rejected by this stage (its ``n_out`` drops by one). Nothing when the check is off.
        :meth:`__call__` runs it; the vectorised path runs it after its checks (the funnel)."""
        if self.config.scale is None:
            return
        with timed(self.stats):
            for c in candidates:
                if c.done:
                    continue
                why = self.scale_reason(c.expr)
                if why:
                    c.reject(REJECTED_CHECKS, why)
                    self.stats.n_out -= 1

    def reason(self, expr: Expr) -> tuple[str, Expr]:
        """('' or why it fails, the possibly re-oriented expression)."""
        why = structural_reason(expr)
        if why:
            return why, expr
        if self.config.integrity and self.probe.kind == "classification":
            why, flip = integrity(expr, self.config.integrity_points)
            if why:
                return why, expr
            if flip:
                expr = apply("neg", expr)
        return numeric_reason(expr, self.probe, self.pred, self.alt), expr

    def __call__(self, candidates: list[Candidate]) -> None:
        with timed(self.stats):
            for c in candidates:
                if c.done:
                    continue
                self.stats.n_in += 1
                why, c.expr = self.reason(c.expr)
                if why:
                    c.reject(REJECTED_CHECKS, why)
                else:
                    self.stats.n_out += 1
        self.screen_scale(candidates)
