"""Data sets that load offline: scikit-learn bundled sets, MNIST-1D, MNIST/Fashion-MNIST IDX files
from a data directory, and the procedural shapes generators.

Every loader returns a :class:`DataSplits`: train / val / test tensors, deterministic per seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` and targets ``y`` of one split (first dimension: samples)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class DataSplits:
    """The three splits of a data set; ``num_classes`` is ``None`` for regression."""

    train: Split
    val: Split
    test: Split
    num_classes: int | None
    name: str


class DataMissingError(FileNotFoundError):
    """A data set's files are not in the data directory; the message says how to get them."""
