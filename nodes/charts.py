"""Small PIL charts returned to ComfyUI as IMAGE tensors ``(1, H, W, 3)`` in [0, 1]."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..trainer_core import plots

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
    top = min(top, bottom - 40)  # many note lines must not turn the plot area upside down

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


# -- training plots and sample sheets (issue 6) ---------------------------------

RUN_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233))
"""One colour per overlaid run (Okabe-Ito, readable for colour-blind users)."""

FAINT = 0.3
"""Raw curves are drawn in their run colour mixed this much into the background."""

LETTERBOX = (225, 225, 225)
"""Fill around an image that does not have its grid cell's aspect ratio."""


def run_colour(index: int) -> tuple[int, int, int]:
    """Colour of the ``index``-th run (0-based), repeating after six."""
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def faint(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """``colour`` washed towards the background, for raw curves under the bold average."""
    return tuple(round(FAINT * c + (1 - FAINT) * b) for c, b in zip(colour, BACKGROUND, strict=True))


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


def _format_tick(value: float, step: float) -> str:
    """Tick label with as many decimals as the tick spacing needs (scientific when tiny or huge)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(step) < 1e-3:
        return f"{value:.3g}"
    power = int(np.floor(np.log10(abs(step)) + 1e-9))
    quarter = np.isclose(abs(step) / 10.0**power, 2.5)
    return f"{value:.{max(0, -power + int(quarter))}f}"


def _polyline(draw: ImageDraw.ImageDraw, points: np.ndarray, colour, width: int, dashed: bool = False) -> None:
    """Draw ``(P, 2)`` pixel points, breaking the line at NaN rows; dashed draws 10 on, 6 off."""
    finite = np.isfinite(points).all(axis=1)
    breaks = np.flatnonzero(np.diff(finite.astype(np.int8)) != 0) + 1
    for run in np.split(np.arange(len(points)), breaks):
        if not len(run) or not finite[run[0]]:
            continue
        seg = points[run]
        if len(seg) == 1:
            x, y = seg[0]
            draw.ellipse([x - width, y - width, x + width, y + width], fill=colour)
        elif not dashed:
            draw.line([tuple(p) for p in seg.tolist()], fill=colour, width=width, joint="curve" if width > 1 else None)
        else:
            _dashes(draw, seg, colour, width)


def _dashes(draw: ImageDraw.ImageDraw, seg: np.ndarray, colour, width: int, on: float = 10.0, off: float = 6.0) -> None:
    lengths = np.hypot(*np.diff(seg, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    start = 0.0
    while start < arc[-1]:
        stop = min(start + on, arc[-1])
        inside = (arc > start) & (arc < stop)
        xs = np.concatenate([[np.interp(start, arc, seg[:, 0])], seg[inside, 0], [np.interp(stop, arc, seg[:, 0])]])
        ys = np.concatenate([[np.interp(start, arc, seg[:, 1])], seg[inside, 1], [np.interp(stop, arc, seg[:, 1])]])
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=width)
        start = stop + off


class _Frame:
    """A chart page: title, notes, a plot box with ticked axes and a legend under it."""

    def __init__(self, size, title, notes, legend, x_range, y_range, xlabel, ylabel, x_integer=False, log_y=False):
        self.log_y = log_y  # y_range is then in log10 units
        self.width, self.height = size
        self.image = Image.new("RGB", size, BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.title_font, self.font, self.small = _font(22), _font(16), _font(14)
        notes = [line for note in notes for line in _wrap(self.draw, note, self.small, self.width - 40)]
        self.legend_rows = self._legend_rows(legend)
        self.x_lo, self.x_hi = x_range
        self.y_lo, self.y_hi = y_range
        self.x_ticks = plots.nice_ticks(self.x_lo, self.x_hi, 7)
        self.y_ticks = plots.log_ticks(10**self.y_lo, 10**self.y_hi) if log_y else plots.nice_ticks(self.y_lo, self.y_hi, 6)
        self.x_step = float(self.x_ticks[1] - self.x_ticks[0]) if len(self.x_ticks) > 1 else 1.0
        self.y_step = float(self.y_ticks[1] - self.y_ticks[0]) if len(self.y_ticks) > 1 else 1.0
        if x_integer:
            self.x_step = max(self.x_step, 1.0)
        y_labels = [f"{v:g}" if log_y else _format_tick(v, self.y_step) for v in self.y_ticks]
        label_w = max([self.draw.textlength(s, font=self.small) for s in y_labels] + [10])
        self.left = int(label_w) + 22
        self.right = self.width - 24
        self.top = 40 + 18 * len(notes) + 30
        self.bottom = self.height - 58 - 24 * len(self.legend_rows)
        self.draw.text((20, 10), title, fill=INK, font=self.title_font)
        for i, note in enumerate(notes):
            self.draw.text((20, 40 + 18 * i), note, fill=INK, font=self.small)
        self.draw.text((self.left, self.top - 8), ylabel, fill=INK, font=self.small, anchor="lb")
        self._axes(y_labels, xlabel, x_integer)

    def _legend_rows(self, legend) -> list[list[tuple[str, tuple, bool]]]:
        rows, row, used = [], [], 0.0
        for label, colour, dashed in legend:
            w = 34 + self.draw.textlength(label, font=self.font) + 22
            if row and used + w > self.width - 40:
                rows.append(row)
                row, used = [], 0.0
            row.append((label, colour, dashed))
            used += w
        return rows + ([row] if row else [])

    def x_of(self, v):
        return self.left + (np.asarray(v, dtype=np.float64) - self.x_lo) / (self.x_hi - self.x_lo) * (self.right - self.left)

    def y_of(self, v):
        v = np.asarray(v, dtype=np.float64)
        if self.log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log10(np.where(v > 0, v, np.nan))
            v = np.nan_to_num(v, nan=self.y_lo)  # zero or negative: on the bottom edge
        v = np.clip(v, self.y_lo, self.y_hi)
        return self.bottom - (v - self.y_lo) / (self.y_hi - self.y_lo) * (self.bottom - self.top)

    def _axes(self, y_labels, xlabel, x_integer):
        d, grid = self.draw, (232, 232, 232)
        for v, s in zip(self.y_ticks, y_labels, strict=True):
            y = float(self.y_of(v))
            d.line([self.left, y, self.right, y], fill=grid)
            d.line([self.left - 6, y, self.left, y], fill=INK)
            d.text((self.left - 9, y), s, fill=INK, font=self.small, anchor="rm")
        for v in self.x_ticks:
            x = float(self.x_of(v))
            d.line([x, self.bottom, x, self.bottom + 6], fill=INK)
            label = f"{round(v)}" if x_integer else _format_tick(v, self.x_step)
            d.text((x, self.bottom + 9), label, fill=INK, font=self.small, anchor="mt")
        d.line([self.left, self.bottom, self.right, self.bottom], fill=INK, width=2)
        d.line([self.left, self.top, self.left, self.bottom], fill=INK, width=2)
        d.text(((self.left + self.right) / 2, self.bottom + 30), xlabel, fill=INK, font=self.font, anchor="mt")

    def legend(self):
        y = self.height - 14 - 24 * len(self.legend_rows)
        for row in self.legend_rows:
            x = 20.0
            for label, colour, dashed in row:
                if dashed:
                    _dashes(self.draw, np.array([[x, y + 8], [x + 28, y + 8]]), colour, 4, on=8, off=4)
                else:
                    self.draw.line([x, y + 8, x + 28, y + 8], fill=colour, width=5)
                self.draw.text((x + 34, y + 8), label, fill=INK, font=self.font, anchor="lm")
                x += 34 + self.draw.textlength(label, font=self.font) + 22
            y += 24

    def tensor(self) -> torch.Tensor:
        self.legend()
        return to_image_tensor(self.image)


@dataclass(frozen=True)
class Curve:
    """One run's line: ``x`` and ``y`` are ``(S,)``; ``y`` is drawn bold, ``raw`` (``(S,)``) faint under it."""

    label: str
    colour: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    raw: np.ndarray | None = None
    dashed: bool = False
    in_legend: bool = True


def line_chart(
    curves: list[Curve],
    *,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "",
    notes: tuple[str, ...] = (),
    extra_legend: tuple[tuple[str, tuple[int, int, int], bool], ...] = (),
    log_y: bool = False,
    size: tuple[int, int] = (768, 512),
) -> torch.Tensor:
    """Overlaid curves with ticked axes and a legend under the plot, as IMAGE ``(1, H, W, 3)``.

    ``log_y`` draws the y axis in powers of ten (values <= 0 sit on the bottom edge).

    Every curve's ``raw`` is drawn faint first, then every ``y`` bold on top.
    The y axis spans the 99.5th percentile of the raw values (spikes above it
    are drawn flat along the top edge) so rare spikes do not flatten the averages.
    """
    nonempty = [c for c in curves if len(c.x)]
    xs = np.concatenate([c.x for c in nonempty]) if nonempty else np.array([0.0, 1.0])
    x_lo, x_hi = float(np.min(xs)), float(np.max(xs))
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    ys = [c.y for c in curves] + [c.raw for c in curves if c.raw is not None]
    if log_y:
        with np.errstate(divide="ignore", invalid="ignore"):
            ys = [np.log10(np.where(np.asarray(y, dtype=np.float64) > 0, y, np.nan)) for y in ys]
    y_lo, y_hi = plots.robust_range(ys)
    pad = 0.04 * (y_hi - y_lo)
    legend = [(c.label, c.colour, c.dashed) for c in curves if c.in_legend] + list(extra_legend)
    integer_x = bool(np.all(np.mod(xs, 1) == 0))
    frame = _Frame(size, title, notes, legend, (x_lo, x_hi), (y_lo - pad, y_hi + pad), xlabel, ylabel, x_integer=integer_x, log_y=log_y)
    for c in curves:
        if c.raw is not None:
            _polyline(frame.draw, _points(frame, c.x, c.raw), faint(c.colour), 1)
    for c in curves:
        _polyline(frame.draw, _points(frame, c.x, c.y), c.colour, 3, dashed=c.dashed)
    return frame.tensor()


def _points(frame: _Frame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    py = np.where(np.isfinite(y), frame.y_of(np.nan_to_num(y)), np.nan)
    return np.stack([frame.x_of(x), py], axis=1)


def multi_histogram(
    runs: list[tuple[str, tuple[int, int, int], np.ndarray, float]],
    edges: np.ndarray,
    *,
    title: str = "",
    xlabel: str = "",
    notes: tuple[str, ...] = (),
    size: tuple[int, int] = (768, 512),
) -> torch.Tensor:
    """Overlaid histograms as step outlines, as IMAGE ``(1, H, W, 3)``.

    ``runs`` holds ``(label, colour, shares (bins,), mean)``; shares are
    fractions of the run's samples (drawn in percent) and ``mean`` is drawn as
    a dashed vertical line in the run's colour and written in the legend.
    """
    edges = np.asarray(edges, dtype=np.float64)
    peak = max([float(np.max(s)) * 100 for _, _, s, _ in runs if len(s)] + [1e-9])
    legend = [(f"{label}  (mean {mean:.3f})", colour, False) for label, colour, _, mean in runs]
    frame = _Frame(size, title, notes, legend, (float(edges[0]), float(edges[-1])), (0.0, peak * 1.08), xlabel, "share of samples (%)")
    if len(runs) == 1:
        _, colour, shares, _ = runs[0]
        for share, e0, e1 in zip(shares, edges[:-1], edges[1:], strict=True):
            frame.draw.rectangle([float(frame.x_of(e0)) + 1, float(frame.y_of(share * 100)), float(frame.x_of(e1)) - 1, frame.bottom], fill=faint(colour))
    for _, colour, shares, mean in runs:
        xs = np.repeat(edges, 2)[1:-1]
        ys = np.repeat(np.asarray(shares, dtype=np.float64) * 100, 2)
        pts = np.stack([frame.x_of(xs), frame.y_of(ys)], axis=1)
        pts = np.concatenate([[[frame.x_of(edges[0]), frame.bottom]], pts, [[frame.x_of(edges[-1]), frame.bottom]]])
        _polyline(frame.draw, pts, colour, 2)
        if np.isfinite(mean):
            x = float(frame.x_of(mean))
            _dashes(frame.draw, np.array([[x, frame.top], [x, frame.bottom]]), colour, 2)
    return frame.tensor()


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
