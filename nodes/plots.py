"""Training Plots and Image Grid nodes: the U1 report's Figures 1-5 and labelled sample sheets."""

from __future__ import annotations

import logging

import numpy as np
import torch
from comfy_api.latest import io

from ..trainer_core import plots
from ..trainer_core.errors import ConfigError
from ..trainer_core.logs import TrainingLog
from . import charts
from .trainer import Log_
from .types import CATEGORY, PREFIX

logger = logging.getLogger(__name__)

MAX_RUNS = 6
"""Logs (and image columns) a node takes: ``log`` / ``images_1`` plus five optional ones."""

CURVES = {
    "x0_mse": ("x0-MSE (report Fig. 1)", "x0-MSE", "The one loss every run computes the same way: compare runs on this.", False),
    "loss": ("Active loss (report Fig. 2)", "loss", "The loss each run trains on; its units differ between loss types, so compare trends, not levels.", False),
    "v_mse": ("v-MSE (report Fig. 3)", "v-MSE (log scale)", "Velocity error = x0 error / sigma^2 spikes as t -> 1, hence the log axis; spikes above the 99.5th percentile run along the top.", True),
}
"""Metric -> (title, y label, note, log y axis) of its line chart, in output order."""

T_BINS = 50


def split_lines(text: str) -> list[str]:
    """One label per line; blank lines around the text are dropped, blank lines inside it kept."""
    return [line.strip() for line in text.strip("\n").split("\n")] if text.strip() else []


def run_labels(text: str, defaults: list[str]) -> list[str]:
    """Labels for connected runs: one line per run, a blank line keeping that run's own label."""
    lines = split_lines(text)
    if not lines:
        return defaults
    if len(lines) != len(defaults):
        raise ConfigError("labels", lines, f"give one line per connected log ({len(defaults)}), or leave it empty for the logs' own labels")
    return [line or default for line, default in zip(lines, defaults, strict=True)]


def render(runs: list[tuple[str, plots.StepSeries]], window: int) -> dict[str, torch.Tensor]:
    """Every chart of :class:`TrainingPlots` for ``(label, series)`` runs; IMAGE ``(1, H, W, 3)`` each.

    Keys: the :data:`CURVES` metrics, ``t_histogram``, ``routes`` and ``sheet``.
    """
    colours = [charts.run_colour(i) for i in range(len(runs))]
    out = {}
    for name, (title, ylabel, note, log_y) in CURVES.items():
        curves = [charts.Curve(label, colour, s.steps, s.smoothed(name, window), raw=s.metrics[name]) for (label, s), colour in zip(runs, colours, strict=True)]
        out[name] = charts.line_chart(curves, title=title, ylabel=ylabel, notes=(f"Faint: per step. Bold: {window}-step trailing moving average. {note}",), log_y=log_y)
    hists = []
    for (label, s), colour in zip(runs, colours, strict=True):
        shares, edges = plots.histogram_shares(s.t, T_BINS)
        hists.append((label, colour, shares, float(s.t.mean())))
    out["t_histogram"] = charts.multi_histogram(
        hists, edges, title="Sampled t (report Fig. 4)", xlabel="t = 1 - sigma (1 = clean)",
        notes=(f"Share of a run's samples per bin ({T_BINS} bins); dashed: the run's mean t.",),
    )
    out["routes"] = _routes_chart(runs, colours)
    out["sheet"] = charts.sheet([*(out[k] for k in (*CURVES, "t_histogram", "routes")), _summary(runs, window)])
    return out


def _routes_chart(runs, colours) -> torch.Tensor:
    curves = []
    for (label, s), colour in zip(runs, colours, strict=True):
        cond, uncond = s.cumulative_routes()
        share = uncond[-1] / max(int(cond[-1] + uncond[-1]), 1)
        curves.append(charts.Curve(f"{label}: {100 * share:.1f}% uncond", colour, s.steps, cond))
        curves.append(charts.Curve(label, colour, s.steps, uncond, dashed=True, in_legend=False))
    return charts.line_chart(
        curves, title="Condition-dropout routing (report Fig. 5)", ylabel="samples so far",
        notes=("Cumulative samples per route. Solid: cond (caption). Dashed: uncond (drop_text + drop_both, empty prompt).",),
        extra_legend=(("cond", charts.INK, False), ("uncond", charts.INK, True)),
    )


def _summary(runs, window: int) -> torch.Tensor:
    lines = []
    for label, s in runs:
        cond, uncond = s.cumulative_routes()
        last = {name: float(s.smoothed(name, window)[-1]) for name in CURVES}
        lines.append(f"{label}: {int(s.steps[-1])} steps, {len(s.t)} samples")
        lines.append(
            f"- last {window}-step mean: x0-MSE {last['x0_mse']:.4g}, loss {last['loss']:.4g}, v-MSE {last['v_mse']:.4g}; "
            f"mean t {float(np.mean(s.t)):.3f}; uncond {100 * uncond[-1] / max(int(cond[-1] + uncond[-1]), 1):.1f}%"
        )
    return charts.text_panel("Runs", lines)


def _connected(first_name: str, first, rest: dict, prefix: str) -> list[tuple[str, object]]:
    """``(input name, value)`` of the required input and every connected optional ``{prefix}2..6``, in order."""
    named = [(first_name, first)]
    named += [(f"{prefix}{i}", rest.get(f"{prefix}{i}")) for i in range(2, MAX_RUNS + 1)]
    return [(name, value) for name, value in named if value is not None]


class TrainingPlots(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        logs = [Log_.Input(f"log_{i}", optional=True, tooltip=f"Training log of run {i}, overlaid on the first in its own colour.") for i in range(2, MAX_RUNS + 1)]
        return io.Schema(
            node_id=f"{PREFIX}TrainingPlots",
            display_name="Training Plots (FlowLoRA)",
            category=CATEGORY,
            description="The U1 ablation report's training figures from one or several training logs: x0-MSE, active loss and v-MSE with a moving average, the sampled t histogram and condition-dropout routing counts, runs overlaid with a legend.",
            inputs=[
                Log_.Input("log", tooltip="Training log from a LoRA Trainer node."),
                *logs,
                io.Int.Input("window", default=121, min=1, max=100_000, tooltip="Moving-average window in optimizer steps (the report uses 121). The first steps average what exists so far."),
                io.String.Input("labels", multiline=True, default="", optional=True, tooltip="One legend label per connected log, in input order; empty (or a blank line) uses the log's own label (its LoRA file name)."),
            ],
            outputs=[
                *(io.Image.Output(display_name=name, tooltip=title) for name, (title, *_) in CURVES.items()),
                io.Image.Output(display_name="t_histogram", tooltip="Histogram of every sampled t = 1 - sigma per run, with its mean (report Fig. 4)."),
                io.Image.Output(display_name="routes", tooltip="Cumulative cond vs unconditional samples per run over steps (report Fig. 5)."),
                io.Image.Output(display_name="sheet", tooltip="The five charts and a per-run summary on one image."),
            ],
        )

    @classmethod
    def execute(cls, log: TrainingLog, window: int = 121, labels: str = "", **more) -> io.NodeOutput:
        logs = [value for _, value in _connected("log", log, more, "log_")]
        names = run_labels(labels or "", [entry.label for entry in logs])
        runs = []
        for name, entry in zip(names, logs, strict=True):
            try:
                runs.append((name, plots.aggregate_steps(entry.records())))
            except ConfigError as e:
                raise ConfigError(f"log {name!r} ({entry.log_path})", e.value, f"{e.field}: {e.problem}") from e
        logger.info("plotting %d run(s), window %d", len(runs), window)
        out = render(runs, window)
        return io.NodeOutput(*(out[k] for k in (*CURVES, "t_histogram", "routes", "sheet")))



class ImageGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        more = [io.Image.Input(f"images_{i}", optional=True, tooltip=f"Column {i}: e.g. another run's samples for the same prompts, one image per row.") for i in range(2, MAX_RUNS + 1)]
        return io.Schema(
            node_id=f"{PREFIX}ImageGrid",
            display_name="Image Grid (FlowLoRA)",
            category=CATEGORY,
            description="A labelled sheet for before/after and run-by-run comparisons: each connected IMAGE batch is a column, its images the rows.",
            inputs=[
                io.Image.Input("images_1", tooltip="Column 1: e.g. samples before training, one image per row (prompt)."),
                *more,
                io.String.Input("column_labels", multiline=True, default="", tooltip="One label per connected images input, in order (e.g. before / after, or run names); empty for none."),
                io.String.Input("row_labels", multiline=True, default="", optional=True, tooltip="One label per row (e.g. the prompts), wrapped to fit; empty for none."),
                io.String.Input("title", default="", tooltip="Title over the sheet; empty for none."),
                io.Int.Input("cell_size", default=256, min=32, max=2048, tooltip="Long side of a cell in pixels. Cells take the aspect of images_1; each image is resized to fit, keeping its aspect, and letterboxed."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="The sheet as one image.")],
        )

    @classmethod
    def execute(cls, images_1: torch.Tensor, column_labels: str = "", row_labels: str = "", title: str = "", cell_size: int = 256, **more) -> io.NodeOutput:
        return io.NodeOutput(build_grid(_connected("images_1", images_1, more, "images_"), column_labels, row_labels or "", title, cell_size))


def build_grid(columns: list[tuple[str, torch.Tensor]], column_labels: str, row_labels: str, title: str, cell_size: int) -> torch.Tensor:
    """Check named IMAGE inputs ``(B, H, W, C)`` against each other and the labels, then draw the grid."""
    first_name, first = columns[0]
    for name, images in columns:
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ConfigError(name, tuple(images.shape), "must be an IMAGE batch (B, H, W, 3)")
        if images.shape[0] != first.shape[0]:
            raise ConfigError(name, f"{images.shape[0]} images", f"{first_name} has {first.shape[0]}; every column needs one image per row")
    cols, rows = split_lines(column_labels), split_lines(row_labels)
    if cols and len(cols) != len(columns):
        raise ConfigError("column_labels", cols, f"give one line per connected images input ({len(columns)}: {', '.join(n for n, _ in columns)}), or none")
    if rows and len(rows) != first.shape[0]:
        raise ConfigError("row_labels", f"{len(rows)} lines", f"give one line per row ({first.shape[0]} images per column), or none")
    return charts.image_grid([images for _, images in columns], column_labels=cols, row_labels=rows, title=title, cell_size=cell_size)
