"""ComfyUI glue for training: conditioning -> model inputs, the denoiser, the
training context, file locations. Everything here touches ComfyUI; the loop
itself is :mod:`trainer_core.loop`.

The model is called exactly as ComfyUI's samplers call it: a CONDITIONING is
turned into model inputs by ``comfy.sampler_helpers.convert_cond`` and
``comfy.samplers.encode_model_conds`` with the model's ``extra_conds`` (so
Lumina 2's ``num_tokens``, Flux's guidance, attention masks... are what the
sampler would pass), and ``BaseModel.apply_model`` returns x0 through the
model's own ``model_sampling``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import Any

import comfy.model_management
import comfy.model_sampling
import comfy.sampler_helpers
import comfy.samplers
import folder_paths
import torch
from torch import Tensor

from ..trainer_core.errors import ConfigError
from . import compat

log = logging.getLogger(__name__)

STATE_SUFFIX = ".flowlora-state"
LOG_SUFFIX = ".log.jsonl"


def require_flow_model(patcher) -> None:
    """Refuse models whose model_sampling is not flow matching (CONST)."""
    sampling = patcher.get_model_object("model_sampling")
    if not isinstance(sampling, comfy.model_sampling.CONST):
        kinds = [c.__name__ for c in type(sampling).__mro__ if c.__module__ == "comfy.model_sampling"]
        raise ConfigError("model", type(patcher.model).__name__, f"is not a flow-matching model (its model_sampling is {', '.join(kinds)}); FlowLoRA trains flow models such as Z-Image, Flux, SD3, Qwen-Image, Lumina 2")


class ConditionEncoder:
    """CONDITIONING -> the keyword inputs ``apply_model`` takes for one sample."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device

    def __call__(self, conditioning: list, latent_shape: torch.Size) -> dict[str, Any]:
        if not conditioning:
            raise ConfigError("conditioning", "[]", "is empty; connect a text encoder's output")
        if len(conditioning) > 1:
            log.warning("conditioning has %d entries; training uses the first (combine prompts before training)", len(conditioning))
        conds = comfy.sampler_helpers.convert_cond(conditioning[:1])
        noise = torch.zeros((1, *latent_shape), device=self.device)
        conds = comfy.samplers.encode_model_conds(self.model.extra_conds, conds, noise, self.device, "positive")
        inputs = {name: cond.process_cond(batch_size=1, area=None) for name, cond in conds[0]["model_conds"].items()}
        for cond in inputs.values():
            # tensors made under ComfyUI's inference_mode cannot enter autograd: use plain copies
            if isinstance(getattr(cond, "cond", None), Tensor) and cond.cond.is_inference():
                cond.cond = cond.cond.clone()
        return inputs


class ComfyDenoiser:
    """``(x_sigma, sigma, conds) -> x0`` through ``BaseModel.apply_model``.

    ``conds`` are CONDITIONING objects; their model inputs are computed once
    per distinct object and shape and cached. Samples whose inputs cannot be
    batched (different caption lengths where the model needs equal ones) run
    as separate forwards, and their outputs are concatenated.
    """

    def __init__(self, patcher, device: torch.device):
        self.model = patcher.model
        self.device = device
        self.encode = ConditionEncoder(self.model, device)
        self._cache: dict[tuple[int, tuple[int, ...]], dict[str, Any]] = {}
        self._keep: list[Any] = []  # holds cached CONDITIONING objects alive so their ids stay unique

    def inputs(self, conditioning: Any, latent_shape: torch.Size) -> dict[str, Any]:
        key = (id(conditioning), tuple(latent_shape))
        if key not in self._cache:
            self._cache[key] = self.encode(conditioning, latent_shape)
            self._keep.append(conditioning)
        return self._cache[key]

    def __call__(self, x_sigma: Tensor, sigma: Tensor, conds: list[Any]) -> Tensor:
        per_sample = [self.inputs(c, x_sigma.shape[1:]) for c in conds]
        groups: list[list[int]] = []
        for i, inputs in enumerate(per_sample):
            for group in groups:
                if comfy.samplers.cond_equal_size(per_sample[group[0]], inputs):
                    group.append(i)
                    break
            else:
                groups.append([i])
        outputs: list[Tensor | None] = [None] * len(conds)
        for group in groups:
            first = per_sample[group[0]]
            kwargs = {k: first[k].concat([per_sample[j][k] for j in group[1:]]) for k in first}
            x0 = self.model.apply_model(x_sigma[group], sigma[group], **kwargs)
            for row, i in enumerate(group):
                outputs[i] = x0[row : row + 1]
        return torch.cat(outputs)  # type: ignore[arg-type]


def noise_fn(patcher):
    """ComfyUI's own noising for the model: ``x_sigma = model_sampling.noise_scaling(sigma, eps, x0)``.

    Also returns the noise as the model scales it, ``noise_scaling(1, eps, 0)``
    (``eps`` itself for plain flow models, ``s_eff * eps`` for SenseNova-U1), so the
    loss's velocity target is the model's own.
    """
    sampling = patcher.get_model_object("model_sampling")

    def add_noise(x0: Tensor, eps: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return sampling.noise_scaling(sigma, eps, x0), sampling.noise_scaling(torch.ones_like(sigma), eps, torch.zeros_like(x0))

    return add_noise


@contextlib.contextmanager
def training_mode():
    """Autograd on (ComfyUI runs nodes under inference_mode) and the host's
    training flag set (:func:`compat.training_flag`); both restored afterwards."""
    with torch.inference_mode(False), torch.enable_grad(), compat.training_flag():
        yield


def own_tensors(module: torch.nn.Module) -> int:
    """Replace inference-mode parameters and buffers of ``module`` by plain copies (same values).

    ComfyUI runs every node under ``torch.inference_mode()``, so a model a
    loader node built holds inference tensors, which autograd cannot save for
    backward. Call inside :func:`training_mode`; later runs find nothing to
    replace. Returns how many tensors were replaced.
    """
    replaced = 0
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_inference():
                sub._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                replaced += 1
        for name, b in list(sub._buffers.items()):
            if b is not None and b.is_inference():
                sub._buffers[name] = b.clone()
                replaced += 1
    return replaced


WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
"""Device names Windows refuses as a file name, with any extension (``CON.safetensors``)."""
FORBIDDEN_CHARACTERS = '<>:"|?*'
"""Characters Windows refuses in names; refused everywhere so that shared workflows work on every system."""
OUTPUT_SUFFIXES = (".safetensors", STATE_SUFFIX, LOG_SUFFIX, ".val.jsonl")
"""Files a training run writes at ``<models/loras>/<output_name><suffix>``."""


def _fs_limits(folder: str) -> tuple[int, int]:
    """``(NAME_MAX, PATH_MAX)`` in bytes of the file system holding ``folder`` (its nearest
    existing ancestor); 255 / 4096 where the system cannot tell (Windows)."""
    probe = folder
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    limits = []
    for key, fallback in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(int(os.pathconf(probe, key)) or fallback)
        except (AttributeError, ValueError, OSError):
            limits.append(fallback)
    return limits[0], limits[1]


def lora_output_path(name: str) -> str:
    """``<models/loras>/<name>.safetensors`` for a name every later write will accept.

    Refused with a :class:`ConfigError` naming the value, before any training:
    absolute names and ``..`` (names stay inside models/loras); NUL, newlines
    and other control characters and ``<>:"|?*``; Windows device names (CON,
    PRN, AUX, NUL, COM1-9, LPT1-9, with any extension) and names ending in a
    dot or space, in any path component; and names too long for the file
    system of the folder: every component of the longest file the run writes
    (``files.temp_name`` of ``<name>.flowlora-state``, the atomic write's
    temporary sibling) must fit ``PC_NAME_MAX`` bytes and its whole path
    ``PC_PATH_MAX`` bytes (``os.pathconf``; 255 / 4096 where unknown).
    Surrounding whitespace and a ``.safetensors`` ending are dropped; ``\\``
    separates folders like ``/``.
    """
    from ..trainer_core import files

    clean = name.strip().replace("\\", "/")
    if clean.endswith(".safetensors"):
        clean = clean[: -len(".safetensors")]
    if not clean or os.path.isabs(clean) or any(part in ("", ".", "..") for part in clean.split("/")):
        raise ConfigError("output_name", name, "must be a relative name inside models/loras, e.g. 'my_style' or 'styles/my_style' (no '..', no absolute path)")
    bad = sorted({c for c in clean if ord(c) < 32 or ord(c) == 127 or c in FORBIDDEN_CHARACTERS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ConfigError("output_name", name, f"contains {shown}; use letters, digits, spaces, '-', '_', '.' and '/' for subfolders")
    for part in clean.split("/"):
        if part.split(".")[0].strip().upper() in WINDOWS_RESERVED:
            raise ConfigError("output_name", name, f"uses {part!r}, a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9); choose another name")
        if part != part.rstrip(". ") or part != part.lstrip():
            raise ConfigError("output_name", name, f"has the folder or file name {part!r}, which starts with a space or ends in a dot or space; remove them")
    root = os.path.abspath(folder_paths.get_folder_paths("loras")[0])
    path = os.path.abspath(os.path.join(root, clean + ".safetensors"))
    if os.path.commonpath([root, path]) != root:
        raise ConfigError("output_name", name, f"resolves outside {root}")
    name_max, path_max = _fs_limits(os.path.dirname(path))
    stem = path[: -len(".safetensors")]
    longest = max((files.temp_name(os.path.basename(stem) + suffix) for suffix in OUTPUT_SUFFIXES), key=lambda n: len(os.fsencode(n)))
    parts = [*clean.split("/")[:-1], longest]
    too_long = [p for p in parts if len(os.fsencode(p)) > name_max]
    full = os.path.join(os.path.dirname(path), longest)
    if too_long or len(os.fsencode(full)) >= path_max:
        over = f"the name {too_long[0][:40]!r}... has {len(os.fsencode(too_long[0]))} bytes, the limit is {name_max}" if too_long else f"the path {full[:60]!r}... has {len(os.fsencode(full))} bytes, the limit is {path_max - 1}"
        keep = name_max - (len(os.fsencode(longest)) - len(os.fsencode(os.path.basename(stem))))
        raise ConfigError("output_name", name, f"is too long for this file system with the files a run writes beside the LoRA ({over}); keep each part under {keep} bytes")
    return path


def model_identity(patcher) -> dict[str, Any]:
    """Architecture, config and a fingerprint of the base weights (keys, shapes and a sample of values)."""
    model = patcher.model
    sd = model.diffusion_model.state_dict()
    digest = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key]
        digest.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
    for key in sorted(sd)[:: max(1, len(sd) // 16)]:
        flat = sd[key].detach().flatten()
        digest.update(flat[:: max(1, flat.numel() // 256)].float().cpu().numpy().tobytes())
    unet_config = getattr(model.model_config, "unet_config", {})
    return {
        "architecture": type(model).__name__,
        "model_config": type(model.model_config).__name__,
        "unet_config": json.loads(json.dumps(unet_config, default=str)),
        "fingerprint": digest.hexdigest()[:32],
    }
