"""The looks a scene can be drawn in: "plain" (the pretraining world), "ink" and "mosaic".

Every style is a function ``Scene -> float32 (64, 64, 3)`` sRGB in [0, 1] that
draws the same objects at the same places (so content metrics apply to all),
registered in :data:`STYLES`. Random texture (paper grain, tile jitter) comes
from a generator seeded by the scene's content key, so a scene always renders
to the same bytes.

- plain: flat colours, antialiased edges (4 x 4 supersampling).
- ink: sepia paper with grain, object colours washed 10% toward sepia, dark
  brown ink (chalk white on dark paper) outlines inside the edge (0.1 R wide) and 45-degree hatching inside each object.
- mosaic: 4-pixel square tiles with 1-pixel mortar joints, each tile's
  brightness jittered and its colour saturated (x 1.35 away from grey).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from .shapes import downsample, object_field, soft_inside
from .world import BACKGROUNDS, COLOURS, SIZE, Scene, content_key

SUPERSAMPLE = 4

INK = {"pale": (52, 34, 22), "dark": (236, 222, 190)}
"""Ink colour on pale paper (dark brown) and on dark paper (chalk white)."""
SEPIA = np.array((200, 160, 110)) / 255
PAPER = {
    "pale blue": (226, 216, 190),
    "pale yellow": (240, 226, 188),
    "pale grey": (222, 210, 184),
    "dark grey": (88, 68, 48),
}
"""Background name -> the ink style's paper colour (sRGB)."""
WASH = 0.1
OUTLINE_WIDTH = 0.1
"""Outline width as a share of the object's radius (0.55 px small, 0.9 px large)."""
HATCH_SPACING = 3.5
HATCH_WIDTH = 0.9
HATCH_ALPHA = 0.55
GRAIN = 0.025

TILE = 4
MORTAR = np.array((170, 165, 155)) / 255
MORTAR_MIX = 0.4
TILE_JITTER = 0.05
SATURATION = 1.35


def _rgb(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float32) / 255


def texture_rng(scene: Scene) -> np.random.Generator:
    """The scene's own texture generator (seeded by its content key, never global state)."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(content_key(scene).encode()).digest()[:8], "big"))


def _composite(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """In place: ``canvas[box] = (1 - alpha) * canvas[box] + alpha * colour``; alpha (h, w) or (h, w, 1)."""
    y0, x0, y1, x1 = box
    a = alpha[..., None] if alpha.ndim == 2 else alpha
    region = canvas[y0:y1, x0:x1]
    region += a * (colour - region)


def plain(scene: Scene) -> np.ndarray:
    """Flat shapes on a flat background, coverage from 4 x 4 supersampled distance fields."""
    canvas = np.empty((SIZE, SIZE, 3), np.float32)
    canvas[:] = _rgb(BACKGROUNDS[scene.background])
    for obj in scene.objects:
        sdf, box = object_field(obj, SUPERSAMPLE)
        _composite(canvas, downsample(soft_inside(sdf, SUPERSAMPLE), SUPERSAMPLE), _rgb(COLOURS[obj.colour]), box)
    return canvas


def ink(scene: Scene) -> np.ndarray:
    """Sepia paper, washed colours, ink outlines and hatching."""
    s = SUPERSAMPLE
    rng = texture_rng(scene)
    canvas = np.empty((SIZE, SIZE, 3), np.float32)
    canvas[:] = _rgb(PAPER[scene.background])
    ink_colour = _rgb(INK["dark" if scene.background.startswith("dark") else "pale"])
    canvas += rng.normal(0.0, GRAIN, (SIZE, SIZE, 1)).astype(np.float32)
    for obj in scene.objects:
        sdf, box = object_field(obj, s)
        y0, x0, y1, x1 = box
        fill = soft_inside(sdf, s)
        xs = np.arange(x0 * s, x1 * s) / s
        ys = np.arange(y0 * s, y1 * s) / s
        stripe = np.mod(xs[None, :] + ys[:, None], HATCH_SPACING)
        hatch = fill * (np.abs(stripe - HATCH_SPACING / 2) < HATCH_WIDTH / 2) * HATCH_ALPHA
        line = fill - soft_inside(sdf + OUTLINE_WIDTH * obj.radius, s)  # a stroke just inside the edge: the silhouette keeps its shape
        colour = (1 - WASH) * _rgb(COLOURS[obj.colour]) + WASH * SEPIA
        _composite(canvas, downsample(fill, s), colour, box)
        _composite(canvas, downsample(np.maximum(hatch, line), s), ink_colour, box)
    return np.clip(canvas, 0.0, 1.0)


def saturate(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Push ``(..., 3)`` colours away from their grey (channel mean) by ``factor``, clipped to [0, 1]."""
    grey = rgb.mean(axis=-1, keepdims=True)
    return np.clip(grey + factor * (rgb - grey), 0.0, 1.0)


def mosaic(scene: Scene) -> np.ndarray:
    """The plain picture cut into jittered, saturated 4-pixel tiles with mortar joints."""
    rng = texture_rng(scene)
    tiles = SIZE // TILE
    jitter = 1.0 + rng.normal(0.0, TILE_JITTER, (tiles, tiles, 1)).astype(np.float32)
    image = saturate(plain(scene), SATURATION) * np.repeat(np.repeat(jitter, TILE, 0), TILE, 1)
    joint = (np.arange(SIZE) % TILE) == TILE - 1
    mortar = (joint[:, None] | joint[None, :])[..., None]
    image = np.where(mortar, (1 - MORTAR_MIX) * image + MORTAR_MIX * MORTAR, image)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


STYLES: dict[str, Callable[[Scene], np.ndarray]] = {"plain": plain, "ink": ink, "mosaic": mosaic}
"""Style name -> ``Scene -> float32 (64, 64, 3)`` in [0, 1]."""

TRIGGERS = {"ink": "inkstyle", "mosaic": "mosaicstyle"}
"""Trigger word each style set's captions start with."""
