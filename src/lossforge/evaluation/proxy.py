"""Stage 4, ``proxy``: a short training of the task's model with the candidate loss.

Fitness is the target metric on the validation split times its direction (higher is better).
Training stops at the first non-finite loss value (status ``invalid``, no fitness). Jobs are plain
functions of picklable arguments so that any ``concurrent.futures``-style executor can run them.
"""
from __future__ import annotations

from concurrent.futures import as_completed
from dataclasses import dataclass

from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED, Candidate
from lossforge.evaluation.stage import StageStats, timed
from lossforge.tasks import Task
from lossforge.training import OK, train


@dataclass(frozen=True)
class ProxyStageConfig:
    """``steps``: training steps (``None``: the task's proxy default); ``seed``: training seed;
    ``batch``: without an executor, train up to this many candidates at once when the task's model
    allows it (:mod:`~lossforge.evaluation.proxy_batched`; 1: one at a time)."""

    steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    batch: int = 16


def proxy_job(task: Task, formula: str | dict[str, str], metric: str, steps: int | None, seed: int,
              device: str = "cpu") -> dict:
    """Train once and return ``{"status", "fitness", "metrics", "seconds", "steps_done"}``.

    ``formula``: the loss (a multi-slot task: a dict slot -> formula, see ``train``)."""
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
                from lossforge.evaluation.proxy_batched import in_process_results

                results = in_process_results(self.task, todo, args, self.config.batch)
            elif getattr(self.executor, "serial", False):  # runs at submit: one job at a time
                results = ((c, _result(self.executor.submit(_safe_job, a))) for c, a in zip(todo, args))
            else:
                futures = {self.executor.submit(_safe_job, a): c for a, c in zip(args, todo)}
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


def _safe_job(args: tuple) -> dict:
    """Run :func:`proxy_job`; an exception in the candidate's training becomes status ``failed``."""
    try:
        return proxy_job(*args)
    except (RuntimeError, ValueError, FloatingPointError) as err:
        return {"status": FAILED, "fitness": None, "reason": f"{type(err).__name__}: {err}"}
