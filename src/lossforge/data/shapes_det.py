"""Procedural object detection: a few disks, rectangles and triangles per image, with boxes.

Drawn with the primitives of :mod:`lossforge.data.draw` on its textured backgrounds, as
:mod:`lossforge.data.shapes` (same helpers, independent split streams: changing one split's size
leaves the others unchanged), deterministic for ``seed``. Used by the ``shapes-det`` task
(:mod:`lossforge.tasks.detection`).

Every image holds 1 to ``max_objects`` objects of ``DET_CLASSES``. Objects may overlap, but a
placement is redrawn (up to a few times, else the object is dropped) when it would cover more than
``max_overlap`` of a smaller object's area, so every object stays mostly visible. With probability
``color_informativeness`` an object has its class colour plus noise, otherwise a random colour
(pushed away from the background colour): shape must be learned, colour only helps.

Boxes are the tight boxes of each object's *visible* pixels after occlusion (as COCO annotates),
in pixel-edge coordinates: pixel ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)``, so a box is
``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive, ``0 <= x1 < x2 <= size``.

Targets are one float32 tensor per split, ``(N, max_objects, 5)`` = (class, x1, y1, x2, y2), objects
sorted by drawing order, padding rows filled with -1 (class -1 marks padding), so the generic
training loop's ``y[idx]`` indexing works.
"""
from __future__ import annotations

import numpy as np

from lossforge.data import draw
from lossforge.data._common import DataSplits, as_split, split_streams

DET_CLASSES = ("disk", "rectangle", "triangle")

#: Class colours (RGB in [0, 1]) used when an object's colour is informative.
DET_PALETTE = np.array([[0.90, 0.15, 0.15], [0.15, 0.80, 0.20], [0.20, 0.30, 0.95]], np.float32)

_TRIES = 8  # placement attempts per object before it is dropped


def _det_mask(kind: int, rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """``(b, size, size)`` masks of class ``kind``; object extents ~8–22 px at size 48."""
    s = size / 48.0
    cy, cx = rng.uniform(3 * s, size - 3 * s, (2, b))
    if kind == 0:  # disk
        return draw.disk(size, cy, cx, rng.uniform(4.0, 9.0, b) * s)
    if kind == 1:  # rectangle, any aspect up to ~2.5, any rotation
        return draw.rectangle(size, cy, cx, rng.uniform(4.0, 9.0, b) * s,
                              rng.uniform(3.0, 7.0, b) * s, rng.uniform(0, np.pi, b))
    if kind == 2:  # irregular triangle
        verts = draw.regular_vertices(cy, cx, rng.uniform(5.5, 11.0, b) * s, 3,
                                      rng.uniform(0, 2 * np.pi, b), rng.uniform(-0.3, 0.3, (b, 3)))
        return draw.polygon(size, verts)
    raise ValueError(kind)


def _overlap_ok(new: np.ndarray, placed: list[np.ndarray], max_overlap: float) -> np.ndarray:
    """``(b,)``: the new masks cover at most ``max_overlap`` of the smaller of each pair."""
    ok = new.sum(axis=(1, 2)) >= 4  # at least a few pixels inside the image
    area_new = new.sum(axis=(1, 2))
    for old in placed:
        inter = (new & old).sum(axis=(1, 2))
        smaller = np.minimum(area_new, old.sum(axis=(1, 2)))
        ok &= inter <= max_overlap * np.maximum(smaller, 1)
    return ok


def render_det(n: int, size: int = 48, max_objects: int = 4, color_informativeness: float = 0.5,
               max_overlap: float = 0.3, rng: np.random.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` detection scenes.

    Returns ``(images, targets, instances)``: float32 ``(n, 3, size, size)`` in [0, 1]; float32
    ``(n, max_objects, 5)`` rows (class, x1, y1, x2, y2) in pixels, -1 rows as padding; int64
    ``(n, size, size)`` instance map (the target row index that owns each pixel, -1 background).
    """
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    if not 0.0 <= color_informativeness <= 1.0:
        raise ValueError(f"color_informativeness must be in [0, 1], got {color_informativeness}")
    rng = rng if rng is not None else np.random.default_rng()
    images, bg = draw.textured_background(rng, n, size)
    n_obj = rng.integers(1, max_objects + 1, n)
    kinds = rng.integers(0, len(DET_CLASSES), (n, max_objects))
    instances = np.full((n, size, size), -1, dtype=np.int64)
    present = np.zeros((n, max_objects), dtype=bool)
    placed: list[np.ndarray] = []  # per slot: (n, size, size) full masks (empty where absent)
    for slot in range(max_objects):
        full = np.zeros((n, size, size), dtype=bool)
        todo = np.flatnonzero(n_obj > slot)
        for _ in range(_TRIES):
            if todo.size == 0:
                break
            masks = np.zeros((todo.size, size, size), dtype=bool)
            for kind in range(len(DET_CLASSES)):
                sel = np.flatnonzero(kinds[todo, slot] == kind)
                if sel.size:
                    masks[sel] = _det_mask(kind, rng, sel.size, size)
            ok = _overlap_ok(masks, [p[todo] for p in placed], max_overlap)
            full[todo[ok]] = masks[ok]
            todo = todo[~ok]
        idx = np.flatnonzero(full.any(axis=(1, 2)))
        present[idx, slot] = True
        placed.append(full)
        if idx.size == 0:
            continue
        kind = kinds[idx, slot]
        informative = rng.random(idx.size) < color_informativeness
        colors = np.where(informative[:, None],
                          DET_PALETTE[kind] + rng.normal(0, 0.08, (idx.size, 3)),
                          rng.uniform(0, 1, (idx.size, 3)))
        colors = draw.contrast_colors(np.clip(colors, 0, 1), bg[idx], 0.3)
        draw.paint(images, idx, full[idx], colors)
        instances[idx] = np.where(full[idx], slot, instances[idx])
    draw.add_noise(images, rng, rng.uniform(0.02, 0.05, n))
    targets = _targets(instances, present, kinds)
    return images, targets, instances


def _targets(instances: np.ndarray, present: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Visible-pixel boxes per slot, compacted to the front of each row; -1 padding."""
    n, k = present.shape
    rows = np.full((n, k, 5), -1.0, dtype=np.float32)
    for slot in range(k):
        visible = instances == slot
        has = present[:, slot] & visible.any(axis=(1, 2))
        if has.any():
            rows[has, slot, 0] = kinds[has, slot]
            rows[has, slot, 1:] = draw.boxes(visible[has])
    # move padding rows to the end (stable: objects keep their drawing order)
    order = np.argsort(rows[:, :, 0] < 0, axis=1, kind="stable")
    rows = np.take_along_axis(rows, order[:, :, None], axis=1)
    remap = np.argsort(order, axis=1)  # old slot -> new row
    flat = instances.reshape(n, -1)
    inst = np.where(flat >= 0, np.take_along_axis(remap, np.maximum(flat, 0), axis=1), -1)
    instances[...] = inst.reshape(instances.shape)
    return rows


def shapes_det(n_train: int = 1536, n_val: int = 256, n_test: int = 512, size: int = 48,
               max_objects: int = 4, seed: int = 0, color_informativeness: float = 0.5
               ) -> DataSplits:
    """Procedural detection: images ``(N, 3, size, size)`` float32 in [0, 1], targets
    ``(N, max_objects, 5)`` float32 = (class, x1, y1, x2, y2) in pixels, class -1 rows as padding.

    ``num_classes`` of the result is ``len(DET_CLASSES)`` (object classes, no background).
    Defaults (1,536 / 256 / 512 images at 48×48) generate in 1–3 s.
    """
    splits = []
    for n, rng in zip((n_train, n_val, n_test), split_streams(seed, 3)):
        x, y, _ = render_det(n, size, max_objects, color_informativeness, rng=rng)
        splits.append(as_split(x, y, regression=True))
    return DataSplits(*splits, num_classes=len(DET_CLASSES), name="shapes_det")
