"""SenseNova-U1's official LoRA file format, to and from the pack's LoRA files (spec 4.7, 5.12).

Official keys (``X`` = a parameter path without ``.weight``, official names
such as ``language_model.model.layers.0.self_attn.q_proj_mot_gen``)::

    X.lora_down.weight  (r, in)   float32
    X.lora_up.weight    (out, r)  float32
    X.alpha             ()        scalar
    T                   full tensor, native dtype: a fully fine-tuned parameter (train_u1)

merged once as ``W <- W + strength * (alpha / r) * up @ down`` (product in
float32, cast back to W's dtype); if any key contains ``diffusion_model.``,
every lookup is prefixed with it. train_u1's loader also copies full tensors
by name; the official ``--lora_path`` loader ignores them and fails on a full
bias (spec 5.12 hazard), so :func:`to_official` can leave them out.

The pack's own export (:mod:`trainer_core.lora.keys`) writes ``diffusion_model.X``
adapters (``lora_A``/``lora_B`` or ``lora_down``/``lora_up``, ``.alpha``) and
``diffusion_model.S.diff`` = trained - base for unfrozen tensors (``S`` = ``X``
for ``X.weight``, else the full name), with an adapter on an unfrozen weight
folded into that diff. U1 adapters never split a layer, so adapter names are
module names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor

from ...errors import ConfigError

log = logging.getLogger(__name__)

COMFY_PREFIX = "diffusion_model."
DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"
OURS = {".lora_A.weight": DOWN, ".lora_down.weight": DOWN, ".lora_B.weight": UP, ".lora_up.weight": UP, ".alpha": ALPHA}
"""Suffixes of the pack's export -> official suffixes."""
ROOTS = ("language_model.", "fm_modules.")
"""First components of every generation-tower parameter name."""


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if prefix and key.startswith(prefix) else key


def _suffix(key: str, table) -> str | None:
    return next((s for s in table if key.endswith(s)), None)


def to_official(lora_sd: Mapping[str, Tensor], base: Mapping[str, Tensor], *, prefix: str = COMFY_PREFIX, include_full: bool = True) -> dict[str, Tensor]:
    """The pack's LoRA state dict -> official keys.

    ``base``: the generation tower's tensors by official name (the weights the
    ``.diff`` tensors were trained against); full tensors are ``base + diff``
    in ``base``'s dtype. ``include_full = False`` leaves them out (a file the
    official ``--lora_path`` loader accepts; their training is then lost,
    including adapters folded into them). Raises ConfigError naming a key
    that is not a U1 adapter or parameter, or whose shape does not fit.
    """
    out: dict[str, Tensor] = {}
    dropped = []
    for key, value in lora_sd.items():
        name = _strip(key, prefix)
        if name.endswith(".diff"):
            stem = name[: -len(".diff")]
            param = f"{stem}.weight" if f"{stem}.weight" in base else stem
            if param not in base:
                raise ConfigError("LoRA key", key, "names no parameter of the SenseNova-U1 generation tower")
            if not include_full:
                dropped.append(param)
                continue
            full = base[param].detach().to("cpu")
            if tuple(value.shape) != tuple(full.shape):
                raise ConfigError("LoRA key", key, f"has shape {tuple(value.shape)}, the parameter {tuple(full.shape)}")
            out[param] = (full.float() + value.detach().to("cpu").float()).to(full.dtype).contiguous()
            continue
        suffix = _suffix(name, OURS)
        if suffix is None:
            raise ConfigError("LoRA key", key, "is not an adapter (lora_A/lora_B/lora_down/lora_up/alpha) or a .diff")
        stem = name[: -len(suffix)]
        if f"{stem}.weight" not in base:
            raise ConfigError("LoRA key", key, f"adapter on {stem!r}, which is not a Linear of the SenseNova-U1 generation tower (official files need whole-layer adapters)")
        tensor = value.detach().to("cpu")
        out[stem + OURS[suffix]] = tensor.float().reshape(()) if suffix == ".alpha" else tensor.float().contiguous()
    if dropped:
        log.warning("official LoRA without full tensors: %d fully trained tensors left out (%s...)", len(dropped), ", ".join(dropped[:3]))
    _check_pairs(out, base)
    return out


def _check_pairs(sd: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> None:
    for key in sd:
        if key.endswith(DOWN):
            stem = key[: -len(DOWN)]
            up, down, weight = sd.get(stem + UP), sd[key], base[f"{stem}.weight"]
            if up is None or stem + ALPHA not in sd:
                raise ConfigError("LoRA key", key, f"has no {stem + UP} or {stem + ALPHA}")
            if (up.shape[0], down.shape[1]) != tuple(weight.shape) or up.shape[1] != down.shape[0]:
                raise ConfigError("LoRA key", key, f"up {tuple(up.shape)} @ down {tuple(down.shape)} does not fit {stem}.weight {tuple(weight.shape)}")


def merge_official(base: Mapping[str, Tensor], official: Mapping[str, Tensor], strength: float = 1.0, *, full: bool = True) -> dict[str, Tensor]:
    """The official merge, as a reference: a new state dict, ``base`` unchanged.

    For every ``X.weight`` of ``base`` with ``X.lora_down.weight`` in the file:
    ``W + strength * (alpha / r) * up @ down`` (float32 product, cast to W's
    dtype), ``r`` = rows of ``lora_down``. ``full``: also replace parameters
    stored at their plain names (train_u1's loader). Lookups are prefixed with
    ``diffusion_model.`` when any key contains it. Raises ConfigError when
    nothing matched (the newest official loader does the same).
    """
    lookup = COMFY_PREFIX if any(COMFY_PREFIX in k for k in official) else ""
    out = dict(base)
    matched = 0
    for name, weight in base.items():
        if name.endswith(".weight"):
            stem = lookup + name[: -len(".weight")]
            down = official.get(stem + DOWN)
            if down is not None:
                up, alpha = official[stem + UP], float(official[stem + ALPHA])
                delta = strength * (alpha / down.shape[0]) * (up.float() @ down.float())
                out[name] = (weight.float() + delta.to(weight.device)).to(weight.dtype)
                matched += 1
                continue
        if full and lookup + name in official:
            out[name] = official[lookup + name].to(weight.dtype)
            matched += 1
    if matched == 0:
        raise ConfigError("LoRA", f"{len(official)} keys", "matched no parameter of the model (is it a SenseNova-U1 LoRA?)")
    return out


def is_official(sd: Mapping[str, Tensor]) -> bool:
    """True when ``sd`` holds U1 adapters or full tensors under official names (optionally ``diffusion_model.``-prefixed)."""
    for key in sd:
        name = _strip(key, COMFY_PREFIX)
        if name.startswith(ROOTS) and (name.endswith(DOWN) or (key == name and not name.endswith((UP, ALPHA, ".diff")))):
            return True
    return False


def official_to_comfy(sd: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official file -> keys ComfyUI's LoRA loader applies to the pack's U1 MODEL.

    Adapters become ``diffusion_model.X.lora_down.weight`` (etc.); a full
    tensor ``T`` becomes ``diffusion_model.S.diff = T - base[T]`` (``S`` as in
    the module docstring), so strength scales it like the adapters. Other keys
    pass through unchanged (ComfyUI reports them as not loaded).
    """
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        name = _strip(key, COMFY_PREFIX)
        if _suffix(name, (DOWN, UP, ALPHA)) is not None and name.startswith(ROOTS):
            out[COMFY_PREFIX + name] = value
        elif name in base and not name.endswith(".diff"):
            stem = name[: -len(".weight")] if name.endswith(".weight") else name
            current = base[name].detach().to("cpu").float()
            out[f"{COMFY_PREFIX}{stem}.diff"] = value.detach().to("cpu").float() - current
        else:
            out[key] = value
    return out
