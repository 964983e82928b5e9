"""Draw :mod:`trainer_core.figures` charts with matplotlib as ComfyUI IMAGE tensors ``(1, H, W, 3)`` in [0, 1].

Only ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no display
and no global state (rcParams untouched), so server threads may draw at once.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..trainer_core.figures import Bars, Chart, Colour
from .charts import INK, run_colour

SIZE = (768, 512)
"""Width and height in pixels of every chart."""

DPI = 100
ROLES = {"ink": INK, "bar": (70, 110, 180), "mark": (200, 60, 40)}
"""RGB of the colour roles of :data:`trainer_core.figures.Colour`."""

LINE_STYLES = {
    "bold": {"linewidth": 2.2, "zorder": 3},
    "faint": {"linewidth": 0.8, "alpha": 0.35, "zorder": 2},
    "dashed": {"linewidth": 2.2, "linestyle": (0, (5, 3)), "zorder": 3},
}
NOTE_PT, NOTE_CHAR_PX = 9, 7.0
"""Notes are set in 9 pt and wrapped at about 7 px per character (a little wider than DejaVu Sans' mean)."""
LEGEND_COLUMNS = 3


def colour(c: Colour) -> tuple[float, float, float]:
    """A run index or role name -> matplotlib RGB in [0, 1]."""
    rgb = run_colour(c) if isinstance(c, int) else ROLES[c]
    return tuple(v / 255.0 for v in rgb)


def plain(text: str) -> str:
    """``text`` shown as written: matplotlib would read a pair of ``$`` (in a run label or file name) as maths."""
    return text.replace("$", r"\$")


def draw(chart: Chart, size: tuple[int, int] = SIZE) -> Figure:
    """The chart as a matplotlib Figure of ``size`` pixels: title, wrapped notes, one axes, legend under it."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained", facecolor="white")
    ax = fig.add_subplot()
    for line in chart.lines:
        ax.plot(line.x, line.y, color=colour(line.colour), label=plain(line.label) or None, **LINE_STYLES[line.style])
    for h in chart.hists:
        if h.fill:
            ax.stairs(h.heights, h.edges, fill=True, color=colour(h.colour), alpha=h.fill, linewidth=0)
        if h.outline:
            ax.stairs(h.heights, h.edges, color=colour(h.colour), linewidth=2, label=plain(h.label) or None)
    for i, m in enumerate(chart.marks):
        ax.axvline(m.x, color=colour(m.colour), linewidth=1.8, linestyle=(0, (5, 3)) if m.dashed else "-", zorder=4)
        if m.label:
            ax.text(m.x, 0.97 - 0.06 * i, f" {plain(m.label)}", color=colour(m.colour), transform=ax.get_xaxis_transform(), va="top")
    if chart.bars is not None:
        _bars(ax, chart.bars, size[0])
    if chart.log_y:
        ax.set_yscale("log")
    if chart.x_limits is not None:
        ax.set_xlim(*chart.x_limits)
    if chart.y_limits is not None:
        ax.set_ylim(*chart.y_limits)
    ax.set_xlabel(plain(chart.xlabel))
    ax.set_ylabel(plain(chart.ylabel))
    ax.grid(True, axis="y" if chart.bars is not None else "both", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    width = max(20, int((size[0] - 90) / NOTE_CHAR_PX))  # the notes start at the axes, right of the y labels
    ax.set_title(plain("\n".join(textwrap.fill(note, width) for note in chart.notes)), loc="left", fontsize=NOTE_PT)
    fig.suptitle(plain(chart.title), x=0.01, ha="left", fontsize=14)
    _legend(fig, ax, chart)
    return fig


def _bars(ax, bars: Bars, width_px: int) -> None:
    """Bars with their counts on top; labels thinned to one per ~70 px."""
    if not len(bars.labels):
        return
    xs = np.arange(len(bars.labels))
    every = max(1, math.ceil(len(xs) * 70 / max(width_px - 80, 1)))
    drawn = ax.bar(xs, bars.heights, width=0.9, color=colour("bar"))
    ax.bar_label(drawn, labels=[str(int(h)) if i % every == 0 else "" for i, h in enumerate(bars.heights)], fontsize=9)
    ax.set_xticks(xs[::every], [plain(bars.labels[i]) for i in xs[::every]])
    ax.margins(y=0.1)


def _legend(fig: Figure, ax, chart: Chart) -> None:
    """Labelled series, then the chart's extra entries, under the axes in rows of three."""
    handles, labels = ax.get_legend_handles_labels()
    for label, c, style in chart.legend:
        handles.append(Line2D([], [], color=colour(c), **{k: v for k, v in LINE_STYLES[style].items() if k != "zorder"}))
        labels.append(plain(label))
    if handles:
        ncols = min(len(handles), LEGEND_COLUMNS)
        order = [k for j in range(ncols) for k in range(j, len(handles), ncols)]  # matplotlib fills columns first: read rows
        fig.legend([handles[k] for k in order], [labels[k] for k in order], loc="outside lower center", ncols=ncols, frameon=False)


def to_tensor(fig: Figure) -> torch.Tensor:
    """Render ``fig`` with Agg: IMAGE ``(1, H, W, 3)`` float32 in [0, 1]."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].astype(np.float32) / 255.0)[None]


def render(chart: Chart, size: tuple[int, int] = SIZE) -> torch.Tensor:
    """:func:`draw` then :func:`to_tensor`."""
    return to_tensor(draw(chart, size))
