"""The one time convention of the pack, written once.

Noise level ``sigma`` in [0, 1]; ``sigma = 1`` is pure noise (ComfyUI's CONST
sampling, Z-Image, Flux, SD3)::

    x_sigma = (1 - sigma) * x0 + sigma * eps
    v       = eps - x0                      (velocity target)
    x0_hat  = x_sigma - sigma * v_hat       (what ComfyUI's model_sampling returns)

The SenseNova-U1 report runs time the other way, ``t = 1 - sigma`` (t -> 1 is
clean), with ``z_t = t * x0 + (1 - t) * eps`` and ``v* = x0 - eps`` (the opposite
sign of ours). Its x0-MSE is ours, and its v-MSE equals ``x0-MSE / sigma**2``.

Shapes: ``x0``, ``eps``, ``x_sigma`` are ``(B, ...)``; ``sigma`` is ``(B,)`` and is
broadcast over the trailing dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def expand_like(sigma: Tensor, x: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` so that it broadcasts against ``x``."""
    return sigma.reshape(sigma.shape[0], *([1] * (x.ndim - 1))).to(dtype=x.dtype)


def t_from_sigma(sigma: Tensor | float) -> Tensor | float:
    """U1's time ``t = 1 - sigma`` (t = 1 is clean)."""
    return 1.0 - sigma


def sigma_from_t(t: Tensor | float) -> Tensor | float:
    """Inverse of :func:`t_from_sigma`."""
    return 1.0 - t


def add_noise(x0: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """``x_sigma = (1 - sigma) * x0 + sigma * eps``."""
    s = expand_like(sigma, x0)
    return (1.0 - s) * x0 + s * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """``v = eps - x0``: d x_sigma / d sigma."""
    return eps - x0


def x0_from_velocity(x_sigma: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    """``x0 = x_sigma - sigma * v``."""
    return x_sigma - expand_like(sigma, x_sigma) * v


def shift_sigma(sigma: Tensor, shift: float | Tensor) -> Tensor:
    """Timestep shift ``s * sigma / (1 + (s - 1) * sigma)``; s > 1 moves mass to noise."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def seq_len_shift(
    image_seq_len: int,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> float:
    """Resolution-dependent shift ``exp(mu)``, ``mu`` linear in the token count.

    ``mu`` is ``base_shift`` at ``base_seq_len`` image tokens and ``max_shift`` at
    ``max_seq_len`` (the SD3/Flux rule). ``exp(mu)`` is the static shift that
    :func:`shift_sigma` then applies, since
    ``e^mu / (e^mu + 1/sigma - 1) == shift_sigma(sigma, e^mu)``.
    """
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    mu = base_shift + slope * (image_seq_len - base_seq_len)
    return float(torch.tensor(mu, dtype=torch.float64).exp())
