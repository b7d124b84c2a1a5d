"""Segmentation metrics on ``(N, H, W)`` or ``(H, W)`` label maps: counts accumulated over the
whole evaluation set (:class:`SegmentationMeter`), then scored.

- confusion-matrix metrics, as the Auto Seg-Loss / AutoLoss-Zero group computes them (checked
  against scikit-learn, torchmetrics and Auto Seg-Loss's evaluator): :func:`miou`, :func:`fwiou`
  (IoU weighted by ground-truth class frequency), :func:`gacc` (pixel accuracy), :func:`macc`
  (mean per-class recall);
- boundary metrics, each following a named reference (definitions in
  :mod:`lossforge.metrics.boundary`):

  - :func:`biou` — Boundary IoU (Cheng et al., CVPR 2021) as the official Boundary IoU API
    computes it: the image border counts as a boundary, ``d`` = 2 % of the image diagonal, per
    class the mean over images (``definition="lossforge-v1"``: lossforge's earlier variant);
  - :func:`bf1` — boundary F1 (Csurka et al. 2013) as Auto Seg-Loss computes it (ground-truth
    contours along void count), counts pooled over the data set;
  - :func:`trimap_iou` — the IoU inside a band around the ground-truth contours: what the Auto
    Seg-Loss and AutoLoss-Zero papers report as "BIoU" (not comparable with :func:`biou`).

Conventions:

- **Absent classes.** A class contributes to a mean only if it is defined: IoU and F1 need the class
  in the prediction or the ground truth (a class in only one of them scores 0 and counts); recall
  (``macc``) needs the class in the ground truth. Classes absent from both are left out, never
  counted as 0 or 1. "Present" is judged on the accumulated counts (for ``biou`` per image).
- **Ignore label.** Target pixels equal to ``ignore_index`` (255 unless told) are removed from every
  count. The confusion-matrix metrics never read the prediction there; the boundary metrics read
  it only to place the predicted boundaries (a predicted boundary runs where the prediction
  changes), and the ground truth's void makes boundaries against it (VOC draws void along object
  outlines), see :mod:`lossforge.metrics.boundary`. Where the target is void, the prediction may
  hold any integer (an out-of-range value there is "no class").
- **Radius.** ``radius=None`` picks a distance per batch from that batch's image size:
  :func:`~lossforge.metrics.boundary.boundary_iou_distance` (2 % of the diagonal) for ``biou``,
  :func:`~lossforge.metrics.boundary.default_radius` (1 % of the shorter side) for ``bf1``,
  ``trimap_iou`` and ``biou(definition="lossforge-v1")``. A given ``radius`` applies to all.
- **Background.** Class 0 is dropped from the ``biou``, ``bf1`` and ``trimap_iou`` means
  (``background=None`` keeps it; for ``trimap_iou`` its contours also stop forming the band).
"""
from __future__ import annotations

import numpy as np

from lossforge.metrics import boundary as B
from lossforge.metrics._common import as_labels, check_same_shape, confusion_counts

__all__ = ["confusion_matrix", "miou", "fwiou", "gacc", "macc", "biou", "bf1", "trimap_iou",
           "SegmentationMeter", "BIOU_DEFINITIONS", "BF1_DEFINITIONS", "AGGREGATES"]

#: ``biou(definition=...)``: the official Boundary IoU, lossforge's variant before issue 15.
BIOU_DEFINITIONS = ("cheng2021", "lossforge-v1")
#: ``bf1(definition=...)``: Auto Seg-Loss's conventions, lossforge's variant before issue 15.
BF1_DEFINITIONS = ("asl", "lossforge-v1")
#: ``biou(aggregate=...)``: per class, the mean of per-image scores / the pooled counts.
AGGREGATES = ("image", "dataset")


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


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


class SegmentationMeter:
    """Accumulates segmentation counts over an evaluation set; :meth:`compute` scores the set.

    Counts kept: the confusion matrix; per class the boundary-band intersection and union (summed,
    and as a sum of per-image IoUs with the number of images that define it); the boundary-F1
    match counts; the confusion matrix inside the trimap. Scores come from the accumulated counts
    (not from per-batch scores), so splitting the set into batches never changes them.

    Args:
        num_classes: labels are ``0 .. num_classes - 1``.
        ignore_index: the void label of the target (``None``: no void).
        radius: boundary distance in pixels for ``biou``, ``bf1`` and ``trimap_iou``; ``None``
            picks each metric's default per batch from the image size (:meth:`radii`).
        background: class dropped from the boundary means (``None``: none).
        boundary: ``False`` skips the boundary counts (cheaper); :meth:`compute` then returns
            the confusion-matrix metrics only.
        biou_definition: ``"cheng2021"`` (official Boundary IoU) or ``"lossforge-v1"``.
        biou_aggregate: ``"image"`` (per class, the mean over the images where the class is in
            the ground truth or the prediction, as the official API averages per category over
            images) or ``"dataset"`` (intersections and unions pooled over the set); ``None``:
            ``"image"`` for ``cheng2021``, ``"dataset"`` for ``lossforge-v1`` (its old behaviour).
        bf1_definition: ``"asl"`` or ``"lossforge-v1"``.
    """

    KEYS = ("miou", "fwiou", "gacc", "macc", "biou", "bf1", "trimap_iou")

    def __init__(self, num_classes: int, ignore_index: int | None = 255, radius: int | None = None,
                 background: int | None = 0, boundary: bool = True, *,
                 biou_definition: str = "cheng2021", biou_aggregate: str | None = None,
                 bf1_definition: str = "asl"):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if radius is not None and int(radius) < 1:
            raise ValueError(f"radius must be >= 1 pixel (or None for the default), got {radius}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.radius = None if radius is None else int(radius)
        self.background = background
        self.boundary = boundary
        self.biou_definition = _choice("biou_definition", biou_definition, BIOU_DEFINITIONS)
        if biou_aggregate is None:
            biou_aggregate = "image" if biou_definition == "cheng2021" else "dataset"
        self.biou_aggregate = _choice("biou_aggregate", biou_aggregate, AGGREGATES)
        self.bf1_definition = _choice("bf1_definition", bf1_definition, BF1_DEFINITIONS)
        self.reset()

    def reset(self) -> None:
        """Forget every count."""
        c = self.num_classes
        self.confusion = np.zeros((c, c), np.int64)
        self.band_counts = np.zeros((2, c), np.int64)  # biou intersection, union (pooled)
        self.image_iou_sum = np.zeros(c)  # sum over images of the per-image band IoU
        self.image_count = np.zeros(c, np.int64)  # images where the class has a band
        self.contour_counts = np.zeros((4, c), np.int64)  # bf1: hit/n predicted, hit/n GT
        self.trimap_confusion = np.zeros((c, c), np.int64)

    def radii(self, height: int, width: int) -> dict[str, int]:
        """The distance in pixels each boundary metric uses on ``height × width`` images."""
        if self.radius is not None:
            return dict.fromkeys(("biou", "bf1", "trimap_iou"), self.radius)
        r = B.default_radius(height, width)
        d = (B.boundary_iou_distance(height, width) if self.biou_definition == "cheng2021"
             else r)
        return {"biou": d, "bf1": r, "trimap_iou": r}

    def update(self, pred, target) -> None:
        """Add a batch of ``(N, H, W)`` (or one ``(H, W)``) predicted and target label maps."""
        p, t = _as_maps(pred, target)
        if t.size == 0:
            return
        c = self.num_classes
        valid = _valid_mask(p, t, c, self.ignore_index)
        self.confusion += confusion_counts(t[valid], p[valid], c)
        if not self.boundary:
            return
        radii = self.radii(*t.shape[1:])
        maps = B.LabelMaps(p, t, valid, c)
        if self.biou_definition == "cheng2021":
            counts = B.iou_counts_per_image(maps.t, maps.p, *B.cheng_bands(maps, radii["biou"]),
                                            valid, c)
        else:
            counts = B.iou_counts_per_image(*B.legacy_bands(p, t, valid, c, radii["biou"]),
                                            valid, c)
        inter, union = counts
        self.band_counts += counts.sum(1)
        defined = union > 0
        self.image_iou_sum += np.where(defined, inter / np.maximum(union, 1), 0.0).sum(0)
        self.image_count += defined.sum(0)
        if self.bf1_definition == "asl":
            self.contour_counts += B.contour_counts(maps, radii["bf1"])
        else:
            self.contour_counts += B.legacy_contour_counts(p, t, valid, c, radii["bf1"])
        self.trimap_confusion += B.trimap_confusion(maps, radii["trimap_iou"], self.background)

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class ``iou``, ``recall``, ``biou``, ``bf1``, ``trimap_iou``; NaN where a class is
        undefined (absent from both maps, or from the boundaries, the contours, the trimap)."""
        cm = self.confusion
        hit_p, n_p, hit_g, n_g = self.contour_counts
        inter, union = self.band_counts
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(n_p > 0, hit_p / np.maximum(n_p, 1), 0.0)
            rec = np.where(n_g > 0, hit_g / np.maximum(n_g, 1), 0.0)
            s = prec + rec
            bf = np.where(s > 0, 2 * prec * rec / np.where(s > 0, s, 1), 0.0)
            if self.biou_aggregate == "image":
                bi = np.where(self.image_count > 0,
                              self.image_iou_sum / np.maximum(self.image_count, 1), np.nan)
            else:
                bi = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
            recall = np.where(cm.sum(1) > 0, np.diag(cm) / np.maximum(cm.sum(1), 1), np.nan)
        return {
            "iou": _class_iou(cm),
            "recall": recall,
            "biou": bi,
            "bf1": np.where(n_p + n_g > 0, bf, np.nan),
            "trimap_iou": _class_iou(self.trimap_confusion),
        }

    def compute(self) -> dict[str, float]:
        """``miou, fwiou, gacc, macc`` (and ``biou, bf1, trimap_iou`` unless ``boundary=False``)
        as floats. A boundary score is NaN when no non-background class defines it."""
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
            for key in ("biou", "bf1", "trimap_iou"):
                out[key] = _nanmean(pc[key][keep])
        return out


def _class_iou(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU of a confusion matrix; NaN for a class in neither rows nor columns."""
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def _score(key: str, pred, target, num_classes, ignore_index, radius=None, background=0,
           **options) -> float:
    p, t = _as_maps(pred, target)
    if num_classes is None:
        v = t != ignore_index if ignore_index is not None else np.ones(t.shape, bool)
        if not v.any():
            raise ValueError("no pixels to score: every target pixel is "
                             f"ignore_index={ignore_index}")
        num_classes = int(max(t[v].max(), p[v].max())) + 1
    meter = SegmentationMeter(num_classes, ignore_index=ignore_index, radius=radius,
                              background=background,
                              boundary=key in ("biou", "bf1", "trimap_iou"), **options)
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


def biou(pred, target, num_classes=None, *, ignore_index=255, radius=None, background=0,
         definition="cheng2021", aggregate=None) -> float:
    """Boundary IoU, the mean over non-background classes.

    ``definition="cheng2021"`` (default) follows the official Boundary IoU API (Cheng et al.,
    CVPR 2021, ``mask_to_boundary``): per class, the band is the mask minus its erosion by
    ``radius`` px, the image border counting as boundary; ``radius=None`` is 2 % of the image
    diagonal. Void as in the API's panoptic evaluation: an object's ground-truth boundary runs
    along void; void pixels are left out of intersection and union. ``aggregate="image"``
    (default): per class, the mean of per-image IoUs over the images whose ground truth or
    prediction holds the class (the API averages per category over images); ``"dataset"``:
    per class, pooled intersection / pooled union.

    ``definition="lossforge-v1"``: lossforge's earlier variant (no boundary at the image border
    or along void, ``radius=None`` = 1 % of the shorter side, pooled over the data set unless
    ``aggregate`` says otherwise); it reproduces results computed before issue 15.
    Details: :mod:`lossforge.metrics.boundary`.
    """
    return _score("biou", pred, target, num_classes, ignore_index, radius, background,
                  biou_definition=definition, biou_aggregate=aggregate)


def bf1(pred, target, num_classes=None, *, ignore_index=255, radius=None, background=0,
        definition="asl") -> float:
    """Boundary F1 with tolerance ``radius`` px (default 1 % of the shorter side), the mean over
    non-background classes with a contour in either map.

    Per class, counts pooled over the data set: precision = share of predicted contour pixels
    within ``radius`` of a ground-truth contour pixel of the class, recall symmetric.
    ``definition="asl"`` (default) follows Auto Seg-Loss's ``bfscore_val`` (Csurka et al. 2013's
    BF score): contours are class pixels with another label in their 3×3 neighbourhood, the
    image border making none; ground-truth contours along void count. Two deliberate
    differences: predicted contour pixels on void are not scored (they still match ground-truth
    ones), and a class with predicted contours but no ground-truth contour scores 0 (ASL drops
    it). ``definition="lossforge-v1"``: void makes no contour in either map (earlier results).
    Without void the two definitions agree exactly.
    """
    return _score("bf1", pred, target, num_classes, ignore_index, radius, background,
                  bf1_definition=definition)


def trimap_iou(pred, target, num_classes=None, *, ignore_index=255, radius=None,
               background=0) -> float:
    """Trimap IoU: the mean IoU over the pixels within ``radius`` px (Chebyshev) of a
    ground-truth contour pixel, a band about ``2 · radius + 1`` px wide along each ground-truth
    boundary; ``radius=None`` is 1 % of the shorter side (5 on VOC's ~500 px images, the value
    Auto Seg-Loss uses).

    This is what Auto Seg-Loss (Li et al., ICLR 2021) and AutoLoss-Zero (Li et al., 2022) report
    as "BIoU" (Auto Seg-Loss's ``boundary_confusion_matrix``): compare with their tables through
    this metric, not :func:`biou`. Contours as in :func:`bf1` (ground-truth contours along void
    count); void pixels left out; one confusion matrix pooled over the data set. With a
    ``background`` class (default 0), its contours do not form the band (ASL's ``drop_bg``) and
    it is left out of the mean; every other class is averaged where it is in the band's ground
    truth or prediction.
    """
    return _score("trimap_iou", pred, target, num_classes, ignore_index, radius, background)
