"""LoRA Config and LoRA Loader nodes, in-process on ComfyUI's V3 API, plus stock LoraLoaderModelOnly."""

from __future__ import annotations

import pytest
import torch
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.lora import LoraAdapters, LoraConfig, lora_metadata, lora_state_dict, save_lora
from safetensors.torch import load_file

CONFIG_WIDGETS = dict(preset="zimage_attn", rank=4, alpha=4.0, dropout=0.0, init="default", include="", exclude="", unfreeze="")
TOL = 1e-5


@pytest.fixture(scope="module")
def env(comfy_root, tmp_path_factory):
    """(tiny_models, nodes.lora, loras folder) with ComfyUI's "loras" folder pointed at a temp dir."""
    import folder_paths
    import tiny_models
    from flowlora.nodes import lora

    loras = tmp_path_factory.mktemp("loras")
    saved = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], saved[1])
    folder_paths.filename_list_cache.pop("loras", None)
    yield tiny_models, lora, loras
    folder_paths.folder_names_and_paths["loras"] = saved
    folder_paths.filename_list_cache.pop("loras", None)


def trained_file(tm, loras, name: str, **config) -> tuple[str, torch.Tensor]:
    """Save a "trained" LoRA (random factors, one unfrozen norm) under ``loras``; returns (name, attached output)."""
    model = tm.tiny_zimage(seed=0)
    dm = model.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(**{"rank": 4, "unfreeze": ("layers.1.ffn_norm2.weight",), **config}))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        with adapters.attached(dm):
            y = tm.denoise(model, *tm.zimage_inputs(seed=2))
    save_lora(loras / name, lora_state_dict(adapters), lora_metadata(adapters, step=3))
    return name, y


def test_config_node_builds_the_config_and_reports_matches(env):
    tm, lora, _ = env
    w = {**CONFIG_WIDGETS, "include": "layers.0.feed_forward.w2", "unfreeze": "layers.*.attention_norm1.weight"}
    config, report = lora.LoraConfigNode.execute(**w).result
    assert config == LoraConfig(preset="zimage_attn", rank=4, alpha=4.0, include=("layers.0.feed_forward.w2",), unfreeze=("layers.*.attention_norm1.weight",))
    assert report == config.describe()
    _, report = lora.LoraConfigNode.execute(**w, model=tm.tiny_zimage(seed=0)).result
    lines = report.splitlines()
    assert lines[0] == "9 adapters on 5 modules, 20,480 LoRA parameters; 2 unfrozen tensors, 512 parameters"
    assert "layers.0.attention.to_k  [layers.0.attention.qkv rows 256:512]" in lines
    assert "unfrozen: layers.1.attention_norm1.weight" in lines


def test_config_node_validation_and_zero_matches(env):
    tm, lora, _ = env
    assert lora.LoraConfigNode.validate_inputs(**CONFIG_WIDGETS) is True
    assert "rank" in lora.LoraConfigNode.validate_inputs(**{**CONFIG_WIDGETS, "rank": 0})
    assert "include" in lora.LoraConfigNode.validate_inputs(**{**CONFIG_WIDGETS, "include": "re:("})
    with pytest.raises(ConfigError, match=r"close names: layers\.0\.feed_forward\.w1"):
        lora.LoraConfigNode.execute(**{**CONFIG_WIDGETS, "preset": "custom", "include": "layers.0.feed_forwrd.w1"}, model=tm.tiny_zimage(seed=0))


def test_stock_lora_loader_model_only_reproduces_the_trained_output(env):
    import nodes

    tm, _, loras = env
    name, y_attached = trained_file(tm, loras, "stock.safetensors", preset="zimage_attn_ffn")
    (loaded,) = nodes.LoraLoaderModelOnly().load_lora_model_only(tm.tiny_zimage(seed=0), name, 1.0)
    with torch.no_grad(), tm.patched(loaded):
        y = tm.denoise(loaded, *tm.zimage_inputs(seed=2))
    assert (y - y_attached).abs().max().item() <= TOL


def test_loader_node_applies_and_reports_unmatched_keys_by_name(env):
    tm, lora, loras = env
    name, y_attached = trained_file(tm, loras, "ours.safetensors")
    base = tm.tiny_zimage(seed=0)
    patched, report = lora.LoraLoaderNode.execute(base, name, 1.0).result
    assert base.patches == {} and patched is not base
    with torch.no_grad(), tm.patched(patched):
        y = tm.denoise(patched, *tm.zimage_inputs(seed=2))
    assert (y - y_attached).abs().max().item() <= TOL
    assert report.splitlines()[0] == "ours.safetensors: 25 of 25 keys loaded"
    assert "trained with FlowLoRA: zimage_attn r4 a16 unfreeze[1]" in report and report.endswith("unmatched keys: none")

    foreign = {"lora_unet_some_other_model_block.lora_down.weight": torch.zeros(2, 8), "lora_unet_some_other_model_block.lora_up.weight": torch.zeros(8, 2)}
    save_lora(loras / "foreign.safetensors", foreign)
    with pytest.raises(ConfigError, match=r"foreign.safetensors: none of its 2 keys fits this model \(0 shape mismatches, 2 keys not mapped; first: lora_unet_some_other_model_block.lora_down.weight"):
        lora.LoraLoaderNode.execute(tm.tiny_zimage(seed=0), "foreign.safetensors", 1.0)

    mixed = {**load_file(loras / name), **foreign}
    save_lora(loras / "mixed.safetensors", mixed)
    _, report = lora.LoraLoaderNode.execute(tm.tiny_zimage(seed=0), "mixed.safetensors", 1.0).result
    assert report.splitlines()[0] == "mixed.safetensors: 25 of 27 keys loaded"
    assert report.splitlines()[-3:] == ["unmatched keys:", "  lora_unet_some_other_model_block.lora_down.weight", "  lora_unet_some_other_model_block.lora_up.weight"]


QKV = "diffusion_model.layers.0.attention.qkv.weight"


def test_loader_checks_shapes_per_key_including_qkv_row_slices(env):
    tm, lora, loras = env
    name, _ = trained_file(tm, loras, "fits.safetensors")
    sd = load_file(loras / name)
    to_q = "diffusion_model.layers.0.attention.to_q"
    assert sd[to_q + ".lora_A.weight"].shape == (4, 256)
    bad = dict(sd)
    bad[to_q + ".lora_A.weight"] = torch.ones(4, 128)  # made for a 128-wide model
    save_lora(loras / "one_bad.safetensors", bad)
    base = tm.tiny_zimage(seed=0)
    patched, report = lora.LoraLoaderNode.execute(base, "one_bad.safetensors", 1.0).result
    lines = report.splitlines()
    assert lines[0] == "one_bad.safetensors: 22 of 25 keys loaded"  # up, down and alpha of to_q
    assert "shape mismatches (not loaded): 1" in lines
    assert f"  {to_q}: file up (256, 4) x down (4, 128), model {QKV} rows 0:256 expects (256, 256)" in lines
    offsets = [entry[3] for entry in patched.patches[QKV]]
    assert (0, 0, 256) not in offsets and (0, 256, 256) in offsets and (0, 512, 256) in offsets  # to_k, to_v still applied

    wrong_size = {k: torch.zeros(v.shape[0], 2 * v.shape[1]) if k.endswith("lora_A.weight") else v for k, v in sd.items()}
    wrong_size["diffusion_model.layers.1.ffn_norm2.diff"] = torch.zeros(512)
    save_lora(loras / "other_model.safetensors", wrong_size)
    with pytest.raises(ConfigError, match=r"other_model.safetensors: none of its 25 keys fits this model \(9 shape mismatches, 0 keys not mapped; first: diffusion_model\.layers\.\d\.\S+: file (up \(256, 4\) x down \(4, 512\)|diff \(512,\)), model diffusion_model"):
        lora.LoraLoaderNode.execute(tm.tiny_zimage(seed=0), "other_model.safetensors", 1.0)


def test_loader_names_corrupt_and_truncated_files(env):
    tm, lora, loras = env
    name, _ = trained_file(tm, loras, "whole.safetensors")
    data = (loras / name).read_bytes()
    (loras / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (loras / "garbage.safetensors").write_bytes(b"\x00" * 7 + b"not a safetensors file")
    for bad in ("truncated.safetensors", "garbage.safetensors"):
        with pytest.raises(ValueError, match=rf"{loras / bad}: cannot be read as a LoRA file .*download or save it again"):
            lora.LoraLoaderNode.execute(tm.tiny_zimage(seed=0), bad, 1.0)


def test_nodes_are_registered(comfy_root):
    from flowlora.nodes import NODES

    ids = {n.define_schema().node_id for n in NODES}
    assert {"FlowLoRALoraConfig", "FlowLoRALoraLoader"} <= ids
