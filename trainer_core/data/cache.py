"""A disk cache of encoder outputs: safetensors files keyed by what produced them.

An entry's key is the SHA-256 of a canonical JSON of everything that shapes
its content (image bytes hash, bucket and crop, encoder identity, settings), so
a changed input gives a new key and stale entries are never read. Entries are
written atomically (:func:`..files.atomic_open`: temp file, fsync, rename); each stores
its key and a SHA-256 of its tensor bytes in the safetensors metadata, so a
file half-written by a killed process, truncated or garbled, is detected on
load, deleted and rebuilt.

Nested results (ComfyUI's CONDITIONING is ``[[tensor, {"pooled_output": ...}]]``)
are stored with :func:`pack` / :func:`unpack`: tensors as safetensors entries,
the structure and plain values as JSON in the metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from .. import tensor_tree
from ..files import atomic_open

logger = logging.getLogger(__name__)

SCHEMA = 1
KEY_FIELD = "flowlora.key"
CHECKSUM_FIELD = "flowlora.sha256"
STRUCTURE_FIELD = "flowlora.structure"
STALE_TEMP_SECONDS = 3600


def file_digest(path: str | Path) -> str:
    """SHA-256 hex of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_key(fields: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``fields`` as canonical JSON (sorted keys, schema added)."""
    text = json.dumps({"schema": SCHEMA, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_tensors(named: Iterable[tuple[str, Tensor]], samples: int = 64) -> str:
    """A cheap identity of a set of weights: names, shapes, dtypes and ``samples``
    evenly spaced values of each tensor (plus its first and last), SHA-256 hex.

    Any fine-tune or different checkpoint changes sampled values; reading a few
    values per tensor keeps this fast for multi-GB text encoders. Tensors on the
    ``meta`` device contribute their name, shape and dtype only.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda kv: kv[0]):
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue
        flat = tensor.detach().reshape(-1)
        index = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), device=flat.device).round().long()
        picked = flat[index].to("cpu", torch.float64)
        h.update(picked.numpy().tobytes())
    return h.hexdigest()


def tensor_checksum(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 hex of names, dtypes, shapes and raw bytes of ``tensors``."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


# ------------------------------------------------------------------ packing


def pack(obj: Any) -> tuple[dict[str, Tensor], str]:
    """Split an encoder result into tensors and a JSON skeleton (see :mod:`..tensor_tree`).

    Raises TypeError naming the first value that is not a tensor, container,
    number or string (such as a ComfyUI hook object), which means "do not cache this".
    """
    tensors, skeleton = tensor_tree.flatten(obj, "result")
    return tensors, json.dumps(skeleton, separators=(",", ":"))


def unpack(tensors: Mapping[str, Tensor], skeleton: str) -> Any:
    """Inverse of :func:`pack`."""
    return tensor_tree.unflatten(dict(tensors), json.loads(skeleton))


# -------------------------------------------------------------------- cache


class TensorCache:
    """Safetensors entries under ``root/<kind>/<key[:2]>/<key>.safetensors``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def load(self, kind: str, key: str) -> dict[str, Tensor] | None:
        """The tensors stored for ``key``, or None (missing, or damaged and deleted)."""
        path = self.path(kind, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        try:
            tensors = load(data)
            metadata = _metadata(data)
            problem = None
            if metadata.get(KEY_FIELD) != key:
                problem = "its stored key does not match its name"
            elif metadata.get(CHECKSUM_FIELD) != tensor_checksum(tensors):
                problem = "its tensor bytes do not match their checksum"
        except (SafetensorError, ValueError, json.JSONDecodeError, OSError) as e:
            problem = f"it cannot be parsed ({e})"
        if problem is not None:
            logger.warning("cache entry %s is damaged (%s), probably half-written by a killed run; rebuilding it", path, problem)
            path.unlink(missing_ok=True)
            self.rebuilt += 1
            self.misses += 1
            return None
        self.hits += 1
        return tensors

    def load_with_structure(self, kind: str, key: str) -> tuple[dict[str, Tensor], str] | None:
        """Like :meth:`load`, with the JSON skeleton stored by :meth:`save`'s ``structure``."""
        tensors = self.load(kind, key)
        if tensors is None:
            return None
        return tensors, _metadata(self.path(kind, key).read_bytes()).get(STRUCTURE_FIELD, "")

    def save(self, kind: str, key: str, tensors: Mapping[str, Tensor], structure: str = "") -> Path:
        """Write an entry atomically; returns its path."""
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        metadata = {KEY_FIELD: key, CHECKSUM_FIELD: tensor_checksum(tensors)}
        if structure:
            metadata[STRUCTURE_FIELD] = structure
        path = self.path(kind, key)
        with atomic_open(path) as f:
            f.write(save(tensors, metadata=metadata))
        return path

    def remove_stale_temps(self) -> int:
        """Delete temp files older than an hour (left by killed runs); returns how many."""
        count = 0
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - STALE_TEMP_SECONDS
        for temp in self.root.rglob("*.tmp-*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    count += 1
            except FileNotFoundError:
                continue
        return count


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file held in ``data``."""
    if len(data) < 8:
        raise ValueError("file shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header runs past the end of the file")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {}) or {}
