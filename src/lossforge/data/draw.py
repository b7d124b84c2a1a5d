"""Drawing primitives on a square pixel grid, vectorised over a batch of objects.

Conventions: pixel (row i, column j) has its centre at (y, x) = (i, j). Every primitive takes
per-object parameters as arrays of shape ``(B,)`` (scalars broadcast) and returns a boolean mask
``(B, size, size)``. Angles are in radians. :func:`boxes` turns masks into per-object boxes, for
detection sets; :func:`paint` composites masks onto images (later objects occlude earlier ones).

Whole images ``(N, 3, size, size)``: :func:`textured_background` draws the noisy textured
backgrounds every shapes set starts from, :func:`contrast_colors` keeps object colours away from
their background, :func:`add_noise` adds the final pixel noise.
"""
from __future__ import annotations

import numpy as np


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(size, dtype=np.float32)
    return ax[None, :, None], ax[None, None, :]  # (1, H, 1), (1, 1, W)


def _col(a, n: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if n is not None and a.ndim == 0:
        a = np.full(n, a, dtype=np.float32)
    return a.reshape(-1, 1, 1)


def _local(size, cy, cx, theta=0.0):
    """Pixel offsets from the centre, rotated into the object's frame: (along, across)."""
    yy, xx = _grid(size)
    dy, dx = yy - _col(cy), xx - _col(cx)
    c, s = np.cos(_col(theta)), np.sin(_col(theta))
    return dx * c + dy * s, -dx * s + dy * c


def disk(size: int, cy, cx, r) -> np.ndarray:
    """Filled disk of radius ``r``."""
    yy, xx = _grid(size)
    return (yy - _col(cy)) ** 2 + (xx - _col(cx)) ** 2 <= _col(r) ** 2


def ellipse(size: int, cy, cx, ra, rb, theta) -> np.ndarray:
    """Filled ellipse, semi-axis ``ra`` along direction ``theta`` and ``rb`` across it."""
    u, v = _local(size, cy, cx, theta)
    return (u / _col(ra)) ** 2 + (v / _col(rb)) ** 2 <= 1.0


def rectangle(size: int, cy, cx, half_len, half_wid, theta) -> np.ndarray:
    """Filled rectangle: ``2*half_len`` along ``theta``, ``2*half_wid`` across (a bar if thin)."""
    u, v = _local(size, cy, cx, theta)
    return (np.abs(u) <= _col(half_len)) & (np.abs(v) <= _col(half_wid))


def polygon(size: int, vertices: np.ndarray) -> np.ndarray:
    """Filled convex polygon; ``vertices`` ``(B, K, 2)`` as (y, x), in either winding order."""
    v = np.asarray(vertices, dtype=np.float32)
    yy, xx = _grid(size)
    nxt = np.roll(v, -1, axis=1)
    area2 = np.sum(v[:, :, 1] * nxt[:, :, 0] - nxt[:, :, 1] * v[:, :, 0], axis=1)
    orient = np.where(area2 >= 0, 1.0, -1.0).astype(np.float32).reshape(-1, 1, 1)
    inside = np.ones((len(v), size, size), dtype=bool)
    for k in range(v.shape[1]):
        ay, ax = _col(v[:, k, 0]), _col(v[:, k, 1])
        by, bx = _col(nxt[:, k, 0]), _col(nxt[:, k, 1])
        inside &= orient * ((bx - ax) * (yy - ay) - (by - ay) * (xx - ax)) >= 0
    return inside


def regular_vertices(cy, cx, r, k: int, rotation, jitter=None) -> np.ndarray:
    """``(B, k, 2)`` vertices of a (jittered) regular k-gon with circumradius ``r``."""
    cy, cx, r, rotation = (np.atleast_1d(np.asarray(a, np.float32)) for a in (cy, cx, r, rotation))
    ang = rotation[:, None] + np.arange(k, dtype=np.float32)[None, :] * (2 * np.pi / k)
    if jitter is not None:
        ang = ang + jitter
    return np.stack([cy[:, None] + r[:, None] * np.sin(ang),
                     cx[:, None] + r[:, None] * np.cos(ang)], axis=-1)


def ring(size: int, cy, cx, r, width) -> np.ndarray:
    """Circle outline: pixels within ``width / 2`` of radius ``r`` (1–2 px gives a thin ring)."""
    yy, xx = _grid(size)
    d = np.sqrt((yy - _col(cy)) ** 2 + (xx - _col(cx)) ** 2)
    return np.abs(d - _col(r)) <= _col(width) / 2


def arc(size: int, cy, cx, r, width, start, extent) -> np.ndarray:
    """Part of a ring: angles from ``start`` to ``start + extent``."""
    yy, xx = _grid(size)
    ang = np.arctan2(yy - _col(cy), xx - _col(cx))
    rel = np.mod(ang - _col(start), 2 * np.pi)
    return ring(size, cy, cx, r, width) & (rel <= _col(extent))


def stroke(size: int, points: np.ndarray, width) -> np.ndarray:
    """Thin stroke through densely sampled ``points`` ``(B, S, 2)`` (y, x), ``width`` whole pixels.

    Each sample marks the ``width × width`` pixel block nearest to it, so samples must be closer
    than one pixel apart (see :func:`polyline_points`).
    """
    pts = np.asarray(points, dtype=np.float32)
    b, s, _ = pts.shape
    width = np.broadcast_to(np.asarray(width, dtype=np.int64), (b,))
    flat = np.zeros(b * size * size, dtype=bool)
    for w in np.unique(width):
        sel = np.flatnonzero(width == w)
        base = np.floor(pts[sel] - (w - 1) / 2 + 0.5).astype(np.int64)  # (b', S, 2)
        for oy in range(w):
            for ox in range(w):
                iy, ix = base[..., 0] + oy, base[..., 1] + ox
                ok = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
                obj = np.broadcast_to(sel[:, None], iy.shape)
                flat[(obj * size * size + iy * size + ix)[ok]] = True
    return flat.reshape(b, size, size)


def polyline_points(control: np.ndarray, spacing: float = 0.25) -> np.ndarray:
    """Resample polylines ``(B, K, 2)`` to points at most ``spacing`` pixels apart: ``(B, S, 2)``."""
    c = np.asarray(control, dtype=np.float32)
    seg = np.linalg.norm(np.diff(c, axis=1), axis=-1)  # (B, K-1)
    per_seg = int(np.ceil(seg.max() / spacing)) + 1 if seg.size else 1
    t = np.linspace(0.0, 1.0, per_seg, dtype=np.float32)[None, None, :, None]
    pts = c[:, :-1, None, :] * (1 - t) + c[:, 1:, None, :] * t  # (B, K-1, per_seg, 2)
    return pts.reshape(len(c), -1, 2)


def sine_points(cy, cx, length, amplitude, cycles, phase, theta, n: int = 256) -> np.ndarray:
    """``(B, n, 2)`` samples of a sine wave of ``length`` px centred at (cy, cx), rotated by theta."""
    cy, cx, length, amplitude, cycles, phase, theta = (
        np.atleast_1d(np.asarray(a, np.float32))[:, None]
        for a in (cy, cx, length, amplitude, cycles, phase, theta))
    t = np.linspace(-0.5, 0.5, n, dtype=np.float32)[None, :]
    u = t * length
    v = amplitude * np.sin(2 * np.pi * cycles * t + phase)
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([cy + u * s + v * c, cx + u * c - v * s], axis=-1)


def bezier_points(p0, p1, p2, n: int = 256) -> np.ndarray:
    """``(B, n, 2)`` samples of quadratic Bézier curves with control points ``(B, 2)`` each."""
    p0, p1, p2 = (np.asarray(p, np.float32)[:, None, :] for p in (p0, p1, p2))
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[None, :, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def boxes(masks: np.ndarray) -> np.ndarray:
    """``(B, 4)`` float32 boxes ``(x0, y0, x1, y1)`` of masks, pixel edges (x1, y1 exclusive);
    NaN rows for empty masks."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    h, w = masks.shape[1:]
    out = np.stack([cols.argmax(1), rows.argmax(1),
                    w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], axis=1)
    out = out.astype(np.float32)
    out[~rows.any(axis=1)] = np.nan
    return out


def paint(images: np.ndarray, index: np.ndarray, masks: np.ndarray, colors: np.ndarray) -> None:
    """In place: ``images[index[b]]`` ``(N, C, H, W)`` takes ``colors[b]`` ``(B, C)`` under
    ``masks[b]``."""
    sub = images[index]
    images[index] = np.where(masks[:, None], colors[:, :, None, None].astype(images.dtype), sub)


# ---------------------------------------------------------------- whole images
def textured_background(rng: np.random.Generator, n: int, size: int,
                        texture_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Textured backgrounds ``(n, 3, size, size)``: a greyish base colour plus two gratings.
    Returns the images and their base colours ``(n, 3)``."""
    base = (rng.uniform(0.3, 0.7, (n, 1)) + rng.normal(0, 0.06, (n, 3))).astype(np.float32)
    ax = np.arange(size, dtype=np.float32)
    texture = np.zeros((n, size, size), dtype=np.float32)
    for _ in range(2):
        freq = rng.uniform(0.03, 0.25, n) * 2 * np.pi
        ang, phase = rng.uniform(0, np.pi, n), rng.uniform(0, 2 * np.pi, n)
        amp = (rng.uniform(0.02, 0.08, n) * texture_scale).astype(np.float32)[:, None]
        # sin(a + b) = sin a cos b + cos a sin b, with a along rows and b along columns
        a = (freq * np.sin(ang)).astype(np.float32)[:, None] * ax
        b = (freq * np.cos(ang)).astype(np.float32)[:, None] * ax + phase.astype(np.float32)[:, None]
        texture += (amp * np.sin(a))[:, :, None] * np.cos(b)[:, None, :]
        texture += (amp * np.cos(a))[:, :, None] * np.sin(b)[:, None, :]
    tint = rng.uniform(0.6, 1.0, (n, 3)).astype(np.float32)  # texture strength per channel
    img = np.multiply(tint[:, :, None, None], texture[:, None])
    img += base[:, :, None, None]
    return img, base


def contrast_colors(colors: np.ndarray, bg: np.ndarray, min_dist: float) -> np.ndarray:
    """Push colours that are too close to their image's background colour away from it."""
    d = colors - bg
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    rand_dir = np.where(bg > 0.5, -1.0, 1.0) / np.sqrt(3.0)  # fallback direction, away from bg
    unit = np.where(norm > 1e-3, d / np.maximum(norm, 1e-3), rand_dir)
    pushed = np.clip(bg + unit * min_dist, 0, 1)
    return np.where(norm < min_dist, pushed, colors).astype(np.float32)


def add_noise(images: np.ndarray, rng: np.random.Generator, sigma: np.ndarray) -> np.ndarray:
    """In place: Gaussian pixel noise of standard deviation ``sigma[n]`` on image ``n``, then clip to
    [0, 1]; returns ``images``."""
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    noise *= sigma.astype(np.float32).reshape(-1, 1, 1, 1)
    images += noise
    return np.clip(images, 0.0, 1.0, out=images)
