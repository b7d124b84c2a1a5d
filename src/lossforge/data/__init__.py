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


# Loaders (imported after the classes above, which they use).
from lossforge.data.idx import default_data_dir, fashion_mnist, mnist, read_idx, write_idx  # noqa: E402
from lossforge.data.shapes import shapes_cls, shapes_seg  # noqa: E402
from lossforge.data.tabular import (  # noqa: E402
    breast_cancer, diabetes, diabetes_target_stats, digits, mnist1d)

__all__ = ["Split", "DataSplits", "DataMissingError", "digits", "breast_cancer", "diabetes",
           "diabetes_target_stats", "mnist1d", "mnist", "fashion_mnist", "shapes_seg",
           "shapes_cls", "read_idx", "write_idx", "default_data_dir"]
