"""Tests for lossforge.metrics: hand-worked cases, scikit-learn cross-checks, a brute-force
reference for the ``lossforge-v1`` boundary metrics, accumulation, ignore handling, and bad input.
The reference definitions of the boundary metrics (official Boundary IoU, Auto Seg-Loss's BF1 and
trimap IoU) are checked in ``test_boundary_reference.py``."""
from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lossforge import metrics as M

SEG_KEYS = ("miou", "fwiou", "gacc", "macc", "biou", "bf1", "trimap_iou")


def all_seg(pred, target, num_classes, **kw):
    meter = M.SegmentationMeter(num_classes, **kw)
    meter.update(pred, target)
    return meter.compute()


# ----------------------------------------------------------------------------- classification
def test_classification_hand_cases():
    assert M.accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == 0.75
    # target 0,0,0,1 / pred 0,0,1,1: recall(0) = 2/3, recall(1) = 1 -> 5/6
    assert M.balanced_accuracy([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(5 / 6)
    # target 1,1,0,0,1 / pred 1,0,0,1,1: class 1 tp=2 fp=1 fn=1 -> F1 = 4/6;
    # class 0 tp=1 fp=1 fn=1 -> F1 = 2/4.
    pred, target = [1, 0, 0, 1, 1], [1, 1, 0, 0, 1]
    assert M.f1(pred, target) == pytest.approx(2 / 3)  # two classes -> binary, positive class 1
    assert M.f1(pred, target, pos_label=0) == pytest.approx(0.5)
    assert M.f1(pred, target, average="macro") == pytest.approx((2 / 3 + 0.5) / 2)
    assert M.f1(pred, target, average="micro") == pytest.approx(0.6)  # = accuracy
    # more than two classes -> macro by default. Labels 0, 1, 3 only: with num_classes=4, class 2
    # is in neither array and is left out. tp/fp/fn: c0 1/1/1, c1 1/1/1, c3 1/1/1
    pred3, target3 = [0, 1, 1, 3, 3, 0], [0, 0, 1, 3, 1, 3]
    f_c0, f_c1, f_c3 = 2 / 4, 2 / 4, 2 / 4  # 2tp / (2tp + fp + fn)
    assert M.f1(pred3, target3, num_classes=4) == pytest.approx((f_c0 + f_c1 + f_c3) / 3)
    # balanced accuracy: recall c0 = 1/2, c1 = 1/2, c3 = 1/2; class 2 absent -> excluded
    assert M.balanced_accuracy(pred3, target3, num_classes=4) == pytest.approx(0.5)


def test_f1_binary_edge_cases():
    # class 1 in neither array: F1 undefined -> 0.0 (scikit-learn's zero_division default)
    assert M.f1([0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="binary"):
        M.f1([0, 1, 2], [0, 1, 2], average="binary")
    with pytest.raises(ValueError, match="average"):
        M.f1([0, 1], [0, 1], average="samples")


@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(3, 8))
    target = rng.integers(0, c, 300)
    pred = np.where(rng.random(300) < 0.6, target, rng.integers(0, c, 300))
    pred[pred == c - 1] = 0  # a class present in the target only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert M.accuracy(pred, target) == pytest.approx(skm.accuracy_score(target, pred))
        assert M.balanced_accuracy(pred, target, c) == pytest.approx(
            skm.balanced_accuracy_score(target, pred))
        for avg in ("macro", "micro", "weighted"):
            assert M.f1(pred, target, c, average=avg) == pytest.approx(
                skm.f1_score(target, pred, average=avg)), avg
    yb = rng.integers(0, 2, 200)
    pb = np.where(rng.random(200) < 0.7, yb, 1 - yb)
    assert M.f1(pb, yb, num_classes=2) == pytest.approx(skm.f1_score(yb, pb))
    assert M.f1(pb, yb, pos_label=0) == pytest.approx(skm.f1_score(yb, pb, pos_label=0))
    assert M.balanced_accuracy(pb, yb) == pytest.approx(skm.balanced_accuracy_score(yb, pb))


def test_torch_and_float_inputs():
    pred = torch.tensor([0, 2, 1, 1])
    target = torch.tensor([0, 2, 2, 1], dtype=torch.float32)  # integral floats are accepted
    assert M.accuracy(pred, target) == 0.75
    assert isinstance(M.f1(pred, target), float)
    with pytest.raises(ValueError, match="integer class labels"):
        M.accuracy([0.5, 1.0], [0, 1])


# ----------------------------------------------------------------------------- regression
def test_regression_hand_and_sklearn():
    # |errors| = 0, 2, 3 -> MAE 5/3, RMSE sqrt(13/3)
    assert M.mae([1, 2, 3], [1, 4, 0]) == pytest.approx(5 / 3)
    assert M.rmse([1, 2, 3], [1, 4, 0]) == pytest.approx(math.sqrt(13 / 3))
    rng = np.random.default_rng(0)
    y, f = rng.normal(size=500), rng.normal(size=500)
    assert M.mae(f, y) == pytest.approx(skm.mean_absolute_error(y, f))
    assert M.rmse(f, y) == pytest.approx(math.sqrt(skm.mean_squared_error(y, f)))
    assert M.mae(torch.tensor(f), torch.tensor(y, dtype=torch.float32)) == pytest.approx(
        skm.mean_absolute_error(y, f), rel=1e-6)
    assert isinstance(M.rmse(f, y), float)


@pytest.mark.parametrize("fn", [M.mae, M.rmse])
def test_regression_rejects_nan_and_shape_mismatch(fn):
    with pytest.raises(ValueError, match="non-finite"):
        fn([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        fn([1.0, 2.0], [float("inf"), 2.0])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0])


# ----------------------------------------------------------------------------- confusion-matrix
def random_maps(rng, n=3, h=20, w=24, c=6, p_ignore=0.1):
    target = rng.integers(0, c - 1, (n, h, w))  # class c-1 never in the target...
    pred = np.where(rng.random((n, h, w)) < 0.5, target, rng.integers(0, c, (n, h, w)))
    pred[pred == 2] = 3  # ...class 2 never in the prediction
    target[rng.random((n, h, w)) < p_ignore] = 255
    return pred, target


@pytest.mark.parametrize("seed", range(4))
def test_confusion_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 8  # classes 6 and 7 are in neither map: left out of every mean
    pred, target = random_maps(rng, c=6)
    valid = target != 255
    yt, yp = target[valid], pred[valid]
    np.testing.assert_array_equal(M.confusion_matrix(pred, target, c),
                                  skm.confusion_matrix(yt, yp, labels=range(c)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "miou": skm.jaccard_score(yt, yp, average="macro"),  # labels in either array
            "fwiou": skm.jaccard_score(yt, yp, average="weighted"),  # weights: GT frequency
            "gacc": skm.accuracy_score(yt, yp),
            "macc": skm.balanced_accuracy_score(yt, yp),  # recall over classes in the GT
        }
    got = all_seg(pred, target, c)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
        assert getattr(M, key)(pred, target, num_classes=c) == pytest.approx(value), key
        assert getattr(M, key)(pred, target) == pytest.approx(value), key  # classes inferred


def test_confusion_metrics_hand_case():
    # GT 0 0 1 1 / pred 0 1 1 2 (one image 1×4)
    # IoU: c0 1/2, c1 1/3, c2 0/1 (pred only: counts as 0) -> mIoU 5/18
    # recall: c0 1/2, c1 1/2 (c2 not in GT: excluded) -> mAcc 1/2; gAcc 2/4
    # FWIoU = 0.5 * 1/2 + 0.5 * 1/3 = 5/12
    pred, target = np.array([[0, 1, 1, 2]]), np.array([[0, 0, 1, 1]])
    got = all_seg(pred, target, 4)
    assert got["miou"] == pytest.approx(5 / 18)
    assert got["macc"] == pytest.approx(0.5)
    assert got["gacc"] == pytest.approx(0.5)
    assert got["fwiou"] == pytest.approx(5 / 12)


# ----------------------------------------------------------------------------- boundary metrics
def square_maps(shift, size=12):
    """GT: class-1 5×5 square (rows 3..7, cols 3..7) on background; pred: same, shifted right."""
    target = np.zeros((size, size), int)
    target[3:8, 3:8] = 1
    pred = np.zeros((size, size), int)
    pred[3:8, 3 + shift:8 + shift] = 1
    return pred, target


def test_square_shifted_by_one_pixel():
    pred, target = square_maps(1)
    # r = 1: each band is the 16-pixel ring. GT ring cols 3..7, pred ring cols 4..8: they share
    # rows 3 and 7 at cols 4..7 (8 px); on rows 4..6 the GT ring sits at cols 3, 7 and the pred
    # ring at cols 4, 8 -> nothing shared. BIoU = 8 / (16 + 16 - 8) = 1/3 (background dropped).
    assert M.biou(pred, target, radius=1) == pytest.approx(1 / 3)
    # r = 2: bands are the 5×5 squares minus their centre (24 px each); the squares overlap on
    # rows 3..7 × cols 4..7 = 20 px, less both centres (5,5) and (5,6) -> 18.
    # BIoU = 18 / (24 + 24 - 18) = 0.6
    assert M.biou(pred, target, radius=2) == pytest.approx(0.6)
    # Every predicted contour pixel is 1 px from a GT contour pixel and vice versa -> BF1 = 1.
    assert M.bf1(pred, target, radius=1) == pytest.approx(1.0)
    assert M.bf1(pred, target, radius=3) == pytest.approx(1.0)
    # the pixel metrics see a 5-px miss on each side: IoU(1) = 20 / 30; background: 119 GT and
    # 119 predicted pixels sharing 114 -> 114 / 124
    assert all_seg(pred, target, 2)["miou"] == pytest.approx((114 / 124 + 20 / 30) / 2)


def test_radius_effect_two_pixel_shift():
    pred, target = square_maps(2)
    # r = 1, pred ring cols 5..9. Matched predicted contour pixels: rows 3 and 7 at cols 5..8
    # (4 + 4; col 9 is 2 px from col 7), plus (4,5) and (6,5) which touch the GT top/bottom
    # rows; (5,5) and all of col 9 are 2 px away -> 10 / 16. Recall is 10/16 by symmetry.
    assert M.bf1(pred, target, radius=1) == pytest.approx(10 / 16)
    assert M.bf1(pred, target, radius=2) == pytest.approx(1.0)
    # BIoU r = 1: rings share rows 3, 7 at cols 5..7 -> 6 / (32 - 6) = 3/13
    assert M.biou(pred, target, radius=1) == pytest.approx(3 / 13)


def thin_line_maps():
    """Class 1: 5×5 square; class 2: a 1-px-wide vertical line (col 12, rows 2..13)."""
    target = np.zeros((16, 16), int)
    target[2:7, 2:7] = 1
    target[2:14, 12] = 2
    pred = target.copy()
    pred[target == 2] = 0  # the thin structure is lost
    return pred, target


def test_thin_structure_deleted():
    pred, target = thin_line_maps()
    meter = M.SegmentationMeter(3, radius=1)
    meter.update(pred, target)
    pc = meter.per_class()
    assert pc["biou"][2] == 0.0 and pc["bf1"][2] == 0.0  # GT band/contour, nothing predicted
    assert pc["biou"][1] == 1.0 and pc["bf1"][1] == 1.0  # the square is untouched
    got = meter.compute()
    assert got["biou"] == pytest.approx(0.5) and got["bf1"] == pytest.approx(0.5)
    # pixel view: 12 of 256 pixels wrong -> gAcc 244/256; IoU bg 219/231, sq 1, line 0
    assert got["gacc"] == pytest.approx(244 / 256)
    assert got["miou"] == pytest.approx((219 / 231 + 1 + 0) / 3)
    assert got["macc"] == pytest.approx((1 + 1 + 0) / 3)


def test_perfect_prediction_scores_one():
    _, target = thin_line_maps()
    target = np.stack([target, np.rot90(target), target.T])
    target[:, 10, 10] = 255
    got = all_seg(target.copy(), target, 3)
    assert got == {k: pytest.approx(1.0) for k in SEG_KEYS}


V1 = dict(biou_definition="lossforge-v1", bf1_definition="lossforge-v1")


def reference_boundary(pred, target, c, r, ignore=255, background=0):
    """Brute force, straight from the ``lossforge-v1`` definitions: pixel loops over small maps
    (an ignored pixel is like a pixel outside the image; the border makes no edge)."""
    inter, union = np.zeros(c), np.zeros(c)
    hit_p, n_p, hit_g, n_g = np.zeros(c), np.zeros(c), np.zeros(c), np.zeros(c)
    for p, t in zip(pred, target):
        h, w = t.shape
        valid = t != ignore

        def near_other(lab, y, x, rad):  # a valid pixel of another class within Chebyshev rad
            ys, xs = slice(max(0, y - rad), y + rad + 1), slice(max(0, x - rad), x + rad + 1)
            win, ok = lab[ys, xs], valid[ys, xs]
            return bool(np.any(ok & (win != lab[y, x])))

        def near_edge(lab_other, edge_other, y, x, k):
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            return bool(np.any(edge_other[ys, xs] & (lab_other[ys, xs] == k)))

        cells = [(y, x) for y in range(h) for x in range(w) if valid[y, x]]
        band_t = np.zeros((h, w), bool)
        band_p = np.zeros((h, w), bool)
        edge_t = np.zeros((h, w), bool)
        edge_p = np.zeros((h, w), bool)
        for y, x in cells:
            band_t[y, x], band_p[y, x] = near_other(t, y, x, r), near_other(p, y, x, r)
            edge_t[y, x], edge_p[y, x] = near_other(t, y, x, 1), near_other(p, y, x, 1)
        for k in range(c):
            gd, pd = band_t & (t == k), band_p & (p == k)
            inter[k] += np.sum(gd & pd)
            union[k] += np.sum(gd | pd)
            for y, x in cells:
                if edge_p[y, x] and p[y, x] == k:
                    n_p[k] += 1
                    hit_p[k] += near_edge(t, edge_t, y, x, k)
                if edge_t[y, x] and t[y, x] == k:
                    n_g[k] += 1
                    hit_g[k] += near_edge(p, edge_p, y, x, k)
    keep = [k for k in range(c) if k != background]
    bi = [inter[k] / union[k] for k in keep if union[k] > 0]
    bf = []
    for k in keep:
        if n_p[k] + n_g[k] == 0:
            continue
        prec = hit_p[k] / n_p[k] if n_p[k] else 0.0
        rec = hit_g[k] / n_g[k] if n_g[k] else 0.0
        bf.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return float(np.mean(bi)), float(np.mean(bf))


@pytest.mark.parametrize("seed,r", list(itertools.product(range(3), (1, 2))))
def test_boundary_metrics_match_brute_force(seed, r):
    rng = np.random.default_rng(seed)
    c = 4
    # blocky maps (2×2 cells) so that bands are not the whole image
    target = np.kron(rng.integers(0, c, (2, 6, 7)), np.ones((1, 2, 2), int))
    pred = target.copy()
    flip = rng.random(target.shape) < 0.15
    pred[flip] = rng.integers(0, c, flip.sum())
    target[rng.random(target.shape) < 0.08] = 255
    pred[target == 255] = rng.integers(0, 300, (target == 255).sum())  # never read
    exp_biou, exp_bf1 = reference_boundary(pred, target, c, r)
    got = all_seg(pred, target, c, radius=r, **V1)
    assert got["biou"] == pytest.approx(exp_biou)
    assert got["bf1"] == pytest.approx(exp_bf1)
    assert M.biou(pred, target, c, radius=r, definition="lossforge-v1") == pytest.approx(exp_biou)
    assert M.bf1(pred, target, c, radius=r, definition="lossforge-v1") == pytest.approx(exp_bf1)


def test_many_classes_use_several_bit_words():
    # > 64 classes take the chunked path of the contour matching; compare with a relabelled copy
    rng = np.random.default_rng(1)
    base = np.kron(rng.integers(0, 5, (2, 8, 8)), np.ones((1, 3, 3), int))
    pred = base.copy()
    pred[rng.random(base.shape) < 0.1] = 3
    lut = np.array([0, 70, 3, 130, 64])  # spread over three 64-class words
    small, big = all_seg(pred, base, 5), all_seg(lut[pred], lut[base], 131)
    for key in ("biou", "bf1", "gacc", "fwiou"):
        assert big[key] == pytest.approx(small[key]), key


# ----------------------------------------------------------------------------- accumulation
def shapes_batch(rng, n=8, size=32, c=5):
    yy, xx = np.mgrid[:size, :size]
    maps = np.zeros((n, size, size), int)
    for i in range(n):
        for _ in range(3):
            cy, cx, rad = rng.integers(4, size - 4, 2).tolist() + [int(rng.integers(2, 8))]
            maps[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= rad ** 2] = rng.integers(1, c)
    return maps


def test_meter_two_batches_equals_concatenation():
    rng = np.random.default_rng(0)
    target = shapes_batch(rng)
    pred = np.roll(target, 1, axis=2)
    pred[:, ::7] = 0
    target[:, 5, 5:9] = 255
    whole = all_seg(pred, target, 5)
    meter = M.SegmentationMeter(5)
    meter.update(pred[:3], target[:3])
    meter.update(torch.from_numpy(pred[3:]), torch.from_numpy(target[3:]))
    split = meter.compute()
    assert split == {k: pytest.approx(v) for k, v in whole.items()}
    # counts are pooled, not batch means: per-batch means differ from the pooled score
    for key in SEG_KEYS:
        assert getattr(M, key)(pred, target, num_classes=5) == pytest.approx(whole[key])


@pytest.mark.parametrize("definitions", ["reference", "lossforge-v1"])
def test_ignored_pixels_change_nothing(definitions):
    # A whole image of void adds nothing under every definition. Under lossforge-v1 an ignored
    # pixel is like a pixel outside the image, so a frame of void and the prediction under void
    # change nothing either; the reference definitions draw ground-truth boundaries along void
    # and read the prediction there to place predicted boundaries (test_boundary_reference.py).
    v1 = definitions == "lossforge-v1"
    kw = V1 if v1 else {}
    rng = np.random.default_rng(3)
    target = shapes_batch(rng, n=4)
    pred = np.roll(target, 2, axis=1)
    ref = all_seg(pred, target, 5, **kw)
    tp2 = np.concatenate([target, np.full_like(target[:1], 255)])
    pp2 = np.concatenate([pred, rng.integers(0, 5, target[:1].shape)])
    assert all_seg(pp2, tp2, 5, **kw) == {k: pytest.approx(v) for k, v in ref.items()}
    if not v1:
        return
    # 1) a frame of ignored pixels around every image (pred arbitrary there); trimap_iou has a
    # single definition, Auto Seg-Loss's, where ground-truth contours may run along the frame
    tp = np.pad(target, ((0, 0), (3, 3), (3, 3)), constant_values=255)
    pp = np.pad(pred, ((0, 0), (3, 3), (3, 3)))
    pp[tp == 255] = rng.integers(0, 5, (tp == 255).sum())
    framed = all_seg(pp, tp, 5, **kw)
    del framed["trimap_iou"]
    assert framed == {k: pytest.approx(v) for k, v in ref.items() if k != "trimap_iou"}
    # 2) the prediction under ignored target pixels is never read
    t3 = target.copy()
    t3[:, 10:14] = 255
    p3 = pred.copy()
    base = all_seg(p3, t3, 5, **kw)
    p3[t3 == 255] = rng.integers(0, 5, (t3 == 255).sum())
    assert all_seg(p3, t3, 5, **kw) == {k: pytest.approx(v) for k, v in base.items()}


def test_metrics_disagree_on_thin_rings():
    # 64×64 maps, ~85% background, 1–2 px rings of classes 1..3: the all-background prediction
    # scores well on the pixel-frequency metrics and badly on the class/boundary-balanced ones.
    yy, xx = np.mgrid[:64, :64]
    maps = []
    for i in range(4):
        m = np.zeros((64, 64), int)
        for j, (cy, cx, rad) in enumerate([(16, 16, 10), (44, 20, 12), (30, 46, 14),
                                           (50, 50, 7), (14, 44, 8)]):
            d = np.sqrt((yy - cy - i) ** 2 + (xx - cx + i) ** 2)
            m[(d >= rad - 1) & (d <= rad + (j % 2))] = 1 + (i + j) % 3
        maps.append(m)
    target = np.stack(maps)
    bg = np.mean(target == 0)
    assert 0.8 < bg < 0.9
    got = all_seg(np.zeros_like(target), target, 4)
    assert got["gacc"] == pytest.approx(bg) and got["gacc"] > 0.8
    assert got["fwiou"] == pytest.approx(bg * bg) and got["fwiou"] > 0.65  # bg IoU = bg share
    assert got["miou"] == pytest.approx(bg / 4) and got["miou"] < 0.25
    assert got["macc"] == pytest.approx(0.25)
    assert got["biou"] == 0.0 and got["bf1"] == 0.0


# ----------------------------------------------------------------------------- radius, speed
def test_default_radius_rule():
    assert [M.default_radius(s, s) for s in (16, 64, 128, 150, 256, 500, 512)] == \
        [1, 1, 1, 2, 3, 5, 5]
    assert M.default_radius(64, 500) == 1  # the shorter side decides
    pred, target = square_maps(2, size=64)
    assert M.bf1(pred, target) == M.bf1(pred, target, radius=1)


def test_meter_is_fast():
    # worst case for the boundary code: label noise (every pixel is on a contour)
    rng = np.random.default_rng(0)
    target = rng.integers(0, 7, (200, 64, 64))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 7, target.shape))
    start = time.perf_counter()
    meter = M.SegmentationMeter(7)
    meter.update(pred, target)
    out = meter.compute()
    elapsed = time.perf_counter() - start
    assert set(out) == set(SEG_KEYS) and all(isinstance(v, float) for v in out.values())
    assert elapsed < 1.0, f"SegmentationMeter took {elapsed:.2f} s for 200 images of 64×64"


# ----------------------------------------------------------------------------- bad input
def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 8, 8\).*\(2, 8, 9\)"):
        M.miou(np.zeros((2, 8, 8), int), np.zeros((2, 8, 9), int))
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        M.accuracy([0, 1, 1], [0, 1, 1, 0])
    meter = M.SegmentationMeter(3)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        meter.update(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="argmax"):  # logits instead of labels
        meter.update(np.zeros((2, 3, 4, 4), int), np.zeros((2, 3, 4, 4), int))


def test_labels_out_of_range():
    target = np.zeros((4, 4), int)
    target[0, 0] = 255  # the ignore label is fine
    ok = target.copy()
    ok[ok == 255] = 9  # anything under an ignored target is fine too
    M.SegmentationMeter(3).update(ok, target)
    target[1, 1] = 3
    with pytest.raises(ValueError, match="target holds label 3"):
        M.SegmentationMeter(3).update(np.zeros((4, 4), int), target)
    with pytest.raises(ValueError, match="pred holds label 5"):
        M.confusion_matrix(np.full((4, 4), 5), np.zeros((4, 4), int), 3)
    with pytest.raises(ValueError, match="pred holds label -1"):
        M.miou(np.full((4, 4), -1), np.zeros((4, 4), int), num_classes=3)
    with pytest.raises(ValueError, match="num_classes=2"):
        M.balanced_accuracy([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="num_classes=2"):
        M.f1([0, 1], [0, 2], num_classes=2)


def test_nothing_to_score():
    with pytest.raises(ValueError, match="no pixels"):
        M.SegmentationMeter(3).compute()
    with pytest.raises(ValueError, match="no pixels"):
        M.gacc(np.zeros((4, 4), int), np.full((4, 4), 255))
    with pytest.raises(ValueError, match="empty"):
        M.accuracy([], [])
    with pytest.raises(ValueError, match="radius"):
        M.SegmentationMeter(3, radius=0)


# ----------------------------------------------------------------------------- long-tail metrics
def test_macro_f1_hand_case():
    # target 0 0 1 1 2, pred 0 1 1 1 0: class 0 tp1 fp1 fn1 -> 0.5; class 1 tp2 fp1 fn0 -> 0.8;
    # class 2 tp0 fn1 -> 0
    assert M.macro_f1([0, 1, 1, 1, 0], [0, 0, 1, 1, 2]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # two classes: still the macro mean (f1's "auto" would score class 1 only)
    assert M.macro_f1([0, 1, 1], [0, 0, 1]) == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_group_accuracy_hand_case():
    target = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 0, 2, 2, 0, 0]
    # recalls: class 0 3/4, class 1 1/2, class 2 2/4
    assert M.group_accuracy(pred, target, classes=[0]) == pytest.approx(0.75)
    assert M.group_accuracy(pred, target, classes=[1, 2]) == pytest.approx((0.5 + 0.5) / 2)
    assert M.group_accuracy(pred, target, classes=(2, 7)) == pytest.approx(0.5)  # 7 is absent
    with pytest.raises(ValueError, match="none of the classes"):
        M.group_accuracy(pred, target, classes=[5])


def test_shot_groups_standard_and_scaled_thresholds():
    counts = [500, 101, 100, 20, 19, 5]
    assert M.shot_groups(counts) == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    assert M.shot_groups([106, 63, 38, 23, 14, 8, 5, 3, 2, 1], many_above=21.2,
                         few_below=4.24) == {"many": [0, 1, 2, 3], "medium": [4, 5, 6],
                                             "few": [7, 8, 9]}
    with pytest.raises(ValueError, match="few_below"):
        M.shot_groups(counts, many_above=10, few_below=20)
