"""Periodic saves kept per step, and the strengths of a step x strength grid.

The trainer writes its LoRA to ``<output_name>.safetensors`` and replaces it at
every save. A periodic save (``save_every``) is also kept as
``<output_name>/steps/step_000500.safetensors`` (:func:`keep`), a byte copy
of the file just written, so a run's history stays loadable with any LoRA
loader (it shows in ComfyUI's LoRA list as ``<output_name>/steps/...``). The
step also lives in each file's metadata (``flowlora.step``), which is what
labels a grid row; the file name only orders a folder listing.

A run starting or resuming at step ``s`` removes kept saves after ``s``
(:func:`remove_after`): they belong to an earlier or killed run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from pathlib import Path

from . import files
from .errors import ConfigError

log = logging.getLogger(__name__)

FOLDER = "steps"
"""Sub-folder of ``<output_name>/`` holding the kept periodic saves."""
FILE_PATTERN = re.compile(r"step_(\d{6,})\.safetensors")
"""Full-match pattern of a kept save's name; group 1 is the step."""


def file_name(step: int) -> str:
    """``step_000500.safetensors``."""
    return f"step_{step:06d}.safetensors"


def keep(lora_path: str | os.PathLike, folder: str | os.PathLike, step: int) -> Path:
    """Copy the LoRA file just saved at ``step`` to ``<folder>/step_000500.safetensors``, atomically; returns the copy's path."""
    target = Path(folder) / file_name(step)
    with open(lora_path, "rb") as source, files.atomic_open(target) as out:
        shutil.copyfileobj(source, out)
    log.info("kept the step-%d save as %s", step, target)
    return target


def list_saves(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every kept save in ``folder``, by step ([] when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), entry) for entry in folder.iterdir() if (m := FILE_PATTERN.fullmatch(entry.name)) and entry.is_file()]
    return sorted(found)


def remove_after(folder: str | os.PathLike, step: int) -> list[Path]:
    """Remove kept saves in ``folder`` whose step is after ``step``; returns the removed paths."""
    removed = []
    for saved_step, path in list_saves(folder):
        if saved_step > step:
            path.unlink()
            removed.append(path)
    if removed:
        log.info("removed %d kept save(s) after step %d from %s (an earlier run's)", len(removed), step, folder)
    return removed


def parse_strengths(text: str, field: str = "strengths") -> tuple[float, ...]:
    """``"0, 0.5, 1"`` (commas, spaces or new lines between numbers) -> ``(0.0, 0.5, 1.0)``, in the order given.

    Empty text, a word that is not a number, NaN, infinity or a repeated value
    raise :class:`ConfigError` naming ``field`` and the bad entry.
    """
    entries = [e for e in re.split(r"[,\s;]+", text.strip()) if e]
    if not entries:
        raise ConfigError(field, text, "give at least one strength, e.g. '0, 0.5, 1' (0: the model without the LoRA, 1: as trained)")
    values = []
    for entry in entries:
        try:
            value = float(entry)
        except ValueError:
            raise ConfigError(field, text, f"{entry!r} is not a number; separate strengths with commas, e.g. '0, 0.5, 1'") from None
        if not math.isfinite(value):
            raise ConfigError(field, text, f"{entry!r} is not a finite number")
        if value in values:
            raise ConfigError(field, text, f"{entry!r} is given twice")
        values.append(value)
    return tuple(values)
