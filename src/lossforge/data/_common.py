"""What every loader shares: the :class:`Split` / :class:`DataSplits` containers (in-memory
tensors, or a map-style ``torch.utils.data.Dataset`` of ``(x, y)`` items read on demand, with
:func:`collate_pairs` and the errors :class:`DatasetItemError` / :class:`NotInMemoryError`), the
:class:`DataMissingError`, numpy -> :class:`Split`, deterministic (stratified) index splits, and the
independent random streams of the generated sets' three splits.

(Re-exported by :mod:`lossforge.data`; the loaders import from here, so the package's
``__init__`` can import the loaders without a cycle.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler


class DatasetItemError(TypeError):
    """A ``Dataset`` split's item is not an ``(x, y)`` pair of tensors or tensor-convertible values."""


class NotInMemoryError(AttributeError):
    """Code asked a ``Dataset``-backed :class:`Split` for its whole ``x`` / ``y`` tensors (an
    ``AttributeError``: such a split has no ``x``, ``hasattr(split, "x")`` is False)."""


def _row_major(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def stack_like_items(values: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(values)``, keeping the items' memory layout (as indexing a tensor of them
    would): a dense item that is not row-major, e.g. channels-last ``(C, H, W)`` or a
    single-channel image with NumPy's strides, gives a batch with the same inner strides. The
    layout selects the convolution kernel, so this makes a ``Dataset`` run as fast as, and equal
    to, one on the tensors the items came from."""
    first = values[0]
    stride = first.stride()
    if first.dim() == 0 or stride == _row_major(first.shape) or \
            torch.empty_like(first).stride() != stride:
        return torch.stack(values)
    out = torch.empty_strided((len(values), *first.shape), (first.numel(), *stride),
                              dtype=first.dtype, device=first.device)
    return torch.stack(values, out=out)


def _as_batch(values: list, name: str, targets: bool) -> torch.Tensor:
    """Stack one field of a batch of items. Non-tensors go through ``torch.as_tensor`` and float64
    becomes float32 (NumPy's default vs the models'); integer and boolean targets become int64."""
    try:
        if not all(isinstance(v, torch.Tensor) for v in values):
            values = [torch.as_tensor(v) for v in values]
            if values[0].dtype == torch.float64:
                values = [v.float() for v in values]
        out = stack_like_items(values)
    except (TypeError, ValueError, RuntimeError) as err:
        shapes = sorted({tuple(getattr(v, "shape", ())) for v in values}, key=str)[:4]
        raise DatasetItemError(
            f"cannot batch the items' {name}: {err} (shapes seen: {shapes}). Every item's {name} "
            "must be a tensor or array of one shape (resize or crop in __getitem__), or give "
            "Split(dataset, collate=...) a function of your own") from None
    if targets and not out.dtype.is_floating_point and not out.dtype.is_complex:
        out = out.long()
    return out


def check_item(item, where: str = "") -> tuple:
    """``item`` if it is an ``(x, y)`` pair, else :class:`DatasetItemError` saying what it is."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item
    what = (f"a {type(item).__name__} of length {len(item)}" if isinstance(item, (tuple, list))
            else f"a {type(item).__name__}")
    raise DatasetItemError(
        f"{where}items must be pairs (x, y) of tensors or arrays, got {what}; make __getitem__ "
        "return (input, target)" + (" (a dict item: return (item['image'], item['mask']) or the "
                                     "like)" if isinstance(item, dict) else ""))


def is_batch(data) -> bool:
    """Whether ``data`` (what a ``Dataset``'s ``__getitems__`` returned) is a batch already: a
    pair of tensors ``(x (B, ...), y (B, ...))`` rather than a list of ``(x, y)`` items (whose
    elements are pairs, never tensors)."""
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in data)
            and data[0].shape[0] == data[1].shape[0])


def collate_pairs(items: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of ``(x, y)`` items -> ``(x (B, *x.shape), y (B, *y.shape))`` (the default collate
    of a ``Dataset`` split; dtypes as :class:`Split` describes). A batch already stacked by the
    dataset's ``__getitems__`` (:func:`is_batch`) passes through, integer targets made int64."""
    if is_batch(items):
        x, y = items
        return x, (y.long() if not (y.dtype.is_floating_point or y.dtype.is_complex) else y)
    pairs = [check_item(item) for item in items]
    return (_as_batch([p[0] for p in pairs], "inputs x", False),
            _as_batch([p[1] for p in pairs], "targets y", True))


class Split:
    """One split of a data set: in-memory tensors, or a map-style ``torch.utils.data.Dataset``.

    ``Split(x, y)``: inputs ``x (N, *input)`` and targets ``y (N, *target)`` (first dimension:
    samples), the fast path: training indexes the tensors directly.

    ``Split(dataset)``: ``len(dataset)`` items, ``dataset[i] -> (x, y)``, each a tensor or a value
    ``torch.as_tensor`` converts (NumPy arrays, numbers). Items are read only when needed: training
    and evaluation stream them through a ``DataLoader``, probes read a few. A batch stacks its
    items (:func:`collate_pairs`): non-tensor float64 values become float32, integer and boolean
    targets int64 (class indices, the ignore index); tensors keep their dtype otherwise, and a
    batch keeps its items' memory layout (:func:`stack_like_items`). When the
    dataset defines ``__getitems__(indices)`` (the ``DataLoader``'s batched read), it is used for
    every batch; it returns a list of items, or the batch itself, a pair of tensors
    ``(x (B, ...), y (B, ...))`` (no per-item stacking: the fast way for data in one array or
    memory-mapped file). ``collate``: a function of your own, list of items -> ``(x, y)``.
    Item 0 is read at construction to check the item layout (:class:`DatasetItemError`).

    Whatever the backing: ``len(split)``, ``split[i]``, :meth:`items`, :meth:`targets`,
    :meth:`sample` and :meth:`sample_indices` work; ``split.x`` / ``split.y`` (the whole
    tensors) only in memory (:class:`NotInMemoryError` otherwise: use those methods, or
    :meth:`loader`)."""

    def __init__(self, x, y=None, *, collate: Callable[[list], tuple] | None = None):
        if y is None and isinstance(x, Dataset):
            self._x = self._y = None
            self._dataset = _checked_dataset(x)
            self._collate = collate or collate_pairs
            try:
                self._collate(self._read([0]))
            except DatasetItemError as err:
                raise DatasetItemError(f"{type(x).__name__}: {err}") from None
            return
        if y is None:
            raise TypeError(f"Split takes tensors (x, y) or a map-style torch.utils.data.Dataset, "
                            f"got {type(x).__name__} alone")
        if collate is not None:
            raise TypeError("collate applies to a Dataset split only")
        self._x, self._y, self._dataset, self._collate = x, y, None, None

    @classmethod
    def from_dataset(cls, dataset: Dataset, collate: Callable[[list], tuple] | None = None
                     ) -> "Split":
        """``Split(dataset, collate=collate)``."""
        return cls(dataset, collate=collate)

    # --- what the backing is -------------------------------------------------------------------
    @property
    def in_memory(self) -> bool:
        """True for tensors ``x``, ``y``; False for a ``Dataset``."""
        return self._dataset is None

    @property
    def dataset(self) -> Dataset | None:
        """The ``Dataset`` behind the split (``None`` for tensors)."""
        return self._dataset

    @property
    def x(self) -> torch.Tensor:
        """All inputs ``(N, *input)``; in-memory splits only."""
        if self._dataset is not None:
            raise self._not_in_memory("x")
        return self._x

    @property
    def y(self) -> torch.Tensor:
        """All targets ``(N, *target)``; in-memory splits only."""
        if self._dataset is not None:
            raise self._not_in_memory("y")
        return self._y

    def _not_in_memory(self, field: str) -> NotInMemoryError:
        return NotInMemoryError(
            f"this split is a {type(self._dataset).__name__} ({len(self)} items read on demand), "
            f"not in-memory tensors, so it has no split.{field}; use split.items(indices), "
            "split.targets(indices), split.sample(n, seed) or split.loader(...)")

    def __len__(self) -> int:
        if self._dataset is not None:
            return len(self._dataset)
        return int(self._x.shape[0])

    def __repr__(self) -> str:
        if self._dataset is not None:
            return f"Split({type(self._dataset).__name__}, {len(self)} items)"
        return f"Split(x {tuple(self._x.shape)}, y {tuple(self._y.shape)})"

    # --- reading a few items -------------------------------------------------------------------
    def __getitem__(self, index: int) -> tuple:
        """Sample ``index`` as ``(x, y)`` (a ``Dataset`` split: the dataset's item as it is)."""
        if self._dataset is None:
            return self._x[index], self._y[index]
        return self._dataset[index]

    def _read(self, indices: list[int]) -> list:
        ds = self._dataset
        if getattr(ds, "__getitems__", None):
            return ds.__getitems__(indices)
        return [ds[i] for i in indices]

    def items(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the samples at ``indices`` (a sequence or 1-D tensor of ints), stacked in
        that order. A ``Dataset`` split reads those items only."""
        if self._dataset is None:
            idx = torch.as_tensor(indices, dtype=torch.long)
            return self._x[idx], self._y[idx]
        idx = [int(i) for i in torch.as_tensor(indices, dtype=torch.long).reshape(-1)]
        if not idx:
            raise ValueError("Split.items: no indices given")
        return self._collate(self._read(idx))

    def targets(self, indices) -> torch.Tensor:
        """The targets ``y`` of the samples at ``indices`` (see :meth:`items`)."""
        if self._dataset is None:
            return self._y[torch.as_tensor(indices, dtype=torch.long)]
        return self.items(indices)[1]

    def sample_indices(self, n: int, seed: int) -> torch.Tensor:
        """``min(n, len(self))`` distinct indices in a random order fixed by ``seed`` (the first
        ``n`` of a seeded permutation: a larger ``n`` extends a smaller one)."""
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self), generator=gen)[:n]

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``n`` samples drawn without replacement with ``seed``
        (:meth:`sample_indices`); a ``Dataset`` split reads those ``n`` items only."""
        return self.items(self.sample_indices(n, seed))

    # --- streaming -----------------------------------------------------------------------------
    def loader(self, batch_sampler: Iterable[list[int]] | None = None, *, batch_size: int = 64,
               num_workers: int = 0, seed: int = 0, pin_memory: bool = False,
               persistent_workers: bool = False) -> DataLoader:
        """A ``DataLoader`` over a ``Dataset`` split yielding ``(x, y)`` batches.

        ``batch_sampler``: the index lists to read, in order (default: ``0..N-1`` in order in
        batches of ``batch_size``, the last one smaller). ``seed`` seeds the loader's own
        generator, from which the workers' seeds derive (torch's global RNG is not drawn from), so
        random augmentations in ``num_workers`` workers repeat for a seed.
        """
        if self._dataset is None:
            raise TypeError("Split.loader is for Dataset splits; index split.x / split.y directly")
        if batch_sampler is None:
            batch_sampler = BatchSampler(SequentialSampler(range(len(self))), batch_size, False)
        return DataLoader(self._dataset, batch_sampler=batch_sampler, collate_fn=self._collate,
                          num_workers=num_workers, pin_memory=pin_memory,
                          generator=torch.Generator().manual_seed(seed),
                          persistent_workers=persistent_workers and num_workers > 0)


def _checked_dataset(dataset) -> Dataset:
    """``dataset`` if it is a non-empty map-style dataset, else a ``TypeError``/``ValueError``."""
    if isinstance(dataset, IterableDataset):
        raise TypeError(f"{type(dataset).__name__} is an IterableDataset; a Split needs a "
                        "map-style Dataset (__len__ and __getitem__(i) -> (x, y))")
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"{type(dataset).__name__}: a Split's Dataset needs __len__ and "
                        "__getitem__(i) -> (x, y)")
    if len(dataset) == 0:
        raise ValueError(f"{type(dataset).__name__} is empty: a split needs at least one item")
    return dataset


def as_split_value(value, which: str) -> Split:
    """A :class:`DataSplits` field: a :class:`Split` as it is, a ``Dataset`` wrapped in one."""
    if isinstance(value, Split):
        return value
    if isinstance(value, Dataset):
        return Split(value)
    raise TypeError(f"DataSplits.{which} must be a Split (tensors x, y) or a map-style "
                    f"torch.utils.data.Dataset of (x, y) items, got {type(value).__name__}")


@dataclass(frozen=True)
class DataSplits:
    """The three splits of a data set; ``num_classes`` is ``None`` for regression.

    Each split is a :class:`Split`; a map-style ``Dataset`` given instead is wrapped in one."""

    train: Split
    val: Split
    test: Split
    num_classes: int | None
    name: str

    def __post_init__(self):
        for which in ("train", "val", "test"):
            object.__setattr__(self, which, as_split_value(getattr(self, which), which))

    @property
    def in_memory(self) -> bool:
        """True when every split is in-memory tensors (the batched engines need that)."""
        return self.train.in_memory and self.val.in_memory and self.test.in_memory


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
