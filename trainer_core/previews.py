"""Training previews, the part free of ComfyUI: settings, schedule, file names, PNG files.

A run with previews samples fixed prompts with a fixed seed at the step it
starts from (0, or the step it resumed at), every ``every_n_steps`` updates and
at its last step. Each image is written to
``<folder>/step_000500_p0.png`` (step, then the prompt's index), atomically,
with the settings that made it as PNG text chunks (``flowlora.step``,
``flowlora.prompt_index``, ``flowlora.seed``, ``flowlora.sampler``,
``flowlora.scheduler``, ``flowlora.steps``, ``flowlora.cfg``, ...).

Few-step drift (``drift_steps`` > 0): each preview prompt is also sampled with
``drift_steps`` steps (same sampler, scheduler, cfg, seed), and :func:`drift`
measures how far the preview moves from that answer. It is written to the
preview's PNG text (``flowlora.drift``, ``flowlora.drift_steps``) and to
``<folder>/drift.jsonl``, one record per previewed step (:data:`DRIFT_FILE`).

Sampling itself is the host's (ComfyUI's KSampler, see ``nodes/preview.py``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import files, logs
from .errors import require

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"step_(\d{6,})_p(\d+)\.png")
"""Full-match pattern of a preview file's name; group 1 is the step, group 2 the prompt index."""
TEXT_PREFIX = "flowlora."
DRIFT_FILE = "drift.jsonl"
"""Per-run drift records in the previews folder: ``{"step", "steps", "drift_steps", "drift": [per prompt], "mean"}``."""


def interval(every_n_steps: int, every_percent: int, total: int) -> int:
    """Updates between two periodic events (previews, validation) of a run of ``total`` updates:
    ``every_n_steps`` when > 0, else ``every_percent`` of the run (at least 1), else 0 (none between start and end)."""
    if every_n_steps > 0:
        return every_n_steps
    return max(1, round(total * every_percent / 100)) if every_percent > 0 else 0


@dataclass(frozen=True)
class PreviewConfig:
    """How previews are sampled and when.

    ``sampler_name``/``scheduler``: names from the host's sampler and scheduler
    lists; ``steps``, ``cfg``, ``seed``: the sampler's; ``width``/``height``:
    image size in pixels; ``every_n_steps``: optimizer updates between
    previews; with ``every_n_steps`` 0, ``every_percent`` of the run's updates
    between previews (10: at 0%, 10%, ..., 100%; both 0: only at the start and
    at the end); ``drift_steps``: also
    sample each prompt with this many steps and report the preview's
    :func:`drift` from it (0: off).
    """

    sampler_name: str = "euler"
    scheduler: str = "simple"
    steps: int = 20
    cfg: float = 4.0
    seed: int = 0
    width: int = 1024
    height: int = 1024
    every_n_steps: int = 0
    drift_steps: int = 0
    every_percent: int = 10

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        require(isinstance(self.sampler_name, str) and bool(self.sampler_name), "sampler_name", self.sampler_name, "must name a sampler")
        require(isinstance(self.scheduler, str) and bool(self.scheduler), "scheduler", self.scheduler, "must name a scheduler")
        require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        require(math.isfinite(self.cfg) and self.cfg >= 0.0, "cfg", self.cfg, "must be a finite number >= 0")
        require(self.seed >= 0, "seed", self.seed, "must be >= 0")
        require(self.width >= 1, "width", self.width, "must be >= 1")
        require(self.height >= 1, "height", self.height, "must be >= 1")
        require(self.every_n_steps >= 0, "every_n_steps", self.every_n_steps, "must be >= 0 (0: every every_percent % of the run)")
        require(0 <= self.every_percent <= 100, "every_percent", self.every_percent, "must lie in [0, 100] (0 with every_n_steps 0: only at the start and at the end)")
        require(self.drift_steps >= 0, "drift_steps", self.drift_steps, "must be >= 0 (0: no drift measurement)")

    def interval(self, total: int) -> int:
        """Updates between previews of a run of ``total`` updates (0: none between the start and the end)."""
        return interval(self.every_n_steps, self.every_percent, total)

    def due(self, step: int, start: int, total: int) -> bool:
        """Whether a run that started at update ``start`` and ends at ``total`` previews after update ``step``."""
        every = self.interval(total)
        return step == start or step == total or (every > 0 and step % every == 0)

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, **asdict(self)}

    def png_text(self, step: int, prompt_index: int, **extra: str) -> dict[str, str]:
        """PNG text chunks of the preview of prompt ``prompt_index`` after update ``step``."""
        values = {
            "step": step, "prompt_index": prompt_index, "seed": self.seed, "sampler": self.sampler_name,
            "scheduler": self.scheduler, "steps": self.steps, "cfg": f"{self.cfg:g}",
            **({"drift_steps": self.drift_steps} if self.drift_steps else {}), **extra,
        }
        return {TEXT_PREFIX + k: str(v) for k, v in values.items()}


def drift(few: torch.Tensor, many: torch.Tensor) -> float:
    """Mean squared difference between a few-step sample and the many-step sample of the same prompt and noise.

    ``few``, ``many``: IMAGE tensors ``(B, H, W, C)`` of the same shape, values as
    ComfyUI's VAE Decode returns them ([0, 1]; the same units as the ``drift``
    column of ``scripts/tinyworld/ablation.py``, a quarter of the value in
    [-1, 1] pixel units). 0 when the two agree; computed in float64.
    """
    if few.shape != many.shape:
        raise ValueError(f"drift: the few-step images {tuple(few.shape)} and the many-step images {tuple(many.shape)} differ in shape")
    return float((few.detach().double().cpu() - many.detach().double().cpu()).square().mean())


def drift_record(step: int, steps: int, drift_steps: int, values: list[float]) -> dict:
    """One line of :data:`DRIFT_FILE`: the previewed ``step``, both step counts, drift per prompt and their mean."""
    return {"step": step, "steps": steps, "drift_steps": drift_steps, "drift": list(values), "mean": float(np.mean(values))}


def append_drift(folder: str | os.PathLike, record: Mapping) -> None:
    """Append ``record`` to ``<folder>/drift.jsonl`` (flushed line by line)."""
    path = Path(folder) / DRIFT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        files.append_jsonl(f, record)


def read_drift(folder: str | os.PathLike) -> list[dict]:
    """The records of ``<folder>/drift.jsonl`` ([] when there is none; a torn last line is skipped)."""
    path = Path(folder) / DRIFT_FILE
    return logs.read_records(str(path)) if path.is_file() else []


def trim_drift(folder: str | os.PathLike, step: int) -> None:
    """Keep only the drift records before ``step`` (a run starting or resuming at ``step`` measures it again), atomically."""
    path = Path(folder) / DRIFT_FILE
    if not path.is_file():
        return
    kept = [r for r in read_drift(folder) if r.get("step", 0) < step]
    with files.atomic_open(path, "w") as f:
        for record in kept:
            files.append_jsonl(f, record)


def file_name(step: int, prompt_index: int) -> str:
    """``step_000500_p0.png``."""
    return f"step_{step:06d}_p{prompt_index}.png"


def to_pixels(image) -> np.ndarray:
    """IMAGE ``(H, W, 3)`` floats in [0, 1] (tensor or array) -> uint8 ``(H, W, 3)``, rounded as ComfyUI's SaveImage does
    (``clip(255 * x, 0, 255)`` then truncation)."""
    values = image.detach().float().cpu().numpy() if hasattr(image, "detach") else np.asarray(image, dtype=np.float32)
    return np.clip(255.0 * values, 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike, pixels: np.ndarray, text: Mapping[str, str]) -> None:
    """Write uint8 ``pixels`` ``(H, W, 3)`` as a PNG with ``text`` chunks, atomically (:func:`files.atomic_open`)."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    with files.atomic_open(path) as f:
        Image.fromarray(pixels).save(f, format="PNG", pnginfo=info, compress_level=4)


def read_text(path: str | os.PathLike) -> dict[str, str]:
    """The PNG text chunks of ``path``."""
    with Image.open(path) as image:
        return dict(image.text)


def remove_after(folder: str | os.PathLike, step: int) -> list[Path]:
    """Remove preview files in ``folder`` whose step is after ``step`` (only names matching :data:`FILE_PATTERN`).

    A run starting (or resuming) at ``step`` renders those steps again; what an
    older or killed run left there must not mix into this run's previews.
    Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = FILE_PATTERN.fullmatch(entry.name)
        if match and int(match.group(1)) > step and entry.is_file():
            entry.unlink()
            removed.append(entry)
    if removed:
        log.info("removed %d preview(s) after step %d from %s (an earlier run's)", len(removed), step, folder)
    return removed
