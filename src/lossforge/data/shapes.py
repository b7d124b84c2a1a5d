"""Procedural shapes: a segmentation set (VOC-like statistics) and a 10-class image set.

Both are drawn with the primitives of :mod:`lossforge.data.draw` on noisy textured backgrounds,
fully vectorised (one numpy pass per object slot and class), deterministic for ``seed``; the train,
val and test splits come from independent random streams, so changing one split's size leaves the
others unchanged.

``shapes_seg`` — semantic segmentation, ``SEG_CLASSES``: background (≈ 85% of pixels), disk,
rectangle, triangle, thin ring (1–2 px), thin curve (1–2 px sine or Bézier), tiny dot (2–9 px).
4–9 objects per image, drawn in random order (later ones occlude earlier ones). With probability
``color_informativeness`` an object has its class colour plus noise, otherwise a random colour, so
shape must be learned. Thin and tiny classes cover few pixels, so pixel accuracy, mIoU, mAcc and
the boundary metrics disagree the way they do on VOC.

``shapes_cls`` — classification, ``CLS_CLASSES``, one object per image at a random position, size
and colour (no colour information about the class), with faint clutter and pixel noise: the
offline stand-in for CIFAR-10.
"""
from __future__ import annotations

import numpy as np

from lossforge.data import draw
from lossforge.data._common import DataSplits, as_split, split_streams

SEG_CLASSES = ("background", "disk", "rectangle", "triangle", "ring", "curve", "dot")
CLS_CLASSES = ("disk", "square", "triangle", "ring", "cross", "line", "ellipse", "star",
               "two_dots", "arc")

#: Class colours of the segmentation set's foreground classes 1..6 (RGB in [0, 1]).
SEG_PALETTE = np.array([[0.90, 0.15, 0.15], [0.15, 0.80, 0.20], [0.20, 0.30, 0.95],
                        [0.95, 0.85, 0.10], [0.85, 0.20, 0.85], [0.10, 0.85, 0.90]], np.float32)


# ---------------------------------------------------------------- segmentation

def _seg_mask(kind: int, rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    s = size / 64.0
    cy, cx = rng.uniform(-2, size + 1, (2, b))
    if kind == 1:  # disk
        return draw.disk(size, cy, cx, rng.uniform(4.5, 11.0, b) * s)
    if kind == 2:  # rectangle
        return draw.rectangle(size, cy, cx, rng.uniform(4, 11, b) * s, rng.uniform(3, 9, b) * s,
                              rng.uniform(0, np.pi, b))
    if kind == 3:  # irregular triangle
        verts = draw.regular_vertices(cy, cx, rng.uniform(6, 14, b) * s, 3, rng.uniform(0, 7, b),
                                      rng.uniform(-0.4, 0.4, (b, 3)))
        return draw.polygon(size, verts)
    if kind == 4:  # thin ring
        return draw.ring(size, cy, cx, rng.uniform(5, 12, b) * s, rng.uniform(1.0, 2.0, b))
    if kind == 5:  # thin curve: half sine waves, half quadratic Béziers
        n = int(64 * s * 4) + 64
        pts = draw.sine_points(cy, cx, rng.uniform(16, 40, b) * s, rng.uniform(1.5, 5, b) * s,
                               rng.uniform(0.5, 2.0, b), rng.uniform(0, 2 * np.pi, b),
                               rng.uniform(0, 2 * np.pi, b), n=n)
        ends = np.stack([cy, cx], 1)[:, None, :] + rng.uniform(-14, 14, (b, 3, 2)) * s
        bez = draw.bezier_points(ends[:, 0], ends[:, 1], ends[:, 2], n=n)
        pts = np.where((rng.random(b) < 0.5)[:, None, None], pts, bez)
        return draw.stroke(size, pts, rng.integers(1, 3, b))
    if kind == 6:  # tiny dot
        return draw.disk(size, cy, cx, rng.uniform(0.75, 1.5, b) * max(1.0, s))
    raise ValueError(kind)


def render_seg(n: int, size: int = 64, num_classes: int = 7, color_informativeness: float = 0.5,
               rng: np.random.Generator | None = None):
    """Draw ``n`` segmentation scenes.

    Returns ``(images, labels, objects)``: float32 ``(n, 3, size, size)`` in [0, 1], int64
    ``(n, size, size)``, and a dict of per-object arrays in drawing order — ``image`` (index),
    ``label`` (class) and ``box`` (``x0, y0, x1, y1`` of the whole object before occlusion, x1/y1
    exclusive; NaN when the object fell outside the image) — for detection use.
    """
    if not 2 <= num_classes <= len(SEG_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(SEG_CLASSES)}], got {num_classes}")
    if not 0.0 <= color_informativeness <= 1.0:
        raise ValueError(f"color_informativeness must be in [0, 1], got {color_informativeness}")
    rng = rng if rng is not None else np.random.default_rng()
    images, bg = draw.textured_background(rng, n, size)
    labels = np.zeros((n, size, size), dtype=np.int64)
    n_obj = rng.integers(4, 10, n)
    kinds = rng.integers(1, num_classes, (n, int(n_obj.max(initial=0))))
    objects: dict[str, list] = {"image": [], "label": [], "box": []}
    for slot in range(kinds.shape[1]):
        for kind in range(1, num_classes):
            idx = np.flatnonzero((n_obj > slot) & (kinds[:, slot] == kind))
            if idx.size == 0:
                continue
            masks = _seg_mask(kind, rng, idx.size, size)
            informative = rng.random(idx.size) < color_informativeness
            colors = np.where(informative[:, None],
                              SEG_PALETTE[kind - 1] + rng.normal(0, 0.08, (idx.size, 3)),
                              rng.uniform(0, 1, (idx.size, 3)))
            colors = draw.contrast_colors(np.clip(colors, 0, 1), bg[idx], 0.3)
            draw.paint(images, idx, masks, colors)
            labels[idx] = np.where(masks, kind, labels[idx])
            objects["image"].append(idx)
            objects["label"].append(np.full(idx.size, kind))
            objects["box"].append(draw.boxes(masks))
    draw.add_noise(images, rng, rng.uniform(0.02, 0.05, n))
    objs = {k: (np.concatenate(v) if v else np.zeros((0, 4) if k == "box" else 0))
            for k, v in objects.items()}
    return images, labels, objs


def shapes_seg(n_train: int = 512, n_val: int = 128, n_test: int = 256, size: int = 64,
               num_classes: int = 7, seed: int = 0, color_informativeness: float = 0.5
               ) -> DataSplits:
    """Procedural semantic segmentation: images ``(N, 3, size, size)`` float32 in [0, 1], label
    maps ``(N, size, size)`` int64 with classes ``SEG_CLASSES[:num_classes]`` (0 = background).

    Defaults (512 / 128 / 256 images at 64×64) generate in well under a second.
    """
    splits = []
    for n, rng in zip((n_train, n_val, n_test), split_streams(seed, 1)):
        x, y, _ = render_seg(n, size, num_classes, color_informativeness, rng)
        splits.append(as_split(x, y))
    return DataSplits(*splits, num_classes=num_classes, name="shapes_seg")


# ---------------------------------------------------------------- classification

def _cls_mask(kind: int, rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    s = size / 32.0
    cy, cx = rng.uniform(0.35, 0.65, (2, b)) * (size - 1)
    theta = rng.uniform(0, 2 * np.pi, b)
    if kind == 0:  # disk
        return draw.disk(size, cy, cx, rng.uniform(6, 10, b) * s)
    if kind == 1:  # square
        h = rng.uniform(5.5, 9, b) * s
        return draw.rectangle(size, cy, cx, h, h, theta)
    if kind == 2:  # triangle (roughly equilateral)
        return draw.polygon(size, draw.regular_vertices(cy, cx, rng.uniform(8, 12.5, b) * s, 3,
                                                        theta, rng.uniform(-0.2, 0.2, (b, 3))))
    if kind == 3:  # ring
        return draw.ring(size, cy, cx, rng.uniform(6.5, 10.5, b) * s, rng.uniform(1.8, 3, b) * s)
    if kind == 4:  # cross: two perpendicular bars
        arm, wid = rng.uniform(7, 11, b) * s, rng.uniform(1.2, 2, b) * s
        return (draw.rectangle(size, cy, cx, arm, wid, theta)
                | draw.rectangle(size, cy, cx, arm, wid, theta + np.pi / 2))
    if kind == 5:  # line: one long bar
        return draw.rectangle(size, cy, cx, rng.uniform(10, 14, b) * s,
                              rng.uniform(1.0, 1.6, b) * s, theta)
    if kind == 6:  # ellipse (clearly elongated)
        ra = rng.uniform(8, 12, b) * s
        return draw.ellipse(size, cy, cx, ra, ra / rng.uniform(2.0, 3.0, b), theta)
    if kind == 7:  # six-pointed star: two overlapping triangles
        r = rng.uniform(8, 12, b) * s
        return (draw.polygon(size, draw.regular_vertices(cy, cx, r, 3, theta))
                | draw.polygon(size, draw.regular_vertices(cy, cx, r, 3, theta + np.pi / 3)))
    if kind == 8:  # two dots
        sep, ang = rng.uniform(5, 8, b) * s, rng.uniform(0, np.pi, b)
        r = rng.uniform(2, 3, b) * s
        dy, dx = sep * np.sin(ang), sep * np.cos(ang)
        return draw.disk(size, cy + dy, cx + dx, r) | draw.disk(size, cy - dy, cx - dx, r)
    if kind == 9:  # open arc
        return draw.arc(size, cy, cx, rng.uniform(7, 11, b) * s, rng.uniform(1.8, 3, b) * s,
                        theta, rng.uniform(0.6, 1.1, b) * np.pi)
    raise ValueError(kind)


def render_cls(n: int, size: int = 32, rng: np.random.Generator | None = None):
    """Draw ``n`` one-object images. Returns ``(images, labels, boxes)``: float32
    ``(n, 3, size, size)`` in [0, 1], int64 ``(n,)`` balanced over the 10 classes, float32 ``(n, 4)``."""
    rng = rng if rng is not None else np.random.default_rng()
    k = len(CLS_CLASSES)
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    images, bg = draw.textured_background(rng, n, size, texture_scale=0.5)
    # faint clutter: 0-2 low-contrast blobs per image, under the object
    n_clutter = rng.integers(0, 3, n)
    for slot in range(2):
        idx = np.flatnonzero(n_clutter > slot)
        if idx.size:
            masks = draw.ellipse(size, *rng.uniform(0, size - 1, (2, idx.size)),
                                 rng.uniform(1.0, 3.0, idx.size) * size / 32,
                                 rng.uniform(0.7, 2.0, idx.size) * size / 32,
                                 rng.uniform(0, np.pi, idx.size))
            tint = bg[idx] + rng.choice([-1.0, 1.0], (idx.size, 1)) * rng.uniform(0.05, 0.15,
                                                                                 (idx.size, 3))
            draw.paint(images, idx, masks, np.clip(tint, 0, 1))
    boxes = np.full((n, 4), np.nan, dtype=np.float32)
    for kind in range(k):
        idx = np.flatnonzero(labels == kind)
        if idx.size == 0:
            continue
        masks = _cls_mask(kind, rng, idx.size, size)
        colors = draw.contrast_colors(rng.uniform(0, 1, (idx.size, 3)), bg[idx],
                           rng.uniform(0.3, 0.6, (idx.size, 1)))
        draw.paint(images, idx, masks, colors)
        boxes[idx] = draw.boxes(masks)
    draw.add_noise(images, rng, rng.uniform(0.02, 0.05, n))
    return images, labels, boxes


def shapes_cls(n_train: int = 5000, n_val: int = 1000, n_test: int = 2000, size: int = 32,
               seed: int = 0) -> DataSplits:
    """Procedural 10-class image classification (``CLS_CLASSES``): images ``(N, 3, size, size)``
    float32 in [0, 1], int64 labels, classes balanced within each split.

    Learnable, not trivial: ``tasks.models.small_cnn(width=16)``, Adam 2e-3, batch 64, cross-entropy
    reaches about 33% test accuracy after 300 steps, 55% after 800 and 76% after 2,400 (train 81%,
    still rising); squares and triangles are the last to separate from disks.
    """
    splits = []
    for n, rng in zip((n_train, n_val, n_test), split_streams(seed, 2)):
        x, y, _ = render_cls(n, size, rng)
        splits.append(as_split(x, y))
    return DataSplits(*splits, num_classes=len(CLS_CLASSES), name="shapes_cls")
