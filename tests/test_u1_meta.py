"""The 8B U1 config on the meta device: tensor names, parameter and LoRA counts (spec 1.3, 1.4, 5.8, 5.9)."""

from __future__ import annotations

import re

import pytest
import torch
from flowlora.trainer_core.models.u1 import U1_8B_MOT, U15_8B_MOT, build_towers
from flowlora.trainer_core.models.u1.presets import DEFAULT_UNFREEZE, PRESETS, matches
from torch import nn


@pytest.fixture(scope="module")
def towers_8b():
    with torch.device("meta"):
        return build_towers(U1_8B_MOT, dtype=torch.bfloat16)


def lora_counts(module: nn.Module, preset_name: str) -> tuple[int, int]:
    """(wraps, LoRA parameters) of a preset on the module tree: r * (in + out) per Linear."""
    preset = PRESETS[preset_name]
    wraps = params = 0
    for name, m in module.named_modules():
        hits = [(r, a) for target, r, a in preset.entries if matches(name, target)]
        if hits:
            assert isinstance(m, nn.Linear), name
            r = hits[-1][0]
            wraps += 1
            params += r * (m.in_features + m.out_features)
    return wraps, params


def test_total_and_tensor_count(towers_8b):
    prefix, gen = towers_8b
    sd = {**prefix.state_dict(), **gen.state_dict()}
    assert len(sd) == 1116
    assert not set(prefix.state_dict()) & set(gen.state_dict())
    assert sum(t.numel() for t in sd.values()) == 17_552_340_992
    assert all(t.dtype == torch.bfloat16 for t in sd.values())


def test_exact_shapes(towers_8b):
    prefix, gen = towers_8b
    sd = {**prefix.state_dict(), **gen.state_dict()}
    expect = {
        "language_model.model.embed_tokens.weight": (151936, 4096),
        "language_model.lm_head.weight": (151936, 4096),
        "language_model.model.norm_mot_gen.weight": (4096,),
        "language_model.model.layers.41.self_attn.k_proj_mot_gen.weight": (1024, 4096),
        "language_model.model.layers.41.self_attn.q_norm_hw_mot_gen.weight": (64,),
        "language_model.model.layers.0.mlp.down_proj.weight": (4096, 12288),
        "language_model.model.layers.0.mlp_mot_gen.gate_proj.weight": (12288, 4096),
        "language_model.model.layers.0.post_attention_layernorm_mot_gen.weight": (4096,),
        "vision_model.embeddings.patch_embedding.weight": (1024, 3, 16, 16),
        "fm_modules.vision_model_mot_gen.embeddings.dense_embedding.weight": (4096, 1024, 2, 2),
        "fm_modules.timestep_embedder.mlp.0.weight": (4096, 256),
        "fm_modules.noise_scale_embedder.mlp.2.bias": (4096,),
        "fm_modules.fm_head.0.weight": (4096, 4096),
        "fm_modules.fm_head.2.weight": (3072, 4096),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    per_layer = [k for k in sd if k.startswith("language_model.model.layers.7.")]
    assert len(per_layer) == 26


def test_lora_presets(towers_8b):
    _, gen = towers_8b
    assert lora_counts(gen, "attn_mlp_no_head") == (294, 203_685_888)
    assert lora_counts(gen, "default") == (296, 204_668_928)
    assert lora_counts(gen, "attn_only") == (168, 71_565_312)
    assert lora_counts(gen, "official_r128") == (296, 409_337_856)


def test_understanding_tower_is_never_a_target(towers_8b):
    prefix, _ = towers_8b
    for name in PRESETS:
        assert lora_counts(prefix, name) == (0, 0)


def test_default_unfreeze(towers_8b):
    prefix, gen = towers_8b
    patterns = [re.compile(p) for p in DEFAULT_UNFREEZE]
    hit = sum(p.numel() for n, p in gen.named_parameters() if any(r.search(n) for r in patterns))
    assert hit == 82_604_032
    assert not any(any(r.search(n) for r in patterns) for n, _ in prefix.named_parameters())


def test_u15_conv_head():
    with torch.device("meta"):
        _, gen = build_towers(U15_8B_MOT, dtype=torch.bfloat16)
    head = {k: tuple(v.shape) for k, v in gen.state_dict().items() if k.startswith("fm_modules.fm_head.")}
    assert head == {
        "fm_modules.fm_head.conv1.weight": (1024, 1024, 3, 3),
        "fm_modules.fm_head.conv1.bias": (1024,),
        "fm_modules.fm_head.conv2.weight": (192, 256, 3, 3),
        "fm_modules.fm_head.conv2.bias": (192,),
    }
    assert sum(torch.Size(s).numel() for s in head.values()) == 9_880_768


@pytest.mark.parametrize(("preset", "wraps", "params"), [("u1_attn_mlp_no_head", 294, 203_685_888), ("u1_default", 296, 204_668_928), ("u1_attn_only", 168, 71_565_312)])
def test_registry_presets_resolve_on_the_generation_tower(towers_8b, preset, wraps, params):
    """The LoRA engine's registry presets + default unfreeze, on the tree the U1 MODEL's diffusion_model has."""
    from flowlora.trainer_core.lora import LoraConfig, resolve
    from flowlora.trainer_core.models.u1.presets import DEFAULT_UNFREEZE_PATTERNS

    prefix, gen = towers_8b
    plan = resolve(gen, LoraConfig(preset=preset, rank=64, alpha=64, unfreeze=DEFAULT_UNFREEZE_PATTERNS))
    assert (len(plan.targets), plan.lora_numel) == (wraps, params)
    assert plan.unfrozen_numel == 82_604_032
    assert all(t.rows is None for t in plan.targets)
    assert {t.name for t in plan.targets} == {t.module for t in plan.targets}
    with pytest.raises(Exception, match="matched no Linear"):
        resolve(prefix, LoraConfig(preset=preset))  # the understanding tower is never a target


def test_spec_grammar(towers_8b):
    from flowlora.trainer_core.errors import ConfigError
    from flowlora.trainer_core.lora import LoraConfig, resolve
    from flowlora.trainer_core.models.u1.presets import lora_settings, parse_spec

    _, gen = towers_8b
    assert parse_spec("attn=r64a64; mlp=r64a64; fm_head=r64a64").entries == PRESETS["default"].entries
    assert parse_spec("all; fm_head=off").entries == PRESETS["attn_mlp_no_head"].entries
    assert parse_spec("attn=r=128,a=128;mlp=r128;fm_head=on;fm_head=r128a128").entries == PRESETS["official_r128"].entries
    assert parse_spec("self_attn.q_proj_mot_gen=r8a4").entries == (("self_attn.q_proj_mot_gen", 8, 4.0),)
    plan = resolve(gen, LoraConfig(**lora_settings(parse_spec("all=r128a128"))))
    assert (len(plan.targets), plan.lora_numel) == (296, 409_337_856)
    for bad, field in (("nope=r4", "target"), ("attn=x", "lora spec"), ("attn=off", "lora spec")):
        with pytest.raises(ConfigError, match=field):
            parse_spec(bad)
    with pytest.raises(ConfigError, match="mixes"):
        lora_settings(parse_spec("attn=r4; mlp=r8"))
