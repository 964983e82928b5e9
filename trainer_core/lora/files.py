"""LoRA files: safetensors written atomically (see :mod:`trainer_core.files`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import Tensor

from .. import files


def save_lora(path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically; ``metadata`` values that are not strings are stored as JSON.

    Creates the parent folder. Returns the final path.
    """
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    files.save_safetensors(path, tensors, meta)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata of ``path`` (empty dict when none)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
