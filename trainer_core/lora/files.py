"""LoRA files: safetensors written atomically (see :mod:`trainer_core.files`), and the kohya-style network metadata."""

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


LYCORIS_ARGS = {"dora": {"algo": "lora", "dora_wd": True}, "loha": {"algo": "loha"}, "lokr": {"algo": "lokr"}, "oft": {"algo": "diag-oft"}}
"""``ss_network_args`` of each non-LoRA algorithm, in LyCORIS' names (its ``algo`` values; DoRA is its LoRA with ``dora_wd``)."""


def network_metadata(algorithm: str, rank: int, alpha: float) -> dict[str, str]:
    """The ``ss_network_*`` keys as kohya's sd-scripts (plain LoRA: ``networks.lora``) and LyCORIS (every other
    algorithm: ``lycoris.kohya`` with its ``algo`` in ``ss_network_args``) write them, for tools that sort files by them."""
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha)}
    if algorithm != "lora":
        meta.update(ss_network_module="lycoris.kohya", ss_network_args=json.dumps(LYCORIS_ARGS[algorithm], sort_keys=True))
    return meta
