"""Resumable training state in safetensors, with no pickle.

A state is a nested structure (optimizer and scheduler state dicts, generator
states, the data position), stored with :mod:`.tensor_tree`: named tensors
plus a JSON skeleton in the file's metadata.
"""

from __future__ import annotations

import json
import os
from typing import Any

from safetensors import safe_open

from . import files
from .tensor_tree import flatten, unflatten

STATE_FORMAT = "flowlora.train_state"
STATE_SCHEMA = 1


def save_state(path: str | os.PathLike, state: dict[str, Any], info: dict[str, Any] | None = None) -> None:
    """Write ``state`` atomically; ``info`` (JSON) is readable without loading tensors."""
    tensors, skeleton = flatten(state)
    metadata = {
        "format": STATE_FORMAT,
        "schema": str(STATE_SCHEMA),
        "skeleton": json.dumps(skeleton),
        "info": json.dumps(info or {}),
    }
    files.save_safetensors(path, tensors, metadata)


def load_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, info)`` from :func:`save_state`; a foreign file raises naming it."""
    with safe_open(os.fspath(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a FlowLoRA training state (format {metadata.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return unflatten(tensors, json.loads(metadata["skeleton"])), json.loads(metadata["info"])
