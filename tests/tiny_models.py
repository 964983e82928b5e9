"""Tiny models built from ComfyUI's own classes, for tests and benchmarks.

Import after ComfyUI is on ``sys.path`` (the ``comfy_root`` fixture, or
:func:`harness.import_comfy`). Nothing here is a mock: :func:`tiny_zimage`
builds ``comfy.supported_models.ZImage(...).get_model({})`` (a real
``model_base.Lumina2`` around a real ``NextDiT``) and wraps it in a real
``ModelPatcher``; only the width and depth are small (DESIGN.md §4).

ComfyUI's layers skip weight initialisation, so every tensor is filled from a
seeded generator: the same seed gives bit-identical weights.
"""

from __future__ import annotations

import contextlib
import math

import torch

ZIMAGE_TINY = dict(
    image_model="lumina2",
    patch_size=2,
    in_channels=16,
    dim=256,  # Z-Image needs >= 256 (adaLN input min(dim, 256), 256-wide t embedding)
    n_layers=2,
    n_refiner_layers=1,
    n_heads=4,
    n_kv_heads=4,
    axes_dims=[16, 24, 24],  # sums to head_dim = dim / n_heads
    axes_lens=[256, 64, 64],
    rope_theta=256.0,
    ffn_dim_multiplier=8.0 / 3.0,
    qk_norm=True,
    z_image_modulation=True,
    time_scale=1000.0,
    pad_tokens_multiple=32,
    cap_feat_dim=32,
)
"""The real Z-Image config of ComfyUI's detection (dim 3840 -> 256, 30 -> 2 layers)."""


def fill_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter and buffer of ``module`` from ``seed`` (in place).

    Matrices get ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, vectors ``1 + 0.02 N``
    for norm weights and ``0.02 N`` otherwise: finite, well-scaled activations.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if tensor.ndim >= 2:
                bound = 1.0 / math.sqrt(tensor[0].numel())
                values = (torch.rand(tensor.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            elif "norm" in name and name.endswith("weight"):
                values = 1.0 + 0.02 * torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
            else:
                values = 0.02 * torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
            tensor.copy_(values.to(tensor.dtype))
    return module


def tiny_zimage(seed: int = 0, **overrides):
    """A ``ModelPatcher`` around a tiny real Z-Image (about 6.4 M parameters, fp32, CPU).

    ``overrides`` change entries of :data:`ZIMAGE_TINY` (e.g. ``n_layers=4``).
    Same seed, same weights.
    """
    import comfy.model_patcher
    import comfy.supported_models

    config = {**ZIMAGE_TINY, **overrides}
    model = comfy.supported_models.ZImage(config).get_model({})
    fill_(model.diffusion_model, seed)
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def zimage_inputs(batch: int = 1, height: int = 16, width: int = 16, tokens: int = 8, seed: int = 0):
    """``(latent, context, sigma)``: latent ``(B, 16, H, W)``, context ``(B, tokens, cap_feat_dim)``, sigma ``(B,)``."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, 16, height, width, generator=gen)
    context = torch.randn(batch, tokens, ZIMAGE_TINY["cap_feat_dim"], generator=gen)
    sigma = torch.rand(batch, generator=gen) * 0.9 + 0.05
    return latent, context, sigma


def denoise(patcher, latent: torch.Tensor, context: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ComfyUI's denoised output x0 ``(B, C, H, W)`` for the noisy ``latent`` at ``sigma`` ``(B,)``.

    Runs ``BaseModel.apply_model`` (model_sampling scales the input, turns the
    prediction into x0). Uses the weights currently in the module tree: wrap in
    :func:`patched` to see the patcher's patches (LoRAs).
    """
    return patcher.model.apply_model(latent, sigma, c_crossattn=context, num_tokens=context.shape[1])


@contextlib.contextmanager
def patched(patcher):
    """Merge ``patcher``'s weight patches into the module tree for the block, then restore."""
    patcher.patch_model()
    try:
        yield patcher
    finally:
        patcher.unpatch_model()
