"""What every chart shows, as data: series, axes and words, drawn elsewhere.

A :class:`Chart` holds the exact numbers to plot (``(S,)`` float arrays),
the y scale and limits, title and notes; ``nodes/figures.py`` draws it with
matplotlib. The builders here turn runs' :class:`~.plots.StepSeries` into the
U1 report's Figures 1-5, samples into a histogram and counts into a bar
chart, so tests compare the plotted series with the log's numbers, not
pixels. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import plots
from .errors import require

if TYPE_CHECKING:  # annotations only: this module stays free of torch
    from .validation import ValidationSeries

Colour = int | str
"""A run index (0-based: one palette colour per run) or a role: ``"ink"``, ``"bar"`` or ``"mark"``."""

STYLES = ("bold", "faint", "dashed")
"""Line styles: the moving average (bold), the per-step values under it (faint), a second series of a run (dashed)."""

CURVES = {
    "x0_mse": ("x0-MSE (report Fig. 1)", "x0-MSE", "The one loss every run computes the same way: compare runs on this.", False),
    "loss": ("Active loss (report Fig. 2)", "loss", "The loss each run trains on; its units differ between loss types, so compare trends, not levels.", False),
    "v_mse": ("v-MSE (report Fig. 3)", "v-MSE (log scale)", "Velocity error = x0 error / sigma^2 spikes as t -> 1, hence the log axis; spikes above the 99.5th percentile are cut off at the top.", True),
}
"""Metric -> (title, y label, note, log y axis) of its line chart, in output order."""

T_BINS = 50
"""Bins of the sampled-t histogram (report Fig. 4)."""


@dataclass(frozen=True)
class Line:
    """A curve: ``y`` over ``x``, both ``(S,)``; NaN in ``y`` breaks it. An empty ``label`` keeps it out of the legend."""

    label: str
    colour: Colour
    x: np.ndarray
    y: np.ndarray
    style: str = "bold"

    def __post_init__(self):
        require(self.style in STYLES, "line style", self.style, f"valid: {', '.join(STYLES)}")


@dataclass(frozen=True)
class Hist:
    """Histogram ``heights`` ``(B,)`` over ``edges`` ``(B + 1,)``: a step outline and/or a fill of opacity ``fill`` (0 = none)."""

    label: str
    colour: Colour
    edges: np.ndarray
    heights: np.ndarray
    fill: float = 0.0
    outline: bool = True


@dataclass(frozen=True)
class Mark:
    """A vertical line at ``x``; a non-empty ``label`` is written beside it."""

    label: str
    colour: Colour
    x: float
    dashed: bool = False


@dataclass(frozen=True)
class Bars:
    """Categorical bars: ``heights[i]`` (``(N,)``) over ``labels[i]``, each with its count on top."""

    labels: tuple[str, ...]
    heights: np.ndarray


@dataclass(frozen=True)
class Chart:
    """One figure. Limits of ``None`` leave the range to the drawing library.

    ``legend`` adds entries drawn in no series: ``(label, colour, style)``
    (e.g. what solid and dashed mean).
    """

    title: str
    xlabel: str = ""
    ylabel: str = ""
    notes: tuple[str, ...] = ()
    lines: tuple[Line, ...] = ()
    hists: tuple[Hist, ...] = ()
    marks: tuple[Mark, ...] = ()
    bars: Bars | None = None
    log_y: bool = False
    x_limits: tuple[float, float] | None = None
    y_limits: tuple[float, float] | None = None
    legend: tuple[tuple[str, Colour, str], ...] = ()

    def lines_in(self, style: str) -> list[Line]:
        """The chart's lines of ``style``, in drawing order."""
        return [line for line in self.lines if line.style == style]


def robust_limits(arrays: Sequence[np.ndarray], log: bool = False, pad: float = 0.04) -> tuple[float, float]:
    """Y limits over ``arrays`` up to their 99.5th percentile (:func:`.plots.robust_range`), padded by ``pad`` of the span.

    With ``log`` the range and padding are taken in log10 of the positive values.
    """
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            arrays = [np.log10(np.where(np.asarray(a, dtype=np.float64) > 0, a, np.nan)) for a in arrays]
    low, high = plots.robust_range(arrays)
    low, high = low - pad * (high - low), high + pad * (high - low)
    return (10.0**low, 10.0**high) if log else (low, high)


def step_limits(runs: Sequence[tuple[str, plots.StepSeries]]) -> tuple[float, float]:
    """First to last step over all runs (one step widened by 1 each way)."""
    low = min(int(s.steps[0]) for _, s in runs)
    high = max(int(s.steps[-1]) for _, s in runs)
    return (low - 1.0, high + 1.0) if high <= low else (float(low), float(high))


def metric_chart(runs: Sequence[tuple[str, plots.StepSeries]], name: str, window: int) -> Chart:
    """Report Fig. 1-3 for metric ``name``: per run a faint per-step line and its bold ``window``-step moving average."""
    title, ylabel, note, log_y = CURVES[name]
    faint = tuple(Line("", i, s.steps, s.metrics[name], "faint") for i, (_, s) in enumerate(runs))
    bold = tuple(Line(label, i, s.steps, s.smoothed(name, window)) for i, (label, s) in enumerate(runs))
    return Chart(
        title, "step", ylabel, (f"Faint: per step. Bold: {window}-step trailing moving average. {note}",),
        lines=faint + bold, log_y=log_y, x_limits=step_limits(runs), y_limits=robust_limits([line.y for line in faint + bold], log_y),
    )


def t_histogram_chart(runs: Sequence[tuple[str, plots.StepSeries]], bins: int = T_BINS) -> Chart:
    """Report Fig. 4: each run's share of sampled t per bin (percent) as an outline, its mean t as a dashed line."""
    hists, marks = [], []
    for i, (label, s) in enumerate(runs):
        shares, edges = plots.histogram_shares(s.t, bins)
        mean = float(s.t.mean()) if len(s.t) else float("nan")
        hists.append(Hist(f"{label}  (mean {mean:.3f})", i, edges, 100.0 * shares, fill=0.3 if len(runs) == 1 else 0.0))
        if np.isfinite(mean):
            marks.append(Mark("", i, mean, dashed=True))
    peak = max([float(h.heights.max()) for h in hists if len(h.heights)] + [1e-9])
    return Chart(
        "Sampled t (report Fig. 4)", "t = 1 - sigma (1 = clean)", "share of samples (%)",
        (f"Share of a run's samples per bin ({bins} bins); dashed: the run's mean t.",),
        hists=tuple(hists), marks=tuple(marks), x_limits=(0.0, 1.0), y_limits=(0.0, 1.08 * peak),
    )


def uncond_share(s: plots.StepSeries) -> float:
    """Fraction of a run's samples that trained on the unconditional prompt."""
    cond, uncond = s.cumulative_routes()
    return float(uncond[-1]) / max(int(cond[-1] + uncond[-1]), 1)


def routes_chart(runs: Sequence[tuple[str, plots.StepSeries]]) -> Chart:
    """Report Fig. 5: per run the cumulative cond samples (solid, labelled with the uncond share) and uncond samples (dashed)."""
    lines = []
    for i, (label, s) in enumerate(runs):
        cond, uncond = s.cumulative_routes()
        lines.append(Line(f"{label}: {100 * uncond_share(s):.1f}% uncond", i, s.steps, cond))
        lines.append(Line("", i, s.steps, uncond, "dashed"))
    return Chart(
        "Condition-dropout routing (report Fig. 5)", "step", "samples so far",
        ("Cumulative samples per route. Solid: cond (caption). Dashed: uncond (drop_text + drop_both, empty prompt).",),
        lines=tuple(lines), x_limits=step_limits(runs), legend=(("cond", "ink", "bold"), ("uncond", "ink", "dashed")),
    )


def training_charts(runs: Sequence[tuple[str, plots.StepSeries]], window: int) -> dict[str, Chart]:
    """The Training Plots node's figures for ``(label, series)`` runs: the :data:`CURVES` metrics, ``t_histogram``, ``routes``."""
    out = {name: metric_chart(runs, name, window) for name in CURVES}
    out["t_histogram"] = t_histogram_chart(runs)
    out["routes"] = routes_chart(runs)
    return out


RUN_STYLES = ("bold", "dashed", "faint")
"""Line style of each run in the validation chart (cycled), whose colours are the sigma bands."""


def validation_chart(runs: Sequence[tuple[str, ValidationSeries | None]]) -> Chart:
    """Validation x0-MSE over steps: one line per sigma band (its colour), one line style per run.

    ``runs``: ``(label, series)``, series None for a run without validation
    records. The plotted ``y`` of band ``j`` is ``series.x0_mse[:, j]`` exactly.
    """
    present = [(i, label, s) for i, (label, s) in enumerate(runs) if s is not None and len(s.steps)]
    if not present:
        return Chart("Validation loss", "step", "x0-MSE", ("No validation records: connect a Validation (FlowLoRA) node to the LoRA Trainer's validation input.",))
    lines, seen = [], set()
    for k, (_, _, s) in enumerate(present):
        for j, sigma in enumerate(s.sigmas):
            name = f"σ {sigma:g}"
            lines.append(Line(name if name not in seen else "", j, s.steps.astype(np.float64), s.x0_mse[:, j], RUN_STYLES[k % len(RUN_STYLES)]))
            seen.add(name)
    legend = tuple((label, "ink", RUN_STYLES[k % len(RUN_STYLES)]) for k, (_, label, _) in enumerate(present)) if len(present) > 1 else ()
    steps = [float(v) for _, _, s in present for v in s.steps]
    low, high = min(steps), max(steps)
    ys = [line.y for line in lines]
    title = "Validation loss" + (f": {present[0][1]}" if len(present) == 1 else "")
    return Chart(
        title, "step", "x0-MSE (log scale)",
        ("Held-out x0-MSE at fixed sigma and fixed noise, one colour per sigma band (sigma = 1 is pure noise)"
         + ("; one line style per run." if len(present) > 1 else "."),),
        lines=tuple(lines), log_y=True, x_limits=(low - 1.0, high + 1.0) if high <= low else (low, high),
        y_limits=robust_limits(ys, True), legend=legend,
    )


def summary_lines(runs: Sequence[tuple[str, plots.StepSeries]], window: int) -> list[str]:
    """Two text lines per run: steps and samples; last moving averages, mean t and uncond share."""
    lines = []
    for label, s in runs:
        last = {name: float(s.smoothed(name, window)[-1]) for name in CURVES}
        lines.append(f"{label}: {int(s.steps[-1])} steps, {len(s.t)} samples")
        lines.append(
            f"- last {window}-step mean: x0-MSE {last['x0_mse']:.4g}, loss {last['loss']:.4g}, v-MSE {last['v_mse']:.4g}; "
            f"mean t {float(np.mean(s.t)):.3f}; uncond {100 * uncond_share(s):.1f}%"
        )
    return lines


def histogram_chart(
    values: np.ndarray, *, bins: int = 50, value_range: tuple[float, float] = (0.0, 1.0), title: str = "", xlabel: str = "",
    notes: tuple[str, ...] = (), marks: dict[str, float] | None = None,
) -> Chart:
    """Counts of ``values`` (``(N,)``) in ``bins`` bins as filled bars; ``marks`` maps a label to an x drawn as a labelled line."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=int(bins), range=value_range)
    return Chart(
        title, xlabel, "count", notes, hists=(Hist("", "bar", edges, counts.astype(np.float64), fill=1.0, outline=False),),
        marks=tuple(Mark(label, "mark", float(x)) for label, x in (marks or {}).items()), x_limits=value_range,
    )


def bar_chart(labels: Sequence[str], counts: Sequence[int], *, title: str = "", notes: tuple[str, ...] = ()) -> Chart:
    """One bar per label with its count (e.g. samples per bucket)."""
    require(len(labels) == len(counts), "bar chart labels", len(labels), f"need one label per count ({len(counts)})")
    return Chart(title, notes=notes, bars=Bars(tuple(labels), np.asarray(counts, dtype=np.int64)))
