"""Training Plots and Image Grid nodes: the U1 report's Figures 1-5 and labelled sample sheets."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..trainer_core import plots, validation
from ..trainer_core.errors import ConfigError
from ..trainer_core.figures import CURVES, summary_lines, training_charts, validation_chart
from ..trainer_core.logs import TrainingLog
from . import charts, figures
from .trainer import Log_
from .types import CATEGORY, PREFIX

logger = logging.getLogger(__name__)

MAX_RUNS = 6
"""Logs (and image columns) a node takes: ``log`` / ``images_1`` plus five optional ones."""

OUTPUTS = (*CURVES, "t_histogram", "routes", "sheet", "validation")
"""The Training Plots node's outputs, in order."""


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


def render(runs: list[tuple[str, plots.StepSeries]], window: int, validations: list[validation.ValidationSeries | None] | None = None) -> dict[str, torch.Tensor]:
    """Every chart of :class:`TrainingPlots` for ``(label, series)`` runs; IMAGE ``(1, H, W, 3)`` each, keyed by :data:`OUTPUTS`.

    The charts' data come from :func:`trainer_core.figures.training_charts`;
    ``sheet`` tiles the five with a per-run summary. ``validations``: each run's
    validation series (or None), drawn by :func:`trainer_core.figures.validation_chart`.
    """
    out = {name: figures.render(chart) for name, chart in training_charts(runs, window).items()}
    summary = charts.text_panel("Runs", summary_lines(runs, window))
    out["sheet"] = charts.sheet([*out.values(), summary])
    out["validation"] = figures.render(validation_chart([(label, v) for (label, _), v in zip(runs, validations or [None] * len(runs), strict=True)]))
    return out


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
            description="The U1 ablation report's training figures from one or several training logs: x0-MSE, active loss and v-MSE with a moving average, the sampled t histogram and condition-dropout routing counts, runs overlaid with a legend; and the validation loss per sigma band of runs trained with a Validation node.",
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
                io.Image.Output(display_name="validation", tooltip="Validation x0-MSE vs step, one curve per sigma band, for runs trained with a Validation node (a note when none was)."),
            ],
        )

    @classmethod
    def execute(cls, log: TrainingLog, window: int = 121, labels: str = "", **more) -> io.NodeOutput:
        logs = [value for _, value in _connected("log", log, more, "log_")]
        names = run_labels(labels or "", [entry.label for entry in logs])
        runs, validations = [], []
        for name, entry in zip(names, logs, strict=True):
            try:
                runs.append((name, plots.aggregate_steps(entry.records())))
                validations.append(validation.series(entry.validation_records()))
            except ConfigError as e:
                raise ConfigError(f"log {name!r} ({entry.log_path})", e.value, f"{e.field}: {e.problem}") from e
        logger.info("plotting %d run(s), window %d", len(runs), window)
        out = render(runs, window, validations)
        return io.NodeOutput(*(out[k] for k in OUTPUTS))



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
