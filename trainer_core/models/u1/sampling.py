"""U1's sampling maths in the pack's sigma convention (sigma = 1 - t, 1 = noise).

Official loop (spec 4): ``t_i = i / steps``, shifted as sigma' =
``S * sigma / (1 + (S - 1) * sigma)``; velocity ``v = (x0_hat - z) / max(1 - t, t_eps)``;
Euler ``z <- z + (t_next - t) * v``. ComfyUI's Euler computes
``x + (x - denoised) / sigma * (sigma_next - sigma)``, so returning
:func:`clamped_denoised` as the denoised estimate reproduces the official step,
t_eps clamp included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ... import flow


def official_timesteps(num_steps: int, shift: float) -> Tensor:
    """U1's t grid (1 = clean), ``num_steps + 1`` values from 0 to 1, float64."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    return 1.0 - flow.shift_sigma(1.0 - t, shift)


def clamped_denoised(x: Tensor, x0_hat: Tensor, sigma: Tensor, t_eps: float) -> Tensor:
    """The denoised estimate whose Euler step equals U1's clamped-velocity step.

    ``x + sigma * (x0_hat - x) / max(sigma, t_eps)``: ``x0_hat`` when
    ``sigma >= t_eps``. ``sigma`` broadcasts against ``x`` (``(B, 1, 1, 1)`` or scalar).
    """
    return x + sigma * (x0_hat - x) / sigma.clamp(min=t_eps)


def raw_x0(x: Tensor, denoised: Tensor, sigma: Tensor, t_eps: float) -> Tensor:
    """Inverse of :func:`clamped_denoised`: the model's own x0 prediction (x0-loss target space)."""
    return x + (denoised - x) * sigma.clamp(min=t_eps) / sigma.clamp(min=1e-12)


def u1_velocity(x: Tensor, denoised: Tensor, sigma: Tensor) -> Tensor:
    """U1's clamped v-hat = ``(x0_hat - z) / max(1 - t, t_eps)`` from the clamped denoised output."""
    return (denoised - x) / sigma.clamp(min=1e-12)
