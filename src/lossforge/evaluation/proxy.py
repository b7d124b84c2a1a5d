"""Stage 4, ``proxy``: a short training of the task's model with the candidate loss.

Fitness is the target metric on the validation split times its direction (higher is better).
Training stops at the first non-finite loss value (status ``invalid``, no fitness). Jobs are plain
functions of picklable arguments so that any ``concurrent.futures``-style executor can run them
(:func:`safe_proxy_job`, which turns a training's exception into status ``failed``). Without an
executor the stage schedules its candidates itself (:func:`in_process_results`): in chunks trained
together by :func:`~lossforge.training.stacked.train_batched` when the task's model allows it,
else one at a time.

A task that overrides :meth:`~lossforge.tasks.Task.fit` (its own training loop, e.g. an
``objective_task``) is trained by that method instead, one candidate at a time, whatever the
executor (:func:`~lossforge.evaluation.own_loop.fit_job`: its result dict becomes the stage's
result; exceptions in the user's loop become status ``failed`` with the user's line). A task that
does not override it keeps the path above: lossforge's loop, which is also what the default
``Task.fit`` runs, so both give the same metrics. ``report(step, metrics)`` calls from the user's
loop reach :attr:`ProxyTraining.on_report` when the stage runs in this process (no executor, or a
serial one); worker processes (process pool, Dask) check them and drop them.
"""
from __future__ import annotations

from concurrent.futures import as_completed
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED, Candidate
from lossforge.evaluation.own_loop import Reports, fit_job
from lossforge.evaluation.rungs import FidelityConfig
from lossforge.evaluation.stage import StageStats, timed
from lossforge.tasks import Task, overrides_fit
from lossforge.training import OK, tensor_data, train
from lossforge.training import stacked
from lossforge.training.loss_spec import load_loss

#: Default number of candidates the in-process stage trains together.
DEFAULT_CHUNK = 16


@dataclass(frozen=True)
class ProxyStageConfig:
    """``steps``: training steps (``None``: the task's proxy default); ``seed``: training seed;
    ``batch``: without an executor, train up to this many candidates at once when the task's model
    allows it (:mod:`~lossforge.training.stacked`; 1: one at a time); ``fidelity``: a
    :class:`~lossforge.evaluation.rungs.FidelityConfig` (or its dict) for multi-fidelity rungs
    (:mod:`~lossforge.evaluation.fidelity`); ``None`` = one training of ``steps``.
    ``optimizers``: train each candidate under each of these optimizers and score the worst
    (:mod:`~lossforge.evaluation.optimizers`; a sequence or ``"adam,sgd"``, stored as that
    text); ``None`` = the task's optimizer only."""

    steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    batch: int = DEFAULT_CHUNK
    fidelity: FidelityConfig | None = None
    optimizers: str | None = None

    def __post_init__(self):
        if self.optimizers is not None and not isinstance(self.optimizers, str):
            object.__setattr__(self, "optimizers", ",".join(self.optimizers))
        if not self.optimizers:
            object.__setattr__(self, "optimizers", None)
        if self.fidelity is not None:
            fid = FidelityConfig.coerce(self.fidelity)
            object.__setattr__(self, "fidelity", fid if fid.active else None)


def proxy_job(task: Task, formula: str | dict[str, str], metric: str, steps: int | None, seed: int,
              device: str = "cpu", report: Reports | None = None) -> dict:
    """Train once and return ``{"status", "fitness", "metrics", "seconds", "steps_done"}``
    (and ``"reason"`` for a task with its own loop).

    ``formula``: the loss (a multi-slot task: a dict slot -> formula, see ``train``). A task that
    overrides ``Task.fit`` is trained by it (:func:`~lossforge.evaluation.own_loop.fit_job`, which
    gets ``report``); otherwise lossforge's loop trains it (``report`` unused)."""
    if overrides_fit(task):
        return fit_job(task, formula, metric, steps, seed, device, report)
    result = train(task, formula, steps=steps, seed=seed, device=device, splits=("val",))
    m = task.metric(metric)
    ok = result.status == OK
    return {"status": TRAINED if ok else INVALID,
            "fitness": m.sign * result.val[metric] if ok else None,
            "metrics": result.val, "seconds": result.wall_time, "steps_done": result.steps_done}


class ProxyTraining:
    """Stage 4 over the candidates still pending, through ``executor.map`` (serial by default)."""

    name = "proxy"

    def __init__(self, task: Task, metric: str, config: ProxyStageConfig = ProxyStageConfig(),
                 executor=None, slot: str | None = None, fixed: dict[str, str] | None = None):
        self.task, self.metric, self.config, self.executor = task, metric, config, executor
        self.slot, self.fixed = slot, fixed
        self.stats = StageStats(self.name)
        #: ``on_report(candidate, step, metrics)``: the reports of a task's own loop
        #: (:meth:`~lossforge.tasks.Task.fit`) while the candidate trains in this process.
        self.on_report: Callable[[Candidate, int, dict], None] | None = None

    def reporter(self, candidate: Candidate) -> Reports | None:
        """The ``report`` for ``candidate``'s in-process training with a task's own loop
        (forwarding to :attr:`on_report`); ``None`` when nobody listens or the task has none."""
        on_report = self.on_report
        if on_report is None or not overrides_fit(self.task):
            return None
        return Reports(lambda step, metrics: on_report(candidate, step, metrics))

    def loss_spec(self, expr) -> str | dict[str, str]:
        """What ``train`` gets for a candidate: its formula; with ``fixed`` (a slot of a
        multi-slot task) ``{**fixed, slot: formula}``; a bundle (joint search) its slot dict."""
        if hasattr(expr, "loss_spec"):
            return {**(self.fixed or {}), **expr.loss_spec()}
        if self.fixed is not None:
            return {**self.fixed, self.slot: str(expr)}
        return str(expr)

    def __call__(self, candidates: list[Candidate], on_done=None) -> None:
        """Train the pending candidates; ``on_done(candidate)`` is called as each one finishes."""
        todo = [c for c in candidates if not c.done]
        if not todo:
            return
        with timed(self.stats):
            self.stats.n_in += len(todo)
            args = [(self.task, self.loss_spec(c.expr), self.metric, self.config.steps, self.config.seed,
                     self.config.device) for c in todo]
            if self.executor is None:
                results = in_process_results(self.task, todo, args, self.config.batch, self.reporter)
            elif getattr(self.executor, "serial", False):  # runs at submit: one job at a time
                results = ((c, _result(self.executor.submit(safe_proxy_job, a, self.reporter(c))))
                           for c, a in zip(todo, args))
            else:
                futures = {self.executor.submit(safe_proxy_job, a): c for a, c in zip(args, todo)}
                results = ((futures[f], _result(f)) for f in as_completed(futures))
            for c, out in results:
                c.status, c.fitness = out["status"], out.get("fitness")
                c.metrics = out.get("metrics", {})
                c.reason = out.get("reason", "")
                c.seconds[self.name] = out.get("seconds", 0.0)
                if c.status == TRAINED:
                    self.stats.n_out += 1
                if on_done is not None:
                    on_done(c)


def _result(future) -> dict:
    """A future's job result; a crashed worker or a lost task becomes status ``failed``."""
    try:
        return future.result()
    except TimeoutError as err:  # the executor's per-candidate time limit
        return {"status": FAILED, "fitness": None, "reason": f"timeout: {err}"}
    except Exception as err:  # the executor's failure modes vary (BrokenProcessPool, KilledWorker…)
        return {"status": FAILED, "fitness": None, "reason": f"{type(err).__name__}: {err}"}


def safe_proxy_job(args: tuple, report: Reports | None = None) -> dict:
    """Run :func:`proxy_job`; an exception in the candidate's training becomes status ``failed``.

    ``report``: in-process only (it does not pickle), for a task with its own loop."""
    try:
        return proxy_job(*args, report=report)
    except (RuntimeError, ValueError, FloatingPointError) as err:
        return {"status": FAILED, "fitness": None, "reason": f"{type(err).__name__}: {err}"}


# ---- the in-process path: chunks trained together ------------------------------------------------
def can_stack(task: Task, chunk: int) -> bool:
    """Whether in-process proxy trainings of ``task`` may run ``chunk`` at a time on the stacked
    engine (:mod:`~lossforge.training.stacked`): ``chunk`` > 1, one loss slot, in-memory tensor
    splits, a supported model, and no training loop of the task's own."""
    return (chunk > 1 and not overrides_fit(task) and len(task.loss_slots()) == 1
            and tensor_data(task) and stacked.supports_batched(task))


def in_process_results(task: Task, todo: list, args: list[tuple], chunk: int = DEFAULT_CHUNK,
                       reporter: Callable[[Candidate], Reports | None] | None = None
                       ) -> Iterator[tuple]:
    """``(candidate, job result)`` pairs for the proxy stage's in-process path, chunk by chunk.

    ``args[i]`` are :func:`proxy_job`'s arguments for ``todo[i]`` (task, formula, metric, steps,
    seed, device); results have the fields ``proxy_job`` returns. Candidates are trained with
    :func:`~lossforge.training.stacked.train_batched` in chunks of ``chunk`` when the task supports
    it, else (and for ``chunk <= 1``) one at a time through the sequential job. A loss that cannot
    be loaded, a copy that fails, or a chunk whose batched training raises goes through the
    sequential job, which gives the exact sequential outcome (status ``failed`` with its reason).
    A task with its own loop (``Task.fit`` overridden) trains one candidate at a time through it,
    with ``reporter(candidate)`` as its ``report``.
    """
    if overrides_fit(task):
        for c, a in zip(todo, args):
            yield c, safe_proxy_job(a, reporter(c) if reporter is not None else None)
        return
    if not todo or not can_stack(task, chunk):  # Dataset splits: sequential, streamed
        for c, a in zip(todo, args):  # multi-slot tasks: always sequential (composite losses)
            yield c, safe_proxy_job(a)
        return
    batchable, single = [], []
    for c, a in zip(todo, args):
        try:
            load_loss(a[1], task)
            batchable.append((c, a))
        except ValueError:
            single.append((c, a))
    for c, a in single:
        yield c, safe_proxy_job(a)
    groups: dict[tuple, list] = {}  # same training settings -> one batched run
    for c, a in batchable:
        groups.setdefault(tuple(a[2:]), []).append((c, a))
    for key, items in groups.items():
        metric, steps, seed = key[:3]
        device = key[3] if len(key) > 3 else "cpu"
        for lo in range(0, len(items), chunk):
            yield from _chunk_results(task, items[lo:lo + chunk], metric, steps, seed, device)


def _chunk_results(task: Task, part: list, metric: str, steps: int | None, seed: int,
                   device: str) -> Iterable[tuple]:
    """One chunk trained together; a copy that failed (or the whole chunk raising) runs alone."""
    m = task.metric(metric)
    try:
        results = stacked.train_batched(task, [a[1] for _, a in part], steps=steps, seed=seed,
                                        device=device, splits=("val",))
    except (RuntimeError, ValueError, FloatingPointError):
        for c, a in part:
            yield c, safe_proxy_job(a)
        return
    for (c, a), r in zip(part, results):
        if r.status == stacked.FAILED:
            yield c, safe_proxy_job(a)
            continue
        ok = r.status == OK
        yield c, {"status": TRAINED if ok else INVALID,
                  "fitness": m.sign * r.val[metric] if ok else None,
                  "metrics": r.val, "seconds": r.wall_time, "steps_done": r.steps_done}
