"""Resumable training state in safetensors, with no pickle.

A state is a nested structure of dicts, lists, numbers, strings and tensors
(an optimizer's ``state_dict()``, a scheduler's, generator states...).
:func:`flatten` splits it into named tensors and a JSON skeleton in which
every tensor is replaced by ``{"__tensor__": name}`` and every dict keeps its
key types (``{"__dict__": [[key, value], ...]}``), so
``unflatten(*flatten(x)) == x``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import safe_open

from . import files

STATE_FORMAT = "flowlora.train_state"
STATE_SCHEMA = 1


def flatten(obj: Any, prefix: str = "s") -> tuple[dict[str, torch.Tensor], Any]:
    """``(tensors, skeleton)``; tensor names are paths like ``s.optimizer.state.0.exp_avg``."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu()
            return {"__tensor__": path}
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            items = [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
            return {"__tuple__": items} if isinstance(x, tuple) else items
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path} in a training state")

    return tensors, walk(obj, prefix)


def unflatten(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten(tensors, v) for v in skeleton["__tuple__"])
        return {_key(k): unflatten(tensors, v) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten(tensors, v) for v in skeleton]
    return skeleton


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


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
