"""``Candidate``: one proposed loss on its way through the funnel, and the statuses it can end in."""
from __future__ import annotations

from dataclasses import dataclass, field

from lossforge.expr import Expr

PENDING = "pending"
REJECTED_CHECKS = "rejected-checks"   # stage 1: structure, finiteness, integrity
GEC_HIT = "gec-hit"                   # stage 2: gradient-equivalent to an evaluated loss
REJECTED_LRP = "rejected-lrp"         # stage 3: loss-rejection protocol
INVALID = "invalid"                   # stage 4: non-finite loss during proxy training
TRAINED = "trained"                   # stage 4 completed: has a fitness
FAILED = "failed"                     # the evaluation itself crashed (worker died, timeout)

FINAL = (REJECTED_CHECKS, GEC_HIT, REJECTED_LRP, INVALID, TRAINED, FAILED)

#: The funnel's stages, in the order a candidate meets them. Every module that lists stages
#: (funnel, study stats, live view, report) uses this tuple.
STAGES = ("checks", "gec", "lrp", "proxy")
#: The status a candidate gets when a stage stops it (the proxy stage ends in ``TRAINED``,
#: ``INVALID`` or ``FAILED``).
STOPPED_BY = {"checks": REJECTED_CHECKS, "gec": GEC_HIT, "lrp": REJECTED_LRP}


@dataclass
class Candidate:
    """A candidate loss and what the funnel learnt about it.

    ``expr`` may be replaced by an equivalent oriented form (NLFS orientation). ``fitness`` is
    *higher is better* (metric times its direction), ``None`` unless the candidate was trained or
    reused a trained result through GEC. ``seconds``: time spent per stage. ``fidelity``: with
    multi-fidelity proxy training, where the candidate stopped (``{"bracket", "rung", "steps",
    "top"}``, :mod:`~lossforge.evaluation.fidelity`); empty otherwise.
    """

    expr: Expr
    status: str = PENDING
    fitness: float | None = None
    reason: str = ""
    fingerprint: str | None = None
    lrp_score: float | None = None
    same_as: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    fidelity: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status != PENDING

    def reject(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def to_record(self) -> dict:
        """JSON-serialisable details (everything except the expression itself; ``fidelity`` only
        when set)."""
        record = {"status": self.status, "fitness": self.fitness, "reason": self.reason,
                  "fingerprint": self.fingerprint, "lrp_score": self.lrp_score,
                  "same_as": self.same_as, "metrics": self.metrics, "seconds": self.seconds}
        if self.fidelity:
            record["fidelity"] = self.fidelity
        return record
