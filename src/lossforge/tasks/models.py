"""Small models for proxy training. No BatchNorm (running statistics do not mix with
``torch.func`` population training); GroupNorm where normalisation helps."""
from __future__ import annotations

import torch
from torch import nn


def mlp(in_features: int, out_features: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``; input ``(N, *)`` is flattened."""
    mods: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out_features))
    return nn.Sequential(*mods)


def digits_cnn(num_classes: int = 10) -> nn.Sequential:
    """For 8×8 grey images ``(N, 1, 8, 8)``: two 3×3 convolutions and a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, num_classes),
    )


def conv1d_net(length: int = 40, num_classes: int = 10) -> nn.Sequential:
    """For MNIST-1D ``(N, 1, length)``."""
    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * ((length + 3) // 4), num_classes),
    )


def glo_mnist_cnn(num_classes: int = 10) -> nn.Sequential:
    """GLO's MNIST CNN (FIELD.md): conv5×5-32, pool, conv5×5-64, pool, FC-1024, dropout 0.4, FC."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Dropout(0.4),
        nn.Linear(1024, num_classes),
    )


def small_cnn(num_classes: int = 10, width: int = 32, in_channels: int = 3) -> nn.Sequential:
    """For 32×32 RGB ``(N, 3, 32, 32)`` (shapes-cls): three conv blocks, global pooling."""
    w = width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), nn.GroupNorm(4, w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GroupNorm(8, 4 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )


class Squeeze(nn.Module):
    """Drops the last dimension: regression heads ``(N, 1) -> (N,)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU())


class TinyUNet(nn.Module):
    """A small encoder-decoder for segmentation: ``(N, 3, H, W) -> (N, C, H, W)``, H, W divisible by 4.

    Two downsamplings with skip connections, so thin 1–2 px structures can be recovered.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3):
        super().__init__()
        w = width
        self.enc1 = _block(in_channels, w)
        self.enc2 = _block(w, 2 * w)
        self.mid = _block(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


class _ResBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and an identity (or 1×1, strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm1 = nn.GroupNorm(4, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(4, cout)
        self.relu = nn.ReLU()
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else nn.Conv2d(cin, cout, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.norm1(self.conv1(x)))
        return self.relu(self.norm2(self.conv2(h)) + self.short(x))


class TinyResNet(nn.Module):
    """A small residual network for images ``(N, C, H, W)``: a stem, three residual blocks
    (widths ``w, 2w, 4w``; the last two downsample by 2), global average pooling, a linear head.
    GroupNorm instead of BatchNorm (batched proxy training)."""

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 3):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), nn.GroupNorm(4, w),
                                  nn.ReLU())
        self.blocks = nn.Sequential(_ResBlock(w, w), _ResBlock(w, 2 * w, 2),
                                    _ResBlock(2 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def lenet(num_classes: int = 10, in_channels: int = 3, size: int = 32) -> nn.Sequential:
    """LeNet-5-style: conv5×5-6, max-pool, conv5×5-16, max-pool, FC-120, FC-84, FC (padded
    convolutions, so any ``size`` divisible by 4 works); no normalisation, no global pooling
    (a different inductive bias from :func:`small_cnn`)."""
    s = size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * s * s, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


#: Architectures an image task can be built with (``tasks.get(name, arch=...)``).
IMAGE_ARCHS = ("mlp", "lenet", "cnn", "resnet")


def image_model(arch: str, num_classes: int, in_channels: int, size: int, width: int = 16,
                hidden: int = 128) -> nn.Module:
    """A model for images ``(N, in_channels, size, size)`` by architecture name: ``"mlp"`` (two
    hidden ReLU layers of ``hidden``), ``"lenet"`` (:func:`lenet`), ``"cnn"`` (:func:`small_cnn`),
    ``"resnet"`` (:class:`TinyResNet`); ``ValueError`` listing the names for any other."""
    if arch == "mlp":
        return mlp(in_channels * size * size, num_classes, hidden=hidden)
    if arch == "lenet":
        return lenet(num_classes, in_channels=in_channels, size=size)
    if arch == "cnn":
        return small_cnn(num_classes, width=width, in_channels=in_channels)
    if arch == "resnet":
        return TinyResNet(num_classes, width=width, in_channels=in_channels)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(IMAGE_ARCHS)}")
