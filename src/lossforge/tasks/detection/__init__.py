"""Object detection in one place: the ``shapes-det`` task and the helpers it is built from.

- :mod:`.task` — :class:`ShapesDet`, the task (loss slots ``cls`` and ``box``, metrics, predict);
- :mod:`.boxes` — box geometry and class-wise NMS;
- :mod:`.grid` — the anchor-free grid head's target assignment, decoding and detections;
- :mod:`.model` — :class:`TinyDetector`, the tiny one-stage detector the proxy trains;
- :mod:`.coco` — COCO mAP through pycocotools.

The data generator stays with the other generated sets: :func:`lossforge.data.shapes_det.shapes_det`.
Boxes everywhere are ``(x1, y1, x2, y2)`` in pixels, pixel-edge coordinates (pixel column ``j``
covers ``[j, j+1)``), as the detection data set writes them (the task's ``box`` slot sees them
normalised by the image size: see :mod:`.task`).
"""
from lossforge.tasks.detection.boxes import box_area, box_iou, iou_terms, nms, nms_keep
from lossforge.tasks.detection.coco import coco_map
from lossforge.tasks.detection.grid import DetectionGrid
from lossforge.tasks.detection.model import TinyDetector
from lossforge.tasks.detection.task import ShapesDet

__all__ = ["DetectionGrid", "ShapesDet", "TinyDetector", "box_area", "box_iou", "coco_map",
           "iou_terms", "nms", "nms_keep"]
