"""Labelled PIL image sheets returned to ComfyUI as IMAGE tensors ``(1, H, W, 3)`` in [0, 1].

The image grid, text panels and tiling of charts into one sheet, plus the
run colours that charts and sheets share. Charts themselves are drawn with
matplotlib in ``figures.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size default font only
        return ImageFont.load_default()


def to_image_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> ComfyUI IMAGE ``(1, H, W, 3)`` float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


# -- sample sheets (issue 6) ---------------------------------------------------

RUN_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233))
"""One colour per overlaid run (Okabe-Ito, readable for colour-blind users)."""

LETTERBOX = (225, 225, 225)
"""Fill around an image that does not have its grid cell's aspect ratio."""


def run_colour(index: int) -> tuple[int, int, int]:
    """Colour of the ``index``-th run (0-based), repeating after six."""
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels; words longer than a line are split."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            while draw.textlength(word, font=font) > width and len(word) > 1:
                cut = max(1, next((k for k in range(len(word), 0, -1) if draw.textlength(word[:k], font=font) <= width), 1))
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _clip_lines(draw: ImageDraw.ImageDraw, lines: list[str], font, width: float, max_lines: int) -> list[str]:
    """The first ``max_lines`` of ``lines``; the last kept one ends in an ellipsis when some are cut."""
    if len(lines) <= max_lines:
        return lines
    kept = lines[: max(max_lines, 1)]
    last = kept[-1]
    while last and draw.textlength(last + "…", font=font) > width:
        last = last[:-1]
    kept[-1] = last + "…"
    return kept


def text_panel(title: str, lines: list[str], size: tuple[int, int] = (768, 512)) -> torch.Tensor:
    """A page of monospaced-looking text lines under a title, as IMAGE ``(1, H, W, 3)``; lines that do not fit are cut."""
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(16)
    draw.text((20, 10), title, fill=INK, font=_font(22))
    wrapped = [w for line in lines for w in _wrap(draw, line, font, size[0] - 40)]
    fits = max(1, (size[1] - 60) // 22)
    for i, line in enumerate(_clip_lines(draw, wrapped, font, size[0] - 40, fits)):
        draw.text((20, 48 + 22 * i), line, fill=INK, font=font)
    return to_image_tensor(image)


def sheet(images: list[torch.Tensor], columns: int = 2) -> torch.Tensor:
    """Tile IMAGE tensors ``(1, H_i, W_i, 3)`` row by row, ``columns`` wide, on the background colour.

    Each tile takes the largest tile's size; smaller ones sit top-left. Returns ``(1, H, W, 3)``.
    """
    th = max(int(im.shape[1]) for im in images)
    tw = max(int(im.shape[2]) for im in images)
    rows = -(-len(images) // columns)
    out = torch.ones(1, rows * th, columns * tw, 3, dtype=torch.float32) * torch.tensor(BACKGROUND, dtype=torch.float32) / 255.0
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        out[:, r * th : r * th + im.shape[1], c * tw : c * tw + im.shape[2]] = im[..., :3]
    return out


@dataclass(frozen=True)
class GridLayout:
    """Pixel layout of an image grid; every cell is ``cell = (w, h)``.

    ``origin = (x, y)`` is the top-left of cell (row 0, column 0); cell
    ``(r, c)`` starts at ``origin + (c * (w + GAP), r * (h + GAP))``.
    """

    size: tuple[int, int]
    cell: tuple[int, int]
    origin: tuple[int, int]
    title_lines: tuple[str, ...]
    header_lines: tuple[tuple[str, ...], ...]
    row_label_width: int
    row_lines: tuple[tuple[str, ...], ...]

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of a cell, end exclusive."""
        (w, h), (x, y) = self.cell, self.origin
        x0, y0 = x + column * (w + GRID_GAP), y + row * (h + GRID_GAP)
        return x0, y0, x0 + w, y0 + h


GRID_GAP, GRID_MARGIN, GRID_LINE, GRID_TITLE_LINE = 8, 16, 20, 30
GRID_MAX_HEADER_LINES = 3


def fit_size(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """Largest ``(w, h)`` with the aspect of ``width x height`` that fits ``box_w x box_h`` (each >= 1)."""
    scale = min(box_w / width, box_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def grid_layout(
    rows: int, columns: int, first_size: tuple[int, int], *, cell_size: int, column_labels=(), row_labels=(), title: str = ""
) -> GridLayout:
    """Where everything of :func:`image_grid` goes.

    The cell has the aspect of the first column's images (``first_size =
    (W, H)``) with its long side ``cell_size``. Column labels wrap to the cell
    width (at most three lines), row labels to a side column as wide as the
    cell (140-320 px) and as many lines as fit the cell height.
    """
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font, title_font = _font(16), _font(24)
    cw, ch = fit_size(*first_size, cell_size, cell_size)
    row_w = min(max(cw, 140), 320) if row_labels else 0
    grid_w = columns * cw + (columns - 1) * GRID_GAP
    width = 2 * GRID_MARGIN + (row_w + GRID_GAP if row_w else 0) + grid_w
    title_lines = tuple(_wrap(draw, title, title_font, width - 2 * GRID_MARGIN)) if title.strip() else ()
    header = tuple(tuple(_clip_lines(draw, _wrap(draw, s, font, cw - 4), font, cw - 4, GRID_MAX_HEADER_LINES)) for s in column_labels)
    header_h = max([len(h) for h in header] + [0]) * GRID_LINE
    fits = max(1, (ch - 4) // GRID_LINE)
    row_lines = tuple(tuple(_clip_lines(draw, _wrap(draw, s, font, row_w - 8), font, row_w - 8, fits)) for s in row_labels)
    x0 = GRID_MARGIN + (row_w + GRID_GAP if row_w else 0)
    y0 = GRID_MARGIN + len(title_lines) * GRID_TITLE_LINE + (GRID_GAP if title_lines else 0) + header_h + (GRID_GAP if header_h else 0)
    height = y0 + rows * ch + (rows - 1) * GRID_GAP + GRID_MARGIN
    return GridLayout((width, height), (cw, ch), (x0, y0), title_lines, header, row_w, row_lines)


def image_grid(
    columns: list[torch.Tensor], *, column_labels=(), row_labels=(), title: str = "", cell_size: int = 256
) -> torch.Tensor:
    """Labelled sheet of IMAGE batches: ``columns[c]`` is ``(B, H_c, W_c, C)``, row ``r`` its image ``r``.

    All columns must share B (the caller checks and names the input). Each
    image is resized keeping its aspect to fit the cell and letterboxed.
    ``column_labels`` is empty or one per column, ``row_labels`` empty or one
    per row. Returns ``(1, H, W, 3)`` float32 in [0, 1].
    """
    rows = int(columns[0].shape[0])
    first = columns[0]
    layout = grid_layout(rows, len(columns), (int(first.shape[2]), int(first.shape[1])), cell_size=cell_size,
                         column_labels=column_labels, row_labels=row_labels, title=title)
    image = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, title_font = _font(16), _font(24)
    for i, line in enumerate(layout.title_lines):
        draw.text((layout.size[0] / 2, GRID_MARGIN + GRID_TITLE_LINE * i), line, fill=INK, font=title_font, anchor="mt")
    (cw, ch), oy = layout.cell, layout.origin[1]
    header_h = max([len(h) for h in layout.header_lines] + [0]) * GRID_LINE
    for c, lines in enumerate(layout.header_lines):
        x0, _, x1, _ = layout.cell_box(0, c)
        top = oy - GRID_GAP - header_h + (header_h - GRID_LINE * len(lines))
        for i, line in enumerate(lines):
            draw.text(((x0 + x1) / 2, top + GRID_LINE * i), line, fill=INK, font=font, anchor="mt")
    for r, lines in enumerate(layout.row_lines):
        _, y0, _, y1 = layout.cell_box(r, 0)
        top = (y0 + y1) / 2 - GRID_LINE * len(lines) / 2
        for i, line in enumerate(lines):
            draw.text((GRID_MARGIN, top + GRID_LINE * i), line, fill=INK, font=font)
    for c, batch in enumerate(columns):
        pixels = (batch.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        for r in range(rows):
            picture = Image.fromarray(pixels[r, ..., :3])
            w, h = fit_size(picture.width, picture.height, cw, ch)
            x0, y0, x1, y1 = layout.cell_box(r, c)
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=LETTERBOX)
            image.paste(picture.resize((w, h), Image.Resampling.LANCZOS), (x0 + (cw - w) // 2, y0 + (ch - h) // 2))
    return to_image_tensor(image)
