"""Flow-matching losses, built from one prediction.

Every loss is computed from the model's x0 estimate (what ComfyUI's
model_sampling returns for any prediction type), so one builder serves every
flow model. Velocities follow :mod:`.flow` and U1's clamp on both sides::

    sigma_c  = max(sigma, t_eps)
    v        = (x_sigma - x0)     / sigma_c  = (eps - x0) * sigma / sigma_c
    v_hat    = (x_sigma - x0_hat) / sigma_c  = v + (x0 - x0_hat) / sigma_c

so v-MSE = x0-MSE / sigma_c**2 (U1 report eq. 2). With ``sigma >= t_eps`` and a
velocity model (ComfyUI's ``x0_hat = x_sigma - sigma * v_model``), ``v_hat`` is
exactly the model's velocity.

A loss is ``w(sigma) * sum_i lambda_i * term_i``, per sample, then the batch mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from . import flow
from .errors import ConfigError, require
from .registry import Registry

TERMS: Registry[Callable] = Registry("loss term")
WEIGHTINGS: Registry[Callable] = Registry("loss weighting")

FFT_NORMS = ("ortho", "backward", "forward")


@dataclass(frozen=True)
class FlowPrediction:
    """One batch's clean target, noise, noise level and model estimate.

    ``x0``, ``eps``, ``x0_pred``: ``(B, C, ...)``; ``sigma``: ``(B,)``.
    """

    x0: Tensor
    eps: Tensor
    sigma: Tensor
    x0_pred: Tensor
    t_eps: float = 0.001

    @property
    def sigma_c(self) -> Tensor:
        """``max(sigma, t_eps)``, broadcastable against ``x0``."""
        return flow.expand_like(self.sigma.clamp(min=self.t_eps), self.x0)

    @property
    def x0_error(self) -> Tensor:
        """``x0_pred - x0``."""
        return self.x0_pred - self.x0

    @property
    def v_target(self) -> Tensor:
        """``(x_sigma - x0) / sigma_c``; equals ``eps - x0`` where sigma >= t_eps."""
        s = flow.expand_like(self.sigma, self.x0)
        return flow.velocity_target(self.x0, self.eps) * (s / self.sigma_c)

    @property
    def v_error(self) -> Tensor:
        """``v_hat - v = (x0 - x0_pred) / sigma_c``."""
        return -self.x0_error / self.sigma_c

    @property
    def v_pred(self) -> Tensor:
        return self.v_target + self.v_error


@dataclass(frozen=True)
class TermParams:
    """Knobs shared by the loss terms."""

    huber_delta: float = 1.0
    charbonnier_eps: float = 1e-6
    fft_norm: str = "ortho"


def _per_sample_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


# ------------------------------------------------------------------- terms
# Each term maps (prediction, params) -> per-sample loss (B,).


@TERMS.register("x0_mse")
def x0_mse(p: FlowPrediction, k: TermParams) -> Tensor:
    """Mean squared x0 error (U1's default ``x0`` loss)."""
    return _per_sample_mean(p.x0_error.square())


@TERMS.register("v_mse")
def v_mse(p: FlowPrediction, k: TermParams) -> Tensor:
    """Mean squared velocity error, = x0-MSE / sigma_c**2 (U1's ``v`` loss)."""
    return _per_sample_mean(p.v_error.square())


@TERMS.register("x0_huber")
def x0_huber(p: FlowPrediction, k: TermParams) -> Tensor:
    """Huber on the x0 error: 0.5 d**2 for |d| < delta, else delta (|d| - delta/2)."""
    return _per_sample_mean(F.huber_loss(p.x0_error, torch.zeros_like(p.x0_error), reduction="none", delta=k.huber_delta))


@TERMS.register("v_huber")
def v_huber(p: FlowPrediction, k: TermParams) -> Tensor:
    """Huber on the velocity error."""
    return _per_sample_mean(F.huber_loss(p.v_error, torch.zeros_like(p.v_error), reduction="none", delta=k.huber_delta))


def _charbonnier(d: Tensor, eps: float) -> Tensor:
    return _per_sample_mean(torch.sqrt(d.square() + eps) - math.sqrt(eps))


@TERMS.register("v_charbonnier")
def v_charbonnier(p: FlowPrediction, k: TermParams) -> Tensor:
    """Charbonnier ``sqrt(d**2 + eps) - sqrt(eps)`` per velocity element (AC-RF 4.1).

    ``eps`` sits under the root as in the reference code (None9527/None_Z-image-Turbo_trainer
    @4d8378e, ``src/zimage_trainer/acrf_trainer.py`` L195: ``sqrt(diff**2 + 1e-6)``, which
    calls it eps**2 with eps = 1e-3); the code does not subtract ``sqrt(eps)``, a constant
    that changes the logged value by 1e-3 and no gradient.
    """
    return _charbonnier(p.v_error, k.charbonnier_eps)


@TERMS.register("x0_charbonnier")
def x0_charbonnier(p: FlowPrediction, k: TermParams) -> Tensor:
    """Charbonnier on the x0 error."""
    return _charbonnier(p.x0_error, k.charbonnier_eps)


@TERMS.register("v_cosine")
def v_cosine(p: FlowPrediction, k: TermParams) -> Tensor:
    """``1 - cos(v_hat, v)`` on each sample's flattened velocity (AC-RF 4.2).

    One cosine per sample over all channels and pixels, as the reference code
    (acrf_trainer.py @4d8378e L202-204: ``cosine_similarity`` of ``(B, -1)`` views),
    not one per pixel over channels.
    """
    return 1.0 - F.cosine_similarity(p.v_pred.flatten(1), p.v_target.flatten(1), dim=1, eps=1e-8)


def _fft_l1(pred: Tensor, target: Tensor, norm: str) -> Tensor:
    # Over the last two (spatial) dims; |.| of the complex difference (the report's ||F(v) - F(v_hat)||_1),
    # mean per sample. norm "ortho" scales by 1/sqrt(H*W) as the reference code's FFTs (acrf_trainer.py
    # @4d8378e L255-256, and every later version); "backward" (torch's default, no scaling) is what the
    # report's appendix B pseudo-code fft2(...) gives if read literally: sqrt(H*W) times larger (128x on 128x128).
    diff = torch.fft.fft2(pred.float(), norm=norm) - torch.fft.fft2(target.float(), norm=norm)
    return _per_sample_mean(diff.abs())


@TERMS.register("v_fft")
def v_fft(p: FlowPrediction, k: TermParams) -> Tensor:
    """L1 of the 2-D Fourier difference of velocities (AC-RF 4.2)."""
    return _fft_l1(p.v_pred, p.v_target, k.fft_norm)


@TERMS.register("x0_fft")
def x0_fft(p: FlowPrediction, k: TermParams) -> Tensor:
    """L1 of the 2-D Fourier difference of x0 estimates."""
    return _fft_l1(p.x0_pred, p.x0, k.fft_norm)


# -------------------------------------------------------------- weightings
# Each weighting maps (sigma (B,), snr_gamma) -> w (B,).


@WEIGHTINGS.register("none")
def no_weighting(sigma: Tensor, gamma: float) -> Tensor:
    return torch.ones_like(sigma)


@WEIGHTINGS.register("min_snr")
def min_snr(sigma: Tensor, gamma: float) -> Tensor:
    """AC-RF section 3: ``SNR = ((1 - s) / s)**2``, ``w = clamp(min(SNR, g) / SNR, 0.1, 1)``.

    sigma is clamped to [1e-6, 1 - 1e-6] first (AC-RF 3.4); ``gamma = 0`` disables.
    """
    if gamma == 0:
        return torch.ones_like(sigma)
    s = sigma.clamp(1e-6, 1.0 - 1e-6)
    snr = ((1.0 - s) / s).square()
    return (snr.clamp(max=gamma) / snr).clamp(0.1, 1.0)


@WEIGHTINGS.register("sigma_sqrt")
def sigma_sqrt(sigma: Tensor, gamma: float) -> Tensor:
    """``sigma**-2`` (SD3's "sigma_sqrt" scheme), sigma clamped at 1e-3."""
    return sigma.clamp(min=1e-3).pow(-2.0)


@WEIGHTINGS.register("cosmap")
def cosmap(sigma: Tensor, gamma: float) -> Tensor:
    """``2 / (pi * (1 - 2 s + 2 s**2))`` (SD3's "cosmap" scheme)."""
    return 2.0 / (math.pi * (1.0 - 2.0 * sigma + 2.0 * sigma.square()))


# ------------------------------------------------------------------- spec


@dataclass(frozen=True)
class LossOutput:
    """A step's loss and what is logged whatever the active loss.

    ``loss``: scalar to backpropagate; the rest are ``(B,)`` and detached.
    """

    loss: Tensor
    per_sample: Tensor
    weight: Tensor
    terms: Mapping[str, Tensor]
    x0_mse: Tensor
    v_mse: Tensor
    sigma: Tensor

    @property
    def t(self) -> Tensor:
        """U1's time ``1 - sigma``."""
        return flow.t_from_sigma(self.sigma)


@dataclass(frozen=True)
class LossConfig:
    """``w(sigma) * sum(lambda * term)``; ``terms`` maps term names to lambdas.

    ``LossConfig({"x0_mse": 1.0})`` is U1's baseline; AC-RF's is
    ``LossConfig({"v_charbonnier": 1, "v_cosine": 0.1, "v_fft": 0.1}, "min_snr", snr_gamma=5)``.
    ``t_eps`` floors sigma in every division by sigma (U1: 0.05).
    """

    terms: Mapping[str, float] = field(default_factory=lambda: {"x0_mse": 1.0})
    weighting: str = "none"
    snr_gamma: float = 5.0
    t_eps: float = 0.001
    params: TermParams = field(default_factory=TermParams)

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        object.__setattr__(self, "terms", dict(self.terms))
        require(len(self.terms) > 0, "terms", self.terms, "need at least one loss term")
        for name, lam in self.terms.items():
            TERMS.get(name, "loss term")
            require(math.isfinite(lam) and lam >= 0.0, f"lambda[{name}]", lam, "must be >= 0")
        require(any(lam > 0 for lam in self.terms.values()), "terms", self.terms, "at least one lambda must be > 0")
        WEIGHTINGS.get(self.weighting, "weighting")
        require(math.isfinite(self.snr_gamma) and self.snr_gamma >= 0.0, "snr_gamma", self.snr_gamma, "must be >= 0 (0 disables Min-SNR)")
        require(0.0 < self.t_eps < 1.0, "t_eps", self.t_eps, "must lie in (0, 1)")
        require(self.params.huber_delta > 0.0, "huber_delta", self.params.huber_delta, "must be > 0")
        require(self.params.charbonnier_eps > 0.0, "charbonnier_eps", self.params.charbonnier_eps, "must be > 0")
        require(self.params.fft_norm in FFT_NORMS, "fft_norm", self.params.fft_norm, f"must be one of {', '.join(FFT_NORMS)}")

    def __call__(self, x0: Tensor, eps: Tensor, sigma: Tensor, x0_pred: Tensor) -> LossOutput:
        """Loss of one batch; tensors as in :class:`FlowPrediction`, computed in fp32."""
        p = FlowPrediction(x0.float(), eps.float(), sigma.float().to(x0.device), x0_pred.float(), self.t_eps)
        terms = {name: TERMS.get(name)(p, self.params) for name, lam in self.terms.items() if lam > 0}
        weight = WEIGHTINGS.get(self.weighting)(p.sigma, self.snr_gamma).detach()
        per_sample = weight * sum(self.terms[name] * value for name, value in terms.items())
        with torch.no_grad():
            x0_err = terms["x0_mse"] if "x0_mse" in terms else x0_mse(p, self.params)
            v_err = terms["v_mse"] if "v_mse" in terms else v_mse(p, self.params)
        return LossOutput(
            loss=per_sample.mean(),
            per_sample=per_sample.detach(),
            weight=weight,
            terms={k: v.detach() for k, v in terms.items()},
            x0_mse=x0_err.detach(),
            v_mse=v_err.detach(),
            sigma=p.sigma.detach(),
        )

    def with_term(self, name: str, weight: float, **params: Any) -> LossConfig:
        """This loss plus ``weight * name``; ``params`` set that term's :class:`TermParams` fields."""
        if name in self.terms:
            raise ConfigError(name, weight, f"this loss already has {name} (weight {self.terms[name]:g}); add each term once")
        return dataclasses.replace(self, terms={**self.terms, name: weight}, params=dataclasses.replace(self.params, **params))

    def with_weighting(self, weighting: str, snr_gamma: float | None = None) -> LossConfig:
        """This loss weighted per sample by ``weighting`` (one weighting per loss)."""
        if self.weighting != "none":
            raise ConfigError("weighting", weighting, f"this loss is already weighted by {self.weighting}; chain one weighting node, not two")
        return dataclasses.replace(self, weighting=weighting, snr_gamma=self.snr_gamma if snr_gamma is None else snr_gamma)

    def to_dict(self) -> dict:
        return {
            "schema": self.SCHEMA,
            "terms": dict(self.terms),
            "weighting": self.weighting,
            "snr_gamma": self.snr_gamma,
            "t_eps": self.t_eps,
            "params": dataclasses.asdict(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LossConfig:
        known = {f.name for f in dataclasses.fields(cls)} | {"schema"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("loss", unknown, f"unknown settings; known: {', '.join(sorted(known))}")
        params = TermParams(**data.get("params", {}))
        return cls(data.get("terms", {"x0_mse": 1.0}), data.get("weighting", "none"), data.get("snr_gamma", 5.0), data.get("t_eps", 0.001), params)

    def describe(self) -> str:
        terms = " + ".join(f"{lam:g}*{name}" for name, lam in self.terms.items() if lam > 0)
        w = "" if self.weighting == "none" else f" x {self.weighting}" + (f"(gamma={self.snr_gamma:g})" if self.weighting == "min_snr" else "")
        return f"({terms}){w}"
