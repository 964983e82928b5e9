"""LoraConfig, patterns, presets and the atomic file writer: pure, no ComfyUI."""

from __future__ import annotations

import json
import os

import pytest
import torch
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.lora import INITS, PRESETS, LoraConfig, engine, patterns, read_metadata, save_lora
from safetensors.torch import load_file


def test_defaults_and_scale():
    c = LoraConfig()
    assert (c.preset, c.rank, c.alpha, c.dropout, c.init) == ("zimage_attn", 16, 16.0, 0.0, "default")
    assert LoraConfig(rank=64, alpha=32).scale == 0.5


def test_round_trip_through_json():
    c = LoraConfig(preset="zimage_attn_ffn", include=("re:noise_refiner\\.0\\..*",), exclude=("layers.1.*",), rank=8, alpha=4, dropout=0.1, init="gaussian", unfreeze=("*norm*",))
    back = LoraConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert c.to_dict()["schema"] == 1  # plain LoRA is still written as schema 1 (config.py); other algorithms as LoraConfig.SCHEMA


def test_from_dict_tolerates_unknown_keys_and_refuses_newer_schema():
    assert LoraConfig.from_dict({"rank": 4, "future_field": 1}).rank == 4
    with pytest.raises(ConfigError, match="newer FlowLoRA"):
        LoraConfig.from_dict({"schema": LoraConfig.SCHEMA + 1})


def test_patterns_from_text_lines_or_commas():
    c = LoraConfig(include="layers.0.*\n re:layers\\.1\\..* , *w2", unfreeze="")
    assert c.include == ("layers.0.*", "re:layers\\.1\\..*", "*w2")
    assert c.unfreeze == ()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(rank=0), "rank"),
        (dict(rank=2.5), "rank"),
        (dict(alpha=0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(dropout=1.0), "dropout"),
        (dict(init="pissa"), "init"),
        (dict(preset="nope"), "preset"),
        (dict(include=("re:layers.(",)), "include"),
        (dict(unfreeze=("re:[",)), "unfreeze"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        LoraConfig(**kwargs)
    assert e.value.field == field


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="zimage_attn_ffn"):
        LoraConfig(preset="zimage_atn")


def test_glob_and_regex_match_whole_names():
    assert patterns.matches("layers.3.attention.out", ["layers.*.attention.out"])
    assert not patterns.matches("noise_refiner.0.layers.3.attention.out", ["layers.*.attention.out"])
    assert patterns.matches("layers.12.feed_forward.w1", ["re:layers\\.1[0-9]\\.feed_forward\\.w[13]"])
    assert not patterns.matches("layers.12.feed_forward.w2", ["re:layers\\.1[0-9]\\.feed_forward\\.w[13]"])


def test_every_init_has_an_implementation_and_leaves_b_zero():
    assert set(INITS) == set(engine._INITS)
    gen = torch.Generator().manual_seed(0)
    a = engine._init_a("default", 4, 100, gen)
    assert a.shape == (4, 100) and a.abs().max() <= 0.1
    g = engine._init_a("gaussian", 4, 10000, torch.Generator().manual_seed(0))
    assert abs(g.std().item() - 0.25) < 0.01


def test_presets_are_data():
    zimage = PRESETS.get("zimage_attn")
    assert [s.parts for s in zimage.splits] == [("to_q", "to_k", "to_v")]
    assert "layers.*.attention.out" in zimage.include
    assert set(PRESETS.get("zimage_attn_ffn").include) - set(zimage.include) == {"layers.*.feed_forward.w1", "layers.*.feed_forward.w2", "layers.*.feed_forward.w3"}
    assert PRESETS.get("all_linear").include == ("*",)


def test_save_lora_writes_tensors_and_metadata(tmp_path):
    path = save_lora(tmp_path / "sub" / "a.safetensors", {"x.lora_A.weight": torch.ones(2, 3)}, {"step": 5, "name": "run"})
    assert torch.equal(load_file(path)["x.lora_A.weight"], torch.ones(2, 3))
    assert read_metadata(path) == {"step": "5", "name": "run"}


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = save_lora(tmp_path / "a.safetensors", {"w": torch.zeros(2)})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_lora(path, {"w": torch.ones(2)})
    assert torch.equal(load_file(path)["w"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
