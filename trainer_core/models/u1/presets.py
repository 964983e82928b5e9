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

import re
from dataclasses import dataclass
from types import MappingProxyType

from ...errors import ConfigError

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


def include_patterns(groups: tuple[str, ...]) -> tuple[str, ...]:
    """LoRA-engine globs for the targets of ``groups``: each target as a full name or a dotted suffix.

    ``("attn",)`` -> ``("self_attn.q_proj_mot_gen", "*.self_attn.q_proj_mot_gen", ...)``,
    the :func:`matches` rule in the pattern grammar of :mod:`trainer_core.lora.patterns`.
    """
    return tuple(p for g in groups for t in TARGET_GROUPS[g] for p in (t, f"*.{t}"))


def as_patterns(regexes: tuple[str, ...]) -> tuple[str, ...]:
    """``re.search`` regexes (train_u1's ``unfreeze``) -> full-match ``re:`` patterns of the LoRA config."""
    return tuple(f"re:.*(?:{r}).*" for r in regexes)


DEFAULT_UNFREEZE_PATTERNS = as_patterns(DEFAULT_UNFREEZE)
""":data:`DEFAULT_UNFREEZE` in the LoRA config's grammar (``LoraConfig(unfreeze=...)``)."""

SPEC_DEFAULT_RANK = 64
SPEC_OFF = ("off", "disable")
_BODY = re.compile(r"^r(?P<r>\d+)(?:a(?P<a>\d+(?:\.\d+)?))?$|^r=(?P<r2>\d+),\s*a=(?P<a2>\d+(?:\.\d+)?)$")


def parse_spec(spec: str) -> LoraPreset:
    """train_u1's ``lora.spec`` grammar (spec 5.8) -> a :class:`LoraPreset` named ``"spec"``.

    ``target=BODY`` entries separated by ``;``; a target is a name of
    :data:`TARGET_GROUPS` (``attn``, ``mlp``, ``fm_head``), ``all``, or one
    target suffix (``self_attn.q_proj_mot_gen``). BODY: ``rNaM``, ``rN``
    (alpha = N), ``r=N,a=M``, ``off``/``disable``, or empty/``on`` (r64 a64).
    Later entries override earlier ones for the same target.
    """
    chosen: dict[str, tuple[int, float] | None] = {}
    for raw in spec.split(";"):
        entry = raw.strip()
        if not entry:
            continue
        target, _, body = entry.partition("=")
        target, body = target.strip(), body.strip().lower()
        if target == "all":
            names = tuple(t for g in TARGET_GROUPS for t in TARGET_GROUPS[g])
        elif target in TARGET_GROUPS:
            names = TARGET_GROUPS[target]
        elif any(target in TARGET_GROUPS[g] for g in TARGET_GROUPS):
            names = (target,)
        else:
            known = ", ".join([*TARGET_GROUPS, "all", *(t for g in TARGET_GROUPS for t in TARGET_GROUPS[g])])
            raise ConfigError("lora spec target", target, f"unknown; use one of {known}")
        if body in SPEC_OFF:
            value = None
        elif body in ("", "on"):
            value = (SPEC_DEFAULT_RANK, float(SPEC_DEFAULT_RANK))
        else:
            m = _BODY.match(body)
            if m is None:
                raise ConfigError("lora spec", entry, "write the body as rNaM, rN, r=N,a=M, on or off")
            r = int(m["r"] or m["r2"])
            a = m["a"] or m["a2"]
            value = (r, float(a) if a is not None else float(r))
        for name in names:
            chosen[name] = value
    entries = tuple((t, *v) for t, v in chosen.items() if v is not None)
    if not entries:
        raise ConfigError("lora spec", spec, "enables no target")
    return LoraPreset("spec", entries)


def lora_settings(preset: LoraPreset) -> dict:
    """``LoraConfig`` keyword arguments for a U1 preset: ``preset="custom"``, ``include``, ``rank``, ``alpha``.

    The LoRA engine uses one rank and alpha per run; a preset or spec mixing
    ranks raises ConfigError naming it.
    """
    pairs = {(r, a) for _, r, a in preset.entries}
    if len(pairs) != 1:
        raise ConfigError("lora spec", preset.name, f"mixes ranks/alphas {sorted(pairs)}; FlowLoRA trains one rank and alpha per LoRA")
    (rank, alpha), = pairs
    return {"preset": "custom", "include": tuple(p for t in preset.targets for p in (t, f"*.{t}")), "rank": rank, "alpha": alpha}
