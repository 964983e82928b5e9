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
    """Autograd on (ComfyUI runs nodes under inference_mode) and, on newer
    ComfyUI, ``model_management.in_training`` set so that fused kernels without
    a backward are bypassed; both restored afterwards."""
    has_flag = hasattr(comfy.model_management, "in_training")
    previous = comfy.model_management.in_training if has_flag else None
    with torch.inference_mode(False), torch.enable_grad():
        if has_flag:
            comfy.model_management.in_training = True
        try:
            yield
        finally:
            if has_flag:
                comfy.model_management.in_training = previous


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


def lora_output_path(name: str) -> str:
    """``<models/loras>/<name>.safetensors``; names that leave the folder are refused."""
    clean = name.strip().replace("\\", "/")
    if clean.endswith(".safetensors"):
        clean = clean[: -len(".safetensors")]
    if not clean or os.path.isabs(clean) or any(part in ("", ".", "..") for part in clean.split("/")):
        raise ConfigError("output_name", name, "must be a relative name inside models/loras, e.g. 'my_style' or 'styles/my_style' (no '..', no absolute path)")
    root = os.path.abspath(folder_paths.get_folder_paths("loras")[0])
    path = os.path.abspath(os.path.join(root, clean + ".safetensors"))
    if os.path.commonpath([root, path]) != root:
        raise ConfigError("output_name", name, f"resolves outside {root}")
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
