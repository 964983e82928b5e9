"""Every difference between the ComfyUI versions the pack supports, in one module.

Supported hosts: ComfyUI 0.3.75 (the first with Z-Image) to today's; tests and
CI run on 0.3.75 and 0.33.0. Each switch here detects the feature itself
(``hasattr``), never a version string, and names the ComfyUI version or commit
that introduced it. Nodes call these helpers; no other module of the pack tests
what the host can do. (The minimum-version gate, which must run before any
``comfy_api`` import, is in the package's ``__init__.py``.)

| switch | 0.3.75 | 0.33 |
|---|---|---|
| :func:`training_flag` | no flag, no fused kernels | ``model_management.in_training`` (about 0.29) |
| :func:`register_reload` | no attribute | ``ModelPatcher.cached_patcher_init`` (about 0.30) |
| :data:`NATIVE_NOISE_SCALE` | samplers ignore a model's noise scale | ``ModelSamplingDiscreteFlow.set_noise_scale`` (0.21, commit 8e53f001) |
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator

import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
from torch import Tensor

# -- training flag -----------------------------------------------------------

HAS_TRAINING_FLAG = hasattr(comfy.model_management, "in_training")
"""ComfyUI about 0.29 runs Z-Image/Lumina, Flux and others through fused
comfy_kitchen kernels that have no backward unless ``model_management.in_training``
is True (its own trainer sets it around the loop). 0.3.75 has neither."""


@contextlib.contextmanager
def training_flag(value: bool = True) -> Iterator[None]:
    """Set ``model_management.in_training`` to ``value`` where the host has it; restore it afterwards.

    ``value=False`` inside a training run: sampling a preview as the stock KSampler does
    (with the host's inference kernels)."""
    if not HAS_TRAINING_FLAG:
        yield
        return
    previous = comfy.model_management.in_training
    comfy.model_management.in_training = value
    try:
        yield
    finally:
        comfy.model_management.in_training = previous


# -- re-creating a model from its loader ----------------------------------------


def register_reload(patcher, loader: Callable, args: tuple) -> None:
    """Tell the host how to rebuild ``patcher``'s model: ``loader(*args, disable_dynamic=True)``.

    ComfyUI about 0.30 (dynamic VRAM) re-creates models from
    ``ModelPatcher.cached_patcher_init`` for deep clones and some memory paths,
    and raises "cached_patcher_init is not initialized" for a custom loader
    that does not set it. Older hosts have no such attribute; nothing to do.
    """
    if hasattr(patcher, "cached_patcher_init"):
        patcher.cached_patcher_init = (loader, args)


# -- a model's own noise scale in ComfyUI's samplers ---------------------------------

NATIVE_NOISE_SCALE = hasattr(comfy.model_sampling.ModelSamplingDiscreteFlow, "set_noise_scale")
"""ComfyUI 0.21 (commit 8e53f001) gave flow model_sampling a float ``noise_scale``
(``set_noise_scale``) that every noise-adding sampler multiplies into its
``s_noise``. On older hosts the samplers add unit-scale noise."""

NOISE_SCALE_WRAPPER_KEY = "flowlora_noise_scale"


def _draws_noise(sampler_function: Callable) -> bool:
    return "noise_sampler" in inspect.signature(sampler_function).parameters


def _takes_s_noise(sampler_function: Callable) -> bool:
    return "s_noise" in inspect.signature(sampler_function).parameters


def add_noise_scale(patcher, scale_for: Callable[[Tensor], float]) -> None:
    """Make ComfyUI's samplers add noise at the model's own scale, ``scale_for(noise)``.

    A model whose noising is ``x_sigma = (1 - sigma) * x0 + sigma * s * eps``
    (SenseNova-U1: ``s`` depends on the resolution) needs every noise a
    stochastic sampler injects scaled by ``s`` too. Registered as a
    ``SAMPLER_SAMPLE`` wrapper on ``patcher`` (ComfyUI's public wrapper API,
    present on every supported host), which sees the noise tensor, hence the
    resolution, before each sampling run:

    - hosts with :data:`NATIVE_NOISE_SCALE`: sets the model_sampling's
      ``noise_scale`` through ``set_noise_scale``, which ComfyUI's samplers read;
    - older hosts: runs the sampler with ``s_noise`` multiplied by ``s`` (a
      copy of the sampler, nothing of ComfyUI's is modified). A sampler that
      draws noise but has no ``s_noise`` cannot be corrected there and is
      refused with a message naming the samplers that work.

    ``scale_for``: ``(noise (B, C, H, W)) -> s``.
    """

    def wrapper(executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
        scale = float(scale_for(noise))
        if NATIVE_NOISE_SCALE:
            guider.model_patcher.get_model_object("model_sampling").set_noise_scale(scale)
            return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)
        sampler = executor.class_obj
        function = getattr(sampler, "sampler_function", None)
        if function is None or not _draws_noise(function):
            return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)
        if not _takes_s_noise(function):
            raise ValueError(
                f"sampler {function.__name__!r} adds noise that this ComfyUI cannot scale to the model's noise scale ({scale:g}); "
                f"use one of {', '.join(scalable_samplers())} or a deterministic sampler, or update ComfyUI (0.21 and later scale every sampler)"
            )
        options = {**sampler.extra_options, "s_noise": sampler.extra_options.get("s_noise", 1.0) * scale}
        scaled = comfy.samplers.KSAMPLER(function, options, sampler.inpaint_options)
        rest = comfy.patcher_extension.WrapperExecutor.new_class_executor(scaled.sample, scaled, executor.wrappers, executor.idx + 1)
        return rest.execute(guider, sigmas, extra_args, callback, noise, *args, **kwargs)

    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, NOISE_SCALE_WRAPPER_KEY, wrapper)


def scalable_samplers() -> list[str]:
    """KSampler names whose injected noise :func:`add_noise_scale` scales on this host."""
    names = []
    for name in comfy.samplers.KSAMPLER_NAMES:
        function = getattr(comfy.samplers.k_diffusion_sampling, f"sample_{name}", None)
        if function is not None and _draws_noise(function) and (NATIVE_NOISE_SCALE or _takes_s_noise(function)):
            names.append(name)
    return names
