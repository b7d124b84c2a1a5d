"""Probe inputs for the screening stages, built from a task's real labels.

A probe holds fixed targets (class indices ``(B, *spatial)``, regression values ``(B, D)`` or target
boxes ``(B, 4)``) and a function from a prediction tensor (logits, values, box parameters) to the
loss variables. Probes are seeded: the same task, size and seed give the same tensors.

Box probes (kind ``"box"``): the prediction is an unconstrained ``(B, 4)`` tensor ``x`` decoded
against a fixed ``anchor`` box each (the probe's target boxes when it was built; a probe with other
labels keeps the anchors): centre ``anchor centre + BOX_JITTER * x[:, :2] * anchor size``, size
``anchor size * exp(BOX_JITTER * x[:, 2:])``. Standard-normal ``x`` thus starts as the target box
jittered by about half its size (most overlap it, some do not), as the proposals a detector's box
loss is trained on overlap their ground truth. The loss-rejection protocol starts every second box
small and inside its target instead (:func:`box_lrp_start`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from lossforge.expr import kernels as K
from lossforge.expr.interpret import loss_value
from lossforge.tasks import BOX, CLASSIFICATION, Task
from lossforge.tasks.base import probe_targets

#: Scale of the random box parameters of box probes (see the module docstring).
BOX_JITTER = 0.5


#: Box LRP starts (:func:`box_lrp_start`): centre jitter factor and the size parameter of the
#: small boxes (``exp(BOX_JITTER * BOX_SMALL_SIZE)`` ≈ 0.29 of the target's sides, or smaller).
BOX_SMALL_JITTER = 0.2
BOX_SMALL_SIZE = -2.5


def box_lrp_start(x: torch.Tensor) -> torch.Tensor:
    """The loss-rejection protocol's starting box parameters from standard-normal ``x (B, 4)``:
    rows 0, 2, 4 … unchanged (jittered around the target); rows 1, 3, 5 … small boxes inside their
    target (centre jitter × :data:`BOX_SMALL_JITTER`, size parameter ``BOX_SMALL_SIZE - |x|/2``).

    Why: a loss that only shrinks the enclosing box ``e`` or the union ``u`` improves the IoU of
    boxes that start larger than their target, but has no gradient on a box inside it (there
    ``e = u`` = the target's area); such losses passed the protocol from jittered starts alone and
    then trained detectors to mAP 0. IoU-like losses grow the small boxes."""
    out = x.clone()
    small = torch.arange(x.shape[0], device=x.device) % 2 == 1
    out[small, :2] = x[small, :2] * BOX_SMALL_JITTER
    out[small, 2:] = BOX_SMALL_SIZE - x[small, 2:].abs() / 2
    return out


def decode_boxes(x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Box parameters ``x (B, 4)`` -> boxes ``x1, y1, x2, y2`` around ``anchor (B, 4)``."""
    size = (anchor[:, 2:] - anchor[:, :2]).to(x.dtype)
    centre = (anchor[:, :2] + anchor[:, 2:]).to(x.dtype) / 2 + BOX_JITTER * x[:, :2] * size
    half = size * torch.exp(BOX_JITTER * x[:, 2:]) / 2
    return torch.cat([centre - half, centre + half], dim=1)


@dataclass
class Probe:
    """Targets and the shape of predictions for screening.

    ``target``: class indices ``(B, *spatial)`` (classification), values (regression) or boxes
    ``(B, 4)`` (box); ``pred_shape``: shape of the prediction tensor being optimised /
    differentiated; ``anchor``: box probes only, the boxes predictions are decoded around.
    ``prior``: classification probes, the class prior ``(C,)`` the loss variable ``q`` reads
    (the task's training-set prior, :meth:`~lossforge.tasks.Task.class_prior`; ``None``: uniform);
    ``prior_source``: a function giving it, called once when the variables are first needed
    (building a probe reads only the targets it draws).
    """

    kind: str
    target: torch.Tensor
    pred_shape: tuple[int, ...]
    num_classes: int | None
    ignore_index: int = 255
    anchor: torch.Tensor | None = None
    prior: torch.Tensor | None = None
    prior_source: Callable[[], "torch.Tensor | None"] | None = field(default=None, repr=False,
                                                                      compare=False)

    def class_prior(self) -> torch.Tensor | None:
        """The class prior ``(C,)`` (``None``: uniform), from ``prior_source`` on first use."""
        if self.prior is None and self.prior_source is not None:
            self.prior, self.prior_source = self.prior_source(), None
        return self.prior

    def variables(self, pred: torch.Tensor):
        """(variables, mask) for a prediction ``pred`` of shape ``pred_shape`` (leading dims may
        add a population axis only in the batched path, not here)."""
        if self.kind == CLASSIFICATION:
            return K.prepare_classification(pred, self.target, self.ignore_index,
                                            self.class_prior())
        if self.kind == BOX:
            return K.prepare_box(decode_boxes(pred, self.anchor), self.target)
        return K.prepare_regression(pred, self.target)

    def loss(self, expr, pred: torch.Tensor) -> torch.Tensor:
        """The loss ``expr`` at the prediction ``pred`` (a scalar tensor, possibly not finite; it
        carries the autograd graph when ``pred`` requires grad)."""
        env, mask = self.variables(pred)
        return loss_value(expr, env, mask)

    def loss_and_grad(self, expr, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The loss ``expr`` at the prediction ``pred`` (a detached scalar tensor, possibly not
        finite) and its gradient ``dL/dpred`` (shape of ``pred``; ``None`` when the loss does not
        reach the prediction)."""
        x = pred.detach().clone().requires_grad_(True)
        value = self.loss(expr, x)
        if not value.requires_grad:  # nothing of the loss reads the prediction
            return value.detach(), None
        (grad,) = torch.autograd.grad(value, x, allow_unused=True)
        return value.detach(), grad

    def metric_input(self, pred: torch.Tensor) -> torch.Tensor:
        """What a metric scores for the prediction ``pred``: class indices (argmax over the
        classes), decoded boxes, or the values themselves."""
        if self.kind == CLASSIFICATION:
            return pred.argmax(dim=1)
        if self.kind == BOX:
            return decode_boxes(pred, self.anchor)
        return pred

    def with_target(self, target: torch.Tensor) -> "Probe":
        """The same probe with other labels (box probes keep their anchors)."""
        return replace(self, target=target)

    def random_pred(self, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
        """Standard-normal predictions of shape ``pred_shape``."""
        return torch.randn(self.pred_shape, generator=gen, dtype=dtype)

    def to(self, device) -> "Probe":
        return replace(self, target=self.target.to(device),
                       anchor=None if self.anchor is None else self.anchor.to(device))


def task_probe(task: Task, samples: int, seed: int, spatial_size: int | None = None) -> Probe:
    """A probe of ``samples`` training targets of ``task``, drawn with ``seed``
    (:meth:`~lossforge.tasks.Task.probe_targets`: by default
    :meth:`~lossforge.data.Split.sample_indices` of the training split, a ``Dataset`` split reads
    only those items; a task without data gives its own).

    For dense targets ``(N, H, W)``, ``spatial_size`` subsamples every k-th pixel so that the
    probe is at most ``spatial_size`` wide (nearest-neighbour; labels stay valid). Regression
    targets keep their shape (``(N,)`` becomes ``(N, 1)``); dense ones ``(N, C, *spatial)`` wider
    than ``spatial_size`` are average-pooled (:func:`_shrink_values`).
    """
    target = probe_targets(task, samples, seed)  # Task.probe_targets: data() not needed
    if task.kind == CLASSIFICATION:
        if target.dim() > 1 and spatial_size and target.shape[-1] > spatial_size:
            step = -(-target.shape[-1] // spatial_size)
            target = target[..., ::step, ::step]
        shape = (target.shape[0], task.num_classes, *target.shape[1:])
        return Probe(CLASSIFICATION, target.long(), tuple(shape), task.num_classes, task.ignore_index,
                     prior_source=getattr(task, "class_prior", None))
    if target.dim() == 1:
        target = target.unsqueeze(1)
    target = _shrink_values(target.float(), spatial_size)
    return Probe(task.kind, target, tuple(target.shape), None)


def _shrink_values(target: torch.Tensor, spatial_size: int | None) -> torch.Tensor:
    """Dense regression targets ``(B, C, *spatial)`` (1–3 spatial dims) wider than
    ``spatial_size``: average-pool every spatial dim by the same factor k (area resampling, the
    value counterpart of the label subsampling). Vectors ``(B, D)`` are returned unchanged."""
    nd = target.dim() - 2
    if not spatial_size or not 1 <= nd <= 3 or target.shape[-1] <= spatial_size:
        return target
    step = -(-target.shape[-1] // spatial_size)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    return pool(target, step, step, ceil_mode=True)


def synthetic_probe(kind: str, samples: int, num_classes: int | None, seed: int,
                    spatial: tuple[int, ...] = ()) -> Probe:
    """A probe with uniformly random labels (used for GEC fingerprints and benchmarks); its class
    prior is the uniform one."""
    gen = torch.Generator().manual_seed(seed)
    if kind == CLASSIFICATION:
        target = torch.randint(0, num_classes, (samples, *spatial), generator=gen)
        return Probe(kind, target, (samples, num_classes, *spatial), num_classes)
    if kind == BOX:  # boxes of sides 4..20 in a 64 x 64 image
        xy = torch.rand(samples, 2, generator=gen) * 40
        wh = 4 + torch.rand(samples, 2, generator=gen) * 16
        target = torch.cat([xy, xy + wh], dim=1)
        return Probe(kind, target, (samples, 4), None, anchor=target.clone())
    target = torch.randn(samples, 1, generator=gen)
    return Probe(kind, target, (samples, 1), None)


def slot_probe(task: Task, slot: str, samples: int, seed: int,
               spatial_size: int | None = None) -> Probe:
    """A probe for loss slot ``slot`` of ``task`` (:meth:`~lossforge.tasks.Task.loss_slots`).

    The single slot of a classification / regression task: :func:`task_probe`. Otherwise the
    targets come from ``task.slot_probe_targets(slot, samples, seed)``: box slots get a box probe
    (anchors = those targets), classification slots class indices (``num_classes`` of the task,
    else the largest label + 1; dense targets subsampled as in :func:`task_probe`), regression
    slots values ``(B, D)``.
    """
    s = task.slot(slot)
    if len(task.loss_slots()) == 1 and s.kind != BOX:
        return task_probe(task, samples, seed, spatial_size)
    target = task.slot_probe_targets(slot, samples, seed)
    if s.kind == BOX:
        target = target.float().reshape(-1, 4)
        return Probe(BOX, target, tuple(target.shape), None, anchor=target.clone())
    if s.kind == CLASSIFICATION:
        target = target.long()
        if target.dim() > 1 and spatial_size and target.shape[-1] > spatial_size:
            step = -(-target.shape[-1] // spatial_size)
            target = target[..., ::step, ::step]
        valid = target[target != task.ignore_index]
        c = task.num_classes or (int(valid.max()) + 1 if valid.numel() else 2)
        return Probe(CLASSIFICATION, target, (target.shape[0], c, *target.shape[1:]), c,
                     task.ignore_index)
    target = target.float()
    if target.dim() == 1:
        target = target.unsqueeze(1)
    return Probe(s.kind, target, tuple(target.shape), None)
