"""Resolve a :class:`LoraConfig` against a module tree: which layers get adapters.

Names are those of ``named_modules()`` / ``named_parameters()`` of the module
handed in (for ComfyUI: ``model.diffusion_model``, so ``layers.0.attention.qkv``).
The result, a :class:`TargetPlan`, is plain data: it can be logged, counted,
saved in metadata, and built into adapters by :mod:`.engine`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from . import patterns
from .config import LoraConfig
from .presets import PRESETS, Preset

log = logging.getLogger(__name__)

MAX_CLOSE_NAMES = 8


@dataclass(frozen=True)
class Target:
    """One adapter: ``B (out_features, rank) @ A (rank, in_features)`` on rows of a Linear.

    ``name`` is the adapter name (``layers.0.attention.to_q``), ``module`` the
    Linear it sits on (``layers.0.attention.qkv``); ``rows = (start, size)``
    is the slice of the layer's output it adds to (``None``: all rows, and
    ``out_features`` is the layer's own).
    """

    name: str
    module: str
    in_features: int
    out_features: int
    rows: tuple[int, int] | None = None


@dataclass(frozen=True)
class TargetPlan:
    """Adapters and fully trained parameters for one model and config."""

    targets: tuple[Target, ...]
    unfrozen: tuple[str, ...]
    unfrozen_numel: int
    rank: int
    algorithm: str = "lora"
    adapter_numel: int | None = None
    """Adapter parameters of an algorithm other than plain LoRA (set by :func:`resolve`)."""

    @property
    def lora_numel(self) -> int:
        """Number of adapter parameters: LoRA ``sum(rank * (in + out))``; other algorithms as :mod:`.algorithms` counts them."""
        if self.adapter_numel is not None:
            return self.adapter_numel
        return sum(self.rank * (t.in_features + t.out_features) for t in self.targets)

    @property
    def modules(self) -> tuple[str, ...]:
        """Distinct Linear modules that carry at least one adapter, in model order."""
        return tuple(dict.fromkeys(t.module for t in self.targets))

    def summary(self) -> str:
        """E.g. ``8 adapters on 4 modules, 49,152 LoRA parameters; 2 unfrozen tensors, 512 parameters`` (``LoKr parameters``...)."""
        from .algorithms import algorithm

        text = f"{len(self.targets)} adapters on {len(self.modules)} modules, {self.lora_numel:,} {algorithm(self.algorithm).label} parameters"
        if self.unfrozen:
            text += f"; {len(self.unfrozen)} unfrozen tensors, {self.unfrozen_numel:,} parameters"
        return text


def candidates(model: nn.Module, preset: Preset) -> list[Target]:
    """Every adapter the preset *could* train: one per Linear, or one per split part."""
    out: list[Target] = []
    for module_name, module in model.named_modules():
        if not module_name or not isinstance(module, nn.Linear):
            continue
        split = next((s for s in preset.splits if patterns.matches(module_name, (s.module,), "split")), None)
        if split is None:
            out.append(Target(module_name, module_name, module.in_features, module.out_features))
            continue
        parts = len(split.parts)
        if module.out_features % parts:
            raise ConfigError("preset", module_name, f"out_features {module.out_features} does not split into {parts} equal parts {split.parts}")
        size = module.out_features // parts
        stem = module_name.rsplit(".", 1)[0]
        for i, part in enumerate(split.parts):
            out.append(Target(f"{stem}.{part}", module_name, module.in_features, size, (i * size, size)))
    return out


def resolve(model: nn.Module, config: LoraConfig) -> TargetPlan:
    """Targets of ``config`` in ``model``; zero adapters raises ConfigError listing close names."""
    preset = PRESETS.get(config.preset, "preset")
    pool = candidates(model, preset)
    include = (*preset.include, *config.include)
    exclude = (*preset.exclude, *config.exclude)
    chosen = tuple(t for t in pool if patterns.matches(t.name, include, "include") and not patterns.matches(t.name, exclude, "exclude"))
    if not chosen:
        names = [t.name for t in pool]
        raise ConfigError("include", list(include), f"matched no Linear layer of the model (preset {config.preset!r}, exclude {list(exclude)}); {_close(include, names)}")

    params = dict(model.named_parameters())
    unfrozen = tuple(n for n in params if patterns.matches(n, config.unfreeze, "unfreeze"))
    if config.unfreeze and not unfrozen:
        raise ConfigError("unfreeze", list(config.unfreeze), f"matched no parameter of the model; {_close(config.unfreeze, list(params))}")
    numel = None
    if config.algorithm != "lora":
        from .algorithms import algorithm

        method = algorithm(config.algorithm)
        for t in chosen:
            method.check_target(t, config)
        numel = sum(method.numel(t, config) for t in chosen)
    plan = TargetPlan(chosen, unfrozen, sum(params[n].numel() for n in unfrozen), config.rank, config.algorithm, numel)
    log.info("LoRA %s: %s", config.describe(), plan.summary())
    return plan


def _close(pattern_list, names: list[str]) -> str:
    """"close names: a, b, c" for the patterns, by difflib on the literal part of each."""
    found: list[str] = []
    for p in pattern_list:
        for n in difflib.get_close_matches(patterns.literal_hint(p), names, n=MAX_CLOSE_NAMES, cutoff=0.5):
            if n not in found:
                found.append(n)
    if not found:
        found = names[:MAX_CLOSE_NAMES]
        return f"some names in the model: {', '.join(found)}" if found else "the model has no Linear layers"
    return f"close names: {', '.join(found[:MAX_CLOSE_NAMES])}"
