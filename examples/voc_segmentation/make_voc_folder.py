"""Write a segmentation data set in the PASCAL VOC layout, offline, from lossforge's procedural
shapes — a stand-in for VOC2012 that the other scripts of this folder read as they would VOC::

    ROOT/JPEGImages/<id>.jpg                  RGB images
    ROOT/SegmentationClass/<id>.png           palette-mode ("P") masks: the pixel value is the
                                              class index, 255 = void (ignored by loss and metrics)
    ROOT/ImageSets/Segmentation/train.txt     one image id per line
    ROOT/ImageSets/Segmentation/val.txt

Classes (7): background, disk, rectangle, triangle, ring, curve, dot, coloured with VOC's palette;
void is white-ish (224, 224, 192) as in VOC. As in VOC, void is drawn along the object outlines:
here the background pixels that touch an object (8-neighbourhood), a one-pixel band, so that the
thin classes (1–2 px rings and curves) keep all their pixels.

Run (from the repository root)::

    python examples/voc_segmentation/make_voc_folder.py                      # 256 train, 64 val
    python examples/voc_segmentation/make_voc_folder.py --root /data/VOCshapes --train 1000

The default ROOT is ``examples/voc_segmentation/VOCshapes`` (ignored by git); the task reads the
folder named by ``--root``, the environment variable ``LOSSFORGE_VOC_ROOT``, or that default.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from lossforge.data.shapes import SEG_CLASSES, render_seg

#: Where the data set goes when no ``--root`` is given.
DEFAULT_ROOT = Path(__file__).resolve().parent / "VOCshapes"
VOID = 255


def voc_palette() -> list[int]:
    """VOC's colour map (class ``i`` -> RGB from the bits of ``i``), 256 entries flattened to the
    768 integers ``Image.putpalette`` takes; entry 255 (void) is (224, 224, 192)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    palette[3 * VOID:3 * VOID + 3] = [224, 224, 192]
    return palette


def outline_void(labels: np.ndarray) -> np.ndarray:
    """``labels (H, W)`` with the background pixels that touch an object (any of the 8
    neighbours is not background) set to :data:`VOID`; object pixels are kept."""
    padded = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    touches = np.zeros(labels.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            touches |= padded[dy:dy + h, dx:dx + w] != 0
    return np.where((labels == 0) & touches, VOID, labels).astype(np.uint8)


def write_voc_folder(root: str | Path, n_train: int = 256, n_val: int = 64, size: int = 64,
                     seed: int = 0) -> Path:
    """Write ``n_train`` + ``n_val`` images of ``size``×``size`` pixels under ``root`` in the
    VOC layout (see the module docstring), deterministic for ``seed``; returns ``root``."""
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, labels, _ = render_seg(n_train + n_val, size, len(SEG_CLASSES), rng=rng)
    palette = voc_palette()
    ids = [f"shapes_{i:06d}" for i in range(n_train + n_val)]
    for image_id, image, label in zip(ids, images, labels):
        rgb = (np.clip(image.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        mask = Image.fromarray(outline_void(label), "P")
        mask.putpalette(palette)
        mask.save(root / "SegmentationClass" / f"{image_id}.png")
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder to write")
    parser.add_argument("--train", type=int, default=256, help="training images")
    parser.add_argument("--val", type=int, default=64, help="validation images")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = write_voc_folder(args.root, args.train, args.val, args.size, args.seed)
    print(f"wrote {args.train} train + {args.val} val images ({args.size}×{args.size}) to {root}")


if __name__ == "__main__":
    main()
