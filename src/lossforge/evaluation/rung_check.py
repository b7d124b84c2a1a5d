"""Does a short proxy training rank a task's losses as the full-length one does? The measured
choice of a multi-fidelity ladder (``FidelityConfig(min_steps="auto")``, ``lossforge rung-check``).

A rung may cut candidates only where it ranks them usefully. On ``digits`` a rung of max/9 steps
does; on ``shapes-seg`` nothing below max/3 does (``benchmarks/fidelity_rank.py``: losses change
the *shape* of the learning curve there). The hedged default (two brackets) is a guess that must
be safe on both; this module replaces the guess by a measurement on the task at hand:

1. :func:`check_rungs` trains each loss of a pool once, with the proxy's seed, through the
   geometric grid ``max_steps · η^-k`` (``k = levels-1 … 0``), continuing from rung to rung (a
   rung's result equals a straight training of that many steps; a task with its own loop restarts
   per rung). Cost: one full-length proxy training per loss.
2. Per rung: the Spearman ρ of its fitness against the fitness at ``max_steps`` (the fitness the
   single-length proxy would give, same seed: the rungs are asked to find what the single-length
   search would find), and ``promoted``: the share of the top 3 at ``max_steps`` that are among
   the rung's best ``⌈n/η⌉`` (the ones ASHA's quota would promote).
3. :meth:`RungCheck.choose`: the shortest rung from which every rung below ``max_steps`` has
   ρ ≥ 0.5 and ``promoted`` ≥ 2/3 (FidelityConfig's rule) is ``min_steps``, with **one** bracket —
   the measurement takes the place of Hyperband's hedge. No such rung: the ladder is the single
   length ``max_steps`` (multi-fidelity would only cut blindly).

The pool (:func:`loss_pool`): the zoo's losses for the task's kind (distinct formulas) and
random candidates that pass the funnel's screening (:func:`random_survivors`; ``POOL_RANDOM``
in a search), which look more like what a search trains than the zoo's hand-made losses do —
hand-made losses all learn fast, so the zoo alone makes short rungs look safer than they are. A diverged loss counts as
the worst fitness. Noise: with ~16 losses ρ has a standard error near 0.25, so the check errs in
both directions; it is a measurement of this task, not a guarantee (see RESULTS.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from lossforge.evaluation.candidate import Candidate, TRAINED
from lossforge.tasks import Task

#: The pool of a rung check: the zoo's distinct losses (at most this many) ...
POOL_ZOO = 16
#: ... and this many random candidates that pass screening (on ``digits`` the zoo alone let
#: max/27 cut, ρ 0.84; with 8 screened random candidates ρ there is 0.44 and max/9 is chosen,
#: as the 38-loss fresh-seed table of benchmarks/fidelity_rank.py says).
POOL_RANDOM = 8
#: The rule (FidelityConfig's docstring): a rung may cut where ρ ≥ this ...
MIN_SPEARMAN = 0.5
#: ... and at least this share of the final top 3 would be promoted from it.
MIN_PROMOTED = 2 / 3


@dataclass
class RungCheck:
    """The measurement (JSON-friendly: :meth:`to_dict`). ``fitness[i][k]``: loss ``i`` at
    ``rungs[k]`` steps (higher is better, ``-inf`` once diverged); ``spearman[k]`` and
    ``promoted[k]`` per rung (the last rung is ``max_steps``: ρ 1 by definition); ``seconds``:
    the trainings' wall time (a search and ``lossforge rung-check`` add the pool's screening)."""

    rungs: list[int]
    eta: int
    losses: list[str]
    fitness: list[list[float]]
    spearman: list[float] = field(default_factory=list)
    promoted: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self):
        if not self.spearman and self.fitness:
            fit = np.asarray(self.fitness, float)
            self.spearman = [spearman(fit[:, k], fit[:, -1]) for k in range(len(self.rungs))]
            self.promoted = [promoted_share(fit[:, k], fit[:, -1], self.eta)
                             for k in range(len(self.rungs))]

    def passes(self, k: int) -> bool:
        """Whether rung ``k`` may cut (the top rung always may: it is the fitness itself)."""
        if k == len(self.rungs) - 1:
            return True
        rho = self.spearman[k]
        return bool(rho == rho and rho >= MIN_SPEARMAN and self.promoted[k] >= MIN_PROMOTED)

    def choose(self) -> tuple[int, int]:
        """``(min_steps, brackets)``: the shortest rung from which every rung passes, one bracket."""
        start = len(self.rungs) - 1
        while start > 0 and self.passes(start - 1):
            start -= 1
        return self.rungs[start], 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fitness"] = [[x if math.isfinite(x) else None for x in row] for row in self.fitness]
        d["passes"] = [self.passes(k) for k in range(len(self.rungs))]
        d["chosen"] = dict(zip(("min_steps", "brackets"), self.choose()))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RungCheck":
        fit = [[-math.inf if x is None else x for x in row] for row in d["fitness"]]
        return cls(d["rungs"], d["eta"], d["losses"], fit, d.get("spearman", []),
                   d.get("promoted", []), d.get("seconds", 0.0))


def summary_line(check: RungCheck) -> str:
    """One line: each rung's ρ and promoted share, and the chosen ladder."""
    cells = ", ".join(f"{s}: ρ {r:.2f}, top-3 {p:.2f}" for s, r, p in
                      zip(check.rungs[:-1], check.spearman, check.promoted))
    low, brackets = check.choose()
    chosen = (f"rungs from {low} steps, {brackets} bracket" if low < check.rungs[-1]
              else f"no rung below {low} steps ranks usefully: one length")
    return f"{len(check.losses)} losses, {cells} -> {chosen} ({check.seconds:.0f} s)"


def study_text(fid: dict) -> str | None:
    """One line on the rung check of a study's rungs summary
    (:func:`~lossforge.evaluation.fidelity.study_fidelity`; ``None`` without a check)."""
    stored = fid.get("rung_check")
    if not stored:
        return None
    try:
        return "rung check: " + summary_line(RungCheck.from_dict(stored))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return f"rung check: stored result unreadable ({type(err).__name__})"


def grid(max_steps: int, eta: int, levels: int) -> list[int]:
    """``levels`` rung lengths ``max_steps · η^-k``, shortest first, each at least 1 step and
    distinct (a short ``max_steps`` gives fewer)."""
    out: list[int] = []
    for k in range(levels - 1, -1, -1):
        s = max(1, round(max_steps / eta ** k))
        if not out or s > out[-1]:
            out.append(s)
    out[-1] = max_steps
    return out


def check_rungs(task: Task, metric: str, losses: list[str], max_steps: int, *, eta: int = 3,
                levels: int = 4, seed: int = 0, device: str = "cpu",
                loss_spec: Callable = str, executor: Any = None) -> RungCheck:
    """Train every loss of ``losses`` (formulas) once through :func:`grid` (continued from rung
    to rung) and return the :class:`RungCheck`. ``loss_spec(formula)``: what the training is
    given (the proxy stage's ``loss_spec`` for a multi-slot task); ``seed``: the proxy's seed.
    ``executor``: a ``concurrent.futures``-style executor (``--workers``, Dask) that trains the
    losses in parallel, one job per loss (:func:`rung_curve`); ``None``: in this process. The
    result does not depend on it; ``seconds`` is wall time."""
    if len(losses) < 4:
        raise ValueError(f"a rung check needs at least 4 losses to rank, got {len(losses)}")
    rungs = grid(max_steps, eta, levels)
    t0 = time.perf_counter()
    args = [(task, loss_spec(formula), metric, rungs, seed, device) for formula in losses]
    if executor is None:
        fitness = [rung_curve(*a) for a in args]
    else:
        futures = [executor.submit(rung_curve, *a) for a in args]
        fitness = [f.result() for f in futures]
    return RungCheck(rungs, eta, list(losses), fitness, seconds=time.perf_counter() - t0)


def rung_curve(task: Task, loss, metric: str, rungs: list[int], seed: int,
               device: str = "cpu") -> list[float]:
    """One loss (``loss``: a formula, or a multi-slot loss spec) trained through ``rungs`` steps,
    continuing from rung to rung: its fitness at each (higher is better; ``-inf`` from the rung
    where it diverged or failed). A job: plain picklable arguments."""
    from lossforge.evaluation.fidelity import rung_job

    row: list[float] = []
    state, alive = None, True
    for k, steps in enumerate(rungs):
        if not alive:  # diverged (or failed) at an earlier rung
            row.append(-math.inf)
            continue
        out = rung_job(task, loss, metric, steps, seed, device, state_in=state,
                       return_state=k < len(rungs) - 1)
        alive = out["status"] == TRAINED and out["fitness"] is not None
        state = out.get("state")  # None for a task with its own loop: each rung restarts
        row.append(float(out["fitness"]) if alive else -math.inf)
    return row


def search_check(task: Task, metric: str, stages: list | None, max_steps: int, *, eta: int = 3,
                 levels: int = 4, n_random: int | None = None, seed: int = 0,
                 device: str = "cpu", executor: Any = None) -> RungCheck:
    """The rung check of a search (``min_steps="auto"``) and of ``lossforge rung-check``: the
    :func:`loss_pool` (``n_random`` screened random candidates, default ``POOL_RANDOM``; 0 needs
    no ``stages``) through :func:`check_rungs` (on ``executor`` when given); ``seconds`` counts
    the pool's screening too."""
    started = time.perf_counter()
    n_random = POOL_RANDOM if n_random is None else n_random
    pool = loss_pool(task, n_random=n_random, seed=seed, stages=stages)
    check = check_rungs(task, metric, pool, max_steps, eta=eta, levels=levels, seed=seed,
                        device=device, executor=executor)
    check.seconds = time.perf_counter() - started
    return check


def loss_pool(task: Task, n_zoo: int = POOL_ZOO, n_random: int = 0, seed: int = 0,
              stages: list | None = None) -> list[str]:
    """Up to ``n_zoo`` distinct zoo formulas for the task's kind, then up to ``n_random`` random
    candidates that every screening stage of ``stages`` lets through (required when
    ``n_random`` > 0; a funnel's checks, GEC and LRP)."""
    from lossforge import zoo

    pool: list[str] = []
    for e in zoo.entries(task.kind):
        expr = e.expr_for(task)
        if expr is not None and str(expr) not in pool:
            pool.append(str(expr))
    pool = pool[:n_zoo]
    if n_random > 0:
        if stages is None:
            raise ValueError("random candidates need the screening stages that let them through")
        pool += [str(e) for e in random_survivors(task, stages, n_random, seed, skip=set(pool))]
    return pool


def random_survivors(task: Task, stages, n: int, seed: int = 0, skip: set[str] = frozenset(),
                     batch: int = 32, rounds: int = 200) -> list:
    """Up to ``n`` distinct expressions (not in ``skip``) drawn by the random strategy from the
    task's default space, in ``batch``es for at most ``rounds``, that every callable of
    ``stages`` (each ``stage(candidates)``, marking rejects done) lets through."""
    from lossforge.expr import spaces
    from lossforge.search import get_class

    cls = get_class("random")
    space = spaces.get(cls.default_space, variables=sorted(task.slot("loss").variables - {"z"}))
    strategy = cls(space, seed=seed)
    found: dict[str, object] = {}
    for _ in range(rounds):
        cands = [Candidate(e) for e in strategy.ask(batch)]
        for stage in stages:
            stage(cands)
        for c in cands:
            if not c.done and str(c.expr) not in skip:
                found.setdefault(str(c.expr), c.expr)
        strategy.tell([(c.expr, None) for c in cands])
        if len(found) >= n:
            break
    return list(found.values())[:n]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share one), ``-inf`` lowest."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties; ``nan`` when either is constant)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def promoted_share(rung: np.ndarray, final: np.ndarray, eta: int, top: int = 3) -> float:
    """The share of the ``top`` best by ``final`` that are among the best ``⌈n/η⌉`` by ``rung``
    (ties: the earlier loss first, as ASHA's quota)."""
    n = len(rung)
    keep = set(np.argsort(-np.asarray(rung, float), kind="stable")[:math.ceil(n / eta)].tolist())
    best = np.argsort(-np.asarray(final, float), kind="stable")[:min(top, n)]
    return float(np.mean([i in keep for i in best.tolist()]))
