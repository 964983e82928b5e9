"""The official sharded checkpoint: ``model.safetensors.index.json`` + shards.

Tensors are always resolved through the index's ``weight_map``; shard names
and counts are not assumed. Loading keeps the stored dtype (bf16) on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...errors import ConfigError
from .config import U1Config
from .layers import TORCH_OPS
from .towers import GenerationTower, PrefixTower

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"


def is_checkpoint_dir(folder: str | Path) -> bool:
    """True when ``folder`` holds an index JSON and a config.json."""
    folder = Path(folder)
    return (folder / INDEX_NAME).is_file() and (folder / CONFIG_NAME).is_file()


def read_weight_map(folder: str | Path) -> dict[str, str]:
    """``{tensor name: shard file name}`` from the index; errors name the file."""
    path = Path(folder) / INDEX_NAME
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError("checkpoint index", str(path), f"cannot read its weight_map ({e}); point at the folder of the official SenseNova-U1 download") from e
    return dict(weight_map)


def load_state_dict(folder: str | Path, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors ``names`` (default: all) on the CPU in their stored dtype, shard by shard."""
    folder = Path(folder)
    weight_map = read_weight_map(folder)
    wanted = list(weight_map) if names is None else list(names)
    by_shard: dict[str, list[str]] = defaultdict(list)
    for name in wanted:
        if name not in weight_map:
            raise ConfigError("checkpoint tensor", name, f"not in {folder / INDEX_NAME}")
        by_shard[weight_map[name]].append(name)
    out: dict[str, torch.Tensor] = {}
    for shard, shard_names in by_shard.items():
        path = folder / shard
        if not path.is_file():
            raise ConfigError("checkpoint shard", str(path), "listed in the index but missing; re-download the checkpoint")
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in shard_names:
                out[name] = f.get_tensor(name)
    return out


def _load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ConfigError(f"{what} tensors", missing[:5], f"{len(missing)} missing from the checkpoint (is it SenseNova-U1 / U1.5?)")
    module.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)


def load_towers(folder: str | Path, ops=TORCH_OPS, dtype: torch.dtype | None = None, include_prefix: bool = True, gen_class: type[GenerationTower] = GenerationTower, include_gen: bool = True) -> tuple[U1Config, PrefixTower | None, GenerationTower | None]:
    """Config + both towers from an official checkpoint folder, weights on the CPU.

    Modules are built on the meta device and the loaded tensors assigned, so
    the weights are never held twice. The head kind comes from config.json
    (``use_pixel_head``) and must agree with the checkpoint's keys.
    ``include_prefix`` / ``include_gen`` skip a tower (returned as None).
    ``dtype`` casts the weights (default: keep bf16). ``gen_class`` lets a host
    use a :class:`GenerationTower` subclass (same parameters, its own forward).
    """
    folder = Path(folder)
    cfg = U1Config.from_json(folder / CONFIG_NAME)
    weight_map = read_weight_map(folder)
    has_conv = "fm_modules.fm_head.conv1.weight" in weight_map
    if has_conv != cfg.use_pixel_head:
        raise ConfigError("use_pixel_head", cfg.use_pixel_head, f"config.json disagrees with the checkpoint's fm_head keys (ConvDecoder keys present: {has_conv})")
    with torch.device("meta"):
        gen = gen_class(cfg, ops) if include_gen else None
        prefix = PrefixTower(cfg, ops) if include_prefix else None
    names = (list(gen.state_dict()) if gen is not None else []) + (list(prefix.state_dict()) if prefix is not None else [])
    state = load_state_dict(folder, names)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    if gen is not None:
        _load_into(gen, state, "generation tower")
    if prefix is not None:
        _load_into(prefix, state, "understanding tower")
    unknown = sorted(set(weight_map) - set(names)) if prefix is not None and gen is not None else []
    if unknown:
        log.warning("%d checkpoint tensors are not used by the T2I path, e.g. %s", len(unknown), unknown[:3])
    return cfg, prefix, gen


def save_sharded(folder: str | Path, state: Mapping[str, torch.Tensor], cfg: U1Config, num_shards: int = 2) -> None:
    """Write ``state`` in the official layout (config.json, index, N shards), atomically per file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    per = -(-len(names) // num_shards)
    weight_map, total = {}, 0
    for i in range(num_shards):
        shard = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[i * per : (i + 1) * per]}
        _atomic(folder / shard, lambda p, part=part: save_file(part, p, metadata={"format": "pt"}))
        weight_map.update({n: shard for n in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _atomic(folder / INDEX_NAME, lambda p: Path(p).write_text(json.dumps(index, indent=2), encoding="utf-8"))
    _atomic(folder / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8"))


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json", "chat_template.jinja")
"""Files besides the weights that official inference reads from a checkpoint folder (copied when present)."""


def write_merged(source: str | Path, merged: Mapping[str, torch.Tensor], out: str | Path) -> Path:
    """A new checkpoint folder ``out``: ``source``'s config, tokenizer files and shard layout with the tensors of ``merged``.

    ``merged`` must hold every tensor of the source (same names; typically
    :func:`official_lora.merge_official` of its state). Each tensor goes to the
    shard file it had in the source, so the index has the official names and
    layout; files are written atomically, the index last.
    """
    source, out = Path(source), Path(out)
    weight_map = read_weight_map(source)
    missing, extra = sorted(set(weight_map) - set(merged)), sorted(set(merged) - set(weight_map))
    if missing or extra:
        raise ConfigError("merged state", f"{len(merged)} tensors", f"does not match {source}: missing {missing[:3]}, not in the checkpoint {extra[:3]}")
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for shard in sorted(set(weight_map.values())):
        part = {n: merged[n].detach().to("cpu").contiguous() for n, f in weight_map.items() if f == shard}
        _atomic(out / shard, lambda p, part=part: save_file(part, p, metadata={"format": "pt"}))
        total += sum(t.numel() * t.element_size() for t in part.values())
    for name in (CONFIG_NAME, *TOKENIZER_FILES):
        if (source / name).is_file():
            _atomic(out / name, lambda p, name=name: shutil.copyfile(source / name, p))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _atomic(out / INDEX_NAME, lambda p: Path(p).write_text(json.dumps(index, indent=2), encoding="utf-8"))
    return out


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
