"""``Task``: the extension point that makes the search generic (DESIGN.md §4).

A task bundles data splits, a model factory, the loss signature (which variables a loss may read),
named metrics with their direction, and proxy-training defaults. Built-in tasks subclass
:class:`Task`; a user task may subclass it too, in the user's own file, or be any object with the
same attributes. Nothing in the engine special-cases a built-in task.

Training: :meth:`Task.fit` trains a fresh model with a loss and returns the validation metrics.
The default is lossforge's own loop (:func:`lossforge.training.train`, the same run as the proxy
stage's); a task that overrides it brings its own training loop, and the proxy stage then calls it
(:mod:`lossforge.evaluation.proxy`). The screening stages never train: they need only the kind,
the number of classes, a metric and a few real targets (:meth:`Task.probe_targets`), so a task
with its own loop may have no :meth:`Task.data` and no :meth:`Task.make_model` at all
(:func:`lossforge.objective_task` builds such a task from a function).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from lossforge.data import DataSplits

CLASSIFICATION = "classification"
REGRESSION = "regression"
#: Box regression: a loss over the intersection ``i``, union ``u`` and smallest enclosing box
#: ``e`` areas of a predicted and a target box (CSE-Autoloss / AutoLoss-Zero variables).
BOX = "box"

#: Variables a loss may read, by loss kind (DESIGN.md §3).
SIGNATURES: dict[str, frozenset[str]] = {
    CLASSIFICATION: frozenset({"p", "y", "z", "q"}),
    REGRESSION: frozenset({"f", "y"}),
    BOX: frozenset({"i", "u", "e"}),
}


#: ``report(step, metrics)``: what :meth:`Task.fit` may call along the way (see there).
Report = Callable[[int, Mapping[str, float]], None]

GLOBAL_RNG_LOCK = threading.RLock()
"""Held while code seeds and draws from torch's process-wide RNG (model initialisation)."""


@contextmanager
def isolated_global_rng():
    """Run the body with torch's global RNG state saved and restored after, holding
    :data:`GLOBAL_RNG_LOCK` throughout so no other thread's draws interleave."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        yield


@dataclass(frozen=True)
class LossSlot:
    """One loss of a task (a *branch*: a detector has a classification and a box slot).

    ``kind``: ``"classification"``, ``"regression"`` or ``"box"`` (what :meth:`Task.slot_inputs`
    gives the slot, see there); ``default``: the zoo name or formula used when the slot is not
    being searched; ``weight``: the slot's factor in the total training loss
    ``sum_slots weight * loss_slot``.
    """

    name: str
    kind: str
    default: str
    weight: float = 1.0

    def __post_init__(self):
        if self.kind not in SIGNATURES:
            raise ValueError(f"loss slot {self.name!r}: kind must be one of "
                             f"{', '.join(SIGNATURES)}, got {self.kind!r}")

    @property
    def variables(self) -> frozenset[str]:
        """The variables a loss of this slot may read."""
        return SIGNATURES[self.kind]


@dataclass(frozen=True)
class Metric:
    """A named evaluation metric: ``fn(pred, target) -> float`` on NumPy arrays.

    ``pred`` is what :meth:`Task.predict` returns (class indices, or values for regression).
    ``higher_is_better`` gives the direction; the engine always maximises ``sign * value``.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True

    @property
    def sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy-training defaults: ``steps`` optimiser steps on minibatches of ``batch_size``.

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (with ``momentum``); ``lr`` the learning rate;
    ``num_workers``: ``DataLoader`` worker processes for ``Dataset`` splits (0: in the main process).
    """

    steps: int = 300
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_batch_size: int = 512
    num_workers: int = 0

    def with_(self, **changes) -> "ProxyConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


class Task:
    """Base class of tasks. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: registry name.
        kind: ``"classification"`` (also segmentation: model output ``(N, C, *spatial)``,
            targets class indices ``(N, *spatial)``, ignore label 255) or ``"regression"``
            (output and target of equal shape).
        num_classes: number of classes (``None`` for regression).
        metrics: named :class:`Metric` objects; ``default_metric`` names the one to search for.
        proxy: :class:`ProxyConfig` defaults for short trainings.
        baseline: the loss the ``evaluate`` table compares against (a zoo name or formula).
        slots: the task's :class:`LossSlot` s when its training loss has several parts (a
            multi-branch model); empty for the usual single loss (see :meth:`loss_slots`).
    """

    name: str = "task"
    kind: str = CLASSIFICATION
    num_classes: int | None = None
    ignore_index: int = 255
    metrics: dict[str, Metric] = {}
    default_metric: str = "accuracy"
    proxy: ProxyConfig = ProxyConfig()
    baseline: str = "ce"
    slots: tuple[LossSlot, ...] = ()

    # --- to implement ----------------------------------------------------------------------------
    def data(self) -> DataSplits:
        """Train / val / test splits (cached by the task if expensive).

        Needed by the default :meth:`fit` and by the default :meth:`probe_targets`; a task that
        overrides both may leave it out."""
        raise NotImplementedError(
            f"task {self.name!r} has no data(): implement Task.data() returning DataSplits for "
            "lossforge's own training loop, or override Task.fit (your own loop) and "
            "Task.probe_targets (a few real targets for the screening stages)")

    def make_model(self) -> nn.Module:
        """A freshly initialised model (initialisation uses the global torch RNG).

        Needed by the default :meth:`fit` only."""
        raise NotImplementedError(
            f"task {self.name!r} has no make_model(): implement Task.make_model() for lossforge's "
            "own training loop, or override Task.fit to train with your own loop")

    # --- training ---------------------------------------------------------------------------------
    def fit(self, loss: nn.Module, *, steps: int, seed: int, device: str = "cpu",
            report: Report | None = None) -> dict[str, float]:
        """Train a fresh model for ``steps`` optimisation steps with ``loss``; return the metrics
        of the trained model on the validation split, ``{metric name: value}``.

        ``loss`` is an ``nn.Module`` called as ``loss(output, target) -> scalar``: for a
        single-slot task ``output`` is the model's output (classification: logits ``(N, C,
        *spatial)``) and ``target`` the batch's targets (class indices ``(N, *spatial)``, where
        ``ignore_index`` entries are left out of the loss by the module itself); for a multi-slot
        task it is the composite ``sum_slots weight * loss_slot`` over
        :meth:`slot_inputs` (``loss.losses[slot]`` is each slot's own module, for a loop that
        needs them apart). ``seed`` must make the run reproducible (model initialisation and
        data order). ``device`` is where to train (a ``torch.device`` string).

        ``report(step, metrics)`` may be called any number of times along the way: ``step`` is
        the number of optimisation steps done so far (an int, non-decreasing, ``0 <= step <=
        steps``), ``metrics`` the validation metrics of the model at that step by the task's
        metric names (each higher- or lower-is-better as its :class:`Metric` says). lossforge
        shows them in the live view; a multi-fidelity scheduler will use them to stop a run
        early. ``report`` may be ``None``: then there is nobody to tell.

        A loss that diverges is not an error: return the metrics as they are (``nan`` for a
        metric that cannot be computed); the proxy stage marks a non-finite target metric
        ``invalid``. An exception raised here marks the candidate ``failed`` with the line of
        your code that raised it, and the search goes on.

        The default is lossforge's own loop: :func:`lossforge.training.train` with the task's
        :attr:`proxy` settings, scoring the validation split (the run the proxy stage makes for a
        task that does not override this method, with the same result); a diverged run returns
        ``nan`` for every metric. It reports once, at the end.
        """
        from lossforge.training import OK, train  # the Task.fit façade (tests/test_import_graph.py)

        spec = loss
        parts = getattr(loss, "losses", None)  # a multi-slot composite: train() takes slot -> module
        if len(self.loss_slots()) > 1 and isinstance(parts, nn.ModuleDict):
            spec = dict(parts.items())
        result = train(self, spec, steps=steps, seed=seed, device=device, splits=("val",))
        if result.status != OK:
            return {name: float("nan") for name in self.metrics}
        if report is not None:
            report(result.steps_done, dict(result.val))
        return dict(result.val)

    def preload(self) -> None:
        """Load what a training needs before a time limit starts counting (the worker runtime
        calls it): the data, when the task has :meth:`data`; nothing otherwise."""
        if has_data(self):
            self.data()

    def seeded_model(self, seed: int) -> nn.Module:
        """A fresh model whose weights depend on ``seed`` alone, in any thread.

        Seeds torch's global RNG with ``seed`` and builds the model while holding
        :data:`GLOBAL_RNG_LOCK`, so jobs that run at once in threads of one process (an in-process
        Dask cluster) cannot interleave their draws. The global RNG is left seeded for what
        follows (dropout masks in training); those later draws are reproducible only when one job
        runs per process at a time.
        """
        with GLOBAL_RNG_LOCK:
            torch.manual_seed(seed)
            return self.make_model()

    # --- defaults ------------------------------------------------------------------------------
    @property
    def variables(self) -> frozenset[str]:
        """The variables a loss for this task may read (multi-slot tasks: of any slot)."""
        if self.slots:
            return frozenset().union(*(s.variables for s in self.slots))
        return SIGNATURES[self.kind]

    # --- loss slots (multi-branch losses) --------------------------------------------------------
    def loss_slots(self) -> tuple[LossSlot, ...]:
        """The task's loss slots: ``slots`` when set, else the one slot ``"loss"`` of ``kind``
        with the ``baseline`` as default."""
        if self.slots:
            return tuple(self.slots)
        return (LossSlot("loss", self.kind, self.baseline),)

    def slot(self, name: str) -> LossSlot:
        """The slot called ``name``; ``KeyError`` listing the task's slots."""
        for s in self.loss_slots():
            if s.name == name:
                return s
        raise KeyError(f"task {self.name!r} has no loss slot {name!r}; its slots are: "
                       f"{', '.join(s.name for s in self.loss_slots())}")

    def slot_inputs(self, outputs, target) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Model ``outputs`` and a batch ``target`` -> ``{slot name: (prediction, target)}``.

        Per slot kind the pair is: classification -> (logits ``(N, C, *spatial)``, class-index
        target ``(N, *spatial)``, ``ignore_index`` allowed); regression -> (prediction, target) of
        one shape; box -> (predicted boxes ``(M, 4)``, target boxes ``(M, 4)``) as ``x1, y1, x2, y2``,
        ``M`` may be 0. The default (single slot) is ``{"loss": (outputs, target)}``; a multi-slot
        task must override it.
        """
        if self.slots:
            raise NotImplementedError(f"task {self.name!r} has loss slots "
                                      f"{[s.name for s in self.slots]} but no slot_inputs()")
        return {"loss": (outputs, target)}

    def slot_probe_targets(self, slot_name: str, n: int, seed: int) -> torch.Tensor:
        """``n`` real targets of slot ``slot_name`` for the screening probes, drawn with ``seed``.

        Box slots: target boxes ``(n, 4)``; classification: class indices ``(n, *spatial)``;
        regression: values ``(n, D)``. Tasks may override this; the default takes training samples
        in a seeded order, runs a freshly initialised model on them (global RNG untouched) and keeps
        the slot's targets from :meth:`slot_inputs`. Raises ``ValueError`` when that gives none.
        """
        self.slot(slot_name)
        _require_data(self, "the screening probes of loss slot " + repr(slot_name),
                      "Task.slot_probe_targets(slot_name, n, seed)")
        train = self.data().train
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(train), generator=gen)
        found: list[torch.Tensor] = []
        have = 0
        with isolated_global_rng(), torch.no_grad():
            model = self.seeded_model(seed)
            model.eval()
            for lo in range(0, min(len(order), 64 * max(n, 1)), 64):
                idx = order[lo:lo + 64]
                x, y = train.items(idx)  # a Dataset split: reads these items only
                _, tgt = self.slot_inputs(model(x), y)[slot_name]
                if len(tgt):
                    found.append(tgt)
                    have += len(tgt)
                if have >= n:
                    break
        if not have:
            raise ValueError(f"task {self.name!r}: no targets found for loss slot {slot_name!r}; "
                             "implement Task.slot_probe_targets(slot_name, n, seed) to give the "
                             "screening probes real targets (box slots: (n, 4) boxes)")
        return torch.cat(found)[:n]

    def probe_targets(self, n: int, seed: int) -> torch.Tensor:
        """``n`` real training targets for the screening probes (checks, GEC, LRP), drawn with
        ``seed``: class indices ``(n, *spatial)`` (classification) or values ``(n, *shape)``
        (regression); fewer when the training set is smaller.

        The default draws from the training split of :meth:`data`
        (``train.targets(train.sample_indices(n, seed))``: a ``Dataset`` split reads only those
        items). A task without :meth:`data` (its own training loop) overrides this method;
        otherwise it raises ``ValueError`` saying what is missing."""
        _require_data(self, "the screening stages (checks, GEC, LRP)",
                      "Task.probe_targets(n, seed) returning a few real targets")
        train = self.data().train
        return train.targets(train.sample_indices(n, seed))  # a Dataset split: reads n items only

    def class_prior(self) -> torch.Tensor | None:
        """The class frequencies of the training targets, ``(num_classes,)`` float32 summing to 1
        (positions labelled ``ignore_index`` left out); what the loss variable ``q`` reads.

        ``None`` for a task that is not single-slot classification or has no :meth:`data`.
        Computed once and cached on the task. In-memory splits count ``train.y``; a ``Dataset``
        split uses its dataset's ``targets`` attribute when it has one per item, else reads the
        targets in chunks of 1024 items (never the whole split at once)."""
        cached = self.__dict__.get("_class_prior_cache")
        if cached is not None:
            return cached[0]
        prior = None
        if self.kind == CLASSIFICATION and not self.slots and self.num_classes and has_data(self):
            prior = _label_frequencies(self.data().train, int(self.num_classes), self.ignore_index)
        self.__dict__["_class_prior_cache"] = (prior,)
        return prior

    def screening_metric(self, name: str | None = None) -> Metric:
        """The metric the loss-rejection protocol scores probe predictions with, for the target
        metric ``name``: :meth:`metric` itself by default (its ``fn`` scores label maps or
        values). A task whose metrics are computed only by its own loop returns a stand-in."""
        return self.metric(name)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> what the metrics score: class indices (argmax over dim 1) or values."""
        return outputs.argmax(dim=1) if self.kind == CLASSIFICATION else outputs

    def compute_metrics(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Every metric of the task on a whole split (dataset-level)."""
        return {name: float(m.fn(pred, target)) for name, m in self.metrics.items()}

    def metric(self, name: str | None = None) -> Metric:
        """The metric called ``name`` (default: ``default_metric``); clear error if unknown."""
        name = name or self.default_metric
        if name not in self.metrics:
            raise KeyError(f"task {self.name!r} has no metric {name!r}; its metrics are: "
                           f"{', '.join(self.metrics)}")
        return self.metrics[name]

    def __repr__(self) -> str:
        return f"<Task {self.name}: {self.kind}, metrics {list(self.metrics)}>"


def check_output_shape(task: Task, outputs: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a ``ValueError`` naming the problem when a model output does not fit the task.

    Multi-slot tasks are not checked here (their :meth:`Task.slot_inputs` owns the layout)."""
    if getattr(task, "slots", ()):
        return
    if task.kind == CLASSIFICATION:
        expected = (target.shape[0], task.num_classes, *target.shape[1:])
        if tuple(outputs.shape) != tuple(expected):
            raise ValueError(
                f"task {task.name!r}: the model output has shape {tuple(outputs.shape)}, expected "
                f"{tuple(expected)} (N, num_classes, *spatial) for targets of shape {tuple(target.shape)}"
            )
    elif tuple(outputs.shape) != tuple(target.shape):
        raise ValueError(f"task {task.name!r}: the model output has shape {tuple(outputs.shape)}, "
                         f"expected the target's shape {tuple(target.shape)}")


def probe_targets(task, n: int, seed: int) -> torch.Tensor:
    """``task.probe_targets(n, seed)`` (:meth:`Task.probe_targets`); for a task-like object
    without that method, the same draw from its ``data().train``."""
    method = getattr(task, "probe_targets", None)
    if callable(method):
        return method(n, seed)
    return Task.probe_targets(task, n, seed)


def _label_frequencies(split, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Class frequencies ``(num_classes,)`` of a split's class-index targets (ignore left out)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)

    def add(y) -> None:
        y = torch.as_tensor(y).reshape(-1).long()
        y = y[y != ignore_index]
        counts.add_(torch.bincount(y, minlength=num_classes)[:num_classes].double())

    if split.in_memory:
        add(split.y)
    elif len(getattr(split.dataset, "targets", ())) == len(split):
        add(split.dataset.targets)
    else:
        for lo in range(0, len(split), 1024):
            add(split.targets(torch.arange(lo, min(lo + 1024, len(split)))))
    total = float(counts.sum())
    if total <= 0:
        return torch.full((num_classes,), 1.0 / num_classes)
    return (counts / total).float()


def has_data(task) -> bool:
    """Whether ``task`` implements :meth:`Task.data` (a :class:`Task` subclass that overrides it,
    or another object with a ``data`` method)."""
    if isinstance(task, Task):
        return type(task).data is not Task.data
    return callable(getattr(task, "data", None))


def overrides_fit(task) -> bool:
    """Whether ``task`` brings its own training loop: a :class:`Task` subclass that overrides
    :meth:`Task.fit`, or another object with a ``fit`` method."""
    if isinstance(task, Task):
        return type(task).fit is not Task.fit
    return callable(getattr(task, "fit", None))


def _require_data(task: Task, needed_by: str, override: str) -> None:
    """``ValueError`` naming what is missing when ``task`` has no :meth:`Task.data`."""
    if not has_data(task):
        raise ValueError(
            f"task {task.name!r} has no data(), and {needed_by} need a few real targets: "
            f"implement {override} on the task, or Task.data(); for lossforge.objective_task, "
            "pass probe_targets= (a tensor of a few real training targets: class indices "
            "(n, *spatial) or values (n, ...))")
