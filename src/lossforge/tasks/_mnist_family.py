"""What the MNIST-sized task families (``mnist-noisy``, ``mnist-lt``, their Fashion-MNIST twins)
share: the training-subset size, the proxy budget, the architectures and a stratified subsample.

The full 55,000-image training split makes one run minutes long on a CPU; the families train on a
stratified random subset of :data:`MNIST_TRAIN` images (option ``n_train``), a LeNet by default.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from lossforge.data import DataSplits
from lossforge.data._common import as_split
from lossforge.tasks import models
from lossforge.tasks.base import ProxyConfig

#: Training images of the MNIST-sized families (a stratified subset keeps a run short).
MNIST_TRAIN = 10_000
#: Proxy training of the MNIST-sized families: Adam, 3,000 steps of 64 (~19 epochs of 10,000).
MNIST_FAMILY_PROXY = ProxyConfig(steps=3000, batch_size=64, optimizer="adam", lr=1e-3)
#: Architectures of the MNIST-sized families (LeNet first: the default).
MNIST_FAMILY_ARCHS = ("lenet", "glo-cnn", "mlp", "cnn", "resnet")


def mnist_family_model(arch: str, num_classes: int) -> nn.Module:
    """The model for ``arch`` on 28×28 grey inputs (``glo-cnn``: GLO's CNN)."""
    if arch == "glo-cnn":
        return models.glo_mnist_cnn(num_classes)
    return models.image_model(arch, num_classes, in_channels=1, size=28)


def subsample_train(data: DataSplits, n_train: int | None, seed: int) -> DataSplits:
    """``data`` with a stratified random ``n_train`` of its training images (every class keeps
    its share, largest remainders round up; all of them when ``None`` or ``n_train`` is not
    smaller than the split), deterministic for ``seed``; val and test unchanged."""
    y = data.train.y.numpy()
    if n_train is None or n_train >= len(y):
        return data
    if n_train < int(data.num_classes):
        raise ValueError(f"n_train must be at least the number of classes ({data.num_classes}), "
                         f"got {n_train}")
    rng = np.random.default_rng([29, int(seed)])
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n_train / len(y))
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(-(exact - quota), kind="stable")[: n_train - int(quota.sum())]] += 1
    keep = [rng.choice(np.flatnonzero(y == c), size=int(q), replace=False)
            for c, q in zip(classes, quota)]
    idx = np.sort(np.concatenate(keep))
    return DataSplits(train=as_split(data.train.x.numpy()[idx], y[idx]), val=data.val,
                      test=data.test, num_classes=data.num_classes, name=data.name)


__all__ = ["MNIST_FAMILY_ARCHS", "MNIST_FAMILY_PROXY", "MNIST_TRAIN", "mnist_family_model",
           "subsample_train"]
