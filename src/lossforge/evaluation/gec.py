"""Stage 2, ``gec``: the Gradient-Equivalence Check of AutoLoss-Zero.

The fingerprint of a loss is the vector of per-sample gradient norms ``‖∂L/∂ŷ_b‖₂`` with respect
to the prediction on a fixed random probe, each rounded to 2 significant digits. Two losses with the
same fingerprint are treated as equivalent: the later one reuses the earlier one's result and is
counted as explored without being trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from lossforge.evaluation.candidate import GEC_HIT, Candidate
from lossforge.evaluation.probes import Probe
from lossforge.evaluation.stage import StageStats, timed
from lossforge.expr import Expr


@dataclass(frozen=True)
class GECConfig:
    """``seed`` draws the probe predictions (fixed for the whole study)."""

    seed: int = 4321


def format_fingerprint(norms: torch.Tensor | Sequence[float]) -> str | None:
    """Per-sample norms -> text with 2 significant digits each; ``None`` if any is non-finite.

    The one formatter of GEC fingerprints: the per-candidate path passes a tensor, the batched
    path (:func:`lossforge.evaluation.batched.scores.fingerprints`) a row of Python floats; both
    give the same text for the same values (a float32 value converts to the same Python float
    either way), so a GEC hit matches across the two paths."""
    values = norms.tolist() if isinstance(norms, torch.Tensor) else [float(v) for v in norms]
    if not all(math.isfinite(v) for v in values):
        return None
    return ",".join(f"{v:.1e}" for v in values)


def per_sample_norms(grad: torch.Tensor) -> torch.Tensor:
    """``‖g_b‖₂`` over every dimension but the first (batch)."""
    return grad.flatten(1).norm(dim=1)


class GradientEquivalence:
    """Stage 2. ``known`` maps fingerprints to the formula first evaluated with it."""

    name = "gec"

    def __init__(self, probe: Probe, config: GECConfig = GECConfig()):
        self.probe, self.config = probe, config
        self.pred = probe.random_pred(torch.Generator().manual_seed(config.seed))
        self.known: dict[str, str] = {}
        self.stats = StageStats(self.name)

    def fingerprint(self, expr: Expr) -> str | None:
        _, grad = self.probe.loss_and_grad(expr, self.pred)
        if grad is None:
            return None
        return format_fingerprint(per_sample_norms(grad))

    def __call__(self, candidates: list[Candidate]) -> None:
        with timed(self.stats):
            for c in candidates:
                if c.done:
                    continue
                c.fingerprint = self.fingerprint(c.expr)
                self.mark(c)

    def mark(self, c: Candidate) -> None:
        """Mark ``c`` (fingerprint set) as a hit or register it as the first of its class."""
        self.stats.n_in += 1
        fp = c.fingerprint
        if fp is not None and fp in self.known:
            c.status, c.same_as = GEC_HIT, self.known[fp]
            c.reason = f"gradient-equivalent to {self.known[fp]}"
            return
        if fp is not None:
            self.known.setdefault(fp, str(c.expr))
        self.stats.n_out += 1
