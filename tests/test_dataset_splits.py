"""Data on disk: ``Split`` / ``DataSplits`` backed by a map-style ``torch.utils.data.Dataset``.

A ``Dataset`` holding the same samples as a tensor split trains to the very same numbers (the
``DataLoader`` reads the index batches the tensor path indexes); file-backed datasets work; probes
read only the items they need; bad items fail with a message naming the fix.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from lossforge.data import DatasetItemError, DataSplits, NotInMemoryError, Split, collate_pairs
from lossforge.evaluation.candidate import TRAINED, Candidate
from lossforge.evaluation.probes import slot_probe, task_probe
from lossforge.evaluation.proxy import ProxyStageConfig, ProxyTraining
from lossforge.expr import parse
from lossforge.tasks import Metric, ProxyConfig, Task, models
from lossforge.training import OK, StepBatchSampler, batch_indices, score_model, tensor_data, train
from lossforge.training.stacked import supports_batched

ACC = {"accuracy": Metric("accuracy", lambda p, t: float((p == t).mean()))}
PIX = {"pixel_acc": Metric("pixel_acc", lambda p, t: float((p == t)[t != 255].mean()))}


# ---- datasets ----------------------------------------------------------------------------------
class Items(Dataset):
    """The samples of two tensors, one ``__getitem__`` per item, counting the reads."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], self.y[i]


class BatchedItems(Items):
    """Offers the ``DataLoader``'s batched read ``__getitems__`` (counted apart)."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.batch_reads = 0

    def __getitems__(self, indices):
        self.batch_reads += 1
        idx = torch.as_tensor(indices)
        return list(zip(self.x[idx], self.y[idx]))


class StackedItems(BatchedItems):
    """``__getitems__`` returns the batch itself, ``(x (B, ...), y (B, ...))``; targets int32."""

    def __getitems__(self, indices):
        self.batch_reads += 1
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx].int()


class NpyFiles(Dataset):
    """Items stored as one ``.npz`` file each: ``x`` float64, ``y`` uint8 (as images and masks on
    disk often are; the ``Split`` batches them as float32 / int64)."""

    def __init__(self, folder):
        self.files = sorted(folder.glob("*.npz"))

    @classmethod
    def write(cls, x: torch.Tensor, y: torch.Tensor, folder) -> "NpyFiles":
        folder.mkdir()
        for i in range(len(x)):
            np.savez(folder / f"{i:05d}.npz", x=x[i].double().numpy(),
                     y=y[i].numpy().astype(np.uint8))
        return cls(folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with np.load(self.files[i]) as f:
            return f["x"], f["y"]


class Jitter(Items):
    """Random augmentation from torch's RNG (the worker's own seed under ``num_workers``)."""

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return x + 0.1 * torch.randn(x.shape), y


# ---- tasks -------------------------------------------------------------------------------------
def _blobs(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.tensor([[0.0, 2.0], [2.0, -1.5], [-2.0, -1.5]])
    y = torch.randint(0, 3, (n,), generator=g)
    return centres[y] + torch.randn(n, 2, generator=g), y


class Blobs(Task):
    """Three Gaussian blobs, a small MLP with dropout (the global RNG matters), tensors."""

    name = "ds-blobs"
    num_classes = 3
    metrics = ACC
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=40, batch_size=32, lr=0.05, eval_batch_size=64)
    sizes = (150, 70, 70)
    wrap = None  # a Dataset class wrapping each split's tensors

    def data(self) -> DataSplits:
        if getattr(self, "_data", None) is None:
            g = torch.Generator().manual_seed(0)
            parts = [_blobs(n, g) for n in self.sizes]
            splits = [Split(*p) if self.wrap is None else self.wrap(*p) for p in parts]
            self._data = DataSplits(*splits, 3, self.name)
        return self._data

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


class BlobsItems(Blobs):
    name = "ds-blobs-items"
    wrap = Items


class Seg(Task):
    """Segmentation with the built-in U-Net and ignored pixels (255), tensors."""

    name = "ds-seg"
    num_classes = 3
    metrics = PIX
    default_metric = "pixel_acc"
    proxy = ProxyConfig(steps=8, batch_size=4, lr=0.01, eval_batch_size=5)
    wrap = None

    def data(self) -> DataSplits:
        if getattr(self, "_data", None) is None:
            g = torch.Generator().manual_seed(0)
            splits = []
            for n in (22, 9, 9):  # 22 % 4 != 0: passes drop their incomplete last batch
                x = torch.randn(n, 3, 8, 8, generator=g)
                y = (x[:, 0] > 0.3).long() + (x[:, 1] > 0.8).long()
                y[:, 0, :] = 255
                splits.append(Split(x, y) if self.wrap is None else self.wrap(x, y))
            self._data = DataSplits(*splits, 3, self.name)
        return self._data

    def make_model(self) -> nn.Module:
        return models.TinyUNet(3, width=4)


class SegItems(Seg):
    name = "ds-seg-items"
    wrap = Items


def _same(a, b) -> None:
    assert a.status == b.status == OK
    assert a.steps_done == b.steps_done
    assert a.loss_curve == b.loss_curve
    assert a.val == b.val and a.test == b.test and a.val_curve == b.val_curve


# ---- training and evaluation -------------------------------------------------------------------
@pytest.mark.parametrize("tensors, items", [(Blobs, BlobsItems), (Seg, SegItems)])
def test_a_dataset_trains_to_the_numbers_of_the_same_tensors(tensors, items):
    """Same batches by construction (StepBatchSampler = batch_indices): identical results, with
    dropout drawing from the global RNG in between, a subset run and a validation curve."""
    for kw in ({}, {"train_fraction": 0.5, "eval_every": 3}):
        a = train(tensors(), "ce", seed=3, **kw)
        b = train(items(), "ce", seed=3, **kw)
        _same(a, b)
    assert a.val_curve and a.steps_done == tensors.proxy.steps


def test_the_builtin_digits_wrapped_in_a_dataset_train_bit_for_bit_alike():
    """digits' tensors carry NumPy strides (channels-last-like for 1 channel), which select the
    convolution kernel: the batches stacked from its items keep that layout."""
    from lossforge import tasks

    base = tasks.get("digits")

    class DigitsItems(type(base)):
        name = "digits-items"

        def data(self):
            d = base.data()
            return DataSplits(Items(d.train.x, d.train.y), Items(d.val.x, d.val.y),
                              d.test, d.num_classes, "digits")

    task = DigitsItems()
    xb, _ = task.data().train.items([3, 1])
    assert xb.stride() == base.data().train.x[[3, 1]].stride()
    _same(train(base, "ce", steps=12, seed=0, splits=("val",)),
          train(task, "ce", steps=12, seed=0, splits=("val",)))


def test_training_a_dataset_is_deterministic_per_seed_and_reads_each_batch_once():
    task = BlobsItems()
    a, b = train(task, "focal", seed=1), train(task, "focal", seed=1)
    c = train(task, "focal", seed=2)
    _same(a, b)
    assert a.loss_curve != c.loss_curve
    ds = task.data().train.dataset
    before = ds.reads
    train(task, "ce", seed=0, steps=5, splits=())
    assert ds.reads - before == 5 * 32  # 5 batches of 32 items, nothing else


def test_batches_follow_batch_indices_and_drop_the_incomplete_last_batch():
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    keep = torch.arange(100, 122)
    sampled = list(StepBatchSampler(22, 4, 9, gen_a, subset=keep))
    reference = [(keep[i]).tolist() for i in batch_indices(22, 4, 9, gen_b)]
    assert sampled == reference and len(sampled) == 9 and all(len(b) == 4 for b in sampled)
    first_pass = [i for b in sampled[:5] for i in b]
    assert len(set(first_pass)) == 20  # 5 full batches of a permutation of 22; 2 items dropped


def test_score_model_streams_a_dataset_split_in_order():
    t, d = Seg(), SegItems()
    model = t.seeded_model(0)
    assert score_model(t, model, t.data().val, 4, "cpu") == \
        score_model(d, model, d.data().val, 4, "cpu", num_workers=0)


def test_a_file_backed_dataset_trains_like_the_tensors(tmp_path):
    """``.npz`` per item (x float64, y uint8): batched as float32 / int64, same result."""
    ref = Seg()
    data = ref.data()

    class SegFiles(Seg):
        name = "ds-seg-files"

        def data(self):
            if getattr(self, "_data", None) is None:
                self._data = DataSplits(*(NpyFiles.write(s.x, s.y, tmp_path / k)
                                          for k, s in (("train", data.train), ("val", data.val),
                                                       ("test", data.test))), 3, "files")
            return self._data

    task = SegFiles()
    x, y = task.data().train.items([0, 1])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, data.train.x[:2]) and torch.equal(y, data.train.y[:2])
    _same(train(ref, "ce", seed=0), train(task, "ce", seed=0))


@pytest.mark.parametrize("wrap", [BatchedItems, StackedItems])
def test_getitems_is_used_for_whole_batches_when_the_dataset_offers_it(wrap):
    """A list of items (torch's contract) or the stacked batch itself: the same run."""
    class BlobsBatched(Blobs):
        name = "ds-blobs-batched"

    BlobsBatched.wrap = wrap
    task = BlobsBatched()
    _same(train(Blobs(), "ce", seed=0), train(task, "ce", seed=0))
    ds = task.data().train.dataset
    assert ds.batch_reads == Blobs.proxy.steps + 1 and ds.reads == 0  # +1: the layout check
    assert task.data().val.items([2, 3])[1].dtype == torch.int64


def test_num_workers_gives_the_same_result_and_seeded_augmentations_repeat():
    start = time.perf_counter()
    task = BlobsItems()
    _same(train(task, "ce", seed=0, eval_every=20), train(task, "ce", seed=0, eval_every=20,
                                                          num_workers=2))

    class Augmented(Blobs):
        name = "ds-blobs-jitter"
        wrap = Jitter
        proxy = Blobs.proxy.with_(num_workers=2)

    a, b = train(Augmented(), "ce", seed=0), train(Augmented(), "ce", seed=0)
    _same(a, b)
    assert a.loss_curve != train(Augmented(), "ce", seed=1).loss_curve
    assert time.perf_counter() - start < 20


# ---- the Split API -----------------------------------------------------------------------------
def test_split_methods_agree_between_tensors_and_a_dataset():
    x, y = torch.randn(30, 2, 3), torch.randint(0, 4, (30,))
    t, d = Split(x, y), Split(Items(x, y))
    assert len(t) == len(d) == 30 and t.in_memory and not d.in_memory
    idx = torch.tensor([5, 0, 29])
    for a, b in zip(t.items(idx), d.items(idx)):
        assert torch.equal(a, b)
    assert torch.equal(t.targets([3, 4]), d.targets([3, 4]))
    assert torch.equal(t.sample_indices(8, 2), d.sample_indices(8, 2))
    assert torch.equal(t.sample(8, 2)[1], d.sample(8, 2)[1])
    assert torch.equal(t.sample_indices(12, 2)[:8], t.sample_indices(8, 2))  # a prefix
    assert len(t.sample_indices(99, 0)) == 30
    assert torch.equal(d[7][0], x[7]) and torch.equal(t[7][1], y[7])
    with pytest.raises(NotInMemoryError, match=r"Items \(30 items.*split.targets"):
        d.y
    assert not hasattr(d, "x") and d.dataset is not None and t.dataset is None


def test_datasplits_wraps_datasets_and_refuses_other_values():
    ds = TensorDataset(torch.randn(4, 2), torch.arange(4))
    splits = DataSplits(ds, ds, Split(torch.randn(4, 2), torch.arange(4)), 4, "mixed")
    assert isinstance(splits.train, Split) and splits.train.dataset is ds
    assert not splits.in_memory
    with pytest.raises(TypeError, match=r"DataSplits.val must be a Split .* got list"):
        DataSplits(ds, [1, 2], ds, 4, "bad")


# ---- probes ------------------------------------------------------------------------------------
def test_probes_read_only_the_items_they_draw():
    class Big(Blobs):
        name = "ds-blobs-big"
        sizes = (2000, 50, 50)

    class BigItems(Big):
        name = "ds-blobs-big-items"
        wrap = Items

    task = BigItems()
    ds = task.data().train.dataset
    before = ds.reads
    probe = task_probe(task, 16, seed=5)
    assert ds.reads - before == 16
    assert torch.equal(probe.target, task_probe(Big(), 16, seed=5).target)
    assert torch.equal(slot_probe(task, "loss", 8, 1).target, slot_probe(Big(), "loss", 8, 1).target)
    before = ds.reads
    targets = task.slot_probe_targets("loss", 8, seed=2)  # the multi-slot default path
    assert torch.equal(targets, Big().slot_probe_targets("loss", 8, seed=2))
    assert ds.reads - before <= 64  # one chunk of 64 items, not the 2000


def test_the_proxy_stage_trains_a_dataset_task_sequentially_with_the_same_fitness():
    """The stacked engine needs tensors: a Dataset task falls back to ``train``, one by one."""
    d, t = SegItems(), Seg()
    assert not tensor_data(d) and tensor_data(t)
    assert not supports_batched(d)
    formulas = ["-sum_c(y * log(p))", "-sum_c(y * square(1 - p) * log(p))"]
    cands = [Candidate(parse(f)) for f in formulas]
    ProxyTraining(d, "pixel_acc", ProxyStageConfig(steps=6, batch=16))(cands)
    assert [c.status for c in cands] == [TRAINED, TRAINED]
    assert [c.fitness for c in cands] == [
        train(t, f, steps=6, seed=0, splits=("val",)).val["pixel_acc"] for f in formulas]


# ---- bad items ---------------------------------------------------------------------------------
class _Returns(Dataset):
    def __init__(self, make, n: int = 6):
        self.make, self.n = make, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i)


@pytest.mark.parametrize("make, message", [
    (lambda i: torch.zeros(3), r"_Returns: items must be pairs \(x, y\).*got a Tensor"),
    (lambda i: (torch.zeros(3), 1, 2), r"got a tuple of length 3; make __getitem__ return"),
    (lambda i: {"image": torch.zeros(3), "mask": 1}, r"a dict item: return \(item\['image'\]"),
    (lambda i: ("text", 1), r"cannot batch the items' inputs x"),
])
def test_items_that_are_not_pairs_fail_when_the_split_is_made(make, message):
    with pytest.raises(DatasetItemError, match=message):
        DataSplits(_Returns(make), _Returns(make), _Returns(make), 2, "bad")


def test_items_of_different_shapes_fail_in_training_with_the_shapes_seen():
    class Ragged(Blobs):
        name = "ds-ragged"

        def data(self):
            ds = _Returns(lambda i: (torch.zeros(2 + (i == 4)), 0), n=40)
            return DataSplits(ds, ds, ds, 3, "ragged")

    with pytest.raises(DatasetItemError, match=r"inputs x: .*shapes seen: .*\(2,\).*\(3,\).*"
                                               r"resize or crop in __getitem__"):
        train(Ragged(), "ce", seed=0)


def test_unsupported_datasets_are_refused_clearly():
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(2), 0

    with pytest.raises(TypeError, match="IterableDataset; a Split needs a map-style Dataset"):
        Split(Stream())
    with pytest.raises(ValueError, match="is empty"):
        Split(TensorDataset(torch.zeros(0, 2), torch.zeros(0)))
    with pytest.raises(TypeError, match="tensors \\(x, y\\) or a map-style"):
        Split(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        train(BlobsItems(), "ce", steps=1, num_workers=-1)


def test_collate_pairs_normalises_dtypes():
    x, y = collate_pairs([(np.zeros(2), np.uint8(3)), (np.ones(2), np.uint8(255))])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.tolist() == [3, 255]
    x, y = collate_pairs([(torch.zeros(2, dtype=torch.float64), 0.5)])
    assert x.dtype == torch.float64 and y.dtype == torch.float32  # tensors keep their dtype
    cl = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    x, _ = collate_pairs([(cl[i], i) for i in range(4)])
    assert torch.equal(x, cl) and x.is_contiguous(memory_format=torch.channels_last)


def _train_in_daemon(queue) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = train(BlobsItems(), "ce", seed=0, num_workers=2)
    queue.put((r.loss_curve, r.val, [str(w.message) for w in caught]))


def test_a_daemonic_process_reads_the_data_itself_with_a_warning():
    """Dask's worker processes are daemonic and may not start DataLoader workers."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train_in_daemon, args=(queue,), daemon=True)
    proc.start()
    curve, val, messages = queue.get(timeout=60)
    proc.join(timeout=10)
    ref = train(BlobsItems(), "ce", seed=0)
    assert curve == ref.loss_curve and val == ref.val
    assert any("daemonic process" in m and "distributed.worker.daemon" in m for m in messages)
