"""Scenes -> pixels: one image, or a batch of (images, captions) by index.

Images are uint8 ``(64, 64, 3)`` sRGB; :func:`to_comfy` turns a batch into
ComfyUI's IMAGE convention, float32 ``(B, H, W, 3)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .styles import STYLES, TRIGGERS
from .world import Scene, caption, scene


def render(scene: Scene, style: str = "plain") -> np.ndarray:
    """``scene`` drawn in ``style`` (a key of :data:`styles.STYLES`): uint8 ``(64, 64, 3)``."""
    if style not in STYLES:
        raise ValueError(f"style = {style!r}: not one of {', '.join(STYLES)}")
    return np.round(STYLES[style](scene) * 255).astype(np.uint8)


def batch(indices: Iterable[int], split: str = "train", style: str = "plain", trigger: str | None = None) -> tuple[np.ndarray, list[str]]:
    """``(images uint8 (B, 64, 64, 3), captions)`` of ``scene(i, split)`` for each index.

    ``trigger=None`` uses the style's own trigger word (:data:`styles.TRIGGERS`,
    none for plain); pass ``""`` for bare captions.
    """
    scenes = [scene(int(i), split) for i in indices]
    word = TRIGGERS.get(style) if trigger is None else trigger
    images = np.stack([render(s, style) for s in scenes]) if scenes else np.zeros((0, 64, 64, 3), np.uint8)
    return images, [caption(s, word) for s in scenes]


def to_comfy(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> ComfyUI IMAGE, float32 ``(B, H, W, 3)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
