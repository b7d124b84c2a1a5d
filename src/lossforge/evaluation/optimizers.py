"""Proxy training under several optimizers (issue 18, part 3): ``--proxy-optimizers adam,sgd``.

A search normally scores each candidate with one proxy training under the task's optimizer
(usually Adam). Adam normalises each parameter's gradient, so it trains with losses whose gradient
*scale* is absurd, and those collapse under plain SGD (``square(inv(p * y))``: 0.987 accuracy on
``digits`` with Adam, chance with SGD). With ``ProxyStageConfig(optimizers=("adam", "sgd"))`` (CLI
``--proxy-optimizers adam,sgd``) every proxy training runs once under each listed optimizer and the
candidate's fitness is the **worst** of them:

* the task's own optimizer keeps the task's learning rate and momentum;
* another optimizer runs at a learning rate tuned once per study for the task's baseline loss (CE
  for classification): the grid :data:`LR_GRIDS` (SGD: momentum :data:`SGD_MOMENTUM`), one
  training of the proxy's steps each (seed ``proxy seed + 1``, validation metric), the best kept
  (:func:`tune_lr`). The tuning is stored in the study (meta ``"proxy_lr"``) before the first
  candidate trains, so a resumed search never retunes.

Why the worst and not the mean: the point is a loss that works under *every* listed optimizer. A
mean lets a high Adam score hide a collapse under SGD (0.99 and 0.10 average 0.545, above a loss
that reaches 0.5 under both), so the search would keep breeding losses that fail the user who
trains with SGD; the worst is the score the user gets under the least favourable of the listed
optimizers, and a loss that beats CE on it beats CE under each of them.

Results per optimizer are kept in the candidate's metrics: ``"<metric>@<optimizer>"`` (the raw
validation metric, e.g. ``accuracy@sgd``); the plain metric keys are those of the worst
optimizer's training, so ``fitness == sign * metrics[metric]`` as for one optimizer. A candidate
that is invalid (non-finite loss) or fails under any optimizer is invalid or failed, its reason
naming the optimizer. The study's baseline is measured the same way (worst over the optimizers,
``by_optimizer`` in the stored baseline), so "best found vs baseline" compares like with like.

What does not combine, with a clear ``ValueError`` (:func:`check_combination`): a task with its
own training loop (``Task.fit`` decides its optimizer), multi-fidelity rungs (``--fidelity asha``:
a rung continues one training's optimizer state; one ladder per optimizer is not built), an
optimizer other than ``adam``/``sgd``, a repeated one, or fewer than two.
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Callable, Sequence

from lossforge.evaluation.baseline import FAILED as BASELINE_FAILED
from lossforge.evaluation.baseline import measure_baseline, preserved_random_state
from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED, Candidate
from lossforge.evaluation.own_loop import training_run
from lossforge.evaluation.stage import StageStats, timed
from lossforge.tasks import Task, overrides_fit
from lossforge.training import OK

#: The optimizers a proxy can train with.
OPTIMIZERS = ("adam", "sgd")
#: Momentum of SGD when it is not the task's own optimizer.
SGD_MOMENTUM = 0.9
#: Learning rates tried for an optimizer that is not the task's own (with the baseline loss).
LR_GRIDS = {"sgd": (0.003, 0.01, 0.03, 0.1, 0.3), "adam": (0.0003, 0.001, 0.003, 0.01, 0.03)}
#: Study meta key of the tuned learning rates.
LR_KEY = "proxy_lr"


def parse_optimizers(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"adam,sgd"`` (or a sequence) -> ``("adam", "sgd")``; ``None``/empty -> ``None``.
    ``ValueError`` for an unknown or repeated optimizer, or for fewer than two."""
    if text is None:
        return None
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        return None
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown proxy optimizer {unknown[0]!r}; use a comma-separated list of "
                         f"{', '.join(OPTIMIZERS)}, e.g. adam,sgd")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"proxy optimizers {','.join(names)}: list two or more distinct ones "
                         "(e.g. adam,sgd); one optimizer is the plain proxy (leave it out)")
    return tuple(names)


def check_combination(task: Task, optimizers: str | Sequence[str], fidelity: Any = None,
                      joint: bool = False) -> None:
    """``ValueError`` when ``optimizers`` cannot be used with ``task``, ``fidelity`` or a joint
    search (module docstring)."""
    parse_optimizers(optimizers)
    if joint or len(task.loss_slots()) > 1:
        raise ValueError("--proxy-optimizers supports single-slot tasks (it tunes each extra "
                         "optimizer's learning rate with the task's one baseline loss); search "
                         "without it and check the result with `lossforge refine STUDY --panel`")
    if overrides_fit(task):
        raise ValueError(f"task {task.name!r} trains with its own loop (fit), which chooses its "
                         "optimizer itself: --proxy-optimizers cannot change it. Search without "
                         "it and check the result with `lossforge refine STUDY --panel`")
    if fidelity is not None:
        raise ValueError("--proxy-optimizers does not combine with multi-fidelity rungs "
                         "(--fidelity asha): a rung continues one training, with one optimizer. "
                         "Use one of them")


def with_training(task: Task, *, optimizer: str | None = None, lr: float | None = None,
                  momentum: float | None = None) -> Task:
    """A shallow copy of ``task`` whose proxy uses ``optimizer``/``lr``/``momentum`` (``None``:
    unchanged). The data and everything else are shared; ``task`` itself is not modified.
    ``ValueError`` for an optimizer other than ``adam``/``sgd`` or a learning rate ≤ 0."""
    if optimizer not in (None, *OPTIMIZERS):
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam' or 'sgd'")
    if lr is not None and not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    out = copy.copy(task)
    out.proxy = task.proxy.with_(optimizer=optimizer, lr=lr, momentum=momentum)
    return out


def tune_lr(cache: dict[str, Any] | None, save: Callable[[dict[str, Any]], None], task: Task,
            loss: str, optimizer: str, steps: int, metric: str, grid: Sequence[float],
            seed: int = 1, device: str = "cpu") -> tuple[float, dict[str, Any]]:
    """The learning rate of ``grid`` at which ``optimizer`` (SGD: momentum
    :data:`SGD_MOMENTUM`) trains ``loss`` best on the validation split (``seed``, ``steps``
    steps); returns it and the cache. ``cache``: a previous call's (reused when it is for the same
    loss, optimizer, steps, metric and grid; points already trained are not retrained); ``save``
    gets the cache after each grid point, so a killed tuning resumes. An invalid run scores last;
    ties: the smaller learning rate. The process's random states are left as they were."""
    sign = task.metric(metric).sign
    want = {"loss": loss, "optimizer": optimizer, "steps": steps, "metric": metric,
            "grid": list(grid), "seed": seed}
    if not cache or any(cache.get(k) != v for k, v in want.items() if k != "optimizer") \
            or cache.get("optimizer", optimizer) != optimizer:
        cache = {**want, "values": {}}
    momentum = SGD_MOMENTUM if optimizer == "sgd" else None
    for lr in grid:
        if f"{lr:g}" in cache["values"]:
            continue
        with preserved_random_state(device):
            r = training_run(with_training(task, optimizer=optimizer, lr=lr, momentum=momentum),
                             loss, steps=steps, seed=seed, device=device, split="val",
                             metric=metric)
        v = r.val.get(metric) if r.status == OK else None
        cache["values"][f"{lr:g}"] = v if v is not None and math.isfinite(v) else None
        save(cache)

    def score(lr: float) -> float:
        v = cache["values"][f"{lr:g}"]
        return sign * v if v is not None else -math.inf

    cache["lr"] = max(grid, key=lambda lr: (score(lr), -lr))
    save(cache)
    return cache["lr"], cache


def optimizer_tasks(task: Task, optimizers: Sequence[str], lrs: dict[str, float]
                    ) -> dict[str, Task]:
    """Optimizer -> the task to train under it: the task itself for its own optimizer, else a
    copy with that optimizer at ``lrs[optimizer]`` (SGD: momentum :data:`SGD_MOMENTUM`)."""
    own = task.proxy.optimizer
    return {o: task if o == own else
            with_training(task, optimizer=o, lr=lrs[o],
                          momentum=SGD_MOMENTUM if o == "sgd" else None)
            for o in optimizers}


def combine(results: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """One proxy result from one per optimizer (each as
    :func:`~lossforge.evaluation.proxy.proxy_job` returns it; in the listed order): failed if any
    failed, else invalid if any is invalid, else trained with the worst fitness and that
    training's metrics; ``"<metric>@<optimizer>"`` for each optimizer that trained; ``seconds``
    summed."""
    seconds = sum(float(r.get("seconds") or 0.0) for r in results.values())
    per = {f"{metric}@{o}": r["metrics"][metric] for o, r in results.items()
           if r["status"] == TRAINED and metric in (r.get("metrics") or {})}
    for status in (FAILED, INVALID):
        bad = [o for o, r in results.items() if r["status"] == status]
        if bad:
            reason = "; ".join(f"under {o}: {results[o].get('reason') or status}" for o in bad)
            return {"status": status, "fitness": None, "metrics": per, "seconds": seconds,
                    "reason": reason}
    worst = min(results, key=lambda o: results[o]["fitness"])
    return {"status": TRAINED, "fitness": results[worst]["fitness"],
            "metrics": {**results[worst]["metrics"], **per}, "seconds": seconds}


class MultiOptimizerTraining:
    """The funnel's ``proxy`` stage under several optimizers: ``stages`` maps each optimizer to
    a single-optimizer proxy stage (:class:`~lossforge.evaluation.proxy.ProxyTraining` of the
    task trained under it). Candidates are trained in chunks of ``chunk``: each chunk under every
    optimizer (each stage batches it as it would alone), then combined (:func:`combine`) and
    reported through ``on_done`` before the next chunk, so a killed search loses at most one
    chunk."""

    name = "proxy"

    def __init__(self, stages: dict[str, Any], metric: str, chunk: int = 16):
        self.stages, self.metric, self.chunk = stages, metric, max(1, chunk)
        self.stats = StageStats(self.name)
        self.on_report = None  # a task with its own loop is refused: nothing reports

    def __call__(self, candidates: list[Candidate], on_done=None) -> None:
        todo = [c for c in candidates if not c.done]
        if not todo:
            return
        with timed(self.stats):
            self.stats.n_in += len(todo)
            for lo in range(0, len(todo), self.chunk):
                self._chunk(todo[lo:lo + self.chunk], on_done)

    def _chunk(self, part: list[Candidate], on_done) -> None:
        results: list[dict[str, dict]] = [{} for _ in part]
        for opt, stage in self.stages.items():
            shadows = [Candidate(c.expr) for c in part]
            stage(shadows)
            for k, s in enumerate(shadows):
                results[k][opt] = {"status": s.status, "fitness": s.fitness,
                                   "metrics": s.metrics, "reason": s.reason,
                                   "seconds": s.seconds.get(stage.name, 0.0)}
        for c, res in zip(part, results):
            out = combine(res, self.metric)
            c.status, c.fitness, c.metrics = out["status"], out["fitness"], out["metrics"]
            c.reason = out.get("reason", "")
            c.seconds[self.name] = out["seconds"]
            if c.status == TRAINED:
                self.stats.n_out += 1
            if on_done is not None:
                on_done(c)


def study_lrs(store, task: Task, metric: str, optimizers: Sequence[str], proxy) -> dict[str, float]:
    """The learning rate of each listed optimizer that is not the task's own, tuned once per
    study (:func:`tune_lr`, stored in ``store``'s meta :data:`LR_KEY` and reused on resume)."""
    stored = dict(store.meta(LR_KEY) or {})
    steps = int(proxy.steps or task.proxy.steps)
    lrs = {}
    for opt in optimizers:
        if opt == task.proxy.optimizer:
            continue

        def save(cache, opt=opt):
            stored[opt] = cache
            store.set_meta(LR_KEY, stored)

        lrs[opt], _ = tune_lr(stored.get(opt), save, task, task.baseline, opt, steps,
                              metric, LR_GRIDS[opt], seed=proxy.seed + 1, device=proxy.device)
    return lrs


def multi_baseline(task: Task, metric: str, proxy, tasks_by_opt: dict[str, Task],
                   fixed: dict[str, str] | None = None) -> dict[str, Any]:
    """The study's baseline measured as the candidates are (worst over the optimizers): the
    worst optimizer's :func:`~lossforge.evaluation.baseline.measure_baseline` dict with
    ``by_optimizer`` (optimizer -> the validation metric, ``None`` unless trained) and
    ``optimizers``."""
    single = replace(proxy, optimizers=None) if hasattr(proxy, "optimizers") else proxy
    runs = {o: measure_baseline(t, metric, single, fixed) for o, t in tasks_by_opt.items()}
    fit = {o: r["fitness"] for o, r in runs.items()}
    by = {o: (r.get("metrics") or {}).get(metric) for o, r in runs.items()}
    bad = [o for o, r in runs.items() if r["status"] != TRAINED or r["fitness"] is None]
    pick = bad[0] if bad else min(fit, key=lambda o: fit[o])
    out = dict(runs[pick])
    out["seconds"] = sum(float(r.get("seconds") or 0.0) for r in runs.values())
    if bad and out["status"] == TRAINED:
        out.update(status=BASELINE_FAILED, fitness=None)
    if bad:
        out["reason"] = f"under {pick}: {out.get('reason') or out['status']}"
    return {**out, "by_optimizer": by, "optimizers": list(tasks_by_opt)}


def prepare_search(store, task: Task, metric: str, funnel, fixed: dict[str, str] | None = None
                   ) -> None:
    """Set a search up to train under ``funnel.config.proxy.optimizers``: tune (or read back) the
    learning rates, replace ``funnel.proxy`` by a :class:`MultiOptimizerTraining`, and measure
    and store the baseline the same way when the study has none yet (meta ``"baseline"``)."""
    from lossforge.evaluation.baseline import META_KEY
    from lossforge.evaluation.proxy import ProxyTraining

    proxy = funnel.config.proxy
    optimizers = parse_optimizers(proxy.optimizers)
    check_combination(task, optimizers, proxy.fidelity)
    lrs = study_lrs(store, task, metric, optimizers, proxy)
    by_opt = optimizer_tasks(task, optimizers, lrs)
    single = replace(proxy, optimizers=None)
    inner = funnel.proxy
    stages = {o: ProxyTraining(t, metric, single, inner.executor, slot=inner.slot,
                               fixed=inner.fixed) for o, t in by_opt.items()}
    funnel.proxy = MultiOptimizerTraining(stages, metric, chunk=proxy.batch)
    if store.meta(META_KEY) is None:
        store.set_meta(META_KEY, multi_baseline(task, metric, proxy, by_opt, fixed))


def per_optimizer(metrics: dict[str, Any], metric: str) -> dict[str, float]:
    """Optimizer -> validation ``metric`` from a candidate's stored metrics (empty for a study
    trained under one optimizer)."""
    prefix = f"{metric}@"
    return {k[len(prefix):]: v for k, v in (metrics or {}).items() if k.startswith(prefix)}


__all__ = ["LR_GRIDS", "LR_KEY", "MultiOptimizerTraining", "OPTIMIZERS", "SGD_MOMENTUM",
           "check_combination", "combine", "multi_baseline", "optimizer_tasks",
           "parse_optimizers", "per_optimizer", "prepare_search", "study_lrs", "tune_lr",
           "with_training"]
