"""Tiny U1 inside real ComfyUI 0.3.75 (in-process, CPU): loader, prompt encoder, stock KSampler."""

from __future__ import annotations

import pytest
import torch
from flowlora.trainer_core.models.u1.checkpoint import load_towers
from flowlora.trainer_core.models.u1.sampling import official_timesteps
from tiny_u1 import write_tiny_checkpoint

STEPS, CFG, SHIFT, SEED = 50, 4.0, 3.0, 7


@pytest.fixture(scope="module")
def u1(comfy_root, tmp_path_factory):
    import folder_paths
    from flowlora.nodes.u1 import model as u1m

    root = tmp_path_factory.mktemp("diffusion_models")
    folder = root / "tiny-u1"
    state = write_tiny_checkpoint(folder)
    folder_paths.add_model_folder_path("diffusion_models", str(root))
    patcher = u1m.load_u1_model(str(folder), SHIFT, 0.05)
    encoder = u1m.load_u1_text_encoder(str(folder))
    return folder, state, patcher, encoder


def test_loader_values_and_types(u1):
    import comfy.model_patcher
    from flowlora.nodes.u1 import model as u1m

    _folder, state, patcher, encoder = u1
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
    assert isinstance(patcher.model, u1m.U1Model)
    sd = patcher.model.diffusion_model.state_dict()
    assert sd and all(torch.equal(v, state[k]) for k, v in sd.items())
    assert all(v.dtype == torch.bfloat16 and v.device.type == "cpu" for v in sd.values())
    assert all(torch.equal(v, state[k]) for k, v in encoder.tower.state_dict().items())
    assert set(sd) | set(encoder.tower.state_dict()) == set(state)
    # ComfyUI's key view: the official names under diffusion_model.
    assert "diffusion_model.language_model.model.layers.0.self_attn.q_proj_mot_gen.weight" in patcher.model_state_dict()


def test_node_finds_checkpoint_and_has_tooltips(u1):
    from flowlora.nodes import NODES
    from flowlora.nodes.u1.nodes import U1Loader, U1PromptEncode, checkpoint_folders

    folder = u1[0]
    assert checkpoint_folders()["diffusion_models/tiny-u1"] == str(folder)
    for node in (U1Loader, U1PromptEncode):
        assert node in NODES
        schema = node.define_schema()
        assert all(i.tooltip for i in schema.inputs), schema.node_id
    assert U1Loader.define_schema().node_id == "FlowLoRAU1Loader"
    assert U1PromptEncode.define_schema().node_id == "FlowLoRAU1PromptEncode"


def test_sigmas_reproduce_official_schedule(u1):
    import comfy.samplers

    ms = u1[2].get_model_object("model_sampling")
    for steps in (8, 50):
        sigmas = comfy.samplers.calculate_sigmas(ms, "simple", steps).double()
        t = 1.0 - sigmas  # sigmas run 1 -> 0, so t runs 0 -> 1
        torch.testing.assert_close(t, official_timesteps(steps, SHIFT), atol=1e-6, rtol=0)
    spec = [0, 0.045455, 0.1, 0.166667, 0.25, 0.357143, 0.5, 0.7, 1.0]
    t8 = 1.0 - comfy.samplers.calculate_sigmas(ms, "simple", 8).double()
    torch.testing.assert_close(t8, torch.tensor(spec, dtype=torch.float64), atol=1e-6, rtol=0)


def test_prompt_encode_templates(u1):
    from flowlora.nodes.u1.nodes import U1PromptEncode
    from flowlora.trainer_core.models.u1 import prompts

    encoder = u1[3]
    pos, neg, _ = U1PromptEncode.execute(encoder, "a red fox", "").result
    ids_c = prompts.tokenize(encoder.tokenizer, prompts.conditional_prefix("a red fox"))
    ids_u = prompts.tokenize(encoder.tokenizer, prompts.UNCONDITIONAL_PREFIX)
    assert pos[0][0].shape == (1, len(ids_c), 2 * 2 * 2 * 16)
    assert neg[0][0].shape == (1, len(ids_u), 2 * 2 * 2 * 16)
    assert ids_u[-1] == encoder.tokenizer.convert_tokens_to_ids("<img>")
    assert prompts.tokenize(encoder.tokenizer, "<think>") == [encoder.tokenizer.convert_tokens_to_ids("<think>")]
    think, _, _ = U1PromptEncode.execute(encoder, "a red fox", "1. fox").result
    assert think[0][0].shape[1] > pos[0][0].shape[1]


def _official_loop(folder, pos, neg, noise, steps, cfg, shift):
    """Spec 4.3 in fp32 with the trainer_core towers: z += (t' - t) * v, CFG on v."""
    _, _, gen = load_towers(folder, dtype=torch.float32, include_prefix=False)
    from flowlora.trainer_core.models.u1 import PrefixKV

    kv_c, kv_u = (PrefixKV.unpack(c, 2, 2, 16) for c in (pos, neg))
    ts = official_timesteps(steps, shift).float()
    n = (noise.shape[-2] // 32) * (noise.shape[-1] // 32)
    z = gen.cfg.noise_scale_for(n) * noise
    with torch.no_grad():
        for i in range(steps):
            t, t_next = ts[i], ts[i + 1]
            denom = max(1 - float(t), 0.05)
            v_c = (gen(z, t.view(1), kv_c).float() - z) / denom
            v_u = (gen(z, t.view(1), kv_u).float() - z) / denom
            z = z + (t_next - t) * (v_u + cfg * (v_c - v_u))
    return z


def test_stock_ksampler_samples_to_image(u1):
    import comfy.sample
    import comfy.sd
    from flowlora.nodes.u1.nodes import U1PromptEncode

    import nodes

    folder, _, patcher, encoder = u1
    pos, neg, _ = U1PromptEncode.execute(encoder, "a lighthouse at dusk").result
    latent = {"samples": torch.zeros(1, 3, 64, 96)}
    (out,) = nodes.common_ksampler(patcher, SEED, STEPS, CFG, "euler", "simple", pos, neg, latent)
    samples = out["samples"]
    assert samples.shape == (1, 3, 64, 96) and torch.isfinite(samples).all()
    # the stock Euler loop equals the official U1 loop (same noise, fp32)
    noise = comfy.sample.prepare_noise(latent["samples"], SEED)
    ref = _official_loop(folder, pos[0][0], neg[0][0], noise, STEPS, CFG, SHIFT)
    torch.testing.assert_close(samples.float(), ref, rtol=1e-3, atol=1e-3)
    # decode through ComfyUI's pixel_space VAE, as VAELoader("pixel_space") builds it
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    (image,) = nodes.VAEDecode().decode(vae, out)
    assert image.shape == (1, 64, 96, 3)
    assert image.min() >= 0 and image.max() <= 1
    torch.testing.assert_close(image, ((ref.movedim(1, -1) + 1) / 2).clamp(0, 1), rtol=1e-3, atol=1e-3)


def test_apply_model_is_the_trainer_path(u1):
    """``apply_model(x, sigma, c_crossattn=kv)`` returns x0 and supports backward (trainer API)."""
    from flowlora.nodes.u1.nodes import U1PromptEncode

    _, _, patcher, encoder = u1
    pos, _, _ = U1PromptEncode.execute(encoder, "x").result
    model = patcher.model
    ms = model.model_sampling
    x0 = torch.rand(2, 3, 32, 64) * 2 - 1
    sigma = torch.tensor([0.3, 0.9])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x = ms.noise_scaling(sigma, noise, x0)
    s_eff = model.u1_config.noise_scale_for(2)
    torch.testing.assert_close(x, (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * s_eff * noise)
    head = model.diffusion_model.fm_modules["fm_head"]
    for p in head.parameters():
        p.requires_grad_(True)
    try:
        denoised = model.apply_model(x, sigma, c_crossattn=pos[0][0].expand(2, -1, -1))
        assert denoised.shape == x0.shape and denoised.dtype == torch.float32
        (denoised - x0).pow(2).mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    finally:
        for p in head.parameters():
            p.requires_grad_(False)
            p.grad = None


def test_live_server_workflow(server):
    """The whole graph through ComfyUI's server: loader -> encode -> KSampler -> pixel_space VAE decode."""
    write_tiny_checkpoint(server.base / "models" / "sensenova_u1" / "tiny")
    prompt = {
        "1": {"class_type": "FlowLoRAU1Loader", "inputs": {"checkpoint": "sensenova_u1/tiny", "shift": 3.0, "t_eps": 0.05, "weight_dtype": "checkpoint"}},
        "2": {"class_type": "FlowLoRAU1PromptEncode", "inputs": {"text_encoder": ["1", 1], "prompt": "a lighthouse at dusk", "think": ""}},
        "3": {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 1], "latent_image": ["3", 0], "seed": 1, "steps": 8, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "5": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["5", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    entry = server.run_prompt(prompt, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["7"]["images"]
