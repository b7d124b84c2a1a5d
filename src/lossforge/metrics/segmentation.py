"""Segmentation metrics on ``(N, H, W)`` or ``(H, W)`` label maps, as the Auto Seg-Loss /
AutoLoss-Zero group computes them: counts accumulated over the whole evaluation set
(:class:`SegmentationMeter`), then scored.

- confusion-matrix metrics: :func:`miou`, :func:`fwiou` (IoU weighted by ground-truth class
  frequency), :func:`gacc` (pixel accuracy), :func:`macc` (mean per-class recall);
- boundary metrics: :func:`biou` (Boundary IoU, Cheng et al. 2021) and :func:`bf1` (boundary F1
  with a distance tolerance, Csurka et al. 2013); their edges, bands and default radius are
  defined in :mod:`lossforge.metrics.boundary`.

Conventions:

- **Absent classes.** A class contributes to a mean only if it is defined: IoU and F1 need the class
  in the prediction or the ground truth (a class in only one of them scores 0 and counts); recall
  (``macc``) needs the class in the ground truth. Classes absent from both are left out, never
  counted as 0 or 1. "Present" is judged on the accumulated counts.
- **Ignore label.** Target pixels equal to ``ignore_index`` (255 unless told) are removed from every
  count, and the prediction at those pixels is never read.
- **Radius.** ``radius=None`` picks :func:`~lossforge.metrics.boundary.default_radius` per batch
  from that batch's image size.
- **Background.** Class 0 is dropped from the BIoU and BF1 means (``background=None`` keeps it).
"""
from __future__ import annotations

import numpy as np

from lossforge.metrics._common import as_labels, check_same_shape, confusion_counts
from lossforge.metrics.boundary import boundary_counts, default_radius

__all__ = ["confusion_matrix", "miou", "fwiou", "gacc", "macc", "biou", "bf1",
           "SegmentationMeter"]


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
    p, t = as_labels(pred, "pred"), as_labels(target, "target")
    check_same_shape(p, t)
    valid = _valid_mask(p, t, num_classes, ignore_index)
    return confusion_counts(t[valid], p[valid], num_classes)


def _as_maps(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_labels(pred, "pred"), as_labels(target, "target")
    check_same_shape(p, t)
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
        self.confusion += confusion_counts(t[valid], p[valid], self.num_classes)
        if self.boundary:
            r = self.radius or default_radius(*t.shape[1:])
            self.boundary_counts += boundary_counts(p, t, valid, self.num_classes, r)

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
    classes with a band in either map; see :mod:`lossforge.metrics.boundary`."""
    return _score("biou", pred, target, num_classes, ignore_index, radius, background)


def bf1(pred, target, num_classes=None, *, ignore_index=255, radius=None, background=0) -> float:
    """Boundary F1 with tolerance ``radius`` px: precision = share of predicted contour pixels
    within ``radius`` of a ground-truth contour pixel of the same class, recall symmetric; mean
    over non-background classes with a contour in either map."""
    return _score("bf1", pred, target, num_classes, ignore_index, radius, background)
