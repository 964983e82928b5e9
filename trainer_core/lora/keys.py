"""Export trained adapters as a LoRA state dict that stock ComfyUI loads.

Plain LoRA below; DoRA, LoHa, LoKr and OFT use the key names and layouts of
ComfyUI's ``comfy/weight_adapter`` (``dora_scale``, ``hada_*``, ``lokr_*``,
``oft_blocks``), listed in :mod:`.algorithms`, under the same prefixes and names.

Keys (``P`` = ``prefix``, default ``diffusion_model.``; ``N`` = adapter name)::

    P N.lora_A.weight  (rank, in)     P N.lora_down.weight   (weight_names="lora_down")
    P N.lora_B.weight  (out, rank)    P N.lora_up.weight
    P N.alpha          ()             float32 scalar; ComfyUI scales by alpha / rank
    P M.diff           full tensor    unfrozen ``M.weight``: trained - original
    P T.diff           full tensor    unfrozen non-weight tensor ``T`` (bias, pad token)

Why these load (``comfy.lora.model_lora_keys_unet``, ComfyUI 0.3.75 and today):
every model key ``diffusion_model.X.weight`` maps from ``diffusion_model.X``
and every other ``diffusion_model.T`` from itself; for Lumina2/Z-Image the
diffusers names ``diffusion_model.layers.N.attention.to_q|to_k|to_v`` map to
row slices ``(0, i * dim, dim)`` of ``attention.qkv.weight`` and
``attention.to_out.0`` to ``attention.out``. ``comfy.lora.load_lora`` reads
``lora_A/lora_B`` and ``lora_up/lora_down`` with ``.alpha``, and
``<key>.diff`` as a ``("diff", (tensor,))`` patch, ``W += strength * diff``.
(Today's ComfyUI also maps ``transformer.`` and bare diffusers names for
Z-Image; 0.3.75 does not, so ``diffusion_model.`` is the default prefix.)

An adapter on a weight that is also unfrozen is folded into that weight's
``.diff`` (``diff[rows] += alpha / rank * B @ A``): ComfyUI keeps one patch per
weight and file, so separate LoRA and diff keys would drop one of them.

``key_style="native"`` writes ComfyUI's module names except where a split has
its own name (``to_q``...); ``"diffusers"`` also applies the preset's
``diffusers_names`` (``attention.out`` -> ``attention.to_out.0``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from torch import Tensor

from ..errors import require
from .engine import LoraAdapters
from .presets import PRESETS

KEY_STYLES = ("native", "diffusers")
WEIGHT_NAMES = {"lora_A": ("lora_A.weight", "lora_B.weight"), "lora_down": ("lora_down.weight", "lora_up.weight")}
"""Name style -> (down/A suffix, up/B suffix)."""

METADATA_KEY = "flowlora.lora_config"


def export_name(name: str, preset: str, key_style: str) -> str:
    """The file name of adapter ``name`` (``layers.0.attention.out``) in ``key_style``."""
    require(key_style in KEY_STYLES, "key_style", key_style, f"must be one of {', '.join(KEY_STYLES)}")
    if key_style == "diffusers":
        for pattern, replacement in PRESETS.get(preset, "preset").diffusers_names:
            name = re.sub(pattern, replacement, name)
    return name


def lora_state_dict(adapters: LoraAdapters, *, key_style: str = "native", prefix: str = "diffusion_model.", weight_names: str = "lora_A", dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """The LoRA file's tensors (CPU, contiguous), keyed as in the module docstring.

    ``dtype``: dtype of the saved factors and diffs (default: LoRA factors as
    trained, diffs float32). ``alpha`` is always float32.
    """
    require(weight_names in WEIGHT_NAMES, "weight_names", weight_names, f"must be one of {', '.join(WEIGHT_NAMES)}")
    down, up = WEIGHT_NAMES[weight_names]
    preset = adapters.config.preset
    diffs = dict(adapters.unfrozen_diffs())
    out: dict[str, Tensor] = {}
    if adapters.config.algorithm != "lora":
        out.update(_algorithm_tensors(adapters, prefix, key_style, down, up, dtype))
    for target, a, b in adapters.lora_pairs() if adapters.config.algorithm == "lora" else ():
        weight = f"{target.module}.weight"
        if weight in diffs:  # one patch per weight per file in ComfyUI: fold the adapter into the diff
            start, size = target.rows or (0, target.out_features)
            diffs[weight][start:start + size] += adapters.scale * (b.float() @ a.float()).to(diffs[weight].device)
            continue
        stem = prefix + export_name(target.name, preset, key_style)
        out[f"{stem}.{down}"] = _cpu(a, dtype)
        out[f"{stem}.{up}"] = _cpu(b, dtype)
        out[f"{stem}.alpha"] = torch.tensor(float(adapters.config.alpha), dtype=torch.float32)
    for name, diff in diffs.items():
        stem = name[: -len(".weight")] if name.endswith(".weight") else name
        out[f"{prefix}{stem}.diff"] = _cpu(diff, dtype)
    return out


def _algorithm_tensors(adapters: LoraAdapters, prefix: str, key_style: str, down: str, up: str, dtype: torch.dtype | None) -> dict[str, Tensor]:
    """Keys of DoRA, LoHa, LoKr and OFT adapters in ComfyUI's layout (:mod:`.algorithms`); ``alpha`` stays float32.

    DoRA writes the LoRA keys (``down``/``up`` style) plus ``dora_scale``.
    (No unfrozen-weight folding here: such configs are refused when the adapters are built.)
    """
    out: dict[str, Tensor] = {}
    pairs = {t.name: (a, b) for t, a, b in adapters.lora_pairs()} if adapters.config.algorithm == "dora" else {}
    for target, tensors in adapters.adapter_tensors():
        stem = prefix + export_name(target.name, adapters.config.preset, key_style)
        if target.name in pairs:
            a, b = pairs[target.name]
            tensors = {down: a, up: b, "alpha": torch.tensor(float(adapters.config.alpha)), **tensors}
        for suffix, tensor in tensors.items():
            out[f"{stem}.{suffix}"] = _cpu(tensor, torch.float32 if suffix == "alpha" else dtype)
    return out


def lora_metadata(adapters: LoraAdapters, **extra: Any) -> dict[str, str]:
    """safetensors metadata (str -> str): the LoRA config as JSON plus ``extra`` (JSON-encoded unless str)."""
    meta = {
        METADATA_KEY: json.dumps(adapters.config.to_dict(), sort_keys=True),
        "flowlora.lora_targets": str(len(adapters.plan.targets)),
        "flowlora.lora_summary": adapters.plan.summary(),
    }
    for k, v in extra.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return meta


def _cpu(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    t = t.detach().to("cpu")
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous()
