"""Long-tailed tasks: ``digits-lt``, ``mnist-lt``, ``fashion-mnist-lt`` (issue 17).

The protocol of long-tailed recognition (Cui et al. 2019, Cao et al. 2019, Menon et al. 2021) at
CPU scale: the training split is subsampled to an exponential profile with imbalance ratio
``imbalance`` (ρ, default 100): class ``i`` keeps

    n_i = max(1, round(n_max · ρ^(−i / (C − 1))))

images, class 0 the most frequent; ``n_max`` is the smallest class count of the full training
split (so every class can supply its quota). The validation and test splits are made balanced:
every class trimmed (at random, seeded) to the split's smallest class count.

Metrics: ``balanced_accuracy`` (the default; mean per-class recall), ``accuracy``, ``macro_f1``,
and ``many_acc`` / ``medium_acc`` / ``few_acc`` — the mean recall over the many-, medium- and
few-shot classes (:func:`lossforge.metrics.group_accuracy`). The standard groups are >100, 20–100
and <20 training images (Liu et al. 2019), made for CIFAR-100-LT's ``n_max = 500`` at ρ = 100; our
data sets are smaller (``digits``: ``n_max`` ≈ 106), so the thresholds scale with ``n_max``:
many ``n_i > n_max / 5``, few ``n_i < n_max / 25``, medium in between (100 and 20 at
``n_max = 500``). At ρ = 100 that makes 4 many, 3 medium, 3 few classes on digits and MNIST; a
group that is empty (small ρ: no few-shot class) has no metric.

Budgets: ``digits-lt`` trains the digits CNN 600 Adam steps (~1 s per run on one CPU core);
``mnist-lt`` / ``fashion-mnist-lt`` a LeNet 3,000 steps on the subsampled training split (data from
``make data``).
"""
from __future__ import annotations

import functools

import numpy as np
from torch import nn

from lossforge import metrics as M
from lossforge.data import DataSplits
from lossforge.data._common import as_split
from lossforge.tasks._mnist_family import (MNIST_FAMILY_ARCHS, MNIST_FAMILY_PROXY,
                                           mnist_family_model)
from lossforge.tasks.base import Metric, ProxyConfig
from lossforge.tasks.builtin import Digits, FashionMnist, Mnist
from lossforge.tasks.options import record_options

#: Shot-group thresholds as fractions of ``n_max``: the standard 100 and 20 at ``n_max = 500``.
MANY_FRACTION, FEW_FRACTION = 1 / 5, 1 / 25

LT_HELP = {
    "imbalance": "imbalance ratio ρ = n_max / n_min of the training split (>= 1)",
    "seed": "seed of the split and of the subsampling",
    "arch": "model architecture",
}


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Training images per class of the exponential profile:
    ``max(1, round(n_max * imbalance ** (-i / (num_classes - 1))))`` for class ``i``."""
    if imbalance < 1:
        raise ValueError(f"imbalance must be a ratio >= 1 (n_max / n_min), got {imbalance}")
    if num_classes < 2:
        raise ValueError(f"a long tail needs at least 2 classes, got {num_classes}")
    return [max(1, int(round(n_max * imbalance ** (-i / (num_classes - 1)))))
            for i in range(num_classes)]


def _take_per_class(y: np.ndarray, counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``counts[c]`` random samples of each class ``c`` of ``y``."""
    keep = [rng.choice(np.flatnonzero(y == c), size=n, replace=False) for c, n in enumerate(counts)]
    return np.sort(np.concatenate(keep))


def long_tail_splits(data: DataSplits, imbalance: float, seed: int) -> DataSplits:
    """``data`` with its training split subsampled to the profile of :func:`long_tail_counts`
    and its validation and test splits balanced (each class cut to the split's rarest class)."""
    c = int(data.num_classes)
    rng = np.random.default_rng([31, int(seed)])

    def subset(split, counts):
        y = split.y.numpy()
        idx = _take_per_class(y, counts, rng)
        return as_split(split.x.numpy()[idx], y[idx])

    def balanced(split):
        per_class = np.bincount(split.y.numpy(), minlength=c)
        return subset(split, [int(per_class.min())] * c)

    n_max = int(np.bincount(data.train.y.numpy(), minlength=c).min())
    counts = long_tail_counts(n_max, c, imbalance)
    return DataSplits(train=subset(data.train, counts), val=balanced(data.val),
                      test=balanced(data.test), num_classes=c, name=f"{data.name}-lt")


def long_tail_metrics(train_counts: list[int]) -> dict[str, Metric]:
    """The metrics of a long-tailed task whose classes have ``train_counts`` training images: the
    classification metrics and one ``<group>_acc`` per non-empty shot group (thresholds
    ``n_max / 5`` and ``n_max / 25``, see the module docstring)."""
    n_max = max(train_counts)
    groups = M.shot_groups(train_counts, many_above=n_max * MANY_FRACTION,
                           few_below=n_max * FEW_FRACTION)
    out = {"balanced_accuracy": Metric("balanced_accuracy", M.balanced_accuracy),
           "accuracy": Metric("accuracy", M.accuracy),
           "macro_f1": Metric("macro_f1", M.macro_f1)}
    for group, classes in groups.items():
        if classes:
            name = f"{group}_acc"
            out[name] = Metric(name, functools.partial(M.group_accuracy, classes=tuple(classes)))
    return out


class _LongTail:
    """Mixin for an image task: ``load()`` gives the long-tailed version of :meth:`full_data`;
    the metrics (shot groups) follow from the profile, known without loading the data."""

    option_help = LT_HELP
    default_metric = "balanced_accuracy"

    def _set_imbalance(self, imbalance: float) -> None:
        self.imbalance = float(imbalance)
        long_tail_counts(100, 10, self.imbalance)  # a clear error now for a bad ratio

    def full_data(self) -> DataSplits:
        """The splits before subsampling."""
        raise NotImplementedError

    def load(self) -> DataSplits:
        return long_tail_splits(self.full_data(), self.imbalance, self.seed)

    def train_counts(self) -> list[int]:
        """Training images per class (loads the data)."""
        return np.bincount(self.data().train.y.numpy(), minlength=self.num_classes).tolist()

    @functools.cached_property
    def metrics(self) -> dict[str, Metric]:  # type: ignore[override]
        # the groups depend only on the profile's shape: n_max cancels out of the thresholds
        return long_tail_metrics(long_tail_counts(1000, self.num_classes, self.imbalance))


class DigitsLT(_LongTail, Digits):
    """scikit-learn's digits, training split long-tailed (ρ = 100: 106 … 1 images per class),
    balanced val/test; the digits CNN."""

    name = "digits-lt"
    proxy = ProxyConfig(steps=600, batch_size=64, optimizer="adam", lr=2e-3)

    def __init__(self, imbalance: float = 100.0, seed: int = 0, arch: str = "digits-cnn"):
        super().__init__(seed=seed, arch=arch)
        self._set_imbalance(imbalance)
        record_options(self, dict(imbalance=self.imbalance, seed=seed, arch=arch))

    def full_data(self) -> DataSplits:
        return Digits.load(self)


class MnistLT(_LongTail, Mnist):
    """MNIST (data directory, ``make data``), training split long-tailed, balanced val/test;
    a LeNet."""

    name = "mnist-lt"
    proxy = MNIST_FAMILY_PROXY
    archs = MNIST_FAMILY_ARCHS
    option_help = {**LT_HELP, "data_dir": "where the IDX files are (default: the data directory)"}

    def __init__(self, imbalance: float = 100.0, seed: int = 0, data_dir: str | None = None,
                 arch: str = "lenet"):
        super().__init__(seed=seed, data_dir=data_dir, arch=arch)
        self._set_imbalance(imbalance)
        record_options(self, dict(imbalance=self.imbalance, seed=seed, data_dir=data_dir,
                                  arch=arch))

    def full_data(self) -> DataSplits:
        return Mnist.load(self)

    def make_model(self) -> nn.Module:
        return mnist_family_model(self.arch, self.num_classes)


class FashionMnistLT(MnistLT):
    """Fashion-MNIST (data directory, ``make data``), long-tailed training split."""

    name = "fashion-mnist-lt"

    def full_data(self) -> DataSplits:
        return FashionMnist.load(self)


LONG_TAIL_TASKS = (DigitsLT, MnistLT, FashionMnistLT)

__all__ = ["DigitsLT", "FashionMnistLT", "LONG_TAIL_TASKS", "MnistLT", "long_tail_counts",
           "long_tail_metrics", "long_tail_splits"]
