"""Probe inputs for the screening stages, built from a task's real labels.

A probe holds fixed targets (class indices ``(B, *spatial)`` or regression values ``(B, D)``) and a
function from a prediction tensor (logits or values) to the loss variables. Probes are seeded:
the same task, size and seed give the same tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lossforge.expr import kernels as K
from lossforge.tasks import CLASSIFICATION, Task


@dataclass
class Probe:
    """Targets and the shape of predictions for screening.

    ``target``: class indices ``(B, *spatial)`` (classification) or values (regression);
    ``pred_shape``: shape of the prediction tensor being optimised / differentiated.
    """

    kind: str
    target: torch.Tensor
    pred_shape: tuple[int, ...]
    num_classes: int | None
    ignore_index: int = 255

    def variables(self, pred: torch.Tensor):
        """(variables, mask) for a prediction ``pred`` of shape ``pred_shape`` (leading dims may
        add a population axis only in the batched path, not here)."""
        if self.kind == CLASSIFICATION:
            return K.prepare_classification(pred, self.target, self.ignore_index)
        return K.prepare_regression(pred, self.target)

    def random_pred(self, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
        """Standard-normal predictions of shape ``pred_shape``."""
        return torch.randn(self.pred_shape, generator=gen, dtype=dtype)

    def to(self, device) -> "Probe":
        return Probe(self.kind, self.target.to(device), self.pred_shape, self.num_classes,
                     self.ignore_index)


def task_probe(task: Task, samples: int, seed: int, spatial_size: int | None = None) -> Probe:
    """A probe of ``samples`` training targets of ``task``, drawn with ``seed``.

    For dense targets ``(N, H, W)``, ``spatial_size`` subsamples every k-th pixel so that the
    probe is at most ``spatial_size`` wide (nearest-neighbour; labels stay valid).
    """
    y = task.data().train.y
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=gen)[:samples]
    target = y[idx]
    if task.kind == CLASSIFICATION:
        if target.dim() > 1 and spatial_size and target.shape[-1] > spatial_size:
            step = -(-target.shape[-1] // spatial_size)
            target = target[..., ::step, ::step]
        shape = (target.shape[0], task.num_classes, *target.shape[1:])
        return Probe(CLASSIFICATION, target.long(), tuple(shape), task.num_classes, task.ignore_index)
    if target.dim() == 1:
        target = target.unsqueeze(1)
    return Probe(task.kind, target.float(), tuple(target.shape), None)


def synthetic_probe(kind: str, samples: int, num_classes: int | None, seed: int,
                    spatial: tuple[int, ...] = ()) -> Probe:
    """A probe with uniformly random labels (used for GEC fingerprints and benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == CLASSIFICATION:
        target = torch.randint(0, num_classes, (samples, *spatial), generator=gen)
        return Probe(kind, target, (samples, num_classes, *spatial), num_classes)
    target = torch.randn(samples, 1, generator=gen)
    return Probe(kind, target, (samples, 1), None)
