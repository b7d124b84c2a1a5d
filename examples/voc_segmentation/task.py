"""Segmentation from a folder in the PASCAL VOC layout, trained by your own PyTorch loop.

What a real project looks like: the data are files on disk, read by a map-style
``torch.utils.data.Dataset`` (:class:`VOCSegmentation`), and the training is a plain PyTorch loop
of your own (:meth:`VOCShapes.fit`: random flips and translations applied to image and mask
together, AdamW with a warm-up + cosine learning-rate schedule, validation every ``eval_every`` steps
reported to lossforge with ``report(step, metrics)``). lossforge only hands ``fit`` the candidate
loss, an ``nn.Module`` called ``loss(logits, target)`` that leaves the void label 255 out.

The screening stages (checks, gradient equivalence, loss rejection) never run this loop: they use
the kind, the number of classes, the metric and a few real masks, which lossforge reads from the
training ``Dataset`` (``data()``) item by item without loading the set.

The folder: ``root=`` (Python), else the environment variable ``LOSSFORGE_VOC_ROOT``, else
``examples/voc_segmentation/VOCshapes``. Any VOC-layout folder works (set ``num_classes`` to
its classes; VOC2012 has 21). Make the offline stand-in first, then (from the repository root)::

    python examples/voc_segmentation/make_voc_folder.py
    lossforge tasks --check examples/voc_segmentation/task.py
    lossforge evaluate --task examples/voc_segmentation/task.py --loss ce --loss lovasz --seeds 2
    lossforge search --task examples/voc_segmentation/task.py --budget 40 --study voc.db
    lossforge show voc.db
    python examples/voc_segmentation/train_with_found_loss.py voc.db

(``evaluate`` scores the validation split: ``fit`` returns validation metrics.) With data
elsewhere: ``LOSSFORGE_VOC_ROOT=/data/VOCshapes lossforge search --task ...``.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lossforge.data import DataSplits, Split
from lossforge.metrics import SegmentationMeter, bf1, miou
from lossforge.tasks import Metric, ProxyConfig, Task

#: The environment variable naming the data folder (read when no ``root`` is given).
ROOT_ENV = "LOSSFORGE_VOC_ROOT"
DEFAULT_ROOT = Path(__file__).resolve().parent / "VOCshapes"
VOID = 255
NUM_CLASSES = 7  # background + the 6 shape classes of make_voc_folder.py


def voc_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$LOSSFORGE_VOC_ROOT``, else :data:`DEFAULT_ROOT`; ``FileNotFoundError``
    saying how to make the folder when it has no ``ImageSets/Segmentation``."""
    path = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser().resolve()
    if not (path / "ImageSets" / "Segmentation").is_dir():
        raise FileNotFoundError(
            f"no VOC-layout folder at {path} (ImageSets/Segmentation is missing): write one with "
            f"`python examples/voc_segmentation/make_voc_folder.py --root {path}`, or point "
            f"{ROOT_ENV} at your data")
    return path


class VOCSegmentation(Dataset):
    """The images of ``ImageSets/Segmentation/<split>.txt`` under ``root``.

    Item ``i``: ``(image, mask)``, ``image`` float32 ``(3, H, W)`` in [0, 1] from
    ``JPEGImages/<id>.jpg`` (or ``.png``), ``mask`` int64 ``(H, W)`` of class indices from the
    palette PNG ``SegmentationClass/<id>.png`` (255 = void). Files are read when an item is."""

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        listing = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} is missing: the VOC layout lists each split's "
                                    "image ids in ImageSets/Segmentation/<split>.txt")
        self.ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise ValueError(f"{listing} lists no image")

    def __len__(self) -> int:
        return len(self.ids)

    def _image_path(self, image_id: str) -> Path:
        for ext in (".jpg", ".png"):
            path = self.root / "JPEGImages" / f"{image_id}{ext}"
            if path.is_file():
                return path
        raise FileNotFoundError(f"{self.root / 'JPEGImages'} has no {image_id}.jpg or .png")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        with Image.open(self._image_path(image_id)) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        with Image.open(self.root / "SegmentationClass" / f"{image_id}.png") as m:
            mask = np.asarray(m)  # a palette image reads as its class indices
        return torch.from_numpy(rgb.transpose(2, 0, 1).copy()), torch.from_numpy(mask.astype(np.int64))


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, shift: int = 4
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random horizontal flip and random translation (pad by ``shift`` px, crop back
    to the original size; the mask padded with void) for each image ``x (N, 3, H, W)`` and its
    mask ``y (N, H, W)``, drawn from ``gen``."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    xp = nn.functional.pad(x, (shift,) * 4, mode="replicate")
    yp = nn.functional.pad(y, (shift,) * 4, value=VOID)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=gen).tolist()
    x = torch.stack([xp[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx))])
    y = torch.stack([yp[i, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx))])
    return x, y


def warmup_cosine(step: int, steps: int, warmup: float = 0.1) -> float:
    """The learning-rate factor at optimiser step ``step`` of ``steps``: a linear warm-up over
    the first ``warmup`` share of the steps (at least one), then a cosine decay to 0."""
    ramp = max(1, int(warmup * steps))
    if step < ramp:
        return (step + 1) / ramp
    return 0.5 * (1.0 + math.cos(math.pi * (step - ramp) / max(1, steps - ramp)))


class SmallSegNet(nn.Module):
    """A small fully convolutional network: logits ``(N, num_classes, H, W)`` for images
    ``(N, 3, H, W)`` (dilated 3×3 convolutions, no down-sampling)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 24):
        super().__init__()
        layers, channels = [], 3
        for dilation in (1, 2, 4, 1):
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class VOCShapes(Task):
    """Semantic segmentation of a VOC-layout folder (7 classes), searched for mIoU; trained by
    :meth:`fit`, the loop of this file. ``root``: the folder (see :func:`voc_root`)."""

    name = "voc-shapes"
    kind = "classification"  # segmentation: logits (N, C, H, W), masks (N, H, W)
    num_classes = NUM_CLASSES
    ignore_index = VOID
    metrics = {
        "miou": Metric("miou", functools.partial(miou, num_classes=NUM_CLASSES, ignore_index=VOID)),
        "bf1": Metric("bf1", functools.partial(bf1, num_classes=NUM_CLASSES, ignore_index=VOID)),
    }
    default_metric = "miou"
    proxy = ProxyConfig(steps=300, batch_size=16, lr=4e-3, num_workers=0)
    baseline = "ce"
    #: Validation (and a ``report``) every this many steps, and at the end.
    eval_every = 100

    def __init__(self, root: str | None = None):
        self.root = voc_root(root)
        self._splits: DataSplits | None = None

    # --- what lossforge's checks and screening read --------------------------------------------
    def data(self) -> DataSplits:
        """The folder's ``train`` and ``val`` lists as ``Dataset`` splits (VOC has no public
        test masks: ``test`` is ``val``). Nothing is read until an item is asked for."""
        if self._splits is None:
            val = Split(VOCSegmentation(self.root, "val"))
            self._splits = DataSplits(Split(VOCSegmentation(self.root, "train")), val, val,
                                      self.num_classes, self.name)
        return self._splits

    def make_model(self) -> nn.Module:
        return SmallSegNet(self.num_classes)

    # --- your own training loop ----------------------------------------------------------------
    def fit(self, loss: nn.Module, *, steps: int, seed: int, device: str = "cpu",
            report=None) -> dict[str, float]:
        """Train a fresh :class:`SmallSegNet` for ``steps`` steps with ``loss`` and return the
        validation metrics (``nan`` for every metric when the loss diverges)."""
        torch.manual_seed(seed)
        model = self.make_model().to(device)
        train_set = self.data().train.dataset
        loader = DataLoader(train_set, batch_size=min(self.proxy.batch_size, len(train_set)),
                            shuffle=True, drop_last=True, num_workers=self.proxy.num_workers,
                            generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.AdamW(model.parameters(), lr=self.proxy.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(warmup_cosine,
                                                                             steps=steps))
        flips = torch.Generator().manual_seed(seed + 1)
        step, metrics = 0, None
        while step < steps:
            for x, y in loader:
                x, y = augment(x, y, flips)
                model.train()
                value = loss(model(x.to(device)), y.to(device))
                if not torch.isfinite(value):
                    return dict.fromkeys(self.metrics, math.nan)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                schedule.step()
                step += 1
                if step % self.eval_every == 0 or step == steps:
                    metrics = self.validate(model, device)
                    if report is not None:
                        report(step, metrics)
                if step == steps:
                    break
        return metrics if metrics is not None else self.validate(model, device)

    @torch.no_grad()
    def validate(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        """mIoU and boundary F1 of ``model`` on the validation split (void pixels left out)."""
        model.eval()
        meter = SegmentationMeter(self.num_classes, ignore_index=VOID)
        for x, y in DataLoader(self.data().val.dataset, batch_size=32,
                               num_workers=self.proxy.num_workers):
            meter.update(model(x.to(device)).argmax(1).cpu().numpy(), y.numpy())
        scores = meter.compute()
        return {"miou": scores["miou"], "bf1": scores["bf1"]}
