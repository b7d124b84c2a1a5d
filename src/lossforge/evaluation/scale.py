"""Scale sanity: how a candidate's gradient compares with the baseline's, and how much of its value
the protection constant makes up.

Protected operators (``inv(x) = 1 / (x + EPS)``, ``a / (b + EPS)``, ``log(|x| + EPS)``, ...) let a
search build losses whose scale is absurd: ``square(inv(p * y))`` is ``1 / EPS^2 = 1e12`` on every
wrong class. Adam normalises each parameter's step and trains with such losses; SGD does not.
Two readings on a screening probe (:class:`~lossforge.evaluation.probes.Probe`) catch them:

* **gradient ratio**: ``||dL/dx||`` of the candidate over that of the task kind's reference loss
  (:data:`REFERENCE`: cross-entropy for classification, MSE for regression, ``1 - IoU`` for
  boxes) at the same prediction ``x`` (logits, values or box parameters), both L2 norms over the
  whole probe tensor;
* **eps dominance**: the relative change of the loss value, and of the gradient, when every
  protection constant goes from :data:`~lossforge.expr.kernels.EPS` to ``alt_eps``
  (:class:`~lossforge.expr.kernels.protection_eps`). A loss whose value is a protected
  ``1 / EPS`` term moves by orders of magnitude; a loss whose guards are never near zero does not
  move at all (exact ``log(p)`` has no guard).

The readings are pure measurements; :mod:`lossforge.evaluation.checks` decides what to do with them
(:func:`scale_reason`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lossforge.evaluation.probes import Probe
from lossforge.expr import Expr, parse
from lossforge.expr import kernels as K

#: The reference loss of each loss kind: the gradient ratio divides by its gradient norm.
REFERENCE = {"classification": "-sum_c(y * log(p))",
             "regression": "mean_c(square(f - y))",
             "box": "1 - i / u"}
#: The protection constant the eps-dominance reading switches to (EPS = 1e-6 by default).
ALT_EPS = 1e-4
_TINY = 1e-30


@dataclass(frozen=True)
class ScaleReading:
    """What :func:`measure_scale` reads for one loss on one probe prediction.

    ``value``: the loss value; ``grad_norm``: ``||dL/dx||_2`` w.r.t. the prediction;
    ``grad_ratio``: ``grad_norm`` over the reference loss's (``inf`` when the reference's is 0);
    ``value_shift``: ``|L(alt_eps) - L(EPS)| / min(|L(EPS)|, |L(alt_eps)|)`` (the fold change
    minus one: ``1 / eps^2`` terms give about ``(alt_eps / EPS)^2 - 1``); ``grad_shift``:
    ``||g(alt_eps) - g(EPS)|| / min(||g(EPS)||, ||g(alt_eps)||)`` (both 0 for a loss with no
    active guard; ``inf`` when the denominator is 0 but the numerator is not). Non-finite inputs give non-finite readings.
    """

    value: float
    grad_norm: float
    grad_ratio: float
    value_shift: float
    grad_shift: float

    @property
    def log10_grad_ratio(self) -> float:
        """``log10(grad_ratio)`` (``inf``/``-inf`` at the ends); the distance from the reference's
        scale in decades."""
        r = self.grad_ratio
        return math.log10(r) if r > 0 and math.isfinite(r) else (math.inf if r != 0 else -math.inf)

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "grad_norm": self.grad_norm, "grad_ratio": self.grad_ratio,
                "value_shift": self.value_shift, "grad_shift": self.grad_shift}


def _value_and_grad(expr: Expr, probe: Probe, pred: torch.Tensor) -> tuple[float, torch.Tensor]:
    value, grad = probe.loss_and_grad(expr, pred)
    return float(value), torch.zeros_like(pred) if grad is None else grad


def _relative(change: float, a: float, b: float) -> float:
    """``change / min(a, b)``: the fold change minus one, the same whichever way eps moved."""
    if change == 0.0:
        return 0.0
    base = min(a, b)
    return change / base if base > _TINY else math.inf


def reference_grad_norm(probe: Probe, pred: torch.Tensor) -> float:
    """``||dL/dx||_2`` of the probe kind's :data:`REFERENCE` loss at ``pred``."""
    _, grad = _value_and_grad(parse(REFERENCE[probe.kind]), probe, pred)
    return float(grad.norm())


def measure_scale(expr: Expr, probe: Probe, pred: torch.Tensor, alt_eps: float = ALT_EPS,
                  reference_norm: float | None = None) -> ScaleReading:
    """The :class:`ScaleReading` of ``expr`` at the prediction ``pred`` (shape
    ``probe.pred_shape``). ``reference_norm``: the reference's gradient norm when the caller has it
    already (:func:`reference_grad_norm`; computed here otherwise). Evaluates the loss twice with
    the default protection and once with ``alt_eps``; leaves :data:`~lossforge.expr.kernels.EPS`
    as it found it."""
    ref = reference_grad_norm(probe, pred) if reference_norm is None else reference_norm
    value, grad = _value_and_grad(expr, probe, pred)
    with K.protection_eps(alt_eps):
        value_alt, grad_alt = _value_and_grad(expr, probe, pred)
    norm = float(grad.norm())
    ratio = norm / ref if ref > _TINY else (0.0 if norm == 0.0 else math.inf)
    return ScaleReading(value=value, grad_norm=norm, grad_ratio=ratio,
                        value_shift=_relative(abs(value_alt - value), abs(value), abs(value_alt)),
                        grad_shift=_relative(float((grad_alt - grad).norm()), norm,
                                             float(grad_alt.norm())))


def scale_reason(reading: ScaleReading, limits: "ScaleLimits") -> str:
    """Why a loss fails scale sanity under ``limits`` ('' when it passes): its gradient is more
    than ``max_grad_ratio`` times (or less than ``1 / max_grad_ratio`` of) the reference's, or its
    value moves by more than ``max_value_shift`` (when set) as the protection constant changes."""
    r, g = reading.grad_ratio, limits.max_grad_ratio
    if not 1.0 / g <= r <= g:
        return f"gradient scale {r:.3g} x the reference loss's on the probe (allowed 1/{g:g} .. {g:g})"
    if limits.max_value_shift is not None and not reading.value_shift <= limits.max_value_shift:
        return (f"value dominated by protection constants: moves by {reading.value_shift:.3g} "
                f"(fold change - 1) when eps goes {K.EPS:g} -> {limits.alt_eps:g} (allowed {limits.max_value_shift:g})")
    return ""


@dataclass(frozen=True)
class ScaleLimits:
    """The scale-sanity check's limits (:func:`scale_reason`): the gradient ratio to the reference
    loss must lie in ``[1 / max_grad_ratio, max_grad_ratio]``; with ``max_value_shift`` set, the
    eps-dominance (``value_shift`` when eps goes to ``alt_eps``) must be at most that.

    Defaults measured by ``benchmarks/scale_check.py`` on 133 losses (README, "Scale sanity"):
    a gradient ratio of 300 loses none of the 49 losses that train well under Adam and SGD and
    catches 38 of the 53 that train under Adam only; the eps-dominance is off
    (``None``) because any threshold on it rejected 7-14 of the 49 good losses (their dominating
    ``1 / eps`` term is constant w.r.t. the prediction, so it does not touch the gradient)."""

    max_grad_ratio: float = 300.0
    max_value_shift: float | None = None
    alt_eps: float = ALT_EPS

    def __post_init__(self):
        if not self.max_grad_ratio >= 1.0:
            raise ValueError(f"max_grad_ratio must be >= 1 (a factor either way), got "
                             f"{self.max_grad_ratio!r}")
        if self.max_value_shift is not None and not self.max_value_shift >= 0.0:
            raise ValueError(f"max_value_shift must be >= 0 or None (off), got "
                             f"{self.max_value_shift!r}")
