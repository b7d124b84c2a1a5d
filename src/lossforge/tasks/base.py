"""``Task``: the extension point that makes the search generic (DESIGN.md §4).

A task bundles data splits, a model factory, the loss signature (which variables a loss may read),
named metrics with their direction, and proxy-training defaults. Built-in tasks subclass
:class:`Task`; a user task may subclass it too, in the user's own file, or be any object with the
same attributes. Nothing in the engine special-cases a built-in task.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from lossforge.data import DataSplits

CLASSIFICATION = "classification"
REGRESSION = "regression"

#: Variables a loss may read, by loss kind (DESIGN.md §3).
SIGNATURES: dict[str, frozenset[str]] = {
    CLASSIFICATION: frozenset({"p", "y", "z"}),
    REGRESSION: frozenset({"f", "y"}),
}


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

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (with ``momentum``); ``lr`` the learning rate.
    """

    steps: int = 300
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_batch_size: int = 512

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
    """

    name: str = "task"
    kind: str = CLASSIFICATION
    num_classes: int | None = None
    ignore_index: int = 255
    metrics: dict[str, Metric] = {}
    default_metric: str = "accuracy"
    proxy: ProxyConfig = ProxyConfig()
    baseline: str = "ce"

    # --- to implement ----------------------------------------------------------------------------
    def data(self) -> DataSplits:
        """Train / val / test splits (cached by the task if expensive)."""
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        """A freshly initialised model (initialisation uses the global torch RNG)."""
        raise NotImplementedError

    # --- defaults ------------------------------------------------------------------------------
    @property
    def variables(self) -> frozenset[str]:
        """The variables a loss for this task may read."""
        return SIGNATURES[self.kind]

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
    """Raise a ``ValueError`` naming the problem when a model output does not fit the task."""
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
