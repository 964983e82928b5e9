"""LoRA, DoRA, LoHa, LoKr and OFT on a tiny real Z-Image (ComfyUI's own classes, CPU, fp32).

For every algorithm: the adapters leave the model unchanged at init, the file
(ComfyUI's ``comfy/weight_adapter`` keys) loaded by stock ComfyUI reproduces
the attached model, the LoRA Trainer lowers a held-out x0-MSE and its MODEL
equals stock ``LoraLoaderModelOnly`` on the saved file, a cancelled run saves
and its resume equals the straight run, the NaN guard keeps the last good
file, and previews with adapter dropout and gradient checkpointing leave the
training unchanged and show the trained model.
"""

from __future__ import annotations

import json

import pytest
import torch
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.lora import LoraAdapters, LoraConfig, lora_state_dict
from safetensors import safe_open
from safetensors.torch import load_file
from test_trainer import out, settings

ALGORITHMS = ("lora", "dora", "loha", "lokr", "oft")
TOL = 1e-5
FILE_KEYS = {
    "lora": {"lora_A.weight", "lora_B.weight", "alpha"},
    "dora": {"lora_A.weight", "lora_B.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "lokr": {"lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha"},
    "oft": {"oft_blocks"},
}


@pytest.fixture(scope="module")
def env(trainer_env):
    return trainer_env


@pytest.fixture(scope="module")
def inputs(comfy_root):
    import tiny_models

    return tiny_models.zimage_inputs(batch=2, seed=1)


def randomize(adapters: LoraAdapters, seed: int = 3, scale: float = 0.05) -> None:
    """Stand-in for training: every adapter parameter moved off its initial value, from a seed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def load_stock(model_patcher, lora_sd: dict):
    import comfy.sd
    from flowlora.nodes.lora_patch import capture_unloaded

    with capture_unloaded() as unloaded:
        patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, lora_sd, 1.0, 0)
    return patched, unloaded


def suffixes(sd: dict) -> set[str]:
    """Key suffixes of a LoRA file (``lora_A.weight``, ``hada_w1_a``, ``alpha``...)."""
    return {".".join(k.rsplit(".", 2)[-2:]) if k.endswith(".weight") else k.rsplit(".", 1)[-1] for k in sd}


# ------------------------------------------------------------------ engine and files


@pytest.mark.parametrize("algorithm, preset, key_style", [*((a, "zimage_attn_ffn", "native") for a in ALGORITHMS), ("dora", "zimage_attn", "diffusers"), ("oft", "zimage_attn", "diffusers")])
def test_file_loaded_by_stock_comfyui_reproduces_the_attached_model(env, inputs, algorithm, preset, key_style):
    tm = env[0]
    model = tm.tiny_zimage(0)
    dm = model.model.diffusion_model
    config = LoraConfig(preset=preset, rank=4, alpha=8, algorithm=algorithm, unfreeze=("layers.0.attention_norm1.weight",))
    adapters = LoraAdapters.build(dm, config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_base = tm.denoise(model, *inputs)
        with adapters.attached(dm):
            assert torch.equal(tm.denoise(model, *inputs), y_base)  # unchanged at init
        randomize(adapters)
        with adapters.attached(dm):
            y_attached = tm.denoise(model, *inputs)
    assert all(not m._forward_hooks for m in dm.modules())
    sd = lora_state_dict(adapters, key_style=key_style)
    assert suffixes(sd) == FILE_KEYS[algorithm] | {"diff"}
    loaded, unloaded = load_stock(tm.tiny_zimage(0), sd)
    assert unloaded == []
    with torch.no_grad(), tm.patched(loaded):
        y_loaded = tm.denoise(loaded, *inputs)
    assert (y_attached - y_base).abs().max() > 1e-3
    assert (y_loaded - y_attached).abs().max().item() <= TOL


def test_lokr_with_full_factors_and_activation_path_equal_peft(env, inputs):
    """rank >= half the factor size: peft keeps w2 full; ComfyUI then scales by 1, so the file folds alpha / rank into w1."""
    tm = env[0]
    model = tm.tiny_zimage(0)
    dm = model.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn", rank=8, alpha=2, algorithm="lokr"))
    randomize(adapters)
    sd = lora_state_dict(adapters)
    assert suffixes(sd) == {"lokr_w1", "lokr_w2"}
    adapter = adapters._adapters["layers/0/attention/to_k"]
    x = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(3, 5, 256)
    expected = torch.nn.functional.linear(x, adapter.layer.get_delta_weight("default"))  # peft's maths, materialised
    torch.testing.assert_close(adapter.change(x, y, None, None, False), expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        with adapters.attached(dm):
            y_attached = tm.denoise(model, *inputs)
    loaded, unloaded = load_stock(tm.tiny_zimage(0), sd)
    with torch.no_grad(), tm.patched(loaded):
        assert unloaded == [] and (tm.denoise(loaded, *inputs) - y_attached).abs().max().item() <= TOL


def test_settings_are_validated_naming_the_field(env):
    tm = env[0]
    dm = tm.tiny_zimage(0).model.diffusion_model
    with pytest.raises(ConfigError, match=r"algorithm = 'boft': unknown adapter algorithm; valid: lora, dora, loha, lokr, oft"):
        LoraConfig(algorithm="boft")
    with pytest.raises(ConfigError, match=r"rank = 1: OFT uses rank as its block size"):
        LoraConfig(algorithm="oft", rank=1)
    with pytest.raises(ConfigError, match=r"rank = 7: OFT block size must divide the output rows of every target; layers.0.attention.to_q has 256 \(try a divisor, e.g. 8\)"):
        LoraAdapters.build(dm, LoraConfig(algorithm="oft", rank=7))
    with pytest.raises(ConfigError, match=r"unfreeze = 'layers.0.attention.out.weight': with algorithm 'loha' a weight that carries an adapter"):
        LoraAdapters.build(dm, LoraConfig(algorithm="loha", unfreeze=("layers.0.attention.out.weight",)))


def test_config_metadata_keeps_plain_lora_files_as_before():
    lora = LoraConfig(rank=4, alpha=4)
    assert lora.to_dict()["schema"] == 1 and "algorithm" not in lora.to_dict()
    assert LoraConfig.from_dict(lora.to_dict()) == lora
    lokr = LoraConfig(rank=4, alpha=4, algorithm="lokr")
    assert lokr.to_dict()["schema"] == 2 and LoraConfig.from_dict(lokr.to_dict()) == lokr
    assert lokr.describe() == "zimage_attn lokr r4 a4"


def test_config_node_offers_the_algorithms_and_counts_their_parameters(env):
    from flowlora.nodes import lora

    tm = env[0]
    widgets = dict(preset="zimage_attn", rank=4, alpha=4.0, dropout=0.0, init="default", include="", exclude="", unfreeze="")
    inputs = {i.id: i for i in lora.LoraConfigNode.define_schema().inputs}
    assert inputs["algorithm"].options == list(ALGORITHMS) and inputs["algorithm"].default == "lora"
    assert lora.LoraConfigNode.execute(**widgets).result[0].algorithm == "lora"  # workflows saved before the widget
    counts = {}
    for algorithm in ALGORITHMS:
        config, report = lora.LoraConfigNode.execute(**widgets, algorithm=algorithm, model=tm.tiny_zimage(0)).result
        adapters = LoraAdapters.build(tm.tiny_zimage(0).model.diffusion_model, config)
        counts[algorithm] = sum(p.numel() for p in adapters.lora_parameters())
        assert report.splitlines()[0] == f"8 adapters on 4 modules, {counts[algorithm]:,} {adapters.algorithm.label} parameters"
    assert counts == {"lora": 16384, "dora": 18432, "loha": 32768, "lokr": 3072, "oft": 3072}
    assert "algorithm" in lora.LoraConfigNode.validate_inputs(**widgets, algorithm="nope")


# ------------------------------------------------------------------ training through the LoRA Trainer node


def pattern_data(seed: int, count: int):
    """Latents that share one pattern (plus noise): what is learned from some carries over to the others."""
    g = torch.Generator().manual_seed(100)
    pattern = torch.randn(16, 16, 16, generator=g)
    context = torch.randn(1, 8, 32, generator=g)
    g = torch.Generator().manual_seed(seed)
    return {"samples": pattern + 0.3 * torch.randn(count, 16, 16, 16, generator=g)}, [[context, {}]]


def held_out_mse(tm, patcher, latents, positive) -> float:
    """x0-MSE on held-out latents at fixed sigmas and noise, on the model as KSampler loads it."""
    from test_trainer import loaded_denoise

    x0 = patcher.model.process_latent_in(latents["samples"].clone())
    sigma = torch.tensor([0.3, 0.5, 0.7, 0.9])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(123))
    x = sigma.view(-1, 1, 1, 1) * eps + (1 - sigma.view(-1, 1, 1, 1)) * x0
    with torch.no_grad():
        return float((loaded_denoise(tm, patcher, x, positive[0][0].expand(4, -1, -1), sigma) - x0).square().mean())


def algo_settings(algorithm: str, **changes):
    from flowlora.trainer_core import optim

    kw = dict(steps=6, batch_size=2, lora=LoraConfig(preset="all_linear", rank=4, alpha=4, algorithm=algorithm), optimizer=optim.OptimizerConfig("adamw", 3e-2))
    kw.update(changes)
    return settings(**kw)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_lowers_held_out_mse_stock_loader_equals_the_model_and_cancel_resume_equals_straight(env, algorithm):
    import comfy.model_management as mm

    import nodes

    tm, Trainer, loras = env
    latents, positive = pattern_data(1, 4)
    held, _ = pattern_data(2, 4)
    name = f"algo/{algorithm}"
    base = tm.tiny_zimage(0)
    trained, path, _, _ = Trainer.execute(model=base, latents=latents, positive=positive, **algo_settings(algorithm, output_name=name)).result
    before, after = held_out_mse(tm, base, held, positive), held_out_mse(tm, trained, held, positive)
    assert after < 0.95 * before, (before, after)

    sd = load_file(path)
    assert suffixes(sd) == FILE_KEYS[algorithm] or (algorithm == "lokr" and suffixes(sd) == {"lokr_w1", "lokr_w2"})
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    assert LoraConfig.from_dict(json.loads(metadata["flowlora.lora_config"])).algorithm == algorithm
    # kohya's and LyCORIS' network keys, as tools that sort LoRA files read them
    network = (metadata["ss_network_module"], json.loads(metadata.get("ss_network_args", "{}")).get("algo"))
    assert network == {"lora": ("networks.lora", None), "dora": ("lycoris.kohya", "lora"), "loha": ("lycoris.kohya", "loha"),
                       "lokr": ("lycoris.kohya", "lokr"), "oft": ("lycoris.kohya", "diag-oft")}[algorithm]
    (stock,) = nodes.LoraLoaderModelOnly().load_lora_model_only(tm.tiny_zimage(0), f"{name}.safetensors", 1.0)
    assert (out(tm, stock) - out(tm, trained)).abs().max().item() <= TOL

    # cancel (ComfyUI's interrupt) after the 3rd step's forward: step 3 is saved; resume equals the straight run
    model = tm.tiny_zimage(0)
    calls = {"n": 0}

    def interrupt_after_step_3(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:
            mm.interrupt_current_processing(True)

    handle = model.model.diffusion_model.register_forward_hook(interrupt_after_step_3)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            Trainer.execute(model=model, latents=latents, positive=positive, **algo_settings(algorithm, output_name=name + "_c"))
    finally:
        handle.remove()
    with safe_open(str(loras / f"{name}_c.safetensors"), "pt") as f:
        assert f.metadata()["flowlora.step"] == "3"
    _, resumed, run_log, _ = Trainer.execute(model=tm.tiny_zimage(0), latents=latents, positive=positive, **algo_settings(algorithm, output_name=name + "_c", resume=True)).result
    a, b = load_file(path), load_file(resumed)
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert [r["step"] for r in run_log.records()] == list(range(1, 7))


def test_strength_scales_the_output_model_as_a_stock_loader_does_and_leaves_the_file_alone(env):
    """The trainer's ``strength`` is the output MODEL's LoRA strength: the same model as LoraLoaderModelOnly at that
    strength, a smaller change than at 1, and a saved file equal to the one a strength-1 run writes."""
    import nodes

    tm, Trainer, _ = env
    latents, positive = pattern_data(1, 4)
    half, half_path, _, _ = Trainer.execute(model=tm.tiny_zimage(0), latents=latents, positive=positive, strength=0.5, **algo_settings("lora", output_name="strength/half")).result
    full, full_path, _, _ = Trainer.execute(model=tm.tiny_zimage(0), latents=latents, positive=positive, **algo_settings("lora", output_name="strength/full")).result
    a, b = load_file(half_path), load_file(full_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (stock,) = nodes.LoraLoaderModelOnly().load_lora_model_only(tm.tiny_zimage(0), "strength/half.safetensors", 0.5)
    assert (out(tm, stock) - out(tm, half)).abs().max().item() <= TOL
    base = out(tm, tm.tiny_zimage(0))
    change_half, change_full = (out(tm, half) - base).abs().mean().item(), (out(tm, full) - base).abs().mean().item()
    assert 0.3 * change_full < change_half < 0.7 * change_full, (change_half, change_full)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_non_finite_loss_keeps_the_last_good_file(env, algorithm):
    from flowlora.trainer_core.loop import NonFiniteLossError

    tm, Trainer, loras = env
    latents, positive = pattern_data(3, 3)
    latents["samples"][2, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ for sample 'latent\[2\]'.*saved the last good LoRA"):
        Trainer.execute(model=tm.tiny_zimage(0), latents=latents, positive=positive, **algo_settings(algorithm, batch_size=1, output_name=f"nan/{algorithm}"))
    with safe_open(str(loras / "nan" / f"{algorithm}.safetensors"), "pt") as f:
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_previews_with_dropout_and_checkpointing_leave_training_unchanged(env, algorithm):
    """Dropout 0.2 with gradient checkpointing and previews (steps 0, 2) against dropout without either: the same file;
    the last preview equals stock KSampler + VAE Decode on the trainer's MODEL."""
    from test_training_preview import SEED, SIZE, preview_node, prompts, recording, tiny_vae

    import nodes

    tm, Trainer, _ = env
    latents, positive = pattern_data(4, 2)
    vae = tiny_vae()
    prompt, negative = prompts()
    preview = preview_node(vae, prompt[:1], negative, steps=2, every_n_steps=2)
    lora = LoraConfig(preset="zimage_attn", rank=4, alpha=4, dropout=0.2, algorithm=algorithm)
    with recording() as (decoded, _, _):
        model, on, _, _ = Trainer.execute(model=tm.tiny_zimage(0), latents=latents, positive=positive, preview=preview,
                                          **algo_settings(algorithm, steps=2, lora=lora, gradient_checkpointing=True, output_name=f"prev/{algorithm}_on")).result
    _, off, _, _ = Trainer.execute(model=tm.tiny_zimage(0), latents=latents, positive=positive, **algo_settings(algorithm, steps=2, lora=lora, output_name=f"prev/{algorithm}_off")).result
    a, b = load_file(on), load_file(off)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert len(decoded) == 2
    with torch.inference_mode():
        (sampled,) = nodes.common_ksampler(model, SEED, 2, 2.0, "euler", "simple", prompt[:1], negative, {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}, denoise=1.0)
        stock = nodes.VAEDecode().decode(vae, sampled)[0]
    assert float((decoded[1] - stock).abs().max()) <= 1e-5
    assert float((decoded[1] - decoded[0]).abs().max()) > 1e-5  # the adapter shows in the preview
