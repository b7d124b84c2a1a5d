"""``shapes-pose``: keypoint estimation by heatmap regression on procedural images.

Where things are: the data generator is :func:`lossforge.data.shapes_pose.shapes_pose`
(``data/shapes_pose.py``, beside the other generated sets), the keypoint metrics are in
:mod:`lossforge.metrics.keypoints` (``metrics/keypoints.py``, re-exported by
:mod:`lossforge.metrics`); the model and the heatmap decoding are here.

Data: :func:`lossforge.data.shapes_pose.shapes_pose` — 32×32 RGB images of an articulated arm
with K = 5 joints on cluttered backgrounds; targets are Gaussian heatmaps ``(N, K, 16, 16)``
(stride 2, σ = 1.5 heatmap pixels), whose per-channel argmax is exactly the keypoint.

Loss signature: regression over heatmaps — ``f`` is the model's heatmap ``(N, K, H, W)``, ``y`` the
target heatmap; ``mean_c`` averages over keypoints, ``mean_s`` over pixels. The baseline is the
classic heatmap MSE, ``mean_c(square(f - y))`` (the element-wise mean squared error; the zoo's
``mse`` is the classification Brier score over ``p`` and does not apply here).

Model: :class:`PoseNet`, a small encoder-decoder (stride-2 stem, two more downsamplings, skip
connections, GroupNorm; output at stride 2, no final activation). :meth:`ShapesPose.predict` decodes heatmaps to ``(N, K, 3)``: ``(y, x)`` of the
per-channel argmax in pixels and the peak value as confidence (no sub-pixel refinement: target
keypoints are on integer pixels). Metrics (:mod:`lossforge.metrics.keypoints`): ``pck`` = PCK@0.2
(the LSP convention) and the stricter ``pck@0.1``, both normalised by the longer side of the target
keypoints' bounding box (about 2 heatmap px at α = 0.2), ``error`` (mean distance in heatmap px,
lower is better) and, when pycocotools is installed, ``oks_ap`` (COCO keypoint AP,
OKS constants ``OKS_SIGMAS``). Each metric also accepts raw heatmaps, so the loss-rejection protocol
can score the optimised heatmaps directly.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from lossforge import metrics as M
from lossforge.data import DataSplits
from lossforge.data.shapes_pose import shapes_pose
from lossforge.tasks.base import REGRESSION, Metric, ProxyConfig, Task
from lossforge.tasks.models import TinyUNet

#: OKS constant per keypoint (COCO's ``kpt_oks_sigmas``), ours: the same for every joint; with the
#: OKS scale s = the box side (~10 heatmap px), k·s = 2σ·s ≈ 2 px, so a 1 px error scores OKS ≈ 0.88.
OKS_SIGMAS = 0.1


def _pose_metrics() -> dict[str, Metric]:
    out = {
        "pck": Metric("pck", functools.partial(M.pck, alpha=0.2)),
        "pck@0.1": Metric("pck@0.1", functools.partial(M.pck, alpha=0.1)),
        "error": Metric("error", M.keypoint_error, higher_is_better=False),
    }
    if M.HAS_PYCOCOTOOLS:
        out["oks_ap"] = Metric("oks_ap", functools.partial(M.oks_ap, sigmas=OKS_SIGMAS))
    return out


def decode(outputs: torch.Tensor) -> torch.Tensor:
    """Heatmaps ``(N, K, H, W)`` -> ``(N, K, 3)`` float: ``(y, x)`` of each channel's argmax and the
    peak value (first maximum in row-major order, as :func:`lossforge.metrics.decode_heatmaps`)."""
    n, k, h, w = outputs.shape
    flat = outputs.reshape(n, k, h * w)
    peak, idx = flat.max(dim=2)
    return torch.stack([torch.div(idx, w, rounding_mode="floor").to(outputs.dtype),
                        (idx % w).to(outputs.dtype), peak], dim=-1)


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(4, cout), nn.ReLU()]


class PoseNet(TinyUNet):
    """Heatmap model ``(N, 3, H, W) -> (N, K, H/2, W/2)``, H and W divisible by 8.

    Stride-2 stem, then a U-Net over three scales (H/2, H/4, H/8) with skip connections: the
    coarsest scale sees the whole 32×32 image, which telling the joints apart needs. The
    layer names and ``forward`` are :class:`~lossforge.tasks.models.TinyUNet`'s.
    """

    def __init__(self, num_keypoints: int, width: int = 16, in_channels: int = 3):
        nn.Module.__init__(self)
        w = width
        self.enc1 = nn.Sequential(*_conv(in_channels, w, 2), *_conv(w, w))
        self.enc2 = nn.Sequential(*_conv(w, 2 * w), *_conv(2 * w, 2 * w))
        self.mid = nn.Sequential(*_conv(2 * w, 2 * w), *_conv(2 * w, 2 * w))
        self.up2 = nn.ConvTranspose2d(2 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.Sequential(*_conv(4 * w, 2 * w))
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = nn.Sequential(*_conv(2 * w, w))
        self.head = nn.Conv2d(w, num_keypoints, 1)
        self.pool = nn.MaxPool2d(2)


class ShapesPose(Task):
    """Procedural keypoint estimation (32×32, K = 5 joints), heatmap regression with a tiny U-Net.

    Proxy: 300 Adam steps (lr 3e-3, batch 32) on 2,000 training images, about 20 s of CPU on
    one thread; heatmap MSE (seed 0) reaches validation PCK@0.2 ≈ 0.62, PCK@0.1 ≈ 0.30, mean error
    ≈ 2.3 heatmap px (untrained: PCK@0.2 ≈ 0.07–0.11); 200 steps give PCK@0.2 ≈ 0.53.
    """

    name = "shapes-pose"
    kind = REGRESSION
    num_classes = None
    default_metric = "pck"
    baseline = "mean_c(square(f - y))"
    proxy = ProxyConfig(steps=300, batch_size=32, optimizer="adam", lr=3e-3, eval_batch_size=256)
    metrics = _pose_metrics()

    def __init__(self, seed: int = 0, size: int = 32, num_keypoints: int = 5, sigma: float = 1.5,
                 n_train: int = 2000, n_val: int = 256, n_test: int = 512, width: int = 16):
        if size % 8:
            raise ValueError(f"size must be divisible by 8 (the model downsamples 3 times), got {size}")
        self.seed, self.size, self.num_keypoints, self.sigma = seed, size, num_keypoints, sigma
        self.sizes, self.width = (n_train, n_val, n_test), width

    @functools.cached_property
    def _data(self) -> DataSplits:
        n_train, n_val, n_test = self.sizes
        return shapes_pose(n_train=n_train, n_val=n_val, n_test=n_test, size=self.size,
                           num_keypoints=self.num_keypoints, sigma=self.sigma, stride=2,
                           seed=self.seed)

    def data(self) -> DataSplits:
        return self._data

    def make_model(self) -> nn.Module:
        return PoseNet(self.num_keypoints, width=self.width)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Heatmaps ``(N, K, H, W)`` -> keypoints with confidence ``(N, K, 3)`` (see :func:`decode`)."""
        return decode(outputs)

    def compute_metrics(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Every metric; the target heatmaps are decoded once (exact: integer keypoints)."""
        kp = M.decode_heatmaps(target)[..., :2]
        return {name: float(m.fn(pred, kp)) for name, m in self.metrics.items()}
