"""Noisy-label tasks: ``digits-noisy``, ``mnist-noisy``, ``fashion-mnist-noisy`` (issue 17).

The protocol of the robust-loss papers (Ghosh et al. 2017, Zhang & Sabuncu 2018, Wang et al.
2019, Ma et al. 2020), at CPU scale: the training labels — and by default the validation labels —
are corrupted at rate ``noise``; the test labels stay clean, so test accuracy measures how much of
the clean signal a loss recovers from noisy supervision.

Noise (:func:`corrupt_labels`): exactly ``round(noise * N)`` samples of a split, drawn without
replacement, get a wrong label —

* ``flip="symmetric"``: a class drawn uniformly from the ``C - 1`` *other* classes (so at rate
  ``noise`` every wrong class holds ``noise / (C - 1)`` of a class's samples);
* ``flip="pair"``: class ``i`` becomes ``(i + 1) mod C`` (the pair-flip, "asymmetric" noise);
  learnable only for ``noise < 0.5``.

The corruption is deterministic for ``noise_seed`` (training and validation splits use independent
streams of it) and independent of the data split's ``seed``. Every option is recorded on the task
(:func:`lossforge.tasks.options.task_options`) and so stored with a study's settings.

Training budget. Cross-entropy fits the wrong labels only after it has fitted the clean ones: the
published curves show clean test accuracy rising, then falling as the network memorises the noise.
The proxy budgets here are chosen long enough for that to show: ``digits-noisy`` trains the
digits CNN for 1,000 Adam steps (~60 epochs of its 1,079 images, ~4 s on one CPU core), where at
40 % symmetric noise cross-entropy falls to ~0.7 test accuracy while GCE keeps ~0.93.
``mnist-noisy`` / ``fashion-mnist-noisy`` train a LeNet on a 10,000-image training subset
(option ``n_train``) for 3,000 Adam steps (~19 epochs); they read MNIST / Fashion-MNIST from the
data directory (``make data``).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from torch import nn

from lossforge.data import DataSplits
from lossforge.data._common import as_split
from lossforge.tasks._mnist_family import (MNIST_FAMILY_ARCHS, MNIST_FAMILY_PROXY, MNIST_TRAIN,
                                           mnist_family_model, subsample_train)
from lossforge.tasks.base import ProxyConfig
from lossforge.tasks.builtin import Digits, FashionMnist, Mnist
from lossforge.tasks.options import record_options

FLIPS = ("symmetric", "pair")
Flip = Literal["symmetric", "pair"]

#: Help of the options every noisy-label task takes.
NOISE_HELP = {
    "noise": "share of training (and validation) labels made wrong, in [0, 1)",
    "flip": "symmetric: a uniformly drawn other class; pair: class i -> i+1 mod C",
    "noise_seed": "seed of the label corruption (independent of the data split's seed)",
    "noisy_val": "corrupt the validation labels too (the realistic setting; test stays clean)",
    "seed": "seed of the train/val/test split",
    "arch": "model architecture",
}


def corrupt_labels(labels: np.ndarray, noise: float, flip: str, num_classes: int,
                   rng: np.random.Generator) -> np.ndarray:
    """A copy of ``labels`` (int class indices ``(N,)``) with exactly ``round(noise * N)`` of them,
    chosen without replacement, made wrong: ``flip="symmetric"`` draws a uniformly random other
    class, ``flip="pair"`` maps ``i -> (i + 1) mod num_classes``. Every changed label differs
    from the original. ``ValueError`` for a rate outside ``[0, 1)`` or an unknown ``flip``."""
    check_noise(noise, flip)
    labels = np.asarray(labels, dtype=np.int64)
    out = labels.copy()
    k = int(round(noise * len(labels)))
    if k == 0:
        return out
    idx = rng.choice(len(labels), size=k, replace=False)
    if flip == "pair":
        out[idx] = (labels[idx] + 1) % num_classes
    else:  # an offset in 1..C-1 lands uniformly on the other classes
        out[idx] = (labels[idx] + rng.integers(1, num_classes, size=k)) % num_classes
    return out


def check_noise(noise: float, flip: str) -> None:
    """``ValueError`` unless ``noise`` is in ``[0, 1)`` and ``flip`` one of :data:`FLIPS`."""
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
    if not 0.0 <= float(noise) < 1.0:
        raise ValueError(f"noise must be a rate in [0, 1), got {noise}")


def noisy_splits(data: DataSplits, noise: float, flip: str, noise_seed: int,
                 noisy_val: bool) -> DataSplits:
    """``data`` with corrupted training (and, if ``noisy_val``, validation) labels; the test
    split is ``data``'s own. The two splits draw from independent streams of ``noise_seed``."""
    train_rng, val_rng = (np.random.default_rng(s)
                          for s in np.random.SeedSequence([17, int(noise_seed)]).spawn(2))

    def corrupt(split, rng):
        y = corrupt_labels(split.y.numpy(), noise, flip, int(data.num_classes), rng)
        return as_split(split.x.numpy(), y)

    return DataSplits(train=corrupt(data.train, train_rng),
                      val=corrupt(data.val, val_rng) if noisy_val else data.val,
                      test=data.test, num_classes=data.num_classes, name=f"{data.name}-noisy")


class _NoisyLabels:
    """Mixin for an image task: ``load()`` corrupts the labels of :meth:`clean_data`."""

    option_help = NOISE_HELP

    def _set_noise(self, noise: float, flip: str, noise_seed: int, noisy_val: bool) -> None:
        check_noise(noise, flip)
        self.noise, self.flip = float(noise), str(flip)
        self.noise_seed, self.noisy_val = int(noise_seed), bool(noisy_val)

    def clean_data(self) -> DataSplits:
        """The splits before corruption (the same images in the same order)."""
        raise NotImplementedError

    def load(self) -> DataSplits:
        return noisy_splits(self.clean_data(), self.noise, self.flip, self.noise_seed,
                            self.noisy_val)


class DigitsNoisy(_NoisyLabels, Digits):
    """scikit-learn's digits with noisy training/validation labels, clean test labels; the digits
    CNN trained 1,000 steps so that cross-entropy memorises the noise."""

    name = "digits-noisy"
    proxy = ProxyConfig(steps=1000, batch_size=64, optimizer="adam", lr=2e-3)

    def __init__(self, noise: float = 0.4, flip: Flip = "symmetric", noise_seed: int = 0,
                 noisy_val: bool = True, seed: int = 0, arch: str = "digits-cnn"):
        super().__init__(seed=seed, arch=arch)
        self._set_noise(noise, flip, noise_seed, noisy_val)
        record_options(self, dict(noise=self.noise, flip=self.flip, noise_seed=self.noise_seed,
                                  noisy_val=self.noisy_val, seed=seed, arch=arch))

    def clean_data(self) -> DataSplits:
        return Digits.load(self)


class MnistNoisy(_NoisyLabels, Mnist):
    """MNIST (data directory, ``make data``) with noisy training/validation labels, clean test;
    a LeNet on ``n_train`` training images."""

    name = "mnist-noisy"
    proxy = MNIST_FAMILY_PROXY
    archs = MNIST_FAMILY_ARCHS
    option_help = {**NOISE_HELP, "n_train": "training images used (stratified subset)",
                   "data_dir": "where the IDX files are (default: the data directory)"}

    def __init__(self, noise: float = 0.4, flip: Flip = "symmetric", noise_seed: int = 0,
                 noisy_val: bool = True, n_train: int = MNIST_TRAIN, seed: int = 0,
                 data_dir: str | None = None, arch: str = "lenet"):
        super().__init__(seed=seed, data_dir=data_dir, arch=arch)
        self._set_noise(noise, flip, noise_seed, noisy_val)
        self.n_train = int(n_train)
        record_options(self, dict(noise=self.noise, flip=self.flip, noise_seed=self.noise_seed,
                                  noisy_val=self.noisy_val, n_train=self.n_train, seed=seed,
                                  data_dir=data_dir, arch=arch))

    def clean_data(self) -> DataSplits:
        return subsample_train(Mnist.load(self), self.n_train, self.seed)

    def make_model(self) -> nn.Module:
        return mnist_family_model(self.arch, self.num_classes)


class FashionMnistNoisy(MnistNoisy):
    """Fashion-MNIST (data directory, ``make data``) with noisy training/validation labels."""

    name = "fashion-mnist-noisy"

    def clean_data(self) -> DataSplits:
        return subsample_train(FashionMnist.load(self), self.n_train, self.seed)


NOISY_TASKS = (DigitsNoisy, MnistNoisy, FashionMnistNoisy)

__all__ = ["DigitsNoisy", "FashionMnistNoisy", "MnistNoisy", "NOISY_TASKS", "check_noise",
           "corrupt_labels", "noisy_splits"]
