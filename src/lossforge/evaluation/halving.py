"""Stage 5 (optional): successive halving — the NLFS elimination protocol, generalised.

``successive_halving(losses, rounds, metric=) -> HalvingResult``

NLFS (Morgan & Hougen 2024) retrains the survivors of its search on bigger models with stronger
augmentation and cuts them 25 → 12 → 6 → 4. Here a *round* is a :class:`HalvingRound`: a task (a
task object, a name or spec as :func:`~lossforge.tasks.spec.load_task` takes, or a zero-argument
factory returning a task — so each round can use a bigger model, more data or other settings),
a number of training ``steps``, the ``seeds`` and how many losses to ``keep``. Contract:

* Every loss still in the race is trained once per seed of the round with
  :func:`lossforge.training.train` (or, with ``batched=True`` and a supported model, all losses of
  one seed together with :func:`~lossforge.training.stacked.train_batched`), scoring the
  **validation split only**: the test split is never computed, so the selection cannot see it.
  A round's task that overrides :meth:`~lossforge.tasks.Task.fit` is trained by its own loop
  instead, one loss at a time (:func:`~lossforge.evaluation.own_loop.training_run`, as the proxy
  stage does), whatever ``batched`` says; an exception in that loop raises
  :class:`~lossforge.evaluation.own_loop.OwnLoopError`.
* Ranking, best first: losses whose runs were all valid before losses with a non-finite run
  (AutoLoss-Zero/NLFS: a loss that diverges is eliminated first), then fewer invalid runs, then the
  mean validation ``metric`` over the valid runs in the metric's direction, then the order of
  ``losses`` (ties are broken by the input order, never by chance). A loss with no valid run ranks
  last.
* The top ``keep`` of a round enter the next one (all of them when ``keep`` ≥ the entrants). The
  survivors of the last round, best first, are :attr:`HalvingResult.survivors`.
* Deterministic: the same losses, rounds and seeds give the same result (CPU training is
  deterministic for a seed; the batched path agrees with it up to float summation order).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from lossforge.evaluation.own_loop import training_run
from lossforge.expr import Expr
from lossforge.tasks import Task, overrides_fit
from lossforge.tasks.spec import load_task
from lossforge.training import OK, TrainResult

__all__ = ["HalvingResult", "HalvingRound", "RoundResult", "Standing", "successive_halving"]


@dataclass(frozen=True)
class HalvingRound:
    """One round: train on ``task`` for ``steps`` (``None``: the task's proxy default) with each
    of ``seeds``, then keep the best ``keep``. ``label`` names the round in tables."""

    task: Task | str | Callable[[], Task]
    keep: int
    steps: int | None = None
    seeds: tuple[int, ...] = (0,)
    label: str = ""


@dataclass
class Standing:
    """One loss in one round: validation ``values`` per seed (``None`` for an invalid run), their
    ``mean``/``std`` over the valid runs (std with ddof=1, 0 for one run; ``nan`` if none),
    its ``rank`` (1 = best) and whether it was ``kept``."""

    loss: str
    rank: int
    kept: bool
    mean: float
    std: float
    runs: int
    invalid: int
    values: list[float | None] = field(default_factory=list)


@dataclass
class RoundResult:
    index: int
    label: str
    task: str
    steps: int
    seeds: list[int]
    keep: int
    standings: list[Standing]  # best first

    @property
    def kept(self) -> list[str]:
        return [s.loss for s in self.standings if s.kept]


@dataclass
class HalvingResult:
    """The rounds (each with its standings, best first), the final ``survivors`` (best first),
    the ``metric`` ranked on (validation split) and every raw run."""

    metric: str
    rounds: list[RoundResult]
    runs: list[TrainResult]

    @property
    def survivors(self) -> list[str]:
        return self.rounds[-1].kept if self.rounds else []

    def rows(self) -> list[dict]:
        """One flat row per (round, loss), for tables."""
        return [{"round": r.index, "label": r.label, "task": r.task, "steps": r.steps,
                 "seeds": len(r.seeds), **{k: v for k, v in asdict(s).items() if k != "values"}}
                for r in self.rounds for s in r.standings]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "survivors": self.survivors,
                "rounds": [asdict(r) for r in self.rounds]}


def _resolve(task) -> Task:
    if isinstance(task, (str, Task)):
        return load_task(task)
    if callable(task):
        return load_task(task())
    return task  # a task-like object (duck typing, DESIGN.md §4)


def _name(spec) -> str:
    return str(spec) if isinstance(spec, Expr) else spec if isinstance(spec, str) else \
        getattr(spec, "formula", type(spec).__name__)


def _train_round(task: Task, specs: list, names: list[str], steps, seeds, device, batched,
                 progress, index, metric: str) -> dict[str, list[TrainResult]]:
    out: dict[str, list[TrainResult]] = {n: [] for n in names}
    use_batched = False
    if batched and not overrides_fit(task):
        from lossforge.training.stacked import supports_batched, train_batched

        use_batched = supports_batched(task)
    total, done = len(specs) * len(seeds), 0
    for seed in seeds:
        if use_batched:
            results = train_batched(task, specs, steps=steps, seed=seed, device=device,
                                    splits=("val",))
        else:
            results = []
            for spec, name in zip(specs, names):
                results.append(training_run(task, spec, steps=steps, seed=seed, device=device,
                                            split="val", metric=metric))
                done += 1
                if progress:
                    progress(index, done, total, name)
        for name, r in zip(names, results):
            r.loss = name
            out[name].append(r)
        if use_batched:
            done += len(specs)
            if progress:
                progress(index, done, total, names[-1])
    return out


def successive_halving(losses: Sequence[str | Expr], rounds: Sequence[HalvingRound], *,
                       metric: str | None = None, device: str = "cpu", batched: bool = False,
                       progress: Callable[[int, int, int, str], None] | None = None
                       ) -> HalvingResult:
    """Race ``losses`` through ``rounds``, keeping the top ``keep`` of each (see the module doc).

    ``metric``: the validation metric ranked on (default: the first round's task's default
    metric). ``progress(round_index, done, total, loss)`` is called after each training.
    ``ValueError`` for no losses, duplicate names, no rounds, a round without seeds or ``keep`` < 1.
    """
    specs = list(losses)
    names = [_name(s) for s in specs]
    if not specs:
        raise ValueError("successive_halving needs at least one loss")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate losses: {', '.join(dup)}")
    if not rounds:
        raise ValueError("successive_halving needs at least one round")
    for i, rnd in enumerate(rounds):
        if int(rnd.keep) < 1:
            raise ValueError(f"round {i}: keep must be at least 1, got {rnd.keep}")
        if not rnd.seeds:
            raise ValueError(f"round {i}: at least one seed is needed")
    order = {n: i for i, n in enumerate(names)}
    spec_of = dict(zip(names, specs))
    alive = list(names)
    results: list[RoundResult] = []
    all_runs: list[TrainResult] = []
    for i, rnd in enumerate(rounds):
        task = _resolve(rnd.task)
        metric = metric or task.default_metric
        sign = task.metric(metric).sign
        seeds = [int(s) for s in rnd.seeds]
        steps = int(rnd.steps if rnd.steps is not None else task.proxy.steps)
        per_loss = _train_round(task, [spec_of[n] for n in alive], alive, steps, seeds, device,
                                batched, progress, i, metric)
        standings = []
        for name in alive:
            runs = per_loss[name]
            all_runs.extend(runs)
            values = [r.val[metric] if r.status == OK else None for r in runs]
            valid = [v for v in values if v is not None and np.isfinite(v)]
            invalid = len(values) - len(valid)
            mean = float(np.mean(valid)) if valid else float("nan")
            std = (float(np.std(valid, ddof=1)) if len(valid) > 1
                   else 0.0 if valid else float("nan"))
            standings.append(Standing(name, 0, False, mean, std, len(runs), invalid, values))

        def key(s: Standing):
            score = sign * s.mean if np.isfinite(s.mean) else float("-inf")
            return (s.invalid > 0, s.invalid, -score, order[s.loss])

        standings.sort(key=key)
        keep = min(int(rnd.keep), len(standings))
        for rank, s in enumerate(standings, 1):
            s.rank, s.kept = rank, rank <= keep
        results.append(RoundResult(i, rnd.label or f"round {i + 1}", task.name, steps, seeds,
                                   int(rnd.keep), standings))
        alive = [s.loss for s in standings if s.kept]
    return HalvingResult(metric, results, all_runs)
