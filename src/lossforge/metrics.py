"""Evaluation metrics (not differentiable; NumPy, vectorised).

Every function takes the prediction first, then the target, as NumPy arrays or torch tensors on any
device (converted to NumPy ``int64`` for labels, ``float64`` for values) and returns a Python float.

Classification: :func:`accuracy`, :func:`balanced_accuracy`, :func:`f1`.
Regression: :func:`mae`, :func:`rmse` (non-finite values raise ``ValueError``).
Segmentation, on ``(N, H, W)`` or ``(H, W)`` label maps, as the Auto Seg-Loss / AutoLoss-Zero group
computes them (counts accumulated over the whole evaluation set, see :class:`SegmentationMeter`):

- confusion-matrix metrics: :func:`miou`, :func:`fwiou` (IoU weighted by ground-truth class
  frequency), :func:`gacc` (pixel accuracy), :func:`macc` (mean per-class recall);
- boundary metrics: :func:`biou` (Boundary IoU, Cheng et al. 2021) and :func:`bf1` (boundary F1
  with a distance tolerance, Csurka et al. 2013).

Conventions (the same everywhere in this module):

- **Absent classes.** A class contributes to a mean only if it is defined: IoU and F1 need the class
  in the prediction or the ground truth (a class in only one of them scores 0 and counts); recall
  (``macc``, ``balanced_accuracy``) needs the class in the ground truth. Classes absent from both
  are left out, never counted as 0 or 1. "Present" is judged on the accumulated counts.
- **Ignore label.** Target pixels equal to ``ignore_index`` (255 unless told) are removed from every
  count, and the prediction at those pixels is never read. For the boundary metrics an ignored pixel
  behaves like a pixel outside the image: it makes no edge, so ignoring a pixel never changes a
  score beyond removing that pixel. (Caveat: PASCAL VOC draws its void label as a band along object
  outlines; there, edges between an object and void are not scored.)
- **Edges.** For the mask of class ``c`` (in the target, or in the prediction restricted to
  non-ignored pixels), the contour is the set of mask pixels whose 3×3 neighbourhood holds a pixel
  of another class; the image border (and the ignore label) makes no edge. Distances are
  Chebyshev (square windows), the metric the 3×3 neighbourhood implies.
- **Boundary band of radius r.** ``band_r(mask)`` = mask pixels within Chebyshev distance ``r`` of a
  pixel of another class, i.e. ``mask − erosion(mask, (2r+1)×(2r+1) square)``; ``r = 1`` is the
  contour itself. This is Cheng et al.'s Boundary IoU construction.
- **Default radius** (``radius=None``): ``r = max(1, floor(min(H, W) / 100 + 0.5))`` — 1 % of the
  shorter side, rounded: 1 at 64×64 and 128×128, 3 at 256, 5 at 500 (VOC's r = 5 on ~500 px).
  It is chosen per batch from that batch's image size.
- **Background.** Class 0 is dropped from the BIoU and BF1 means (``background=None`` keeps it).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "accuracy", "balanced_accuracy", "f1", "mae", "rmse",
    "confusion_matrix", "miou", "fwiou", "gacc", "macc", "biou", "bf1",
    "SegmentationMeter", "default_radius",
]

_F1_AVERAGES = ("auto", "binary", "macro", "micro", "weighted")


# ----------------------------------------------------------------------------- input handling
def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, on any device
        x = x.detach()
        if x.is_floating_point():
            x = x.double()  # bfloat16/half have no NumPy equivalent
        x = x.cpu().numpy()
    return np.asarray(x)


def _labels(x, name: str) -> np.ndarray:
    a = _to_numpy(x)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{name} must hold integer class labels, got non-integer floats "
                             f"(shape {a.shape}); pass class indices, e.g. logits.argmax(1)")
        return a.astype(np.int64)
    raise ValueError(f"{name} must hold integer class labels, got dtype {a.dtype}")


def _same_shape(p: np.ndarray, t: np.ndarray) -> None:
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: pred {tuple(p.shape)} vs target "
                         f"{tuple(t.shape)}")


def _label_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _labels(pred, "pred"), _labels(target, "target")
    _same_shape(p, t)
    if p.size == 0:
        raise ValueError("pred and target are empty: nothing to score")
    return p.ravel(), t.ravel()


def _num_classes(p: np.ndarray, t: np.ndarray, num_classes: int | None) -> int:
    lo, hi = int(min(p.min(), t.min())), int(max(p.max(), t.max()))
    if lo < 0:
        raise ValueError(f"class labels must be >= 0, got {lo}")
    if num_classes is None:
        return hi + 1
    if hi >= num_classes:
        raise ValueError(f"label {hi} is out of range for num_classes={num_classes}")
    return int(num_classes)


def _bincount_cm(t: np.ndarray, p: np.ndarray, c: int) -> np.ndarray:
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c)


# ----------------------------------------------------------------------------- classification
def accuracy(pred, target) -> float:
    """Fraction of positions where ``pred == target``."""
    p, t = _label_pair(pred, target)
    return float(np.mean(p == t))


def balanced_accuracy(pred, target, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``target`` (as scikit-learn's
    ``balanced_accuracy_score``). ``num_classes`` only validates the labels."""
    p, t = _label_pair(pred, target)
    cm = _bincount_cm(t, p, _num_classes(p, t, num_classes))
    support = cm.sum(1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def f1(pred, target, num_classes: int | None = None, average: str = "auto",
       pos_label: int = 1) -> float:
    """F1 score.

    ``average``: ``"binary"`` (F1 of class ``pos_label``; 0.0 when that class is in neither array,
    as scikit-learn), ``"macro"`` (unweighted mean over classes present in ``pred`` or ``target``),
    ``"weighted"`` (the same, weighted by ground-truth support), ``"micro"`` (pooled counts; equals
    accuracy for single-label data), or ``"auto"`` (default): ``"binary"`` when there are at most
    two classes (``num_classes``, or the largest label + 1 when not given), else ``"macro"``.
    Binary tasks should encode the class of interest (e.g. malignant) as ``pos_label``.
    """
    if average not in _F1_AVERAGES:
        raise ValueError(f"average must be one of {_F1_AVERAGES}, got {average!r}")
    p, t = _label_pair(pred, target)
    c = _num_classes(p, t, num_classes)
    if average == "auto":
        average = "binary" if c <= 2 else "macro"
    if average == "binary":
        if c > 2:
            raise ValueError(f"average='binary' needs at most 2 classes, got {c}; "
                             "use average='macro', 'weighted' or 'micro'")
        tp = np.count_nonzero((p == pos_label) & (t == pos_label))
        denom = np.count_nonzero(p == pos_label) + np.count_nonzero(t == pos_label)
        return float(2 * tp / denom) if denom else 0.0
    cm = _bincount_cm(t, p, c)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # = 2tp + fp + fn
    if average == "micro":
        return float(2 * tp.sum() / denom.sum())
    present = denom > 0
    scores = 2 * tp[present] / denom[present]
    if average == "macro":
        return float(scores.mean())
    support = cm.sum(1)[present]
    return float((scores * support).sum() / support.sum())


# ----------------------------------------------------------------------------- regression
def _value_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = _to_numpy(pred).astype(np.float64)
    t = _to_numpy(target).astype(np.float64)
    _same_shape(p, t)
    if p.size == 0:
        raise ValueError("pred and target are empty: nothing to score")
    for name, a in (("pred", p), ("target", t)):
        bad = np.count_nonzero(~np.isfinite(a))
        if bad:
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf)")
    return p, t


def mae(pred, target) -> float:
    """Mean absolute error (lower is better)."""
    p, t = _value_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def rmse(pred, target) -> float:
    """Root mean squared error (lower is better)."""
    p, t = _value_pair(pred, target)
    return float(np.sqrt(np.mean(np.square(p - t))))


# ----------------------------------------------------------------------------- segmentation
def default_radius(height: int, width: int) -> int:
    """Boundary tolerance in pixels: 1 % of the shorter side, rounded half up, at least 1."""
    return max(1, int(math.floor(min(height, width) / 100 + 0.5)))


def _valid_mask(p: np.ndarray, t: np.ndarray, num_classes: int,
                ignore_index: int | None) -> np.ndarray:
    """Pixels scored (target not ignored); checks the labels there lie in [0, num_classes)."""
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    for name, a in (("target", t), ("pred", p)):
        v = a[valid]
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            bad = int(v.max()) if v.max() >= num_classes else int(v.min())
            raise ValueError(f"{name} holds label {bad}, outside [0, {num_classes}) and not "
                             f"ignore_index={ignore_index} (where the target is ignored, pred may "
                             "hold anything)")
    return valid


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts; rows = ground truth, columns = prediction (the
    scikit-learn convention). Pixels whose target is ``ignore_index`` are skipped."""
    p, t = _labels(pred, "pred"), _labels(target, "target")
    _same_shape(p, t)
    valid = _valid_mask(p, t, num_classes, ignore_index)
    return _bincount_cm(t[valid], p[valid], num_classes)


def _window(a: np.ndarray, r: int, op) -> np.ndarray:
    """``op``-reduce each pixel's (2r+1)×(2r+1) window over axes 1, 2 of ``(N, H, W)``, the window
    clipped to the image (the border adds nothing). Separable shifts of whole arrays: no Python
    loop over pixels, and several times faster than ``scipy.ndimage`` rank filters here."""
    for axis in (1, 2):
        src, a = a, a.copy()
        for s in range(1, min(r, src.shape[axis] - 1) + 1):
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[axis], tail[axis] = slice(None, -s), slice(s, None)
            head, tail = tuple(head), tuple(tail)
            op(a[tail], src[head], out=a[tail])
            op(a[head], src[tail], out=a[head])
    return a


def _bands(lab: np.ndarray, valid: np.ndarray, r: int, fill: int) -> np.ndarray:
    """Per-pixel: valid and a valid pixel of another class lies within Chebyshev distance r.

    With invalid pixels set to -1 for the max and to ``fill`` (> every label) for the min, the
    window's max and min differ exactly when the window holds two different valid labels."""
    hi = _window(np.where(valid, lab, -1), r, np.maximum)
    lo = _window(np.where(valid, lab, fill), r, np.minimum)
    return valid & (hi != lo)


def _edge_hits(lab_a: np.ndarray, edge_a: np.ndarray, lab_b: np.ndarray, edge_b: np.ndarray,
               c: int, r: int) -> np.ndarray:
    """Per class k: contour pixels of class k in map a within distance r of a class-k contour pixel
    of map b. Classes go 64 at a time as bits of a uint64, OR-dilated in one pass."""
    hits = np.zeros(c, np.int64)
    one = np.uint64(1)
    for base in range(0, c, 64):
        sel_a, sel_b = edge_a, edge_b
        if c > 64:
            sel_a = sel_a & (lab_a >= base) & (lab_a < base + 64)
            sel_b = sel_b & (lab_b >= base) & (lab_b < base + 64)
        if not (sel_a.any() and sel_b.any()):
            continue
        bits = np.where(sel_b, one << np.clip(lab_b - base, 0, 63).astype(np.uint64), np.uint64(0))
        near = _window(bits, r, np.bitwise_or)
        hit = (near >> np.clip(lab_a - base, 0, 63).astype(np.uint64)) & one
        hits += np.bincount(lab_a[sel_a & hit.astype(bool)], minlength=c)
    return hits


def _boundary_counts(p: np.ndarray, t: np.ndarray, valid: np.ndarray, c: int,
                     r: int) -> np.ndarray:
    """Per-class counts (columns), rows: BIoU intersection, BIoU union, matched / all predicted
    contour pixels, matched / all ground-truth contour pixels."""
    dtype = np.int16 if c < 2 ** 15 - 1 else np.int64
    # Labels at ignored pixels are never read below (every mask is inside ``valid``).
    p, t = np.where(valid, p, 0).astype(dtype), np.where(valid, t, 0).astype(dtype)
    band_t, band_p = _bands(t, valid, r, c), _bands(p, valid, r, c)
    edge_t, edge_p = ((band_t, band_p) if r == 1
                      else (_bands(t, valid, 1, c), _bands(p, valid, 1, c)))
    both = band_t & band_p & (t == p)
    inter = np.bincount(t[both], minlength=c)
    union = np.bincount(t[band_t], minlength=c) + np.bincount(p[band_p], minlength=c) - inter
    hit_pred = _edge_hits(p, edge_p, t, edge_t, c, r)
    hit_gt = _edge_hits(t, edge_t, p, edge_p, c, r)
    n_pred = np.bincount(p[edge_p], minlength=c)
    n_gt = np.bincount(t[edge_t], minlength=c)
    return np.stack([inter, union, hit_pred, n_pred, hit_gt, n_gt]).astype(np.int64)


def _as_maps(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _labels(pred, "pred"), _labels(target, "target")
    _same_shape(p, t)
    if t.ndim == 2:
        p, t = p[None], t[None]
    if t.ndim != 3:
        raise ValueError(f"expected (N, H, W) or (H, W) label maps, got shape {tuple(t.shape)}; "
                         "pass class indices, e.g. logits.argmax(1)")
    return p, t


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


class SegmentationMeter:
    """Accumulates segmentation counts over an evaluation set; :meth:`compute` scores the set.

    Counts kept: the confusion matrix, and per class the Boundary IoU intersection and union and
    the boundary precision / recall match counts. Scores are computed from the accumulated counts
    (not averaged over batches), so splitting the set into batches never changes them.
    ``radius=None`` picks :func:`default_radius` per batch. ``boundary=False`` skips the boundary
    counts (cheaper); :meth:`compute` then omits ``biou`` and ``bf1``.
    """

    KEYS = ("miou", "fwiou", "gacc", "macc", "biou", "bf1")

    def __init__(self, num_classes: int, ignore_index: int | None = 255, radius: int | None = None,
                 background: int | None = 0, boundary: bool = True):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if radius is not None and int(radius) < 1:
            raise ValueError(f"radius must be >= 1 pixel (or None for the default), got {radius}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.radius = None if radius is None else int(radius)
        self.background = background
        self.boundary = boundary
        self.reset()

    def reset(self) -> None:
        c = self.num_classes
        self.confusion = np.zeros((c, c), np.int64)
        self.boundary_counts = np.zeros((6, c), np.int64)

    def update(self, pred, target) -> None:
        """Add a batch of ``(N, H, W)`` (or one ``(H, W)``) predicted and target label maps."""
        p, t = _as_maps(pred, target)
        if t.size == 0:
            return
        valid = _valid_mask(p, t, self.num_classes, self.ignore_index)
        self.confusion += _bincount_cm(t[valid], p[valid], self.num_classes)
        if self.boundary:
            r = self.radius or default_radius(*t.shape[1:])
            self.boundary_counts += _boundary_counts(p, t, valid, self.num_classes, r)

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class ``iou``, ``recall``, ``biou``, ``bf1``; NaN where a class is undefined."""
        cm = self.confusion
        tp, gt, pr = np.diag(cm), cm.sum(1), cm.sum(0)
        inter, union, hit_p, n_p, hit_g, n_g = self.boundary_counts
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(n_p > 0, hit_p / np.maximum(n_p, 1), 0.0)
            rec = np.where(n_g > 0, hit_g / np.maximum(n_g, 1), 0.0)
            s = prec + rec
            bf = np.where(s > 0, 2 * prec * rec / np.where(s > 0, s, 1), 0.0)
            return {
                "iou": np.where(gt + pr - tp > 0, tp / (gt + pr - tp), np.nan),
                "recall": np.where(gt > 0, tp / gt, np.nan),
                "biou": np.where(union > 0, inter / union, np.nan),
                "bf1": np.where(n_p + n_g > 0, bf, np.nan),
            }

    def compute(self) -> dict[str, float]:
        """``miou, fwiou, gacc, macc`` (and ``biou, bf1`` unless ``boundary=False``) as floats.

        BIoU / BF1 are NaN when no non-background class has a boundary in either map."""
        total = int(self.confusion.sum())
        if total == 0:
            raise ValueError("no pixels to score: nothing was added, or every target pixel is "
                             f"ignore_index={self.ignore_index}")
        pc = self.per_class()
        freq = self.confusion.sum(1) / total
        out = {
            "miou": _nanmean(pc["iou"]),
            "fwiou": float(np.sum(freq * np.nan_to_num(pc["iou"]))),
            "gacc": float(np.trace(self.confusion) / total),
            "macc": _nanmean(pc["recall"]),
        }
        if self.boundary:
            keep = np.ones(self.num_classes, bool)
            if self.background is not None and 0 <= self.background < self.num_classes:
                keep[self.background] = False
            out["biou"] = _nanmean(pc["biou"][keep])
            out["bf1"] = _nanmean(pc["bf1"][keep])
        return out


def _score(key: str, pred, target, num_classes, ignore_index, radius=None, background=0) -> float:
    p, t = _as_maps(pred, target)
    if num_classes is None:
        v = t != ignore_index if ignore_index is not None else np.ones(t.shape, bool)
        if not v.any():
            raise ValueError("no pixels to score: every target pixel is "
                             f"ignore_index={ignore_index}")
        num_classes = int(max(t[v].max(), p[v].max())) + 1
    meter = SegmentationMeter(num_classes, ignore_index=ignore_index, radius=radius,
                              background=background, boundary=key in ("biou", "bf1"))
    meter.update(p, t)
    return meter.compute()[key]


def miou(pred, target, num_classes=None, *, ignore_index=255) -> float:
    """Mean IoU over classes present in the prediction or the ground truth."""
    return _score("miou", pred, target, num_classes, ignore_index)


def fwiou(pred, target, num_classes=None, *, ignore_index=255) -> float:
    """Frequency-weighted IoU: sum over classes of (ground-truth pixel share) × IoU."""
    return _score("fwiou", pred, target, num_classes, ignore_index)


def gacc(pred, target, num_classes=None, *, ignore_index=255) -> float:
    """Global pixel accuracy over non-ignored pixels."""
    return _score("gacc", pred, target, num_classes, ignore_index)


def macc(pred, target, num_classes=None, *, ignore_index=255) -> float:
    """Mean per-class pixel recall over classes present in the ground truth."""
    return _score("macc", pred, target, num_classes, ignore_index)


def biou(pred, target, num_classes=None, *, ignore_index=255, radius=None, background=0) -> float:
    """Boundary IoU (band of ``radius`` px inside each mask's contour), mean over non-background
    classes with a band in either map; see the module docstring."""
    return _score("biou", pred, target, num_classes, ignore_index, radius, background)


def bf1(pred, target, num_classes=None, *, ignore_index=255, radius=None, background=0) -> float:
    """Boundary F1 with tolerance ``radius`` px: precision = share of predicted contour pixels
    within ``radius`` of a ground-truth contour pixel of the same class, recall symmetric; mean
    over non-background classes with a contour in either map."""
    return _score("bf1", pred, target, num_classes, ignore_index, radius, background)


# Keypoint metrics live in their own module (this one is past the size guideline); re-exported here.
from lossforge.metrics_keypoints import (  # noqa: E402
    HAS_PYCOCOTOOLS, decode_heatmaps, keypoint_error, keypoints_of, oks_ap, pck)

__all__ += ["pck", "keypoint_error", "oks_ap", "decode_heatmaps", "keypoints_of",
            "HAS_PYCOCOTOOLS"]
