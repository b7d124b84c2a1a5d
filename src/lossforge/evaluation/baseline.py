"""The task's baseline loss trained as a candidate would be: the reference a search's best is read
against.

A study measures it once (:func:`ensure_baseline`, called by ``LossSearch.run`` the first time the
search runs on a file; a resumed study keeps what is stored) and keeps the result in its meta
``"baseline"``, which ``lossforge show``, the report and the quickstart print next to the best
found. The baseline loss is the one the task declares (:attr:`Task.baseline`: ``ce`` for
classification; a multi-slot task's slot defaults), with the losses a single-slot search fixes for
the other slots, trained by :func:`~lossforge.evaluation.proxy.proxy_job` with the proxy stage's
steps, seed and device, so its fitness is on the scale of the candidates'. Its fitness is the
search metric on the validation split times the metric's direction (higher is better), as for a
candidate.

Measuring it leaves the process-wide random states (torch CPU and CUDA, NumPy, ``random``) as it
found them, so the candidates' results do not depend on whether a baseline was measured. The
training runs in the calling process: it is one proxy training, and it must not take a worker.
"""
from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from lossforge.evaluation.candidate import INVALID
from lossforge.evaluation.proxy import ProxyStageConfig, proxy_job
from lossforge.tasks import Task
from lossforge.training.loss_spec import load_loss, resolve_slots

__all__ = ["FAILED", "META_KEY", "baseline_spec", "describe", "ensure_baseline", "measure_baseline",
           "preserved_random_state"]

#: The study meta key the measurement is stored under.
META_KEY = "baseline"
#: Status of a baseline whose training raised (e.g. a baseline that does not fit the task).
FAILED = "failed"


def baseline_spec(task: Task, fixed: dict[str, str] | None = None) -> str | dict[str, str]:
    """The baseline loss as ``train`` takes it: ``task.baseline`` for a single-slot task; for a
    multi-slot task a dict slot -> loss, the baseline's (its slot defaults unless it names them)
    overridden by ``fixed`` (the losses a single-slot search gives the slots it does not search)."""
    if len(task.loss_slots()) == 1:
        return task.baseline
    specs = {name: str(spec) for name, spec in resolve_slots(task.baseline, task).items()}
    return {**specs, **{str(k): str(v) for k, v in (fixed or {}).items()}}


def _label(spec: str | dict[str, str]) -> str:
    return spec if isinstance(spec, str) else "; ".join(f"{k}={v}" for k, v in spec.items())


def _formula(spec: str | dict[str, str], task: Task) -> str:
    """The canonical formula of ``spec`` (``slot=formula; …`` for several slots); a loss that is
    not an expression (Lovász, a module) keeps its name."""
    loaded = load_loss(spec, task)
    if loaded.parts:
        return "; ".join(f"{n}={p.expr if p.expr is not None else p.name}"
                         for n, p in loaded.parts.items())
    return str(loaded.expr) if loaded.expr is not None else loaded.name


@contextmanager
def preserved_random_state(device: str = "cpu") -> Iterator[None]:
    """Run the body and restore torch's (CPU, and CUDA for a CUDA ``device``), NumPy's and
    Python's global random states afterwards."""
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def measure_baseline(task: Task, metric: str, proxy: ProxyStageConfig = ProxyStageConfig(),
                     fixed: dict[str, str] | None = None) -> dict[str, Any]:
    """Train the task's baseline loss once with the proxy settings; a JSON-ready dict.

    Keys: ``loss`` (as the task names it, e.g. ``ce``), ``formula`` (canonical text), ``status``
    (``trained``, ``invalid`` for a non-finite loss, ``failed`` when it raised, with ``reason``),
    ``fitness`` (validation ``metric`` × its direction; ``None`` unless trained), ``metric``,
    ``metrics`` (every validation metric), ``seconds`` (wall time of the training), ``steps``,
    ``seed``. Never raises for a baseline that cannot be trained: that is recorded.
    """
    spec = baseline_spec(task, fixed)
    steps = proxy.steps or task.proxy.steps
    out: dict[str, Any] = {"loss": _label(spec), "formula": None, "status": FAILED,
                           "fitness": None, "metric": metric, "metrics": {}, "seconds": 0.0,
                           "steps": steps, "seed": proxy.seed}
    start = time.perf_counter()
    try:
        out["formula"] = _formula(spec, task)
        with preserved_random_state(proxy.device):
            result = proxy_job(task, spec, metric, proxy.steps, proxy.seed, proxy.device)
    except Exception as err:  # the user's task or baseline: record it, the search goes on
        out["reason"] = f"{type(err).__name__}: {err}"
        out["seconds"] = time.perf_counter() - start
        return out
    out.update(status=result["status"], fitness=result["fitness"],
               metrics=_finite(result.get("metrics", {})),
               seconds=float(result.get("seconds") or time.perf_counter() - start))
    if result.get("reason"):  # a failed own loop: the user's exception and line
        out["reason"] = str(result["reason"])
    elif out["status"] == INVALID:
        out["reason"] = "the training loss became non-finite"
    if out["fitness"] is not None and not np.isfinite(out["fitness"]):
        out.update(fitness=None, status=INVALID, reason="the metric is not finite")
    return out


def _finite(metrics: dict) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in metrics.items()}


def ensure_baseline(store, task: Task, metric: str, proxy: ProxyStageConfig,
                    fixed: dict[str, str] | None = None) -> dict[str, Any]:
    """The study's baseline (meta ``"baseline"`` of the :class:`~lossforge.storage.Store`): the
    stored one, or measured now (:func:`measure_baseline`) and stored (committed at once)."""
    stored = store.meta(META_KEY)
    if stored is None:
        stored = measure_baseline(task, metric, proxy, fixed)
        store.set_meta(META_KEY, stored)
    return stored


def describe(baseline: dict[str, Any] | None, best_fitness: float | None = None) -> str:
    """One line for people: the stored ``baseline`` (``None``: ``"baseline: not measured"``), its
    fitness, and how far ``best_fitness`` (the best found, same scale) is above it."""
    if baseline is None:
        return "baseline: not measured"
    name = baseline.get("loss") or "?"
    formula = baseline.get("formula")
    label = name if not formula or formula == name else f"{name} = {formula}"
    fitness = baseline.get("fitness")
    if baseline.get("status") != "trained" or fitness is None:
        reason = baseline.get("reason") or "no fitness"
        return f"baseline {label}: {baseline.get('status', 'unknown')} ({reason})"
    text = f"baseline {label}: fitness {fitness:.4f}"
    if best_fitness is not None:
        text += f"; best found {best_fitness:.4f} ({best_fitness - fitness:+.4f} vs baseline)"
    return text
