"""Keypoint metrics: PCK, mean keypoint error and OKS-AP (re-exported by :mod:`lossforge.metrics`).

Used by the ``shapes-pose`` task (:mod:`lossforge.tasks.pose`).

Inputs. Every metric takes ``(pred, target)`` (NumPy arrays or torch tensors), each either

- keypoint coordinates ``(N, K, 2)`` as ``(y, x)`` in pixels, or ``(N, K, 3)`` with a confidence
  in the last column (what :meth:`lossforge.tasks.pose.ShapesPose.predict` returns), or
- heatmaps ``(N, K, H, W)``, decoded by a per-channel argmax (:func:`decode_heatmaps`; the
  confidence is the peak value).

so the same function scores a task's predictions in training and raw heatmaps in the
loss-rejection protocol, where the targets are always heatmaps. Heatmap coordinates are in heatmap
pixels; PCK is scale-free, so a subsampled probe gives the same kind of score.

Definitions (one object per image, every keypoint visible):

- **Normaliser** of image n: the longer side of the bounding box of its *target* keypoints,
  ``max(y_max - y_min, x_max - x_min)`` in pixels (at least 1); the PCK of Yang & Ramanan (2013)
  with the keypoints' box standing in for the object's box.
- **PCK@α** (:func:`pck`): the share of the ``N·K`` keypoints whose Euclidean distance to the target
  is at most ``α`` times the normaliser of their image. Higher is better.
- **Mean keypoint error** (:func:`keypoint_error`): mean Euclidean distance in pixels. Lower is
  better.
- **OKS-AP** (:func:`oks_ap`): COCO keypoint AP (mean over OKS thresholds 0.50:0.05:0.95) computed
  by ``pycocotools``' ``COCOeval(iouType="keypoints")`` — optional; :data:`HAS_PYCOCOTOOLS` says
  whether it is available. Object area (OKS scale s²) = the square of the normaliser above;
  detection score = mean peak confidence (1 when ``pred`` has no confidence column).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from lossforge.metrics._common import to_numpy

try:  # optional: only OKS-AP needs it
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    HAS_PYCOCOTOOLS = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_PYCOCOTOOLS = False

__all__ = ["decode_heatmaps", "keypoints_of", "pck", "keypoint_error", "oks_ap", "HAS_PYCOCOTOOLS"]


def _numpy(x) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float64)


def decode_heatmaps(heatmaps) -> np.ndarray:
    """Per-channel argmax of heatmaps ``(N, K, H, W)`` -> ``(N, K, 3)``: ``(y, x, peak value)``.

    Ties go to the first maximum in row-major order. Non-finite values count as ``-inf``.
    """
    h = _numpy(heatmaps)
    if h.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {h.shape}")
    n, k, height, width = h.shape
    flat = np.where(np.isfinite(h), h, -np.inf).reshape(n, k, height * width)
    idx = flat.argmax(axis=2)
    peak = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    return np.stack([idx // width, idx % width, peak], axis=-1).astype(np.float64)


def keypoints_of(x) -> np.ndarray:
    """Coordinates ``(N, K, 2)`` ``(y, x)`` from keypoints ``(N, K, 2|3)`` or heatmaps ``(N, K, H, W)``."""
    a = _numpy(x)
    if a.ndim == 4:
        return decode_heatmaps(a)[..., :2]
    if a.ndim == 3 and a.shape[-1] in (2, 3):
        return a[..., :2]
    raise ValueError("keypoints must be (N, K, 2), (N, K, 3) or heatmaps (N, K, H, W); "
                     f"got shape {a.shape}")


def _confidence(x) -> np.ndarray:
    a = _numpy(x)
    if a.ndim == 4:
        return decode_heatmaps(a)[..., 2]
    return a[..., 2] if a.shape[-1] == 3 else np.ones(a.shape[:2])


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = keypoints_of(pred), keypoints_of(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target hold different keypoints: {p.shape} vs {t.shape}")
    if p.shape[0] == 0:
        raise ValueError("no keypoints to score")
    return p, t


def bbox_size(target) -> np.ndarray:
    """Normaliser per image ``(N,)``: longer side of the target keypoints' box, at least 1 px."""
    t = keypoints_of(target)
    side = (t.max(axis=1) - t.min(axis=1)).max(axis=1)
    return np.maximum(side, 1.0)


def pck(pred, target, alpha: float = 0.1) -> float:
    """PCK@``alpha``: share of keypoints within ``alpha × bbox_size`` px of the target (inclusive).

    Non-finite predicted coordinates count as misses.
    """
    p, t = _pair(pred, target)
    dist = np.linalg.norm(p - t, axis=-1)  # (N, K)
    hit = np.isfinite(dist) & (dist <= alpha * bbox_size(t)[:, None])
    return float(hit.mean())


def keypoint_error(pred, target) -> float:
    """Mean Euclidean distance between predicted and target keypoints, in pixels."""
    p, t = _pair(pred, target)
    dist = np.linalg.norm(p - t, axis=-1)
    if not np.isfinite(dist).all():
        raise ValueError("non-finite keypoint predictions")
    return float(dist.mean())


def oks_ap(pred, target, sigmas: np.ndarray | float = 0.05) -> float:
    """COCO keypoint AP (OKS 0.50:0.95) by ``pycocotools``; one object per image.

    ``sigmas``: the per-keypoint OKS constants (``kpt_oks_sigmas``, length K, or one for all).
    Raises ``ImportError`` without pycocotools.
    """
    if not HAS_PYCOCOTOOLS:
        raise ImportError("oks_ap needs pycocotools: pip install pycocotools")
    p, t = _pair(pred, target)
    score = _confidence(pred)
    n, k = t.shape[:2]
    sig = np.broadcast_to(np.asarray(sigmas, np.float64), (k,))
    lo, hi = t.min(axis=1), t.max(axis=1)
    area = bbox_size(t) ** 2
    images, gts, dts = [], [], []
    for i in range(n):
        h, w = hi[i] - lo[i]
        kp_gt = np.concatenate([t[i][:, ::-1], np.full((k, 1), 2.0)], axis=1)  # (x, y, visible)
        kp_dt = np.concatenate([np.nan_to_num(p[i][:, ::-1], nan=-1e6, posinf=1e6, neginf=-1e6),
                                np.ones((k, 1))], axis=1)
        images.append({"id": i})
        gts.append({"id": i + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                    "area": float(area[i]), "num_keypoints": k,
                    "bbox": [float(lo[i, 1]), float(lo[i, 0]), float(w), float(h)],
                    "keypoints": kp_gt.ravel().tolist()})
        s = float(np.mean(score[i])) if np.isfinite(score[i]).all() else 0.0
        dts.append({"image_id": i, "category_id": 1, "score": s,
                    "keypoints": kp_dt.ravel().tolist()})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts,
                      "categories": [{"id": 1, "name": "object", "keypoints": [str(j) for j in range(k)],
                                      "skeleton": []}]}
        gt.createIndex()
        dt = gt.loadRes(dts)
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = sig
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(max(ev.stats[0], 0.0))
