"""Procedural keypoint estimation: an articulated arm with ``K`` joints on cluttered backgrounds.

Each image holds one *arm*: a kinematic chain of ``K - 1`` bars (bones) joined at ``K`` joints, the
keypoints. Keypoint 0 is the *root*, marked by a large disk; the bones get thinner towards the
*tip* (keypoint ``K - 1``), and every inner joint is a small disk, so the order of the joints (which
keypoint is which) can be read from the picture at any rotation. Random per image: bone lengths
(one global scale plus per-bone jitter), bend at every inner joint (``±BEND`` rad), global rotation
and position, arm colour (kept away from the background colour, slightly varied per bone),
textured background, 2–5 distractor bars and blobs of random colours under the arm, pixel noise.

Exactness. Keypoints are snapped to the heatmap grid (image pixels that are multiples of the
heatmap ``stride``) before the arm is drawn, so every target heatmap has its unique maximum exactly
at its keypoint, and the keypoints are recovered *exactly* from the heatmaps by a per-channel argmax
(:func:`lossforge.metrics.keypoints.decode_heatmaps`): metrics that receive only the targets (as
the engine passes them) lose nothing.

Conventions: pixel (row i, column j) has its centre at (y, x) = (i, j) (as in
:mod:`lossforge.data.draw`); keypoints are ``(y, x)`` in pixels, inside ``[MARGIN, size-1-MARGIN]``.
Heatmaps are ``size / stride`` pixels wide (default stride 2: 16×16 for 32×32 images); with
``(u_k, v_k) = (y_k, x_k) / stride`` the keypoint in heatmap pixels, channel ``k`` is
``exp(-((i - u_k)² + (j - v_k)²) / (2 σ²))``, peak 1, not truncated, ``σ`` in *heatmap* pixels
(default 1.0, i.e. 2 image pixels).

Built with the primitives and the background/colour helpers of :mod:`lossforge.data.draw`, as
:mod:`lossforge.data.shapes`; used by the ``shapes-pose`` task (:mod:`lossforge.tasks.pose`);
deterministic for ``seed``, and the three splits come from independent
random streams (changing one split's size leaves the others unchanged).
"""
from __future__ import annotations

import numpy as np

from lossforge.data import draw
from lossforge.data._common import DataSplits, as_split, split_streams

#: Bone lengths at scale 1 for an image of 32 px, root to tip (``K - 1`` are used, cycled).
BONE_LENGTHS = (8.0, 7.0, 6.0, 5.0, 4.5, 4.0)
#: Largest bend at an inner joint (radians).
BEND = 1.25
#: Keypoints stay this many pixels away from the image border.
MARGIN = 2
_STREAM_TAG = 3  # shapes_seg uses 1, shapes_cls 2


def _chain(rng: np.random.Generator, n: int, k: int, size: int, stride: int = 1) -> np.ndarray:
    """Random joint positions ``(n, k, 2)`` ``(y, x)`` inside the image, float32 multiples of
    ``stride``."""
    s = size / 32.0
    base = np.resize(np.asarray(BONE_LENGTHS, np.float32), k - 1)
    lengths = base * rng.uniform(0.75, 1.15, (n, 1)) * rng.uniform(0.85, 1.15, (n, k - 1)) * s
    bends = rng.uniform(-BEND, BEND, (n, k - 1))
    bends[:, 0] = rng.uniform(0, 2 * np.pi, n)  # the first "bend" is the global rotation
    angles = np.cumsum(bends, axis=1)
    steps = np.stack([np.sin(angles), np.cos(angles)], axis=-1) * lengths[..., None]
    pts = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(steps, axis=1)], axis=1)  # (n, k, 2)
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # (n, 2)
    room = size - 1 - 2 * MARGIN
    shrink = np.minimum(1.0, room / np.maximum(hi - lo, 1e-6).max(axis=1))  # arms too big shrink
    pts = (pts - lo[:, None]) * shrink[:, None, None]
    extent = (hi - lo) * shrink[:, None]
    offset = MARGIN + rng.uniform(0, 1, (n, 2)) * (room - extent)
    lo_grid = -(-MARGIN // stride) * stride
    hi_grid = (size - 1 - MARGIN) // stride * stride
    pts = np.rint((pts + offset[:, None]) / stride) * stride
    return np.clip(pts, lo_grid, hi_grid).astype(np.float32)


def _clutter(rng: np.random.Generator, images: np.ndarray, size: int) -> None:
    """In place: 2–5 distractor bars and blobs of random colours per image."""
    n = len(images)
    count = rng.integers(2, 6, n)
    s = size / 32.0
    for slot in range(5):
        idx = np.flatnonzero(count > slot)
        if idx.size == 0:
            continue
        b = idx.size
        cy, cx = rng.uniform(0, size - 1, (2, b))
        bars = draw.rectangle(size, cy, cx, rng.uniform(1.5, 4.5, b) * s,
                              rng.uniform(0.5, 1.3, b) * s, rng.uniform(0, np.pi, b))
        blobs = draw.ellipse(size, cy, cx, rng.uniform(1.0, 3.0, b) * s,
                             rng.uniform(0.8, 2.0, b) * s, rng.uniform(0, np.pi, b))
        masks = np.where((rng.random(b) < 0.6)[:, None, None], bars, blobs)
        draw.paint(images, idx, masks, rng.uniform(0, 1, (b, 3)).astype(np.float32))


def _arm_mask(keypoints: np.ndarray, size: int, bone: int) -> np.ndarray:
    """Mask ``(n, size, size)`` of bone ``bone`` (from joint ``bone`` to ``bone + 1``) and its joint disk."""
    k = keypoints.shape[1]
    s = size / 32.0
    a, b = keypoints[:, bone], keypoints[:, bone + 1]
    d = b - a
    length = np.linalg.norm(d, axis=1)
    half_wid = (1.6 - 1.0 * bone / max(k - 2, 1)) * s  # 1.6 px at the root, 0.6 px at the tip
    mask = draw.rectangle(size, (a[:, 0] + b[:, 0]) / 2, (a[:, 1] + b[:, 1]) / 2, length / 2,
                          np.full(len(a), half_wid, np.float32), np.arctan2(d[:, 0], d[:, 1]))
    radius = 2.8 * s if bone == 0 else half_wid + 0.6 * s  # root disk / inner-joint disk
    return mask | draw.disk(size, a[:, 0], a[:, 1], radius)


def render_pose(n: int, size: int = 32, num_keypoints: int = 5, stride: int = 1,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` arm images. Returns ``(images, keypoints)``: float32 ``(n, 3, size, size)`` in
    [0, 1] and float32 ``(n, num_keypoints, 2)`` ``(y, x)`` image-pixel coordinates, integer
    multiples of ``stride``."""
    if num_keypoints < 2:
        raise ValueError(f"num_keypoints must be at least 2, got {num_keypoints}")
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    rng = rng if rng is not None else np.random.default_rng()
    images, bg = draw.textured_background(rng, n, size, texture_scale=0.7)
    _clutter(rng, images, size)
    kp = _chain(rng, n, num_keypoints, size, stride)
    color = draw.contrast_colors(rng.uniform(0, 1, (n, 3)), bg, 0.35)
    everyone = np.arange(n)
    for bone in range(num_keypoints - 1):
        shade = np.clip(color + rng.normal(0, 0.04, (n, 3)), 0, 1).astype(np.float32)
        draw.paint(images, everyone, _arm_mask(kp, size, bone), shade)
    draw.add_noise(images, rng, rng.uniform(0.02, 0.05, n))
    return images, kp


def heatmaps(keypoints: np.ndarray, size: int, sigma: float = 1.0) -> np.ndarray:
    """Gaussian heatmaps ``(n, K, size, size)`` float32 (peak 1 at each keypoint, ``sigma`` px)
    for keypoints ``(n, K, 2)`` ``(y, x)`` in pixels of the heatmap grid (image pixels / stride)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    ax = np.arange(size, dtype=np.float32)
    kp = np.asarray(keypoints, np.float32)
    gy = np.exp(-((ax - kp[..., 0:1]) ** 2) / (2 * sigma ** 2))  # (n, K, size) over rows
    gx = np.exp(-((ax - kp[..., 1:2]) ** 2) / (2 * sigma ** 2))  # (n, K, size) over columns
    return (gy[..., :, None] * gx[..., None, :]).astype(np.float32)


def shapes_pose(n_train: int = 2000, n_val: int = 256, n_test: int = 512, size: int = 32,
                num_keypoints: int = 5, sigma: float = 1.0, stride: int = 2, seed: int = 0
                ) -> DataSplits:
    """Procedural keypoint estimation: images ``(N, 3, size, size)`` float32 in [0, 1], targets the
    keypoint heatmaps ``(N, num_keypoints, size // stride, size // stride)`` float32 (``sigma`` in
    heatmap pixels).

    ``num_classes`` is ``None`` (a regression target). The keypoints in heatmap pixels
    ``(N, K, 2)`` are exactly the per-channel argmax of the targets. Defaults generate in about a
    second.
    """
    if size % stride:
        raise ValueError(f"size {size} must be a multiple of stride {stride}")
    splits = []
    for n, rng in zip((n_train, n_val, n_test), split_streams(seed, _STREAM_TAG)):
        x, kp = render_pose(n, size, num_keypoints, stride, rng)
        splits.append(as_split(x, heatmaps(kp / stride, size // stride, sigma), regression=True))
    return DataSplits(*splits, num_classes=None, name="shapes_pose")
