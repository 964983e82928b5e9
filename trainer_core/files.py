"""Atomic file writes: a kill mid-write leaves the previous file intact.

Every file the pack writes goes to ``<name>.tmp-<pid>`` in the same folder,
is flushed and fsynced, then renamed over the target with ``os.replace``
(atomic on POSIX and Windows for one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import torch
from safetensors.torch import save as safetensors_bytes


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a uniquely named temporary sibling of ``path``; on success fsync it,
    rename it over ``path`` and fsync the folder. On error the temp file is removed
    and ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
