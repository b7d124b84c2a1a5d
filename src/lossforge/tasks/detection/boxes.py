"""Box geometry on ``(..., 4)`` tensors ``(x1, y1, x2, y2)`` and class-wise non-maximum suppression.

Plain torch, no torchvision. Degenerate boxes (``x2 <= x1`` or ``y2 <= y1``) have area 0.
"""
from __future__ import annotations

import torch

from lossforge.expr import kernels as K


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``(...)`` of boxes ``(..., 4)``; 0 for degenerate boxes."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(..., A, B)`` of boxes ``a (..., A, 4)`` and ``b (..., B, 4)`` (leading
    dimensions broadcast); 0 where the union is empty."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def iou_terms(pred: torch.Tensor, target: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Element-wise intersection, union and smallest-enclosing-box areas ``(M,)`` of matched
    boxes ``pred (M, 4)`` and ``target (M, 4)``: the variables ``i, u, e`` of box losses, as the
    loss kernel :func:`lossforge.expr.kernels.prepare_box` computes them."""
    env, _ = K.prepare_box(pred, target)
    return env["i"][:, 0], env["u"][:, 0], env["e"][:, 0]


def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None = None,
             iou_threshold: float = 0.5, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression, batched: the keep mask ``(..., B)`` of ``boxes (..., B, 4)``.

    Visiting boxes by decreasing ``scores (..., B)``, a box is kept unless a kept, higher-scoring
    box overlaps it with IoU above ``iou_threshold``. With ``classes (..., B)`` only boxes of the
    same class suppress each other (class-wise NMS). ``valid (..., B)`` excludes boxes (never kept,
    never suppress). Vectorised: the greedy result is the unique fixed point of "kept = not
    suppressed by a kept predecessor", reached from "all kept" in at most ``B`` sweeps (a few in
    practice), each one batched matrix operation.
    """
    n = boxes.shape[-2]
    if valid is None:
        valid = torch.ones(scores.shape, dtype=torch.bool, device=boxes.device)
    if n == 0:
        return valid.clone()
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=-1, descending=True, stable=True)
    take = lambda t: torch.gather(t, -1, order)  # noqa: E731
    b = torch.gather(boxes, -2, order[..., None].expand(*order.shape, 4))
    ok = take(valid)
    sup = box_iou(b, b) > iou_threshold  # (..., B, B): row j may suppress column k
    if classes is not None:
        c = take(classes)
        sup &= c[..., :, None] == c[..., None, :]
    sup &= torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(1)
    sup &= ok[..., :, None]
    keep = ok.clone()
    for _ in range(n):
        new = ok & ~(sup & keep[..., :, None]).any(dim=-2)
        if torch.equal(new, keep):
            break
        keep = new
    out = torch.zeros_like(keep)
    return out.scatter(-1, order, keep)


def nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None = None,
        iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy (class-wise when ``classes`` is given) NMS of one image: kept indices ``(K,)`` by
    decreasing score. ``boxes (B, 4)``, ``scores (B,)``, ``classes (B,)``; see :func:`nms_keep`."""
    keep = nms_keep(boxes, scores, classes, iou_threshold)
    order = scores.argsort(descending=True, stable=True)
    return order[keep[order]]
