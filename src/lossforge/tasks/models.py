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
