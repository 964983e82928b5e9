"""U1 LoRA presets and partial fine-tuning patterns, as data (spec 5.8, 5.9).

A target is a module-name *suffix* under the generation tower's
``language_model.model.layers.{i}.`` (or a full module name for the head);
a module matches a target when its dotted name ends with ``"." + target`` or
equals it. The LoRA engine (``trainer_core/lora``) registers these; counts
for the 8B model are asserted in ``tests/test_u1_meta.py``.

Module names are those of :class:`~.towers.GenerationTower`, which are the
official checkpoint's names (e.g.
``language_model.model.layers.0.self_attn.q_proj_mot_gen``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

TARGET_GROUPS = MappingProxyType(
    {
        "attn": ("self_attn.q_proj_mot_gen", "self_attn.k_proj_mot_gen", "self_attn.v_proj_mot_gen", "self_attn.o_proj_mot_gen"),
        "mlp": ("mlp_mot_gen.gate_proj", "mlp_mot_gen.up_proj", "mlp_mot_gen.down_proj"),
        "fm_head": ("fm_modules.fm_head.0", "fm_modules.fm_head.2"),
    }
)
"""train_u1's group aliases -> target suffixes (``all`` is every group)."""


@dataclass(frozen=True)
class LoraPreset:
    """One preset: ``(target suffix, rank, alpha)`` entries."""

    name: str
    entries: tuple[tuple[str, int, float], ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t for t, _, _ in self.entries)


def _preset(name: str, groups: tuple[str, ...], rank: int, alpha: float) -> LoraPreset:
    return LoraPreset(name, tuple((t, rank, alpha) for g in groups for t in TARGET_GROUPS[g]))


PRESETS = MappingProxyType(
    {
        p.name: p
        for p in (
            _preset("default", ("attn", "mlp", "fm_head"), 64, 64.0),
            _preset("attn_only", ("attn",), 64, 64.0),
            _preset("attn_only_no_head", ("attn",), 64, 64.0),
            _preset("attn_mlp", ("attn", "mlp"), 64, 64.0),
            _preset("attn_mlp_no_head", ("attn", "mlp"), 64, 64.0),
            _preset("official_r128", ("attn", "mlp", "fm_head"), 128, 128.0),
        )
    }
)
"""train_u1's ``LORA_PRESETS`` (the A3B MoE presets are not included)."""

DEFAULT_UNFREEZE = (
    r"^fm_modules\.timestep_embedder\.",
    r"^fm_modules\.noise_scale_embedder\.",
    r"^fm_modules\.vision_model_mot_gen\.",
    r"^fm_modules\.fm_head\.",
)
"""Regexes of the parameters fully fine-tuned by default (all of ``fm_modules``)."""


def matches(module_name: str, target: str) -> bool:
    """True when ``module_name`` is ``target`` or ends with ``"." + target``."""
    return module_name == target or module_name.endswith("." + target)
