"""Timestep samplers: where on the noise axis each training sample is drawn.

Every sampler returns ``sigma`` of shape ``(B,)`` in float64 on the CPU, in the
pack's convention (``sigma = 1`` is pure noise, see :mod:`.flow`), and draws
only from the ``torch.Generator`` it is given: same seed, same draws.

A :class:`TimestepConfig` chains a base sampler, an optional shift and a clamp::

    sigma = clamp(shift(sampler.sample(B, gen)), clamp_min, clamp_max)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import flow
from .errors import ConfigError, require
from .registry import Registry

SAMPLERS: Registry[type] = Registry("timestep sampler")
SHIFTS: Registry[type] = Registry("timestep shift")

SPACES = ("t", "sigma")
JITTER_KINDS = ("uniform", "gaussian")


# ---------------------------------------------------------------- samplers


@SAMPLERS.register("uniform")
@dataclass(frozen=True)
class Uniform:
    """``sigma ~ U(sigma_min, sigma_max)``.

    U1's uniform t in [t_eps, 1) is ``Uniform(0.0, 1 - t_eps)`` here.
    """

    sigma_min: float = 0.0
    sigma_max: float = 1.0

    def __post_init__(self):
        require(0.0 <= self.sigma_min <= 1.0, "sigma_min", self.sigma_min, "must lie in [0, 1]")
        require(0.0 <= self.sigma_max <= 1.0, "sigma_max", self.sigma_max, "must lie in [0, 1]")
        require(self.sigma_min < self.sigma_max, "sigma_min", self.sigma_min, f"must be below sigma_max = {self.sigma_max}")

    def sample(self, batch_size: int, generator: torch.Generator, image_seq_len: int | None = None) -> Tensor:
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        return self.sigma_min + (self.sigma_max - self.sigma_min) * u


@SAMPLERS.register("logit_normal")
@dataclass(frozen=True)
class LogitNormal:
    """``sigmoid(N(mean, std**2))``, with ``mean``/``std`` given in ``space``.

    ``space = "t"`` reads them as U1's time (``t = sigmoid(u)``, ``sigma = 1 - t``),
    the form of the U1 report's (-0.8, 0.8), drawing exactly as U1 does
    (``t = sigmoid(mean + std * u)``, ``sigma = 1 - t``); ``space = "sigma"``
    gives ``sigma = sigmoid(mean + std * u)`` (SD3's convention). Since
    ``1 - sigmoid(x) = sigmoid(-x)``, t-space (m, s) has the distribution of
    sigma-space (-m, s).
    """

    mean: float = 0.0
    std: float = 1.0
    space: str = "sigma"

    def __post_init__(self):
        require(math.isfinite(self.mean), "mean", self.mean, "must be finite")
        require(self.std > 0.0 and math.isfinite(self.std), "std", self.std, "must be > 0")
        require(self.space in SPACES, "space", self.space, f"must be one of {', '.join(SPACES)}")

    def sample(self, batch_size: int, generator: torch.Generator, image_seq_len: int | None = None) -> Tensor:
        u = torch.randn(batch_size, generator=generator, dtype=torch.float64)
        x = torch.sigmoid(self.mean + self.std * u)
        return 1.0 - x if self.space == "t" else x


@SAMPLERS.register("sigmoid")
@dataclass(frozen=True)
class Sigmoid:
    """``sigma = sigmoid(scale * N(0, 1))`` (the kohya/musubi "sigmoid" sampler)."""

    scale: float = 1.0

    def __post_init__(self):
        require(self.scale > 0.0 and math.isfinite(self.scale), "scale", self.scale, "must be > 0")

    def sample(self, batch_size: int, generator: torch.Generator, image_seq_len: int | None = None) -> Tensor:
        return torch.sigmoid(self.scale * torch.randn(batch_size, generator=generator, dtype=torch.float64))


def flow_match_euler_sigmas(num_steps: int, shift: float, num_train_timesteps: int = 1000) -> Tensor:
    """The sigmas of diffusers' ``FlowMatchEulerDiscreteScheduler(shift)`` after
    ``set_timesteps(num_steps)``, without the final 0; float64, shape ``(K,)``.

    The scheduler shifts its 1000 training sigmas once, so its ``sigma_min`` is
    ``shift(1/1000)``; ``set_timesteps`` spaces K timesteps linearly from
    ``sigma_max * 1000`` to ``sigma_min * 1000`` and shifts them again. For
    K = 10, shift = 3 this gives [1.000, 0.960, ..., 0.278, 0.009].
    """
    train_sigmas = torch.arange(num_train_timesteps, 0, -1, dtype=torch.float64) / num_train_timesteps
    train_sigmas = flow.shift_sigma(train_sigmas, shift)
    sigma_max, sigma_min = train_sigmas[0], train_sigmas[-1]
    timesteps = torch.linspace(float(sigma_max * num_train_timesteps), float(sigma_min * num_train_timesteps), num_steps, dtype=torch.float64)
    return flow.shift_sigma(timesteps / num_train_timesteps, shift)


def anchors_from_sigmas(sigmas) -> tuple[float, ...]:
    """A sampler's sigma schedule (ComfyUI SIGMAS, ``(steps + 1,)``, ending in 0) -> anchor sigmas.

    The final 0 (the clean end the sampler steps to, never a model input) is
    dropped; every other value must lie in (0, 1] (a flow-matching schedule).
    """
    values = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, Tensor) else sigmas)]
    if values and values[-1] == 0.0:
        values = values[:-1]
    require(len(values) >= 1, "anchor_sigmas", "empty", "needs at least one sigma before the final 0; connect a scheduler with steps >= 1")
    bad = [v for v in values if not (0.0 < v <= 1.0 and math.isfinite(v))]
    require(not bad, "anchor_sigmas", bad[:3], "must lie in (0, 1] (a flow-matching model's sigmas); connect a scheduler on the model being trained")
    return tuple(values)


@SAMPLERS.register("anchor_coupled")
@dataclass(frozen=True)
class AnchorCoupled:
    """AC-RF anchor-coupled sampling (AC-RF report section 2, appendix B).

    Anchors are the K inference sigmas of the flow-match Euler scheduler at
    ``anchor_shift`` (see :func:`flow_match_euler_sigmas`; the report's), or,
    when ``anchor_sigmas`` is given, exactly those sigmas (the schedule the
    user samples with, e.g. ComfyUI's BasicScheduler, without its final 0; K is
    then their count and ``num_anchors``/``anchor_shift`` are unused). With
    batch B >= K the batch is stratified, sample i taking anchor
    ``floor(i*K/B)``; with B < K, B distinct anchors are drawn at random (the
    report's "without replacement"). Each draw gets jitter ``U(-jitter, jitter)``
    (the report's section 2.2 formula) or ``N(0, jitter**2)`` (the report's own
    appendix B and its reference code: None9527/None_Z-image-Turbo_trainer
    @4d8378e, ``src/zimage_trainer/acrf_trainer.py`` L131), then is clamped to
    ``[clamp_min, clamp_max]`` = [0.001, 0.999] (L132).
    """

    num_anchors: int = 10
    anchor_shift: float = 3.0
    jitter: float = 0.02
    jitter_kind: str = "uniform"
    clamp_min: float = 0.001
    clamp_max: float = 0.999
    anchor_sigmas: tuple[float, ...] = ()

    def __post_init__(self):
        if len(self.anchor_sigmas):
            object.__setattr__(self, "anchor_sigmas", anchors_from_sigmas(self.anchor_sigmas))
        else:
            object.__setattr__(self, "anchor_sigmas", ())
        require(int(self.num_anchors) == self.num_anchors and self.num_anchors >= 1, "num_anchors", self.num_anchors, "must be an integer >= 1")
        require(self.anchor_shift > 0.0, "anchor_shift", self.anchor_shift, "must be > 0")
        require(0.0 <= self.jitter < 1.0, "jitter", self.jitter, "must lie in [0, 1)")
        require(self.jitter_kind in JITTER_KINDS, "jitter_kind", self.jitter_kind, f"must be one of {', '.join(JITTER_KINDS)}")
        require(0.0 <= self.clamp_min < self.clamp_max <= 1.0, "clamp_min", self.clamp_min, f"need 0 <= clamp_min < clamp_max = {self.clamp_max} <= 1")

    @functools.cached_property
    def anchors(self) -> Tensor:
        """The K anchor sigmas, float64 (computed once): ``anchor_sigmas`` when given, else the report's."""
        if self.anchor_sigmas:
            return torch.tensor(self.anchor_sigmas, dtype=torch.float64)
        return flow_match_euler_sigmas(int(self.num_anchors), self.anchor_shift)

    @property
    def anchor_source(self) -> str:
        """Where the anchors come from, in words (histogram and logs)."""
        if self.anchor_sigmas:
            return f"the graph's SIGMAS ({len(self.anchor_sigmas)} anchors, final 0 dropped)"
        return f"AC-RF report: flow-match Euler scheduler, K {int(self.num_anchors)}, shift {self.anchor_shift:g}"

    def summary(self) -> str:
        """One line for :meth:`TimestepConfig.describe`."""
        values = [f"{v:.3f}" for v in self.anchors.tolist()]
        anchors = " ".join(values if len(values) <= 12 else [*values[:6], "...", *values[-3:]])  # a thousand anchors stay one line
        return f"anchor_coupled(anchors from {self.anchor_source}: {anchors}; jitter {self.jitter:g} {self.jitter_kind}; clamp [{self.clamp_min:g}, {self.clamp_max:g}])"

    def anchor_indices(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Anchor index per sample, ``(B,)`` int64."""
        k = len(self.anchors)
        if batch_size >= k:
            return torch.arange(batch_size, dtype=torch.int64) * k // batch_size
        return torch.randperm(k, generator=generator)[:batch_size]

    def sample(self, batch_size: int, generator: torch.Generator, image_seq_len: int | None = None) -> Tensor:
        sigma = self.anchors[self.anchor_indices(batch_size, generator)]
        if self.jitter_kind == "uniform":
            noise = (2.0 * torch.rand(batch_size, generator=generator, dtype=torch.float64) - 1.0) * self.jitter
        else:
            noise = torch.randn(batch_size, generator=generator, dtype=torch.float64) * self.jitter
        return (sigma + noise).clamp(self.clamp_min, self.clamp_max)


# ------------------------------------------------------------------ shifts


@SHIFTS.register("none")
@dataclass(frozen=True)
class NoShift:
    """Leave sigma as drawn."""

    def apply(self, sigma: Tensor, image_seq_len: int | None = None) -> Tensor:
        return sigma


@SHIFTS.register("static")
@dataclass(frozen=True)
class StaticShift:
    """``s * sigma / (1 + (s - 1) * sigma)``; s = 3 is Z-Image Turbo's and U1's sampling shift."""

    shift: float = 3.0

    def __post_init__(self):
        require(self.shift > 0.0 and math.isfinite(self.shift), "shift", self.shift, "must be > 0")

    def apply(self, sigma: Tensor, image_seq_len: int | None = None) -> Tensor:
        return flow.shift_sigma(sigma, self.shift)


@SHIFTS.register("resolution")
@dataclass(frozen=True)
class ResolutionShift:
    """Shift ``exp(mu)`` with mu linear in the image token count (SD3/Flux rule).

    Needs ``image_seq_len``, the number of latent patches of the batch.
    """

    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096

    def __post_init__(self):
        require(self.base_seq_len >= 1, "base_seq_len", self.base_seq_len, "must be >= 1")
        require(self.max_seq_len > self.base_seq_len, "max_seq_len", self.max_seq_len, f"must exceed base_seq_len = {self.base_seq_len}")

    def apply(self, sigma: Tensor, image_seq_len: int | None = None) -> Tensor:
        if image_seq_len is None:
            raise ConfigError("shift", "resolution", "needs the image token count of the batch")
        s = flow.seq_len_shift(image_seq_len, self.base_shift, self.max_shift, self.base_seq_len, self.max_seq_len)
        return flow.shift_sigma(sigma, s)


# ------------------------------------------------------------------ config


@dataclass(frozen=True)
class TimestepConfig:
    """A base sampler, then a shift, then a clamp to ``[clamp_min, clamp_max]``.

    ``TimestepConfig(LogitNormal(-0.8, 0.8, "t"), clamp_min=0.05, clamp_max=0.95)``
    is U1's logit-normal; ``TimestepConfig(AnchorCoupled())`` is AC-RF's.
    """

    sampler: Any = field(default_factory=Uniform)
    shift: Any = field(default_factory=NoShift)
    clamp_min: float = 0.0
    clamp_max: float = 1.0

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        require(0.0 <= self.clamp_min < self.clamp_max <= 1.0, "clamp_min", self.clamp_min, f"need 0 <= clamp_min < clamp_max = {self.clamp_max} <= 1")
        if isinstance(self.sampler, AnchorCoupled) and not isinstance(self.shift, NoShift):
            raise ConfigError("shift", _name_of(SHIFTS, self.shift), "anchor_coupled anchors already carry their shift (anchor_shift); use shift = none")

    def sample(self, batch_size: int, generator: torch.Generator, image_seq_len: int | None = None) -> Tensor:
        """``(B,)`` float64 sigmas."""
        require(batch_size >= 1, "batch_size", batch_size, "must be >= 1")
        sigma = self.sampler.sample(batch_size, generator, image_seq_len)
        sigma = self.shift.apply(sigma, image_seq_len)
        return sigma.clamp(self.clamp_min, self.clamp_max)

    def with_shift(self, shift: Any) -> TimestepConfig:
        """This config with ``shift`` between the base draw and the clamp (one shift per config)."""
        if not isinstance(self.shift, NoShift):
            raise ConfigError("timesteps", self.describe(), "already has a shift; chain one shift node, not two")
        return dataclasses.replace(self, shift=shift)

    def to_dict(self) -> dict:
        return {
            "schema": self.SCHEMA,
            "sampler": {"name": _name_of(SAMPLERS, self.sampler), **dataclasses.asdict(self.sampler)},
            "shift": {"name": _name_of(SHIFTS, self.shift), **dataclasses.asdict(self.shift)},
            "clamp_min": self.clamp_min,
            "clamp_max": self.clamp_max,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> TimestepConfig:
        sampler = _build(SAMPLERS, dict(data.get("sampler", {"name": "uniform"})), "sampler")
        shift = _build(SHIFTS, dict(data.get("shift", {"name": "none"})), "shift")
        return cls(sampler, shift, float(data.get("clamp_min", 0.0)), float(data.get("clamp_max", 1.0)))

    def describe(self) -> str:
        """One line for plots and logs, e.g. ``logit_normal(mean=-0.8, std=0.8, space=t)``."""
        parts = [_describe(SAMPLERS, self.sampler)]
        if not isinstance(self.shift, NoShift):
            parts.append(_describe(SHIFTS, self.shift))
        if (self.clamp_min, self.clamp_max) != (0.0, 1.0):
            parts.append(f"clamp[{self.clamp_min:g}, {self.clamp_max:g}]")
        return " -> ".join(parts)


def make_sampler(name: str, **values: Any):
    """The sampler ``name`` built from the entries of ``values`` that it declares.

    Nodes pass every widget; each sampler reads only its own fields (its
    docstring lists them), so the rest are deliberately not used.
    """
    return _pick(SAMPLERS.get(name, "sampler"), values)


def make_shift(name: str, **values: Any):
    """The shift ``name`` built from the entries of ``values`` that it declares."""
    return _pick(SHIFTS.get(name, "shift"), values)


def _pick(cls: type, values: Mapping) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _build(registry: Registry, data: dict, field_name: str) -> Any:
    """Strict build from saved JSON: unknown keys are an error, missing ones default."""
    cls = registry.get(data.pop("name"), field_name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(field_name, unknown, f"unknown settings for {cls.__name__}; known: {', '.join(sorted(known))}")
    return cls(**data)


def _name_of(registry: Registry, obj: Any) -> str:
    for name in registry:
        if type(obj) is registry.get(name):
            return name
    raise TypeError(f"{type(obj).__name__} is not a registered {registry.kind}")


def _describe(registry: Registry, obj: Any) -> str:
    summary = getattr(obj, "summary", None)
    if summary is not None:
        return summary()
    args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in dataclasses.asdict(obj).items())
    return f"{_name_of(registry, obj)}({args})"
