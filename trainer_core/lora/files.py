"""Atomic safetensors files: a kill mid-write leaves the previous file intact."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import Tensor


def save_lora(path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``tensors`` to ``path`` as safetensors: temp file in the same folder, fsync, ``os.replace``.

    ``metadata`` values that are not strings are stored as JSON. Creates the
    parent folder. Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata of ``path`` (empty dict when none)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

