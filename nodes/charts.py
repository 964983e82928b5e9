"""Small PIL charts returned to ComfyUI as IMAGE tensors ``(1, H, W, 3)`` in [0, 1]."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
BAR = (70, 110, 180)
MARK = (200, 60, 40)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size default font only
        return ImageFont.load_default()


def to_image_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> ComfyUI IMAGE ``(1, H, W, 3)`` float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def histogram(
    values: np.ndarray,
    *,
    bins: int = 50,
    value_range: tuple[float, float] = (0.0, 1.0),
    title: str = "",
    xlabel: str = "",
    notes: tuple[str, ...] = (),
    marks: dict[str, float] | None = None,
    size: tuple[int, int] = (768, 512),
) -> torch.Tensor:
    """A histogram of ``values`` with a title, notes under it and vertical marks.

    ``marks`` maps a label (e.g. "mean") to an x position drawn as a red line.
    """
    width, height = size
    notes = tuple(line for note in notes for line in textwrap.wrap(note, width=width // 9) or [""])
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, font = _font(22), _font(16)
    left, right, top, bottom = 60, width - 20, 40 + 22 * len(notes) + 20, height - 50

    counts, edges = np.histogram(values, bins=bins, range=value_range)
    peak = max(int(counts.max()), 1)
    lo, hi = value_range

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    for count, e0, e1 in zip(counts, edges[:-1], edges[1:], strict=True):
        y = bottom - count / peak * (bottom - top)
        draw.rectangle([x_of(e0) + 1, y, x_of(e1) - 1, bottom], fill=BAR)
    draw.line([left, bottom, right, bottom], fill=INK, width=2)
    draw.line([left, top, left, bottom], fill=INK, width=2)
    for i in range(6):
        v = lo + (hi - lo) * i / 5
        draw.line([x_of(v), bottom, x_of(v), bottom + 6], fill=INK)
        draw.text((x_of(v), bottom + 8), f"{v:.1f}", fill=INK, font=font, anchor="mt")
    draw.text((left - 8, top), str(peak), fill=INK, font=font, anchor="rt")
    draw.text((left - 8, bottom), "0", fill=INK, font=font, anchor="rb")
    for i, (label, v) in enumerate((marks or {}).items()):
        draw.line([x_of(v), top, x_of(v), bottom], fill=MARK, width=2)
        draw.text((x_of(v) + 4, top + 2 + 20 * i), label, fill=MARK, font=font)
    draw.text((width // 2, bottom + 30), xlabel, fill=INK, font=font, anchor="mt")
    draw.text((left, 10), title, fill=INK, font=title_font)
    for i, note in enumerate(notes):
        draw.text((left, 40 + 22 * i), note, fill=INK, font=font)
    return to_image_tensor(image)


def bar_chart(
    labels: list[str],
    counts: list[int],
    *,
    title: str = "",
    notes: tuple[str, ...] = (),
    size: tuple[int, int] = (768, 512),
) -> torch.Tensor:
    """Vertical bars, one per label, each with its count on top; labels under the axis.

    With many bars the labels are thinned so they stay readable.
    """
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, font = _font(22), _font(14)
    left, right, top, bottom = 40, width - 20, 40 + 22 * len(notes) + 30, height - 60
    peak = max([1, *counts])
    n = max(len(counts), 1)
    slot = (right - left) / n
    every = max(1, int(np.ceil(n * 70 / (right - left))))
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        x0, x1 = left + i * slot + 2, left + (i + 1) * slot - 2
        y = bottom - count / peak * (bottom - top)
        draw.rectangle([x0, y, max(x0 + 1, x1), bottom], fill=BAR)
        if i % every == 0:
            draw.text(((x0 + x1) / 2, y - 2), str(count), fill=INK, font=font, anchor="mb")
            draw.text(((x0 + x1) / 2, bottom + 8), label, fill=INK, font=font, anchor="mt")
    draw.line([left, bottom, right, bottom], fill=INK, width=2)
    draw.text((left, 10), title, fill=INK, font=title_font)
    for i, note in enumerate(notes):
        draw.text((left, 40 + 22 * i), note, fill=INK, font=font)
    return to_image_tensor(image)
