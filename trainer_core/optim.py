"""Optimizers, gradient clipping and gradient accumulation for the step loop.

An :class:`OptimizerConfig` holds every optimizer and lr-schedule setting; the
loop builds from it and runs each optimizer update as::

    optimizer = build_optimizer(config, params)
    scheduler = build_scheduler(config, optimizer, update_count(micro_steps, config.grad_accumulation))
    for micro in range(micro_steps):
        loss = compute_loss(...)
        (loss * loss_scale(micro, config.grad_accumulation, micro_steps)).backward()
        if is_update_step(micro, config.grad_accumulation, micro_steps):
            grad_norm = clip_gradients(params, config.max_grad_norm)  # after the last backward
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

Optimizers come from :data:`OPTIMIZERS`; each builder reads only the settings
its docstring names. bitsandbytes is imported only by the 8-bit builders.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .errors import ConfigError, require
from .registry import Registry
from .schedules import SCHEDULES, build_scheduler, lr_factor  # noqa: F401  (re-exported for the loop)

logger = logging.getLogger(__name__)

Params = Iterable[torch.Tensor] | Iterable[dict]
Builder = Callable[["OptimizerConfig", list], torch.optim.Optimizer]

OPTIMIZERS: Registry[Builder] = Registry("optimizer")


# ------------------------------------------------------------------ config


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer, lr schedule, clipping and accumulation settings.

    ``betas``/``eps`` feed the Adam family; ``momentum`` feeds SGD;
    ``weight_decay`` every optimizer (decoupled in AdamW/Adafactor, L2 in SGD).
    ``schedule``, ``warmup_steps``, ``num_cycles`` (cosine_with_restarts only) and
    ``min_lr_ratio`` define :func:`~trainer_core.schedules.lr_factor`, counted in
    optimizer updates. ``max_grad_norm = 0`` disables clipping.
    ``grad_accumulation`` micro-batches make one update.

    AC-RF: ``OptimizerConfig("adamw8bit", 1e-4, schedule="cosine_with_restarts",
    min_lr_ratio=0.01, grad_accumulation=4)``; U1: ``OptimizerConfig("paged_adamw8bit", 5e-5)``.
    """

    optimizer: str = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_steps: int = 0
    num_cycles: int = 1
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    grad_accumulation: int = 1

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        OPTIMIZERS.get(self.optimizer, "optimizer")
        SCHEDULES.get(self.schedule, "schedule")
        object.__setattr__(self, "betas", tuple(self.betas))
        require(_finite(self.lr) and self.lr > 0.0, "lr", self.lr, "must be > 0")
        require(len(self.betas) == 2, "betas", self.betas, "must be two numbers (beta1, beta2)")
        for name, beta in zip(("beta1", "beta2"), self.betas, strict=True):
            require(_finite(beta) and 0.0 <= beta < 1.0, name, beta, "must lie in [0, 1)")
        require(_finite(self.weight_decay) and self.weight_decay >= 0.0, "weight_decay", self.weight_decay, "must be >= 0")
        require(_finite(self.eps) and self.eps > 0.0, "eps", self.eps, "must be > 0")
        require(_finite(self.momentum) and 0.0 <= self.momentum < 1.0, "momentum", self.momentum, "must lie in [0, 1)")
        require(_is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be an integer >= 0")
        require(_is_int(self.num_cycles) and self.num_cycles >= 1, "num_cycles", self.num_cycles, "must be an integer >= 1")
        require(_finite(self.min_lr_ratio) and 0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        require(_finite(self.max_grad_norm) and self.max_grad_norm >= 0.0, "max_grad_norm", self.max_grad_norm, "must be >= 0 (0 disables clipping)")
        require(_is_int(self.grad_accumulation) and self.grad_accumulation >= 1, "grad_accumulation", self.grad_accumulation, "must be an integer >= 1")

    def to_dict(self) -> dict:
        """JSON-ready dict with a ``schema`` version (for LoRA metadata and resume)."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return {"schema": self.SCHEMA, **data}

    @classmethod
    def from_dict(cls, data: Mapping) -> OptimizerConfig:
        """Inverse of :meth:`to_dict`. Missing settings take their defaults (older
        files); unknown settings and newer schemas are errors, never ignored."""
        data = dict(data)
        schema = data.pop("schema", cls.SCHEMA)
        require(_is_int(schema) and schema <= cls.SCHEMA, "schema", schema, f"this pack reads optimizer configs up to schema {cls.SCHEMA}; update the pack")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("optimizer config", unknown, f"unknown settings; known: {', '.join(sorted(known))}")
        return cls(**data)

    def describe(self) -> str:
        """One line for logs, e.g. ``adamw lr=0.0001 cosine warmup=10 clip=1 accum=4``."""
        parts = [f"{self.optimizer} lr={self.lr:g}", self.schedule]
        if self.schedule == "cosine_with_restarts":
            parts.append(f"cycles={self.num_cycles}")
        if self.warmup_steps:
            parts.append(f"warmup={self.warmup_steps}")
        if self.min_lr_ratio:
            parts.append(f"min_ratio={self.min_lr_ratio:g}")
        parts.append(f"clip={self.max_grad_norm:g}" if self.max_grad_norm else "no clip")
        if self.grad_accumulation > 1:
            parts.append(f"accum={self.grad_accumulation}")
        return " ".join(parts)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# -------------------------------------------------------------- optimizers


def build_optimizer(config: OptimizerConfig, params: Params) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over ``params``.

    ``params`` is an iterable of tensors or of param-group dicts (a group may set
    its own ``lr``/``weight_decay``; the config gives the defaults). The 8-bit
    optimizers first make one probe update on the parameters' device, so a
    bitsandbytes that cannot run there fails here with a clear ConfigError.
    """
    params = list(params)
    require(_count_params(params) > 0, "params", 0, "nothing to optimise: no trainable parameters were given")
    return OPTIMIZERS.get(config.optimizer, "optimizer")(config, params)


@OPTIMIZERS.register("adamw")
def _adamw(config: OptimizerConfig, params: list) -> torch.optim.Optimizer:
    """torch AdamW: lr, betas, eps, weight_decay."""
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


@OPTIMIZERS.register("adamw8bit")
def _adamw8bit(config: OptimizerConfig, params: list) -> torch.optim.Optimizer:
    """bitsandbytes AdamW8bit (block-wise 8-bit moments for tensors of 4096+
    elements, 32-bit below): lr, betas, eps, weight_decay."""
    return _bnb_adamw(config, params, "adamw8bit", "AdamW8bit")


@OPTIMIZERS.register("paged_adamw8bit")
def _paged_adamw8bit(config: OptimizerConfig, params: list) -> torch.optim.Optimizer:
    """bitsandbytes PagedAdamW8bit (moments in CUDA unified memory, paged to the
    host under memory pressure; on CPU bitsandbytes runs it unpaged): lr, betas,
    eps, weight_decay."""
    return _bnb_adamw(config, params, "paged_adamw8bit", "PagedAdamW8bit")


@OPTIMIZERS.register("adafactor")
def _adafactor(config: OptimizerConfig, params: list) -> torch.optim.Optimizer:
    """torch Adafactor: lr (the cap of its relative step size, min(lr, 1/sqrt(t))),
    weight_decay; factored second moments, no first moment; its own eps."""
    return torch.optim.Adafactor(params, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("sgd")
def _sgd(config: OptimizerConfig, params: list) -> torch.optim.Optimizer:
    """torch SGD: lr, momentum, weight_decay."""
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _bnb_adamw(config: OptimizerConfig, params: list, name: str, class_name: str) -> torch.optim.Optimizer:
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise ConfigError("optimizer", name, f"needs bitsandbytes, which does not import here ({e}); `pip install bitsandbytes` or choose adamw") from e
    cls = getattr(bnb.optim, class_name)
    device = _first_device(params)
    _probe(cls, name, device)
    if name.startswith("paged") and device.type != "cuda":
        logger.info("%s on %s: bitsandbytes pages only CUDA memory and runs it as plain adamw8bit", name, device.type)
    return cls(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


def _probe(cls: type, name: str, device: torch.device) -> None:
    """One update of a throwaway 4096-element tensor (large enough for the 8-bit
    path) on ``device``; any failure becomes a ConfigError naming the optimizer."""
    probe = torch.zeros(4096, device=device, requires_grad=True)
    probe.grad = torch.ones_like(probe)
    try:
        cls([probe], lr=1e-3).step()
    except Exception as e:
        raise ConfigError(
            "optimizer",
            name,
            f"bitsandbytes cannot run it on {device.type} tensors here ({type(e).__name__}: {e}); "
            "install a bitsandbytes build for this device or choose adamw",
        ) from e


def _first_device(params: list) -> torch.device:
    for p in _tensors(params):
        return p.device
    return torch.device("cpu")


def _tensors(params: list) -> Iterable[torch.Tensor]:
    for item in params:
        if isinstance(item, dict):
            yield from item["params"] if not isinstance(item["params"], torch.Tensor) else [item["params"]]
        else:
            yield item


def _count_params(params: list) -> int:
    return sum(1 for _ in _tensors(params))


# ---------------------------------------------------------------- clipping


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """Total L2 norm of the gradients of ``params``, clipping them to ``max_norm``.

    The norm is measured before clipping and returned even when clipping is
    off (``max_norm = 0``), for logging. Tensors without a gradient are skipped
    (no gradients: 0.0). A non-finite norm is returned with the gradients left
    untouched, so the loop can report it instead of stepping on NaNs.
    """
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad], norm_type=2.0)
    value = float(norm)
    if max_norm > 0.0 and math.isfinite(value):
        torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, norm)
    return value


# ------------------------------------------------------------ accumulation


def update_count(micro_steps: int, accumulation: int) -> int:
    """Optimizer updates in ``micro_steps`` micro-batches (a partial last window counts)."""
    return -(-micro_steps // accumulation)


def is_update_step(micro_step: int, accumulation: int, total_micro_steps: int | None = None) -> bool:
    """True when micro-batch ``micro_step`` (0-based) closes an accumulation
    window, so the optimizer steps after its backward; the last micro-batch of
    the run always closes one."""
    if total_micro_steps is not None and micro_step == total_micro_steps - 1:
        return True
    return (micro_step + 1) % accumulation == 0


def loss_scale(micro_step: int, accumulation: int, total_micro_steps: int | None = None) -> float:
    """Factor for the loss of ``micro_step`` so that each update applies the
    window's mean gradient: ``1 / window length`` (shorter for a partial last window)."""
    start = micro_step - micro_step % accumulation
    end = start + accumulation
    if total_micro_steps is not None:
        end = min(end, total_micro_steps)
    return 1.0 / (end - start)
