"""Nested structures of tensors as named tensors plus a JSON skeleton (no pickle).

Training states (optimizer and scheduler state dicts, generator states) and
cached encoder outputs (a ComfyUI CONDITIONING) are trees of dicts, lists,
tuples, numbers, strings and tensors. :func:`flatten` turns one into
``(tensors, skeleton)`` for a safetensors file: each tensor is replaced by
``{"__tensor__": name}``, tuples by ``{"__tuple__": [...]}`` and dicts by
``{"__dict__": [[key, value], ...]}`` so that non-string keys (an optimizer's
integer parameter ids) survive. ``unflatten(*flatten(x)) == x``.
"""

from __future__ import annotations

from typing import Any

import torch


def flatten(obj: Any, prefix: str = "s") -> tuple[dict[str, torch.Tensor], Any]:
    """``(tensors, skeleton)``; tensor names are paths like ``s.optimizer.state.0.exp_avg``.

    Tensors are detached CPU copies that own their memory (safetensors
    refuses views of shared storage); a tensor object met twice is stored once
    and comes back as one object. Any other type raises ``TypeError`` naming
    its path.
    """
    tensors: dict[str, torch.Tensor] = {}
    names: dict[int, str] = {}  # id of a tensor already stored -> its name
    storages: set[int] = set()

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            if id(x) in names:  # the same tensor twice (bitsandbytes shares its qmaps): store once
                return {"__tensor__": names[id(x)]}
            t = x.detach().to("cpu").contiguous()
            storage = t.untyped_storage()
            if storage.nbytes() != t.numel() * t.element_size() or storage.data_ptr() in storages:
                t = t.clone()  # a view, or memory shared with another stored tensor
            storages.add(t.untyped_storage().data_ptr())
            tensors[path] = t
            names[id(x)] = path
            return {"__tensor__": path}
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            items = [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
            return {"__tuple__": items} if isinstance(x, tuple) else items
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"{path}: {type(x).__name__} cannot be stored as tensors + JSON")

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
