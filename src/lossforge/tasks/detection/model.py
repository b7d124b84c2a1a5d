"""A tiny one-stage anchor-free detector for the proxy trainings (CPU, seconds).

``(N, 3, S, S) -> (N, C + 5, S/4, S/4)`` in the layout of
:class:`~lossforge.tasks.detection.grid.DetectionGrid`: a stride-2 stem and a 2× pooling reach the
stride-4 grid, two dilated 3×3 convolutions give a receptive field of ~49 px (objects are up to
~22 px at S = 48), then a shared two-layer 1×1 head. About 5 M multiply-adds per 48×48 image at width 16.
GroupNorm, no BatchNorm (see :mod:`lossforge.tasks.models`).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _conv(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(4, cout), nn.ReLU()]


class TinyDetector(nn.Module):
    """Stride-4 grid detector: ``num_classes`` object classes (+ background), width ``width``.

    The head's biases start at a background prior (``prior`` probability of each object class per
    cell) and at distances of about ``init_distance`` grid strides, so early losses are sane.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3,
                 prior: float = 0.02, init_distance: float = 1.5):
        super().__init__()
        w = width
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, stride=2, padding=1), nn.GroupNorm(4, w), nn.ReLU(),
            *_conv(w, w), nn.MaxPool2d(2),
            *_conv(w, 2 * w), *_conv(2 * w, 2 * w, dilation=2), *_conv(2 * w, 2 * w, dilation=2),
        )
        self.head = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 1), nn.ReLU(),
                                  nn.Conv2d(2 * w, num_classes + 5, 1))
        with torch.no_grad():
            last = self.head[-1]
            last.bias.zero_()
            # softmax prior: each object class gets `prior`, background the rest
            last.bias[num_classes] = math.log((1 - num_classes * prior) / prior)
            last.bias[num_classes + 1:] = math.log(math.expm1(init_distance))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
