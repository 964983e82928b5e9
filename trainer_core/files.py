"""Atomic file writes: a kill mid-write leaves the previous file intact.

Every file the pack writes goes first to a temporary sibling
``.<name>.flowlora-<8 random chars>.tmp`` in the same folder (``tempfile.mkstemp``),
is flushed and fsynced, then renamed over the target with ``os.replace``
(atomic on POSIX and Windows for one filesystem).

A process killed mid-write leaves its temporary file behind. The first write to
a folder in each hour of a process (a dataset cache takes thousands of writes to
one folder: scanning it every time would cost quadratic time) removes such
leftovers from it (:func:`remove_stale_temps`), with a
rule that cannot touch a write in progress or anybody else's file: only regular
files whose name matches the pack's own pattern exactly (:data:`TEMP_PATTERN`)
and that were last modified more than :data:`STALE_AFTER_S` (one hour) ago. A
live write touches its file continuously and takes seconds, so an hour-old
temp file belongs to a dead writer (pids are not used: they are reused, and a
folder may be shared by several machines).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import torch
from safetensors.torch import save as safetensors_bytes

log = logging.getLogger(__name__)

TEMP_MARK = ".flowlora-"
"""Between the target name and the random part of a temporary file's name."""
TEMP_PATTERN = re.compile(r"\..+\.flowlora-[a-z0-9_]{8}\.tmp")
"""Full-match pattern of the pack's temporary files (mkstemp's random part is 8 of ``[a-z0-9_]``)."""
STALE_AFTER_S = 3600.0


def temp_name(name: str) -> str:
    """The longest form of a temporary sibling's name for target file ``name`` (for length checks)."""
    return f".{name}{TEMP_MARK}{'x' * 8}.tmp"


@functools.lru_cache(maxsize=256)
def _sweep(folder: str, period: int) -> None:
    """:func:`remove_stale_temps` once per ``folder`` and ``period`` (hours since the epoch) in this process."""
    remove_stale_temps(folder)


def remove_stale_temps(folder: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Remove the pack's own temporary files in ``folder`` older than :data:`STALE_AFTER_S`.

    Matches :data:`TEMP_PATTERN` only, regular files only (symlinks are left);
    errors (a file removed meanwhile, no permission) are ignored. Returns the removed paths.
    """
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not TEMP_PATTERN.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    if removed:
        log.info("removed %d stale temporary file(s) of interrupted writes: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a uniquely named temporary sibling of ``path``; on success fsync it,
    rename it over ``path`` and fsync the folder. On error the temp file is removed
    and ``path`` keeps its previous content. Stale temporary files of earlier,
    killed writes in the same folder are removed first, once per folder and hour (module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(str(path.parent), int(time.time() // STALE_AFTER_S))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous CPU copies) and string ``metadata`` atomically."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    payload = safetensors_bytes(data, metadata=dict(metadata) if metadata else None)
    with atomic_open(path) as f:
        f.write(payload)


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def append_jsonl(f: IO[str], record: Mapping) -> None:
    """One JSON object per line, flushed, so a killed run keeps every finished line."""
    f.write(json.dumps(record, separators=(",", ":")) + "\n")
    f.flush()
