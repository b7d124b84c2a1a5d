"""COCO-style box mAP through pycocotools, on padded arrays, in memory (no files, no prints).

``pred (N, D, 6)`` = (x1, y1, x2, y2, score, class) and ``target (N, K, 5)`` = (class, x1, y1, x2,
y2), pixels, rows with a negative class are padding. pycocotools is an install dependency of
lossforge; a clear ``ImportError`` says how to install it when it is missing.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("detection metrics need pycocotools: pip install pycocotools "
                          "(or reinstall lossforge, which depends on it)") from err
    return COCO, COCOeval


def to_coco(pred: np.ndarray, target: np.ndarray, num_classes: int
            ) -> tuple[dict, list[dict]]:
    """Padded arrays -> a COCO ground-truth dataset dict and a list of detection dicts.

    Image ids are the row indices; category ids are ``class + 1`` (COCO ids start at 1); boxes
    become ``[x, y, width, height]``.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    images = [{"id": int(i), "width": 0, "height": 0} for i in range(len(target))]
    gi, gk = np.nonzero(target[..., 0] >= 0)
    g = target[gi, gk]
    wh = g[:, 3:5] - g[:, 1:3]
    annotations = [
        {"id": a + 1, "image_id": int(i), "category_id": int(row[0]) + 1, "iscrowd": 0,
         "bbox": [row[1], row[2], w, h], "area": float(w * h)}
        for a, (i, row, (w, h)) in enumerate(zip(gi, g, wh))
    ]
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    di, dk = np.nonzero(pred[..., 5] >= 0)
    d = pred[di, dk]
    detections = [
        {"image_id": int(i), "category_id": int(row[5]) + 1, "score": float(row[4]),
         "bbox": [row[0], row[1], row[2] - row[0], row[3] - row[1]]}
        for i, row in zip(di, d)
    ]
    return dataset, detections


def coco_map(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    """COCO box AP of detections ``pred (N, D, 6)`` against ``target (N, K, 5)``.

    Returns ``{"map": AP@[.5:.95], "map50": AP@.5, "map75": AP@.75}`` (pycocotools' ``stats[0:3]``,
    area "all", up to 100 detections per image), each in [0, 1]; 0 when there are no detections.
    Categories absent from the ground truth are left out of the mean (COCO's rule).
    """
    if len(pred) != len(target):
        raise ValueError(f"coco_map: {len(pred)} prediction rows for {len(target)} target rows")
    COCO, COCOeval = _pycocotools()
    dataset, detections = to_coco(pred, target, num_classes)
    if not detections or not dataset["annotations"]:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(s), 0.0) for s in ev.stats[:3]]  # -1 means "no ground truth": report 0
    return {"map": stats[0], "map50": stats[1], "map75": stats[2]}
