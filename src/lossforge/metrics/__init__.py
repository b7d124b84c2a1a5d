"""Evaluation metrics (not differentiable; NumPy, vectorised).

Every function takes the prediction first, then the target, as NumPy arrays or torch tensors on any
device (converted to NumPy ``int64`` for labels, ``float64`` for values) and returns a Python float.
Every name is importable from here (``lossforge.metrics.miou``); the modules hold one family each:

- :mod:`~lossforge.metrics.classification` — classification: :func:`accuracy`,
  :func:`balanced_accuracy`, :func:`f1`, :func:`macro_f1`, long-tail :func:`group_accuracy` and
  :func:`shot_groups`; regression: :func:`mae`, :func:`rmse` (non-finite values
  raise ``ValueError``);
- :mod:`~lossforge.metrics.segmentation` — on ``(N, H, W)`` or ``(H, W)`` label maps, counts
  accumulated over the whole evaluation set (see :class:`SegmentationMeter`): confusion-matrix
  metrics :func:`miou`, :func:`fwiou`, :func:`gacc`, :func:`macc` (as the Auto Seg-Loss /
  AutoLoss-Zero group computes them), and boundary metrics, each after a named reference:
  :func:`biou` (Boundary IoU as the official API of Cheng et al. 2021 computes it; the earlier
  lossforge variant as ``definition="lossforge-v1"``), :func:`bf1` (boundary F1, Csurka et al.
  2013, as Auto Seg-Loss computes it) and :func:`trimap_iou` (the IoU in a band around the
  ground-truth contours: what the Auto Seg-Loss and AutoLoss-Zero papers call "BIoU");
- :mod:`~lossforge.metrics.boundary` — the definitions and the bands and contour matching behind
  them (:func:`default_radius`: 1 % of the shorter image side; :func:`boundary_iou_distance`:
  2 % of the diagonal);
- :mod:`~lossforge.metrics.keypoints` — :func:`pck`, :func:`keypoint_error`, :func:`oks_ap` on
  keypoints or heatmaps.

Absent classes are left out of every mean, never counted as 0 or 1; target pixels equal to
``ignore_index`` (255 unless told) are removed from every count (details in each module).
"""
from __future__ import annotations

from lossforge.metrics.boundary import boundary_iou_distance, default_radius
from lossforge.metrics.classification import (accuracy, balanced_accuracy, f1, group_accuracy,
                                              macro_f1, mae, rmse, shot_groups)
from lossforge.metrics.keypoints import (HAS_PYCOCOTOOLS, decode_heatmaps, keypoint_error,
                                         keypoints_of, oks_ap, pck)
from lossforge.metrics.segmentation import (SegmentationMeter, bf1, biou, confusion_matrix, fwiou,
                                            gacc, macc, miou, trimap_iou)

__all__ = [
    "accuracy", "balanced_accuracy", "f1", "macro_f1", "group_accuracy", "shot_groups", "mae",
    "rmse",
    "confusion_matrix", "miou", "fwiou", "gacc", "macc", "biou", "bf1",
    "trimap_iou", "SegmentationMeter", "default_radius", "boundary_iou_distance",
    "pck", "keypoint_error", "oks_ap", "decode_heatmaps", "keypoints_of", "HAS_PYCOCOTOOLS",
]
