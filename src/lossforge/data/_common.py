"""What every loader shares: the :class:`Split` / :class:`DataSplits` containers, the
:class:`DataMissingError`, numpy -> :class:`Split`, deterministic (stratified) index splits, and the
independent random streams of the generated sets' three splits.

(Re-exported by :mod:`lossforge.data`; the loaders import from here, so the package's
``__init__`` can import the loaders without a cycle.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def split_streams(seed: int, tag: int) -> list[np.random.Generator]:
    """Three independent generators (train, val, test) for a generated set with stream ``tag``:
    changing one split's size leaves the others unchanged."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([tag, seed]).spawn(3)]


def as_split(x: np.ndarray, y: np.ndarray, regression: bool = False) -> Split:
    """float32 inputs; int64 class targets, or float32 targets when ``regression``.

    The tensors own their memory (read-only cached arrays are copied, never shared).
    """
    y_dtype = np.float32 if regression else np.int64
    arrays = []
    for a, dtype in ((x, np.float32), (y, y_dtype)):
        a = np.ascontiguousarray(a, dtype=dtype)
        arrays.append(torch.from_numpy(a if a.flags.writeable else a.copy()))
    return Split(*arrays)


def make_splits(name: str, num_classes: int | None, x: np.ndarray, y: np.ndarray,
                idx: tuple[np.ndarray, np.ndarray, np.ndarray]) -> DataSplits:
    regression = num_classes is None
    train, val, test = (as_split(x[i], y[i], regression) for i in idx)
    return DataSplits(train=train, val=val, test=test, num_classes=num_classes, name=name)


def _quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainder; exact sum)."""
    exact = sizes * (total / max(int(sizes.sum()), 1))
    q = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - q), kind="stable")
    q[order[: total - int(q.sum())]] += 1
    return q


def split_indices(n: int, fractions: tuple[float, float, float], seed: int,
                  strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train / val / test indices covering ``range(n)``, deterministic for ``seed``.

    ``fractions`` are (train, val, test) and must sum to 1; the val and test splits get exactly
    ``round(fraction * n)`` items. With ``strata`` (class labels) every class is split in the
    same proportions (stratified). The order inside each split is shuffled.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c)
                                                   for c in np.unique(strata)]
    sizes = np.array([len(g) for g in groups])
    n_val = _quotas(sizes, int(round(fractions[1] * n)))
    n_test = _quotas(sizes, int(round(fractions[2] * n)))
    parts: list[list[np.ndarray]] = [[], [], []]
    for g, nv, nt in zip(groups, n_val, n_test):
        g = rng.permutation(g)
        parts[1].append(g[:nv])
        parts[2].append(g[nv:nv + nt])
        parts[0].append(g[nv + nt:])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scale every array with the mean and standard deviation of ``train`` (per column)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple((a - mean) / std for a in (train, *others))
