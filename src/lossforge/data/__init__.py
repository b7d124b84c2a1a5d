"""Data sets that load offline: scikit-learn bundled sets, MNIST-1D, MNIST/Fashion-MNIST IDX files
from a data directory, and the procedural shapes generators.

Every loader returns a :class:`DataSplits`: train / val / test tensors, deterministic per seed.
A user's task may give a map-style ``torch.utils.data.Dataset`` of ``(x, y)`` items for a split
instead (:class:`Split`): training and evaluation stream it, probes read a few items.
"""
from __future__ import annotations

from lossforge.data._common import (
    DataMissingError, DatasetItemError, DataSplits, NotInMemoryError, Split, collate_pairs)
from lossforge.data.idx import default_data_dir, fashion_mnist, mnist, read_idx, write_idx
from lossforge.data.shapes import shapes_cls, shapes_seg
from lossforge.data.tabular import (
    breast_cancer, diabetes, diabetes_target_stats, digits, mnist1d)

__all__ = ["Split", "DataSplits", "DataMissingError", "DatasetItemError", "NotInMemoryError",
           "collate_pairs", "digits", "breast_cancer", "diabetes",
           "diabetes_target_stats", "mnist1d", "mnist", "fashion_mnist", "shapes_seg",
           "shapes_cls", "read_idx", "write_idx", "default_data_dir"]
