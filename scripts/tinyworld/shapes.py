"""Signed distance fields of the six shapes, sampled on a supersampled pixel grid.

Conventions: pixel coordinates x (right) and y (down); pixel ``i`` covers
``[i, i + 1)`` and its ``s x s`` subsamples sit at ``i + (k + 0.5) / s``. A
signed distance is in pixels, negative inside. Every shape is centred on its
object's grid-cell centre and scaled by its radius R (:data:`world.SIZES`):

- circle: radius R; ring: radii 0.55R..R (a hole of 30% of the disc area)
- square: half side 0.85R; cross: two 2R x (2R/3) bars (a plus sign)
- triangle: apex up, (0, -0.9R), (+-R, 0.85R); star: five points, outer R, inner 0.45R, a tip up
"""

from __future__ import annotations

import math

import numpy as np

from .world import SIZE, SceneObject

RING_INNER = 0.55
SQUARE_HALF = 0.85
CROSS_HALF_WIDTH = 1.0 / 3.0
TRIANGLE = ((0.0, -0.9), (1.0, 0.85), (-1.0, 0.85))
STAR_INNER = 0.45
STAR_POINTS = 5
MARGIN = 2
"""Pixels around the shape's box that are sampled too (antialiasing, outlines)."""


def _box(x, y, hx, hy):
    qx, qy = np.abs(x) - hx, np.abs(y) - hy
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _polygon(x, y, vertices):
    """Exact signed distance to a closed polygon ((N, 2) vertices); even-odd rule for the sign."""
    x, y = np.broadcast_arrays(x, y)
    d = np.full(x.shape, np.inf)
    inside = np.zeros(x.shape, bool)
    n = len(vertices)
    for i in range(n):
        (ax, ay), (bx, by) = vertices[i], vertices[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d = np.minimum(d, np.hypot(wx - ex * t, wy - ey * t))
        crosses = (ay > y) != (by > y)
        inside ^= crosses & (x < ax + (y - ay) * ex / (ey or 1.0))
    return np.where(inside, -d, d)


def _star(x, y, r):
    """Five-pointed star by folding the plane onto one tip-to-inner-vertex edge (a tip at angle -90 deg)."""
    sector = 2 * math.pi / STAR_POINTS
    angle = np.mod(np.arctan2(y, x) + math.pi / 2, sector)
    angle = np.abs(angle - sector / 2)  # 0 at an inner vertex's direction, sector/2 at a tip's
    alpha = sector / 2 - angle  # angle from the nearest tip
    rho = np.hypot(x, y)
    px, py = rho * np.cos(alpha), rho * np.sin(alpha)
    tx, ty = r, 0.0
    ix, iy = STAR_INNER * r * math.cos(sector / 2), STAR_INNER * r * math.sin(sector / 2)
    ex, ey = ix - tx, iy - ty
    wx, wy = px - tx, py - ty
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.hypot(wx - ex * t, wy - ey * t)
    outside = (ex * wy - ey * wx) < 0  # right of the tip -> inner edge (clockwise boundary)
    return np.where(outside, dist, -dist)


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels) of ``shape`` with radius ``r`` at offsets ``(x, y)`` from its centre."""
    if shape == "circle":
        return np.hypot(x, y) - r
    if shape == "ring":
        half = (1 - RING_INNER) * r / 2
        return np.abs(np.hypot(x, y) - (r - half)) - half
    if shape == "square":
        return _box(x, y, SQUARE_HALF * r, SQUARE_HALF * r)
    if shape == "cross":
        w = CROSS_HALF_WIDTH * r
        return np.minimum(_box(x, y, r, w), _box(x, y, w, r))
    if shape == "triangle":
        return _polygon(x, y, [(vx * r, vy * r) for vx, vy in TRIANGLE])
    if shape == "star":
        return _star(x, y, r)
    raise ValueError(f"shape = {shape!r}: no distance field")


def object_box(obj: SceneObject) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)``: the pixel window, clipped to the image, that holds the object and its margin."""
    cx, cy = obj.centre
    r = obj.radius + MARGIN
    return max(int(cy - r), 0), max(int(cx - r), 0), min(math.ceil(cy + r), SIZE), min(math.ceil(cx + r), SIZE)


def object_field(obj: SceneObject, supersample: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Signed distance on the supersampled window: ``(sdf (s*h, s*w) float32, (y0, x0, y1, x1))``."""
    y0, x0, y1, x1 = box = object_box(obj)
    cx, cy = obj.centre
    s = supersample
    xs = np.arange(x0 * s, x1 * s, dtype=np.float32) / s + 0.5 / s - cx
    ys = np.arange(y0 * s, y1 * s, dtype=np.float32) / s + 0.5 / s - cy
    return shape_sdf(obj.shape, xs[None, :], ys[:, None], obj.radius).astype(np.float32), box


def downsample(values: np.ndarray, supersample: int) -> np.ndarray:
    """Box filter: ``(s*h, s*w, ...)`` -> ``(h, w, ...)`` means over each s x s block."""
    s = supersample
    h, w = values.shape[0] // s, values.shape[1] // s
    return values.reshape(h, s, w, s, *values.shape[2:]).mean(axis=(1, 3))


def soft_inside(sdf: np.ndarray, supersample: int) -> np.ndarray:
    """Per-subsample coverage in [0, 1]: a linear ramp one subsample wide across the edge."""
    return np.clip(0.5 - sdf * supersample, 0.0, 1.0)
