"""The boundary metrics against their references (issue 15, item 8).

- ``biou`` follows the official Boundary IoU API (Cheng et al., CVPR 2021, ``mask_to_boundary``:
  the mask minus its erosion by ``d`` px, the image border counting as boundary,
  ``d = max(1, round(0.02 · diagonal))``), per class averaged over images;
- ``bf1`` follows Auto Seg-Loss's ``bfscore_val`` (ground-truth contours run along void);
- ``trimap_iou`` is Auto Seg-Loss's / AutoLoss-Zero's "BIoU" (``boundary_confusion_matrix``).

The references below are written here from those definitions with ``scipy.ndimage`` binary
morphology, one class and one image at a time, and never call lossforge's boundary code. The
reproducers of the issue are asserted with hand-worked values.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lossforge import metrics as M
from lossforge.tasks.builtin import ShapesSeg

VOID = 255
SQUARE3 = np.ones((3, 3), bool)


# ----------------------------------------------------------------------------- references
def ref_distance(h: int, w: int, ratio: float = 0.02) -> int:
    return max(1, int(round(ratio * np.sqrt(h ** 2 + w ** 2))))


def ref_mask_to_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """The official construction: pad one pixel of background, erode ``d`` times with a 3×3
    square (outside the padded image does not erode, as with OpenCV's default border), crop,
    subtract from the mask."""
    padded = np.pad(mask, 1, constant_values=False)
    eroded = ndimage.binary_erosion(padded, SQUARE3, iterations=d, border_value=1)[1:-1, 1:-1]
    return mask & ~eroded


def ref_boundary_iou(pred, target, c, d, background=0, aggregate="image"):
    """Per image and class: G = target == k (void is in no mask), P = pred == k over the whole
    prediction; boundaries by ``ref_mask_to_boundary``; intersection and union over non-void
    pixels. "image": per class the mean over images with a non-empty union; "dataset": pooled."""
    per_class = {k: [] for k in range(c)}
    inter_sum, union_sum = np.zeros(c), np.zeros(c)
    for p, t in zip(pred, target):
        valid = t != VOID
        for k in range(c):
            gb = ref_mask_to_boundary(t == k, d)
            pb = ref_mask_to_boundary(p == k, d)
            inter, union = np.sum(gb & pb & valid), np.sum((gb | pb) & valid)
            inter_sum[k] += inter
            union_sum[k] += union
            if union:
                per_class[k].append(inter / union)
    keep = [k for k in range(c) if k != background]
    if aggregate == "image":
        scores = [np.mean(per_class[k]) for k in keep if per_class[k]]
    else:
        scores = [inter_sum[k] / union_sum[k] for k in keep if union_sum[k]]
    return float(np.mean(scores))


def ref_edges(mask: np.ndarray) -> np.ndarray:
    """Auto Seg-Loss's ``compute_edge`` on one class: mask pixels with a non-mask pixel in their
    3×3 neighbourhood clipped to the image (outside counts as in the mask: no border edge)."""
    return mask & ~ndimage.binary_erosion(mask, SQUARE3, border_value=1)


def ref_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, np.ones((2 * r + 1, 2 * r + 1), bool))


def ref_bf1(pred, target, c, r, background=0, score_void_predictions=False):
    """Auto Seg-Loss's ``bfscore_val``, counts pooled over images per class. Our documented
    difference: predicted contour pixels on void are not scored (``score_void_predictions=True``
    scores them, as ASL does); they still match ground-truth contour pixels."""
    hit_p, n_p, hit_g, n_g = (np.zeros(c) for _ in range(4))
    for p, t in zip(pred, target):
        valid = t != VOID
        for k in range(c):
            ge, pe = ref_edges(t == k), ref_edges(p == k)
            scored = pe if score_void_predictions else pe & valid
            n_p[k] += scored.sum()
            hit_p[k] += (scored & ref_dilate(ge, r)).sum()
            n_g[k] += ge.sum()
            hit_g[k] += (ge & ref_dilate(pe, r)).sum()
    scores = []
    for k in range(c):
        if k == background or n_p[k] + n_g[k] == 0:
            continue
        prec = hit_p[k] / n_p[k] if n_p[k] else 0.0
        rec = hit_g[k] / n_g[k] if n_g[k] else 0.0
        scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return float(np.mean(scores))


def ref_trimap_iou(pred, target, c, r, background=0):
    """Auto Seg-Loss's ``boundary_confusion_matrix``: the valid pixels within ``r`` of a
    ground-truth contour (background contours excluded when a background is given), one
    confusion matrix over all images, per-class IoU, mean over the non-background classes."""
    cm = np.zeros((c, c))
    for p, t in zip(pred, target):
        edges = np.zeros(t.shape, bool)
        for k in range(c):
            if k != background:
                edges |= ref_edges(t == k)
        band = ref_dilate(edges, r) & (t != VOID)
        np.add.at(cm, (t[band], p[band]), 1)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean([tp[k] / union[k] for k in range(c) if k != background and union[k]]))


# ----------------------------------------------------------------------------- reproducers
def void_reproducer():
    """6×8: columns 0–3 class 1, column 4 void, columns 5–7 class 2; predicted 1,1,2,2,2,2,2,2."""
    target = np.zeros((6, 8), int)
    target[:, :4], target[:, 4], target[:, 5:] = 1, VOID, 2
    pred = np.tile([1, 1, 2, 2, 2, 2, 2, 2], (6, 1))
    return pred, target


def test_void_along_outlines_reproducer():
    pred, target = void_reproducer()
    # BF1, r = 3. Ground-truth contours run along the void: class 1 at column 3, class 2 at
    # column 5. Predicted contours: class 1 at column 1, class 2 at column 2 (none on void).
    # Column 1 vs 3 and column 2 vs 5 are within 3 px both ways: precision = recall = 1 per class.
    assert M.bf1(pred, target, radius=3) == 1.0
    assert ref_bf1(pred[None], target[None], 3, 3) == 1.0
    # Boundary IoU, d = 3: the image is 6 rows high, so every pixel is within 3 px of the top or
    # bottom border and each band is its whole mask. Over non-void pixels: class 1, G = columns
    # 0–3 (24 px), P = columns 0–1 (12 px) -> 12 / 24; class 2, G = columns 5–7 (18 px), P =
    # columns 2, 3, 5, 6, 7 (30 px) -> 18 / 30. Mean (0.5 + 0.6) / 2.
    assert M.biou(pred, target, radius=3) == pytest.approx(0.55)
    assert ref_boundary_iou(pred[None], target[None], 3, 3) == pytest.approx(0.55)
    # Trimap IoU, r = 3: contours at columns 3 and 5 dilated by 3 cover every column; on the
    # non-void pixels the IoUs are again 12 / 24 and 18 / 30 (Auto Seg-Loss's "BIoU": 0.55).
    assert M.trimap_iou(pred, target, radius=3) == pytest.approx(0.55)
    # lossforge-v1 drew no contour against void: both collapsed to 0 here
    assert M.bf1(pred, target, radius=3, definition="lossforge-v1") == 0.0
    assert M.biou(pred, target, radius=3, definition="lossforge-v1") == 0.0


def test_official_boundary_iou_reproducer():
    # 10×10, columns 0–4 class 1, 5–9 class 2; predicted shifted one pixel left; d = 1.
    target = np.repeat([[1] * 5 + [2] * 5], 10, axis=0)
    pred = np.repeat([[1] * 4 + [2] * 6], 10, axis=0)
    # Bands are one pixel deep and include the image border. Class 1: G = rows 0, 9 × columns
    # 0–4 and columns 0, 4 × rows 1–8 (26 px); P = rows 0, 9 × columns 0–3 and columns 0, 3 ×
    # rows 1–8 (24 px); shared: rows 0, 9 × columns 0–3 and column 0 × rows 1–8 (16 px) ->
    # 16 / 34. Class 2: G 26 px (columns 5, 9), P 28 px (columns 4, 9), shared rows 0, 9 ×
    # columns 5–9 and column 9 × rows 1–8 (18 px) -> 18 / 36.
    expected = (16 / 34 + 18 / 36) / 2
    assert expected == pytest.approx(0.485, abs=5e-4)
    assert M.biou(pred, target, radius=1) == pytest.approx(expected)
    assert ref_boundary_iou(pred[None], target[None], 3, 1) == pytest.approx(expected)
    # lossforge-v1 had no boundary at the border, so the two one-pixel bands never met
    assert M.biou(pred, target, radius=1, definition="lossforge-v1") == 0.0
    # trimap IoU, r = 1: contours at columns 4 and 5, band columns 3–6. Class 1: 10 right
    # (column 3) of 20 GT and 10 predicted -> 10 / 20; class 2: 20 of 20 GT, 30 predicted
    # (column 4 too) -> 20 / 30.
    assert M.trimap_iou(pred, target, radius=1) == pytest.approx((0.5 + 2 / 3) / 2)
    assert ref_trimap_iou(pred[None], target[None], 3, 1) == pytest.approx((0.5 + 2 / 3) / 2)


def test_default_distance_is_two_percent_of_the_diagonal():
    assert [M.boundary_iou_distance(s, s) for s in (8, 16, 64, 128, 256, 500, 512)] == \
        [1, 1, 2, 4, 7, 14, 14]
    assert M.boundary_iou_distance(64, 500) == ref_distance(64, 500) == 10
    assert M.boundary_iou_distance(100, 100, dilation_ratio=0.05) == 7
    with pytest.raises(ValueError, match="dilation_ratio"):
        M.boundary_iou_distance(64, 64, dilation_ratio=0)
    rng = np.random.default_rng(0)
    target = np.kron(rng.integers(0, 3, (2, 8, 8)), np.ones((1, 8, 8), int))  # 64×64
    pred = np.roll(target, 3, axis=2)
    assert M.biou(pred, target) == pytest.approx(M.biou(pred, target, radius=2))
    assert M.biou(pred, target) != pytest.approx(M.biou(pred, target, radius=1))
    meter = M.SegmentationMeter(3)
    assert meter.radii(64, 64) == {"biou": 2, "bf1": 1, "trimap_iou": 1}
    assert M.SegmentationMeter(3, radius=4).radii(64, 64) == dict.fromkeys(
        ("biou", "bf1", "trimap_iou"), 4)


def test_image_border_is_a_boundary():
    # one class filling the image: its band is the frame of width d; a perfect prediction scores
    # 1 (lossforge-v1: no boundary at all, undefined)
    target = np.ones((2, 9, 9), int)
    assert M.biou(target.copy(), target, radius=2) == 1.0
    assert np.isnan(M.biou(target.copy(), target, radius=2, definition="lossforge-v1"))
    # predicting class 2 on the 3×3 centre, d = 1. Class 1: G = the frame (81 − 49 = 32 px);
    # P = the frame and the ring around the hole (25 − 9 = 16 px); shared 32 -> 32 / 48 in each
    # image. Class 2: no G, P = the block's band (9 − 1 = 8 px) -> 0.
    pred = target.copy()
    pred[:, 3:6, 3:6] = 2
    assert M.biou(pred, target, radius=1) == pytest.approx((32 / 48 + 0) / 2)
    assert ref_boundary_iou(pred, target, 3, 1) == pytest.approx((32 / 48) / 2)


def test_per_image_and_pooled_aggregation():
    # image A: a 4×4 square of class 1, predicted exactly (IoU 1). Image B: a 10×10 square of
    # class 1 predicted one pixel wider. d = 1 on 16×16 images, squares away from the border.
    target = np.zeros((2, 16, 16), int)
    target[0, 2:6, 2:6] = 1
    target[1, 3:13, 3:13] = 1
    pred = target.copy()
    pred[1, 3:13, 13] = 1
    # A: both rings 16 − 4 = 12 px -> 1. B: G ring 100 − 64 = 36 px (rows 3, 12 × cols 3–12;
    # cols 3, 12 × rows 4–11); P ring 110 − 72 = 38 px (rows 3, 12 × cols 3–13; cols 3, 13 ×
    # rows 4–11); shared rows 3, 12 × cols 3–12 (20) and col 3 × rows 4–11 (8) -> 28 / 46.
    iou_b = 28 / 46
    assert M.biou(pred, target, radius=1) == pytest.approx((1 + iou_b) / 2)  # mean over images
    # pooled: (12 + 28) / (12 + 46), A's ring holding 12 px
    assert M.biou(pred, target, radius=1, aggregate="dataset") == pytest.approx(40 / 58)
    for aggregate in ("image", "dataset"):
        assert M.biou(pred, target, radius=1, aggregate=aggregate) == pytest.approx(
            ref_boundary_iou(pred, target, 2, 1, aggregate=aggregate))
    # a class in one image only counts in that image: an extra all-background image changes
    # nothing
    pred3, target3 = np.concatenate([pred, pred[:1] * 0]), np.concatenate([target, target[:1] * 0])
    assert M.biou(pred3, target3, radius=1) == pytest.approx((1 + iou_b) / 2)


def test_predicted_contours_on_void_are_not_scored():
    # 8×12: class 1 in columns 0–5, class 2 in 6–11, an unlabelled hole (void) at rows 2–5 ×
    # columns 1–2 inside class 1, where the prediction says class 2; elsewhere it is perfect.
    target = np.zeros((8, 12), int)
    target[:, :6], target[:, 6:] = 1, 2
    target[2:6, 1:3] = VOID
    pred = np.where(target == VOID, 2, target)
    # Ground-truth contours: class 1 along column 5 and around the hole (16 px); class 2 along
    # column 6. The prediction draws the same class-1 contours, and class-2 contours on the hole
    # (void: not scored) -> BF1 1 for both classes. Scoring them, as Auto Seg-Loss does, adds 8
    # unmatched class-2 contour pixels: precision 8 / 16, F1 2/3, mean 5/6.
    assert M.bf1(pred, target, radius=1) == 1.0
    assert ref_bf1(pred[None], target[None], 3, 1) == 1.0
    assert ref_bf1(pred[None], target[None], 3, 1, score_void_predictions=True) == \
        pytest.approx(5 / 6)
    # Boundary IoU: class 1's bands match around the hole and along the border and column 5;
    # class 2's predicted band on the hole is void, left out -> 1.
    assert M.biou(pred, target, radius=1) == 1.0
    assert M.trimap_iou(pred, target, radius=1) == 1.0


def test_prediction_far_inside_void_is_never_read():
    rng = np.random.default_rng(5)
    full = np.kron(rng.integers(0, 4, (3, 6, 6)), np.ones((1, 5, 5), int))  # 30×30
    target = full.copy()
    target[:, 5:25, 5:25] = VOID
    pred = np.roll(full, 1, axis=2)
    pred[target == VOID] = rng.integers(0, 4, (target == VOID).sum())
    d = 2  # d = r; pixels more than d + 1 inside the void cannot reach a scored pixel
    base = {k: f(pred, target, 4, radius=d) for k, f in
            (("biou", M.biou), ("bf1", M.bf1), ("trimap_iou", M.trimap_iou))}
    pred[:, 9:21, 9:21] = rng.integers(0, 300, (3, 12, 12))  # out-of-range labels: "no class"
    for key, f in (("biou", M.biou), ("bf1", M.bf1), ("trimap_iou", M.trimap_iou)):
        assert f(pred, target, 4, radius=d) == pytest.approx(base[key]), key
    # next to scored pixels the prediction under void places the predicted boundaries: one
    # background class over the whole void region moves them (the trimap reads no prediction
    # outside its scored pixels)
    pred[:, 5:25, 5:25] = 0
    assert M.biou(pred, target, 4, radius=d) != pytest.approx(base["biou"])
    assert M.bf1(pred, target, 4, radius=d) != pytest.approx(base["bf1"])
    assert M.trimap_iou(pred, target, 4, radius=d) == pytest.approx(base["trimap_iou"])


# ----------------------------------------------------------------------------- random maps
def random_maps(seed, n=3, cells=(6, 7), cell=3, c=4, p_void=0.1, void_lines=True):
    """Blocky label maps with VOC-style void: thin void lines along some block borders plus
    scattered void pixels; predictions with flipped pixels and a shifted copy."""
    rng = np.random.default_rng(seed)
    target = np.kron(rng.integers(0, c, (n, *cells)), np.ones((1, cell, cell), int))
    pred = target.copy()
    flip = rng.random(target.shape) < 0.12
    pred[flip] = rng.integers(0, c, flip.sum())
    pred[0] = np.roll(target[0], 1, axis=1)
    if void_lines:
        outline = np.zeros(target.shape, bool)
        outline[:, :, :-1] |= target[:, :, :-1] != target[:, :, 1:]
        target[outline & (rng.random(target.shape) < 0.7)] = VOID
    target[rng.random(target.shape) < p_void] = VOID
    return pred, target


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("d", [1, 2, 3])
def test_boundary_iou_matches_the_official_construction(seed, d):
    pred, target = random_maps(seed)
    for aggregate in ("image", "dataset"):
        for background in (0, None):
            expected = ref_boundary_iou(pred, target, 4, d, background, aggregate)
            got = M.biou(pred, target, 4, radius=d, background=background, aggregate=aggregate)
            assert got == pytest.approx(expected), (aggregate, background)


def test_boundary_iou_default_distance_matches_on_larger_maps():
    # 2 × 52×60 maps: d = round(0.02 · 79.4) = 2; 130×150: d = 4 (the doubling windows' path
    # is exercised by d = 6 on 210×230)
    for seed, cells, cell in ((0, (13, 15), 4), (1, (13, 15), 10), (2, (21, 23), 10)):
        pred, target = random_maps(seed, n=2, cells=cells, cell=cell)
        d = ref_distance(*target.shape[1:])
        assert M.biou(pred, target, 4) == pytest.approx(ref_boundary_iou(pred, target, 4, d))
        assert M.bf1(pred, target, 4, radius=d) == pytest.approx(ref_bf1(pred, target, 4, d))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("r", [1, 2, 5])
def test_bf1_and_trimap_match_auto_seg_loss(seed, r):
    pred, target = random_maps(seed)
    for background in (0, None):
        assert M.bf1(pred, target, 4, radius=r, background=background) == pytest.approx(
            ref_bf1(pred, target, 4, r, background))
        assert M.trimap_iou(pred, target, 4, radius=r, background=background) == \
            pytest.approx(ref_trimap_iou(pred, target, 4, r, background))


def test_bf1_definitions_agree_without_void():
    # results stored before issue 15 (shapes-seg has no void) keep their BF1
    for seed in range(3):
        pred, target = random_maps(seed, p_void=0.0, void_lines=False)
        for r in (1, 2):
            new = M.bf1(pred, target, 4, radius=r)
            assert new == M.bf1(pred, target, 4, radius=r, definition="lossforge-v1")
            assert new == pytest.approx(ref_bf1(pred, target, 4, r))


def test_many_classes_match_the_reference():
    # 70 classes: two 64-bit words in the contour matching
    rng = np.random.default_rng(2)
    target = np.kron(rng.integers(0, 70, (2, 8, 8)), np.ones((1, 3, 3), int))
    pred = np.where(rng.random(target.shape) < 0.85, target, rng.integers(0, 70, target.shape))
    target[rng.random(target.shape) < 0.05] = VOID
    assert M.bf1(pred, target, 70, radius=1) == pytest.approx(ref_bf1(pred, target, 70, 1))
    assert M.biou(pred, target, 70, radius=1) == pytest.approx(
        ref_boundary_iou(pred, target, 70, 1))


# ----------------------------------------------------------------------------- API
def test_trimap_iou_hand_case_with_background():
    # 12×12: class-1 5×5 square at rows 3–7, cols 3–7 on background, predicted one pixel right.
    target = np.zeros((12, 12), int)
    target[3:8, 3:8] = 1
    pred = np.zeros_like(target)
    pred[3:8, 4:9] = 1
    # background=0 (default): the band is the square's contour dilated by 1, rows/cols 2–8 less
    # the centre (5, 5) (48 px). Class 1 there: 24 GT, 24 predicted, 19 shared -> 19 / 29.
    assert M.trimap_iou(pred, target, radius=1) == pytest.approx(19 / 29)
    # background=None: background contours also form the band (rows/cols 1–9 less (5, 5)) and
    # the background is averaged too: 56 GT, 56 predicted, 51 shared -> 51 / 61.
    assert M.trimap_iou(pred, target, radius=1, background=None) == pytest.approx(
        (19 / 29 + 51 / 61) / 2)


def test_bad_definitions_name_the_choices():
    pred, target = void_reproducer()
    with pytest.raises(ValueError, match="'cheng2021', 'lossforge-v1'"):
        M.biou(pred, target, definition="official")
    with pytest.raises(ValueError, match="'image', 'dataset'"):
        M.biou(pred, target, aggregate="batch")
    with pytest.raises(ValueError, match="'asl', 'lossforge-v1'"):
        M.SegmentationMeter(3, bf1_definition="csurka")


def test_shapes_seg_registers_the_boundary_metrics():
    assert {"biou", "bf1", "trimap_iou", "miou"} <= set(ShapesSeg.metrics)
    pred, target = void_reproducer()
    pred, target = np.stack([pred] * 2), np.stack([target] * 2)
    got = ShapesSeg(seed=0).compute_metrics(pred, target)
    for key in ("biou", "bf1", "trimap_iou"):
        assert got[key] == pytest.approx(ShapesSeg.metrics[key].fn(pred, target)), key
