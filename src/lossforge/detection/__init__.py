"""Object detection helpers for the detection tasks: box geometry and NMS (:mod:`.boxes`), the
anchor-free grid head's target assignment and decoding (:mod:`.grid`), a tiny detector
(:mod:`.model`) and COCO mAP through pycocotools (:mod:`.coco`).

Boxes everywhere are ``(x1, y1, x2, y2)`` in pixels, pixel-edge coordinates (pixel column ``j``
covers ``[j, j+1)``), as the detection data sets write them.
"""
from lossforge.detection.boxes import box_area, box_iou, iou_terms, nms, nms_keep
from lossforge.detection.coco import coco_map
from lossforge.detection.grid import DetectionGrid

__all__ = ["DetectionGrid", "box_area", "box_iou", "coco_map", "iou_terms", "nms", "nms_keep"]
