"""The proxy stage for a task with its own training loop (:meth:`~lossforge.tasks.Task.fit`).

:func:`fit_job` resolves the candidate's loss into an ``nn.Module`` (a multi-slot task: the
composite ``sum_slots weight * loss_slot``, with ``.losses[slot]``), calls
``task.fit(loss, steps=, seed=, device=, report=)`` and turns what it returns into the proxy
stage's result, the same fields as :func:`~lossforge.evaluation.proxy.proxy_job`'s:

* the target metric finite: status ``trained``, fitness ``metric.sign * value``;
* the target metric ``nan`` / ``inf``: status ``invalid`` (the loss diverged), no fitness;
* no target metric, a value that is not a number, or not a dict: status ``failed``, the reason
  saying what ``fit`` returned and what it must return;
* an exception inside ``fit``: status ``failed``, the reason naming the exception and the line of
  the user's code that raised it (``file:line``); a per-candidate time limit
  (``TimeoutError``) is left to the executor, which reports it as a timeout.

:func:`training_run` is the same choice for ``lossforge.evaluate`` and successive halving
(``refine``): a task's own loop when it overrides ``fit`` (through :func:`fit_job`), else
lossforge's, as one :class:`~lossforge.training.TrainResult`.

``report`` (what ``fit`` receives) is always a callable (:class:`Reports`): it checks the contract
(``step`` an int that does not decrease, ``metrics`` a dict of numbers) and forwards each report
to ``forward(step, metrics)`` when the caller listens (the in-process proxy stage: the study's
``progress``); in worker processes nobody listens and reports are only checked.
"""
from __future__ import annotations

import logging
import math
import os
import sysconfig
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED
from lossforge.tasks import Task, overrides_fit
from lossforge.training import INVALID as TRAIN_INVALID
from lossforge.training import OK, TrainResult, train
from lossforge.training.loss_spec import load_losses

log = logging.getLogger(__name__)

_LOSSFORGE = str(Path(__file__).resolve().parents[1])


class Reports:
    """The ``report(step, metrics)`` handed to :meth:`Task.fit` by the proxy stage.

    Checks each call (``TypeError`` / ``ValueError`` raised into the user's loop, so the reason
    of the failed candidate names the user's line), keeps the ``last`` step and the number of
    ``calls``, and forwards ``(step, {name: float})`` to ``forward`` when given; an exception in
    ``forward`` (a display) is logged, never raised into the training."""

    def __init__(self, forward: Callable[[int, dict[str, float]], None] | None = None):
        self.forward, self.last, self.calls = forward, None, 0

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        if isinstance(step, bool) or not isinstance(step, int) and not hasattr(step, "__index__"):
            raise TypeError(f"report(step, metrics): step must be the number of optimisation steps "
                            f"done (an int), got {type(step).__name__} {step!r}")
        step = int(step.__index__())
        if step < 0 or (self.last is not None and step < self.last):
            raise ValueError(f"report(step, metrics): step must be >= 0 and must not decrease "
                             f"(last reported {self.last}), got {step}")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"report(step, metrics): metrics must be a dict of validation metrics "
                            f"{{name: value}}, got {type(metrics).__name__}")
        values = {}
        for name, value in metrics.items():
            number = _number(value)
            if number is None:
                raise TypeError(f"report(step, metrics): metric {name!r} is {value!r}, not a number")
            values[str(name)] = number
        self.last, self.calls = step, self.calls + 1
        if self.forward is not None:
            try:
                self.forward(step, values)
            except Exception:  # a broken display must not fail the candidate
                log.warning("the report callback raised; report dropped", exc_info=True)


def fit_job(task: Task, formula, metric: str, steps: int | None, seed: int, device: str = "cpu",
            report: Reports | None = None) -> dict:
    """Train with ``task.fit`` and return ``{"status", "fitness", "metrics", "seconds",
    "steps_done", "reason"}`` (see the module docstring). ``steps`` ``None``: the task's
    ``proxy.steps``. A loss that cannot be loaded raises ``ValueError`` (the caller's
    ``failed``)."""
    loss = load_losses(formula, task).module.to(device)
    steps = int(steps or task.proxy.steps)
    report = report if report is not None else Reports()
    start = time.perf_counter()
    try:
        out = task.fit(loss, steps=steps, seed=seed, device=device, report=report)
    except TimeoutError:  # the executor's per-candidate limit: reported as a timeout
        raise
    except Exception as err:  # the user's loop: any exception is this candidate's failure
        return {"status": FAILED, "fitness": None, "seconds": time.perf_counter() - start,
                "reason": f"{type(err).__name__} raised by {_owner(task)} at {user_line(err)}: {err}"}
    result = fit_outcome(task, metric, out)
    result["seconds"] = time.perf_counter() - start
    result["steps_done"] = steps if report.last is None else report.last
    return result


class OwnLoopError(RuntimeError):
    """The task's own training loop (``fit``) raised or returned something unusable while
    :func:`training_run` trained with it; the message is :func:`fit_job`'s reason."""


def training_run(task: Task, loss, *, steps: int | None, seed: int, device: str = "cpu",
                 split: str = "val", metric: str | None = None) -> TrainResult:
    """One training of ``task`` with ``loss`` as a :class:`~lossforge.training.TrainResult`,
    by the task's own loop when it overrides :meth:`Task.fit`, else by lossforge's
    (:func:`~lossforge.training.train`, scoring ``split``). What ``evaluate`` and successive
    halving train with, so a user's loop is used everywhere the proxy stage uses it.

    Own loop: :func:`fit_job` with ``metric`` (default: the task's ``default_metric``) as the
    target; ``fit`` returns validation metrics, so ``split`` must be ``"val"`` (``ValueError``
    otherwise). Status ``ok`` with ``val`` = the finite metrics ``fit`` returned; a non-finite
    target metric gives status ``invalid`` (as lossforge's loop does for a diverged run); an
    exception in ``fit`` or a malformed return raises :class:`OwnLoopError` with the reason
    (the user's line included), as an exception in lossforge's loop propagates."""
    if not overrides_fit(task):
        return train(task, loss, steps=steps, seed=seed, device=device, splits=(split,))
    if split != "val":
        raise ValueError(f"task {task.name!r} trains with its own loop (fit), which returns "
                         f"validation metrics only; score split 'val', not {split!r}")
    out = fit_job(task, loss, metric or task.default_metric, steps, seed, device)
    if out["status"] == FAILED:
        raise OwnLoopError(out["reason"])
    ok = out["status"] == TRAINED
    return TrainResult(loss=str(getattr(loss, "formula", loss)), seed=seed,
                       steps=int(steps or task.proxy.steps), steps_done=int(out["steps_done"]),
                       status=OK if ok else TRAIN_INVALID, val=dict(out["metrics"]) if ok else {},
                       wall_time=float(out["seconds"]))


def fit_outcome(task: Task, metric: str, out) -> dict:
    """What ``task.fit`` returned -> the proxy result's ``status``, ``fitness``, ``metrics`` and
    ``reason`` (``metrics`` keeps the finite numbers ``out`` holds)."""
    m = task.metric(metric)
    who = _owner(task)
    if not isinstance(out, Mapping):
        return _failed(f"{who} returned {type(out).__name__}, not a dict of validation metrics "
                       f"{{name: value}} (with the target metric {metric!r})")
    numbers = {str(k): _number(v) for k, v in out.items()}
    metrics = {k: v for k, v in numbers.items() if v is not None and math.isfinite(v)}
    if metric not in out:
        returned = ", ".join(map(repr, out)) or "nothing"
        return _failed(f"{who} returned no {metric!r} (it returned {returned}); return the "
                       f"validation metrics by name, the target metric {metric!r} included",
                       metrics)
    value = numbers[metric]
    if value is None:
        return _failed(f"{who} returned {metric!r} = {out[metric]!r}, not a number", metrics)
    if not math.isfinite(value):
        return {"status": INVALID, "fitness": None, "metrics": metrics,
                "reason": f"{who} returned {metric} = {value} (non-finite: the training diverged)"}
    return {"status": TRAINED, "fitness": m.sign * value, "metrics": metrics, "reason": ""}


def user_line(err: BaseException) -> str:
    """``file:line (in function)`` of the innermost frame of ``err``'s traceback in the user's
    code: outside lossforge, the standard library and installed packages; failing that, outside
    lossforge and the standard library; failing that, the innermost frame."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "an unknown line"
    paths = sysconfig.get_paths()
    stdlib = tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib") if k in paths)
    installed = tuple(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib") if k in paths)

    def outside(frame, places) -> bool:
        name = frame.filename
        if name.startswith("<"):
            return False
        path = str(Path(name).resolve())
        return not any(path == d or path.startswith(d.rstrip(os.sep) + os.sep)
                       for d in (_LOSSFORGE, *places))

    for places in (stdlib + installed, stdlib):
        user = [f for f in frames if outside(f, places)]
        if user:
            break
    frame = user[-1] if user else frames[-1]
    return f"{frame.filename}:{frame.lineno} (in {frame.name})"


def _owner(task) -> str:
    """``"the training loop (fit) of task 'name'"``."""
    return f"the training loop (fit) of task {getattr(task, 'name', type(task).__name__)!r}"


def _failed(reason: str, metrics: dict | None = None) -> dict:
    return {"status": FAILED, "fitness": None, "metrics": metrics or {}, "reason": reason}


def _number(value) -> float | None:
    """``value`` as a float (Python / NumPy numbers, one-element tensors); ``None`` otherwise."""
    if isinstance(value, (str, bytes)) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
