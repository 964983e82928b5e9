"""Resumable training state in safetensors, with no pickle.

A state is a nested structure (optimizer and scheduler state dicts, generator
states, the data position), stored with :mod:`.tensor_tree`: named tensors
plus a JSON skeleton in the file's metadata.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
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


class StateFileError(ValueError):
    """A training state file that cannot be used; the message names the file."""


def load_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, info)`` from :func:`save_state`.

    A foreign, damaged or truncated file raises :class:`StateFileError` naming it
    (safetensors reads the header and every tensor here, so truncation shows now,
    not halfway through a resume).
    """
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != STATE_FORMAT:
                raise StateFileError(f"{path} is not a FlowLoRA training state (format {metadata.get('format')!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return unflatten(tensors, json.loads(metadata["skeleton"])), json.loads(metadata["info"])
    except StateFileError:
        raise
    except Exception as e:  # safetensors, JSON and skeleton errors all mean the same thing here
        raise StateFileError(
            f"cannot read the training state {path}: {type(e).__name__}: {e}. The file is damaged or truncated; "
            "delete it (and its LoRA if that is damaged too) and train without resume, or resume from a copy"
        ) from e


def non_finite_tensors(tree: Any, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in ``tree`` holding NaN or inf."""
    if isinstance(tree, torch.Tensor):
        return [prefix or "<tensor>"] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return [name for k, v in items for name in non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
