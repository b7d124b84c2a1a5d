"""The anchor-free grid head (FCOS-like): target assignment, box encoding/decoding, detections.

The model predicts, for every cell of a ``stride``-pixel grid over a ``size × size`` image, class
logits for ``C`` object classes plus background, and four box distances. Output layout, one tensor
``(N, C + 1 + 4, H', W')`` with ``H' = W' = size // stride``:

- channels ``0 .. C-1``: object class logits; channel ``C``: background;
- channels ``C+1 .. C+4``: raw distances ``(l, t, r, b)``; the distance in pixels is
  ``stride * softplus(raw)`` from the cell centre to the box's left / top / right / bottom edge.

Cell ``(i, j)`` covers pixels ``[stride*j, stride*(j+1))`` horizontally; its centre is
``(stride*(j + 0.5), stride*(i + 0.5))`` as ``(x, y)`` in the pixel-edge frame of the data.

Assignment: a cell is positive for a ground-truth box when its centre lies strictly inside the box
and within ``radius * stride`` of the box centre along both axes (FCOS centre sampling); when
several boxes claim a cell, the smallest box wins. Every other cell is background. Boxes are
``(x1, y1, x2, y2)`` in pixels throughout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lossforge.tasks.detection.boxes import nms_keep


@dataclass(frozen=True)
class DetectionGrid:
    """Geometry and post-processing of the grid head.

    ``num_classes``: object classes ``C`` (background is channel ``C``); ``score_threshold``,
    ``pre_nms`` (candidates per image), ``nms_iou`` and ``max_detections`` govern :meth:`detect`.
    """

    size: int = 48
    stride: int = 4
    num_classes: int = 3
    radius: float = 1.5
    score_threshold: float = 0.05
    pre_nms: int = 64
    nms_iou: float = 0.5
    max_detections: int = 16

    @property
    def cells(self) -> int:
        """Cells per side, ``H' = W'``."""
        return self.size // self.stride

    @property
    def channels(self) -> int:
        """Output channels: ``C + 1`` logits and 4 distances."""
        return self.num_classes + 5

    @property
    def background(self) -> int:
        """The class index of background cells in :meth:`assign`'s class map."""
        return self.num_classes

    def centres(self, device=None) -> torch.Tensor:
        """``(H', W', 2)`` cell centres ``(x, y)`` in pixels."""
        ax = (torch.arange(self.cells, dtype=torch.float32, device=device) + 0.5) * self.stride
        cy, cx = torch.meshgrid(ax, ax, indexing="ij")
        return torch.stack([cx, cy], dim=-1)

    # ---- training targets -----------------------------------------------------------------------
    def assign(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``(N, K, 5)`` (class, x1, y1, x2, y2; class -1 = padding) -> the class map
        ``(N, H', W')`` int64 (object class, or :attr:`background`) and the matched box of every
        cell ``(N, H', W', 4)`` in pixels (meaningful where the class is not background)."""
        cls, boxes = targets[..., 0], targets[..., 1:].float()
        c = self.centres(targets.device).reshape(1, 1, -1, 2)  # (1, 1, P, 2)
        x1, y1, x2, y2 = (boxes[..., k, None] for k in range(4))  # (N, K, 1)
        cx, cy = c[..., 0], c[..., 1]
        reach = self.radius * self.stride
        pos = ((cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
               & ((cx - (x1 + x2) / 2).abs() < reach) & ((cy - (y1 + y2) / 2).abs() < reach)
               & (cls >= 0)[..., None])  # (N, K, P)
        area = ((x2 - x1) * (y2 - y1)).expand_as(pos)
        best = area.masked_fill(~pos, float("inf")).argmin(dim=1)  # (N, P): smallest box wins
        any_pos = pos.any(dim=1)
        label = cls.long().gather(1, best).masked_fill(~any_pos, self.background)
        matched = boxes.gather(1, best[..., None].expand(*best.shape, 4))
        shape = (targets.shape[0], self.cells, self.cells)
        return label.reshape(shape), matched.reshape(*shape, 4)

    def encode(self, boxes: torch.Tensor) -> torch.Tensor:
        """Matched boxes ``(N, H', W', 4)`` -> the raw distances ``(N, 4, H', W')`` that decode to
        them (inverse of :meth:`decode`; cells whose centre is not inside the box get garbage)."""
        c = self.centres(boxes.device)
        d = torch.cat([c - boxes[..., :2], boxes[..., 2:] - c], dim=-1) / self.stride
        raw = torch.where(d > 20, d, torch.log(torch.expm1(d.clamp(min=1e-4))))
        return raw.permute(0, 3, 1, 2)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw distances ``(N, 4, H', W')`` -> boxes ``(N, H', W', 4)`` in pixels."""
        d = F.softplus(raw.permute(0, 2, 3, 1)) * self.stride
        c = self.centres(raw.device)
        return torch.cat([c - d[..., :2], c + d[..., 2:]], dim=-1)

    def perfect_outputs(self, targets: torch.Tensor, confidence: float = 10.0) -> torch.Tensor:
        """The outputs ``(N, C + 5, H', W')`` of an ideal model for ``targets``: logit
        ``confidence`` on each cell's assigned class, 0 elsewhere, exact distances on positives."""
        label, matched = self.assign(targets)
        logits = F.one_hot(label, self.num_classes + 1).permute(0, 3, 1, 2).float() * confidence
        return torch.cat([logits, self.encode(matched)], dim=1)

    # ---- inference --------------------------------------------------------------------------
    def detect(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs ``(N, C + 5, H', W')`` -> detections ``(N, D, 6)`` = (x1, y1, x2, y2,
        score, class), ``D = max_detections``, sorted by decreasing score, rows of -1 as padding.

        Scores are the softmax probabilities of the object classes; every (cell, class) pair above
        ``score_threshold`` is a candidate; the ``pre_nms`` best per image go through class-wise
        NMS at IoU ``nms_iou``; boxes are clipped to the image.
        """
        n, k = outputs.shape[0], self.num_classes
        probs = outputs[:, :k + 1].float().softmax(dim=1)[:, :k].reshape(n, -1)  # (N, C*P)
        boxes = self.decode(outputs[:, k + 1:k + 5].float()).reshape(n, 1, -1, 4)
        boxes = boxes.clamp(0, self.size).expand(n, k, -1, 4).reshape(n, -1, 4)  # (N, C*P, 4)
        cls = torch.arange(k, device=outputs.device).repeat_interleave(self.cells ** 2)
        top = min(self.pre_nms, probs.shape[1])
        score, idx = probs.topk(top, dim=1)  # sorted
        box = boxes.gather(1, idx[..., None].expand(n, top, 4))
        lab = cls[idx]
        valid = score > self.score_threshold
        keep = nms_keep(box, score, lab, self.nms_iou, valid)
        # kept rows first (stable: scores stay sorted), then cut to max_detections
        rank = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        det = torch.cat([box, score[..., None], lab[..., None].float()], dim=-1)
        det = det.gather(1, rank[..., None].expand(n, top, 6))
        det = det.masked_fill(~keep.gather(1, rank)[..., None], -1.0)
        d = self.max_detections
        if det.shape[1] < d:
            det = torch.cat([det, det.new_full((n, d - det.shape[1], 6), -1.0)], dim=1)
        return det[:, :d]
