"""The multi-fidelity schedule: rung lengths, brackets, the promotion rule and the cross-rung order.

Pure arithmetic, no training (the stage that trains is :mod:`~lossforge.evaluation.fidelity`).

Rungs. With ``K`` the largest k for which ``round(max_steps / η^k)`` is ≥ ``min_steps`` (and
shorter than the rung above it) a bracket ``b`` (0 ≤ b ≤ K) has the rungs
``round(max_steps · η^(k − K + b))`` for ``k = 0 … K − b``: the top rung is ``max_steps`` exactly,
rung 0 of bracket 0 is the shortest rounded length ≥ ``min_steps`` on that geometric ladder (the
lengths the rung check prints: ``min_steps=17, max_steps=150`` is 17, 50, 150), and each
further bracket starts one rung higher (Hyperband's hedge: the last possible bracket, ``b = K``,
trains every candidate for ``max_steps``). E.g. ``min_steps=13, max_steps=120, η=3`` → bracket 0:
13, 40, 120; bracket 1: 40, 120; bracket 2: 120.

Promotion (ASHA, Li et al. 2020, made deterministic). Each rung of each bracket keeps the list of
results seen there: those of every earlier generation of the study, then this generation's in a
fixed order (rung 0: by position; higher rungs: in the order the candidates were promoted into
them). Walking that list as results become known, each new result may promote any candidate of
the current generation that waits at the rung and is now among the best ``⌊n / η⌋`` of the ``n``
results seen (ASHA's rule, :func:`top_indices`; ties go to the earlier result). A candidate that
is never promoted stops at its rung when the generation has nothing left to train. The walk
follows the fixed order, never arrival times, so the outcome is the same with any executor and
after a resume, and no worker waits at a barrier: a result waits to be walked only for the
results before it in its rung's list, while other trainings keep the workers busy. Candidates of
earlier generations are not promoted later (their fitness has been told to the strategy).

Cross-rung order (:func:`selection_key`). A candidate's fitness is its result at the highest rung
it reached; strategies and ``Study.best`` compare candidates by **steps trained first, then
fitness**. Reason: a metric after 40 steps and one after 360 are not on one scale (most losses
keep improving with training), so comparing raw fitness across rungs would mostly reward the
longer training, and comparing by rank within a rung would rank a rung-0 winner — which the
promotion rule just declared worse than the candidates that went on — level with a top-rung
winner. Steps-first keeps exactly the order that the promotion rule has already established: a
candidate that was promoted beat the ones that stopped below it. Strategies receive the order as
one number (:func:`selection_value`): ``steps + ½ + atan(fitness)/π``, monotone in
``(steps, fitness)``; the stored fitness stays the metric.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

NONE = "none"
ASHA = "asha"
#: ``FidelityConfig(min_steps=AUTO)``: the ladder measured on the task (a rung check).
AUTO = "auto"
KINDS = (NONE, ASHA)
#: Hyperband brackets when ``FidelityConfig.brackets`` is ``None`` (see its docstring).
DEFAULT_BRACKETS = 2


@dataclass(frozen=True)
class FidelityConfig:
    """How proxy training spends steps: ``kind`` ``"none"`` (one training of the proxy's
    ``steps``, today's behaviour) or ``"asha"`` (rungs, see the module docstring).

    ``min_steps``: the shortest rung (``None``: ``max_steps / η²``, three rungs; ``"auto"``:
    measured on the task when the study starts, :mod:`~lossforge.evaluation.rung_check` — the
    shortest rung that ranks the zoo's losses as ``max_steps`` does, one bracket); ``max_steps``:
    the top rung (``None``: the proxy stage's ``steps``, else the task's proxy steps); ``eta``:
    the reduction factor η ≥ 2; ``brackets``: how many Hyperband brackets (candidates are dealt
    to them by position, round robin; 1 = plain ASHA; ``None``: 2, or 1 when the ladder has a
    single rung length).

    How the defaults were chosen (``python benchmarks/fidelity_rank.py``, η = 3, 38 losses per
    task, Spearman ρ of a rung's seed-0 fitness against the 3-fresh-seed mean at full length, and
    the chance that the final top 3 survive halving from that rung):

    ==============  ================================  ==================================
    rung            ``digits`` (max 300): ρ, top 3  ``shapes-seg`` (max 120): ρ, top 3
    ==============  ================================  ==================================
    max/27          0.67, 0.33                      −0.01, 0.00
    max/9           0.68, 0.67                      0.15, 0.00
    max/3           0.71, 0.67                      0.52, 1.00
    max             0.92, 1.00                      0.80, 1.00
    ==============  ================================  ==================================

    Rule: a rung may cut a candidate when it ranks losses usefully (ρ ≥ 0.5 and the final top 3
    survive with chance ≥ 2/3). On ``digits`` that holds from max/9 (from max/27 only one of
    the final top 3 survives); on ``shapes-seg`` only from max/3 — losses change the *shape* of the
    curve there (AdaLFL's warning), so a 13-step rung ranks them almost at random. No single
    fraction is both cheap on the first task and safe on the second, so the default hedges, as
    Hyperband does: ``min_steps = max/η²`` (η = 3, the field's usual factor and the one measured)
    with two brackets — bracket 0 cuts at max/9, max/3, max (cheap where early ranks hold, e.g.
    ``digits``); bracket 1 never judges a candidate below max/3, the shortest rung that ranked
    usefully on both tasks, so half of the candidates are safe where early ranks fail. Expected
    proxy steps per candidate: 0.26·max in bracket 0, 0.56·max in bracket 1, 0.41·max together
    (2.4× fewer than the single-length proxy), against 0.56·max for a single bracket at max/3
    and 0.26·max for one at max/9. Set ``brackets=1`` (and ``min_steps``) for a task whose early
    ranks are measured to hold, or ``min_steps="auto"`` to measure them when the study starts
    (:mod:`~lossforge.evaluation.rung_check`: the same rule on the zoo's losses, same seed, one
    bracket from the chosen rung; ``lossforge rung-check`` measures once for several searches)."""

    kind: str = NONE
    min_steps: int | str | None = None
    max_steps: int | None = None
    eta: int = 3
    brackets: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"fidelity must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.eta < 2:
            raise ValueError(f"eta must be at least 2 (the reduction factor), got {self.eta}")
        if self.brackets is not None and self.brackets < 1:
            raise ValueError(f"brackets must be at least 1, got {self.brackets}")
        if isinstance(self.min_steps, str) and self.min_steps != AUTO:
            raise ValueError(f"min_steps must be a number of steps or {AUTO!r}, "
                             f"got {self.min_steps!r}")
        if self.auto and self.brackets is not None:
            raise ValueError(f"min_steps={AUTO!r} chooses the brackets too (one, from the "
                             "measured rung): leave brackets unset")
        for name in ("min_steps", "max_steps"):
            v = getattr(self, name)
            if v is not None and v != AUTO and v < 1:
                raise ValueError(f"{name} must be a positive number of steps, got {v}")
        if not self.auto and self.min_steps and self.max_steps \
                and self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps "
                             f"({self.max_steps})")

    @property
    def active(self) -> bool:
        return self.kind != NONE

    @property
    def auto(self) -> bool:
        """Whether the ladder is to be measured on the task (``min_steps="auto"``)."""
        return self.min_steps == AUTO

    def chosen(self, min_steps: int, brackets: int) -> "FidelityConfig":
        """This config with a measured ``min_steps`` and ``brackets`` in place of ``"auto"``."""
        return FidelityConfig(self.kind, int(min_steps), self.max_steps, self.eta, int(brackets))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def coerce(cls, value: "FidelityConfig | dict | str | None") -> "FidelityConfig":
        """A config from a config, its dict, a kind name, or ``None`` (``"none"``)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"fidelity: expected a FidelityConfig, a dict or one of {KINDS}, "
                        f"got {type(value).__name__}")

    def ladder(self, default_max: int) -> list[list[int]]:
        """The rung steps of every bracket (bracket 0 first); ``default_max`` stands for an unset
        ``max_steps``. ``ValueError`` when ``brackets`` exceeds the ladder's ``K + 1``."""
        if self.auto:
            raise ValueError("min_steps='auto' is measured when the study starts "
                             "(FidelityConfig.chosen); there is no ladder before that")
        top = int(self.max_steps or default_max)
        low = int(self.min_steps or max(1, top // self.eta ** 2))  # floor: keeps 3 rungs
        if low > top:
            raise ValueError(f"min_steps ({low}) exceeds max_steps ({top})")
        # the rung lengths as they are rounded (the rung check's grid rounds the same way):
        # comparing the unrounded max/η^k with min_steps dropped a rung the check printed
        # (max 150: rungs 17/50/150, but 150/9 = 16.7 < 17 left 50/150)
        k = 0
        while low <= round(top / self.eta ** (k + 1)) < round(top / self.eta ** k):
            k += 1
        brackets = min(DEFAULT_BRACKETS, k + 1) if self.brackets is None else self.brackets
        if brackets > k + 1:
            raise ValueError(f"brackets={brackets} but min_steps={low}, max_steps={top}, "
                             f"eta={self.eta} give only {k + 1} (one per rung length)")
        out = []
        for b in range(brackets):
            steps = [max(1, round(top * self.eta ** (i - k + b))) for i in range(k - b + 1)]
            steps[-1] = top
            out.append(steps)
        return out


def bracket_of(position: int, brackets: int) -> int:
    """The bracket a candidate at ``position`` of its generation goes to (round robin)."""
    return position % brackets


def top_indices(seen: list[float], eta: int) -> set[int]:
    """The indices of the best ``⌊n/η⌋`` of the ``n`` results ``seen`` (higher is better; an
    earlier result ranks first on ties)."""
    quota = len(seen) // eta
    return set(sorted(range(len(seen)), key=lambda i: (-seen[i], i))[:quota])


def selection_key(steps: int | None, fitness: float | None) -> tuple:
    """The cross-rung order: steps trained first, then fitness (``None`` fitness last)."""
    return (steps or 0, -math.inf if fitness is None else fitness)


def selection_value(steps: int | None, fitness: float | None) -> float | None:
    """:func:`selection_key` as one number for strategies: ``steps + ½ + atan(fitness)/π``
    (``None`` stays ``None``; without ``steps``, the fitness itself)."""
    if fitness is None:
        return None
    if not steps:
        return fitness
    return steps + 0.5 + math.atan(fitness) / math.pi
