"""U1 LoRA files: the official inference format written from a trained LoRA, merged by the official
formula, equals our MODEL with the LoRA applied; our LoRA Loader reads official files (8-step style);
our default export loads through ComfyUI's stock loader onto the U1 MODEL.

fp32 models throughout (the official merge and ComfyUI's patching then agree to float rounding);
the bf16 check compares merged weights, where ComfyUI's stochastic rounding to bf16 allows one ulp.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_u1 import write_tiny_checkpoint

SHIFT, T_EPS = 3.0, 0.05
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def env(comfy_root, tmp_path_factory):
    import folder_paths
    from flowlora.nodes.u1 import model as u1m

    ckpt = tmp_path_factory.mktemp("u1ckpt")
    state = write_tiny_checkpoint(ckpt, seed=3)
    loras = tmp_path_factory.mktemp("loras")
    saved = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], saved[1])
    encoder = u1m.load_u1_text_encoder(str(ckpt))
    kv = encoder.encode_text("<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<img>").float()
    yield {"ckpt": ckpt, "state": state, "loras": loras, "kv": kv, "fresh": lambda dtype="float32": u1m.load_u1_model(str(ckpt), SHIFT, T_EPS, dtype)}
    folder_paths.folder_names_and_paths["loras"] = saved


def model_out(patcher, kv, seed=5):
    """x0 of ``patcher`` on fixed inputs (sigma >= t_eps, so denoised is the network's x0)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 64, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=kv.expand(2, -1, -1)).float()


def reference_out(env, sd, seed=5):
    """The same inputs through a plain fp32 GenerationTower holding ``sd``."""
    from flowlora.trainer_core.models.u1 import GenerationTower, PrefixKV
    from tiny_u1 import tiny_config

    cfg = tiny_config()
    gen = GenerationTower(cfg)
    gen.load_state_dict(sd)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 64, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    kv = PrefixKV.unpack(env["kv"], cfg.llm.num_hidden_layers, cfg.llm.num_key_value_heads, cfg.llm.head_dim)
    with torch.no_grad():
        return gen(x, 1 - sigma, kv).float()


def base_fp32(env) -> dict[str, torch.Tensor]:
    gen_keys = env["fresh"]().model.diffusion_model.state_dict()
    return {k: env["state"][k].float() for k in gen_keys}


@pytest.fixture(scope="module")
def trained(env):
    """A LoRA trained 3 steps (u1_default, r4 a8, default unfreeze) on the fp32 U1 MODEL."""
    from flowlora.nodes.trainer import LoraTrainer
    from flowlora.trainer_core import optim
    from flowlora.trainer_core.lora.config import LoraConfig
    from flowlora.trainer_core.models.u1.presets import DEFAULT_UNFREEZE_PATTERNS
    from flowlora.trainer_core.models.u1.recipes import RECIPES

    base = env["fresh"]()
    r = RECIPES.get("baseline")
    latents = {"samples": torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1}
    out, path, _, _ = LoraTrainer.execute(
        model=base, latents=latents, positive=[[env["kv"], {"u1_prefix_length": env["kv"].shape[1]}]], timesteps=r.timesteps, loss=r.loss,
        lora=LoraConfig(preset="u1_default", rank=4, alpha=8, unfreeze=DEFAULT_UNFREEZE_PATTERNS), optimizer=optim.OptimizerConfig("adamw", 2e-2),
        steps=3, epochs=0, batch_size=2, seed=0, p_text=0.0, p_both=0.0, training_dtype="fp32", gradient_checkpointing=False,
        save_every=0, output_name="u1/style", resume=False,
    ).result
    return base, out, path


def test_official_file_merged_by_the_official_formula_equals_our_model(env, trained):
    from flowlora.nodes.u1.nodes import U1SaveOfficialLora
    from flowlora.trainer_core.models.u1.official_lora import merge_official

    base, ours, path = trained
    (official_path,) = U1SaveOfficialLora.execute(model=base, lora_path=path, include_full_tensors=True).result
    assert official_path.endswith("style.u1_official.safetensors")
    official = load_file(official_path)
    assert not any("diffusion_model." in k for k in official)
    downs = [k for k in official if k.endswith(".lora_down.weight")]
    assert len(downs) == 2 * 7  # attn q/k/v/o + mlp gate/up/down per layer; the head adapters are folded into its full tensors
    for k in downs:
        stem = k[: -len(".lora_down.weight")]
        assert official[k].dtype == torch.float32 and official[k].shape[0] == 4
        assert official[stem + ".lora_up.weight"].shape[1] == 4 and float(official[stem + ".alpha"]) == 8.0
    full = {k for k in official if not k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))}
    assert full == {k for k in base.model.diffusion_model.state_dict() if k.startswith("fm_modules.")}

    merged = merge_official(base_fp32(env), official)
    ref = reference_out(env, merged)
    out = model_out(ours, env["kv"])
    effect, diff = (ref - reference_out(env, base_fp32(env))).abs().max(), (out - ref).abs().max()
    log.info("official merge vs our MODEL: max |diff| %.3g (LoRA effect %.3g)", diff, effect)
    assert effect > 1e-3  # the LoRA changes the output
    assert diff <= 1e-4

    schema = U1SaveOfficialLora.define_schema()
    assert schema.node_id == "FlowLoRAU1SaveOfficialLora" and all(i.tooltip for i in schema.inputs)
    # LoRA keys only: what the official --lora_path loader accepts
    (lean_path,) = U1SaveOfficialLora.execute(model=base, lora_path=path, include_full_tensors=False).result
    assert set(load_file(lean_path)) == set(official) - full


def test_our_loader_reads_the_official_file_and_stock_comfyui_reads_ours(env, trained):
    from flowlora.nodes.lora import LoraLoaderNode
    from flowlora.nodes.u1.nodes import U1SaveOfficialLora

    import nodes

    base, ours, path = trained
    U1SaveOfficialLora.execute(model=base, lora_path=path, include_full_tensors=True)
    loaded, report = LoraLoaderNode.execute(env["fresh"](), "u1/style.u1_official.safetensors", 1.0).result
    assert "unmatched keys: none" in report, report
    assert (model_out(loaded, env["kv"]) - model_out(ours, env["kv"])).abs().max() <= 1e-4
    (stock,) = nodes.LoraLoaderModelOnly().load_lora_model_only(env["fresh"](), "u1/style.safetensors", 1.0)
    assert (model_out(stock, env["kv"]) - model_out(ours, env["kv"])).abs().max() <= 1e-5


def eight_step_style(base: dict[str, torch.Tensor], rank=8, alpha=16, prefix="") -> dict[str, torch.Tensor]:
    """An official-format LoRA like the 8-step one: every gen attn/mlp Linear and fm_head.{0,2}, int32 alpha."""
    from flowlora.trainer_core.models.u1.presets import TARGET_GROUPS, matches

    targets = [t for g in ("attn", "mlp", "fm_head") for t in TARGET_GROUPS[g]]
    g = torch.Generator().manual_seed(11)
    sd = {}
    for name, w in base.items():
        stem = name[: -len(".weight")]
        if name.endswith(".weight") and any(matches(stem, t) for t in targets):
            sd[f"{prefix}{stem}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) / w.shape[1] ** 0.5
            sd[f"{prefix}{stem}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.05
            sd[f"{prefix}{stem}.alpha"] = torch.tensor(alpha, dtype=torch.int32)
    return sd


@pytest.mark.parametrize("prefix", ["", "diffusion_model."])
def test_eight_step_format_loads_onto_our_model(env, prefix):
    from flowlora.nodes.lora import LoraLoaderNode
    from flowlora.trainer_core.models.u1.official_lora import merge_official

    base = base_fp32(env)
    sd = eight_step_style(base, prefix=prefix)
    assert len(sd) == 3 * (2 * 7 + 2)
    name = f"u1/eight_step{'_prefixed' if prefix else ''}.safetensors"
    save_file(sd, str(env["loras"] / name))
    loaded, report = LoraLoaderNode.execute(env["fresh"](), name, 0.7).result
    assert "unmatched keys: none" in report, report
    ref = reference_out(env, merge_official(base, sd, 0.7))
    diff = (model_out(loaded, env["kv"]) - ref).abs().max()
    log.info("8-step-style file (prefix %r) via our loader vs the official merge: max |diff| %.3g", prefix, diff)
    assert diff <= 1e-4


def test_eight_step_format_on_bf16_weights(env):
    """bf16 MODEL: ComfyUI patches in fp32 and rounds stochastically to bf16; the official merge rounds to nearest.
    The merged weights therefore agree to one bf16 ulp (2**-7 relative)."""
    import comfy.model_management
    from flowlora.nodes.lora import LoraLoaderNode
    from flowlora.trainer_core.models.u1.official_lora import merge_official

    fresh = env["fresh"]("checkpoint")
    base_bf16 = {k: v.clone() for k, v in fresh.model.diffusion_model.state_dict().items()}
    sd = eight_step_style({k: v.float() for k, v in base_bf16.items()})
    save_file(sd, str(env["loras"] / "u1/eight_step_bf16.safetensors"))
    loaded, _ = LoraLoaderNode.execute(fresh, "u1/eight_step_bf16.safetensors", 1.0).result
    comfy.model_management.load_models_gpu([loaded], force_full_load=True)
    patched = loaded.model.diffusion_model.state_dict()
    official = merge_official(base_bf16, sd)
    changed = 0
    for k, w in official.items():
        assert patched[k].dtype == torch.bfloat16
        torch.testing.assert_close(patched[k].float(), w.float(), rtol=2**-7, atol=1e-6, msg=k)
        changed += int(not torch.equal(w, base_bf16[k]))
    assert changed == 2 * 7 + 2
    comfy.model_management.unload_all_models()


def test_merged_checkpoint_is_an_official_folder_that_loads_as_is(env, trained, tmp_path, monkeypatch):
    """Issue 11, item 4: base + LoRA + fully trained tensors as an official checkpoint folder (same config,
    index names and shard layout), merged by the official formula, loading through the U1 Loader and
    sampling like our MODEL with the LoRA (to bf16 rounding: the tiny checkpoint is stored in bf16)."""
    import folder_paths
    from flowlora.nodes.u1 import model as u1m
    from flowlora.nodes.u1.nodes import U1SaveMergedCheckpoint, U1SaveOfficialLora
    from flowlora.trainer_core.errors import ConfigError
    from flowlora.trainer_core.models.u1.checkpoint import read_weight_map
    from flowlora.trainer_core.models.u1.official_lora import merge_official

    base, ours, path = trained
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    folder_paths.add_model_folder_path("diffusion_models", str(env["ckpt"].parent))
    name = f"diffusion_models/{env['ckpt'].name}"
    assert U1SaveMergedCheckpoint.validate_inputs(lora_path=path, output_name="../escape").startswith("output_name = '../escape'")
    (out,) = U1SaveMergedCheckpoint.execute(checkpoint=name, lora_path=path, output_name="style_merged").result
    out = type(env["ckpt"])(out)
    assert out == tmp_path / "models" / "sensenova_u1" / "style_merged"
    assert read_weight_map(out) == read_weight_map(env["ckpt"])  # official names, same shards
    assert (out / "config.json").read_bytes() == (env["ckpt"] / "config.json").read_bytes()

    # every tensor is exactly the official merge of the stored base with the full official file
    (official_path,) = U1SaveOfficialLora.execute(model=base, lora_path=path, include_full_tensors=True).result
    expected = merge_official(env["state"], load_file(official_path))
    written = {}
    for shard in set(read_weight_map(out).values()):
        written.update(load_file(str(out / shard)))
    assert set(written) == set(expected)
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    changed = [k for k in expected if not torch.equal(expected[k], env["state"][k])]
    assert any(k.startswith("fm_modules.") for k in changed) and any("lora" not in k and "layers" in k for k in changed)

    merged_model = u1m.load_u1_model(str(out), SHIFT, T_EPS, "float32")
    effect = (model_out(ours, env["kv"]) - model_out(env["fresh"](), env["kv"])).abs().max()
    diff = (model_out(merged_model, env["kv"]) - model_out(ours, env["kv"])).abs().max()
    log.info("merged checkpoint vs our MODEL: max |diff| %.3g (LoRA effect %.3g)", diff, effect)
    assert effect > 1e-3 and diff <= 0.05 * effect

    with pytest.raises(ConfigError, match="exists"):
        U1SaveMergedCheckpoint.execute(checkpoint=name, lora_path=path, output_name="style_merged")
    schema = U1SaveMergedCheckpoint.define_schema()
    assert schema.node_id == "FlowLoRAU1SaveMergedCheckpoint" and all(i.tooltip for i in schema.inputs)
