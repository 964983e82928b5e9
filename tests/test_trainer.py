"""The LoRA Trainer node on a tiny real Z-Image (ComfyUI's own classes), CPU, fp32."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

STEPS = 30


@pytest.fixture(scope="module")
def env(trainer_env):
    return trainer_env


def data(seed=0, count=4, size=16):
    g = torch.Generator().manual_seed(seed)
    latents = {"samples": torch.randn(count, 16, size, size, generator=g)}
    positive = [[torch.randn(1, 8, 32, generator=g), {}]]
    return latents, positive


def settings(**changes):
    from flowlora.trainer_core import losses, optim, timesteps
    from flowlora.trainer_core.lora.config import LoraConfig

    kw = dict(
        timesteps=timesteps.TimestepConfig(timesteps.Uniform(0.2, 0.8)),
        loss=losses.LossConfig(),
        lora=LoraConfig(preset="zimage_attn", rank=4, alpha=4),
        optimizer=optim.OptimizerConfig("adamw", 2e-3, max_grad_norm=1.0),
        steps=STEPS, epochs=0, batch_size=2, seed=0, p_text=0.0, p_both=0.0, training_dtype="fp32",
        gradient_checkpointing=False, save_every=0, output_name="runs/a", resume=False,
    )
    kw.update(changes)
    return kw


def eval_loss(tiny_models, patcher, latents, positive, seed=123):
    """x0-MSE of ``patcher`` on the training latents at fixed sigmas and noise."""
    g = torch.Generator().manual_seed(seed)
    x0 = patcher.model.process_latent_in(latents["samples"].clone())
    sigma = torch.tensor([0.3, 0.5, 0.7, 0.4])
    eps = torch.randn(x0.shape, generator=g)
    x = sigma.view(-1, 1, 1, 1) * eps + (1 - sigma.view(-1, 1, 1, 1)) * x0
    context = positive[0][0].expand(x.shape[0], -1, -1)
    with torch.no_grad():
        return float((loaded_denoise(tiny_models, patcher, x, context, sigma) - x0).square().mean())


def loaded_denoise(tiny_models, patcher, *inputs):
    """Load ``patcher`` as KSampler does (model management swaps clones and their patches), then run it."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return tiny_models.denoise(patcher, *inputs)


def out(tiny_models, patcher, seed=7):
    latent, context, sigma = tiny_models.zimage_inputs(batch=2, seed=seed)
    with torch.no_grad():
        return loaded_denoise(tiny_models, patcher, latent, context, sigma)


def test_training_lowers_the_loss_and_leaves_the_base_alone(env):
    tiny_models, Trainer, _ = env
    model = tiny_models.tiny_zimage(0)
    latents, positive = data()
    before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    base_out = out(tiny_models, model)
    from flowlora.trainer_core import optim
    from flowlora.trainer_core.lora.config import LoraConfig

    kw = settings(optimizer=optim.OptimizerConfig("adamw", 1e-2), lora=LoraConfig(preset="zimage_attn_ffn", rank=4, alpha=4))
    trained, path, run_log, _ = Trainer.execute(model=model, latents=latents, positive=positive, **kw).result

    # x0-MSE on the training latents at fixed sigmas and noise: 0.367 -> 0.305 when this was written
    assert eval_loss(tiny_models, trained, latents, positive) < 0.9 * eval_loss(tiny_models, model, latents, positive)
    after = model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "base weights changed"
    assert torch.equal(out(tiny_models, model), base_out), "the incoming MODEL's output changed"
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert keys and all(k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha")) for k in keys)
    modules = {k.split(".")[3] + "." + k.split(".")[4] for k in keys}  # diffusion_model.layers.N.<block>.<module>
    assert modules == {"attention.to_q", "attention.to_k", "attention.to_v", "attention.out", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"}
    training = json.loads(meta["flowlora.training"])
    assert training["train"]["steps"] == STEPS and training["lora"]["rank"] == 4 and training["lora"]["schema"] == 1
    assert meta["flowlora.step"] == str(STEPS) and json.loads(meta["flowlora.base_model"])["architecture"] == "Lumina2"
    records = run_log.records()
    assert len(records) == STEPS and records[-1]["step"] == STEPS
    assert {"loss", "x0_mse", "v_mse", "sigma", "t", "route", "lr", "grad_norm"} <= set(records[0])
    assert all(0.2 <= s <= 0.8 for r in records for s in r["sigma"])


def test_saved_file_through_stock_loader_equals_the_trainer_output(env):
    import nodes

    tiny_models, Trainer, _ = env
    latents, positive = data(1)
    trained, _, _, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=5, output_name="runs/b")).result
    fresh = tiny_models.tiny_zimage(0)
    (loaded,) = nodes.LoraLoaderModelOnly().load_lora_model_only(fresh, "runs/b.safetensors", 1.0)
    diff = (out(tiny_models, loaded) - out(tiny_models, trained)).abs().max()
    assert diff <= 1e-5
    assert (out(tiny_models, loaded) - out(tiny_models, fresh)).abs().max() > 1e-4  # the LoRA does something


def test_trains_on_top_of_an_upstream_lora(env):
    """An upstream LoRA (e.g. a de-distillation adapter) stays applied while training."""
    import comfy.sd
    from flowlora.trainer_core import files

    tiny_models, Trainer, loras = env
    base = tiny_models.tiny_zimage(0)
    g = torch.Generator().manual_seed(5)
    upstream = {}
    for n in range(2):
        stem = f"diffusion_model.layers.{n}.feed_forward.w1"
        w = base.model.diffusion_model.layers[n].feed_forward.w1.weight
        upstream[f"{stem}.lora_down.weight"] = 0.5 * torch.randn(4, w.shape[1], generator=g)
        upstream[f"{stem}.lora_up.weight"] = 0.5 * torch.randn(w.shape[0], 4, generator=g)
    files.save_safetensors(loras / "upstream.safetensors", upstream)
    with_upstream, _ = comfy.sd.load_lora_for_models(base, None, upstream, 1.0, 0.0)
    upstream_out = out(tiny_models, with_upstream)
    assert (upstream_out - out(tiny_models, base)).abs().max() > 1e-3

    latents, positive = data(2)
    kw = settings(steps=1, output_name="runs/c")
    _, _, run_log, _ = Trainer.execute(model=with_upstream, latents=latents, positive=positive, **kw).result
    assert torch.equal(out(tiny_models, with_upstream), upstream_out), "incoming MODEL changed"

    # Replay the first micro-batch from the seed and score it with the upstream-patched model:
    # the log's x0-MSE (computed before any update) must be that model's, not the base's.
    from flowlora.nodes.trainer import dataset_from_latents
    from flowlora.trainer_core.batching import EpochBatches
    from flowlora.trainer_core.loop import make_generators

    cfg = settings()
    gens = make_generators(0)
    batch = EpochBatches(dataset_from_latents(latents, positive, None), 2, base.model.process_latent_in).next_batch(2, gens["data"])
    torch.rand(2, generator=gens["dropout"], dtype=torch.float64)
    sigma = cfg["timesteps"].sample(2, gens["timesteps"], 64).float()
    eps = torch.randn(batch.latents.shape, generator=gens["noise"])
    x = sigma.view(-1, 1, 1, 1) * eps + (1 - sigma.view(-1, 1, 1, 1)) * batch.latents
    context = positive[0][0].expand(2, -1, -1)
    with torch.no_grad():
        mse_upstream = float((loaded_denoise(tiny_models, with_upstream, x, context, sigma) - batch.latents).square().mean())
        mse_base = float((loaded_denoise(tiny_models, base, x, context, sigma) - batch.latents).square().mean())
    logged = run_log.records()[0]
    # apply_to: the trained LoRA on the base alone (the upstream adapter is training-only)
    on_base, _, _, _ = Trainer.execute(model=with_upstream, latents=latents, positive=positive, apply_to=base, **settings(steps=1, output_name="runs/c2")).result
    import nodes

    (stock,) = nodes.LoraLoaderModelOnly().load_lora_model_only(base, "runs/c2.safetensors", 1.0)
    assert (out(tiny_models, on_base) - out(tiny_models, stock)).abs().max() <= 1e-6
    assert logged["sigma"] == pytest.approx(sigma.tolist(), abs=1e-6)
    assert logged["x0_mse"] == pytest.approx(mse_upstream, rel=1e-4)
    # the two models' losses must differ by more than the tolerance that matched the log (3x, any host)
    assert abs(mse_upstream - mse_base) > 3e-4 * mse_base


def test_resume_equals_straight_run(env):
    tiny_models, Trainer, _ = env
    latents, positive = data(3)
    _, p1, _, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=6, output_name="runs/straight")).result
    Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=3, output_name="runs/resumed"))
    _, p2, log2, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=6, output_name="runs/resumed", resume=True)).result
    from safetensors.torch import load_file

    a, b = load_file(p1), load_file(p2)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert [r["step"] for r in log2.records()] == [1, 2, 3, 4, 5, 6]

    from flowlora.trainer_core.lora.config import LoraConfig

    other = settings(steps=8, output_name="runs/resumed", resume=True, lora=LoraConfig(preset="zimage_attn", rank=8, alpha=4))
    with pytest.raises(ValueError, match=r"cannot resume .*resumed\.flowlora-state: it was trained with LoRA settings"):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **other)


def test_cancel_saves_and_resume_finishes_the_same_run(env):
    import comfy.model_management as mm

    tiny_models, Trainer, loras = env
    latents, positive = data(4)
    _, p_straight, _, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=5, output_name="runs/s5", optimizer=settings()["optimizer"].__class__("adamw", 2e-3, schedule="cosine"))).result

    model = tiny_models.tiny_zimage(0)
    calls = {"n": 0}

    def interrupt_after_two(module, args, output):
        calls["n"] += 1
        if calls["n"] == 2:
            mm.interrupt_current_processing(True)

    handle = model.model.diffusion_model.register_forward_hook(interrupt_after_two)
    kw = settings(steps=5, output_name="runs/c5", optimizer=settings()["optimizer"].__class__("adamw", 2e-3, schedule="cosine"))
    try:
        with pytest.raises(mm.InterruptProcessingException):
            Trainer.execute(model=model, latents=latents, positive=positive, **kw)
    finally:
        handle.remove()
    assert not mm.processing_interrupted()
    path = loras / "runs" / "c5.safetensors"
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["flowlora.step"] == "2"
    assert (loras / "runs" / "c5.flowlora-state").exists()
    _, p_resumed, _, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **{**kw, "resume": True}).result
    from safetensors.torch import load_file

    a, b = load_file(p_straight), load_file(p_resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_non_finite_loss_names_step_and_sample_and_keeps_the_last_good_lora(env):
    from flowlora.trainer_core.loop import NonFiniteLossError

    tiny_models, Trainer, loras = env
    latents, positive = data(5, count=3)
    latents["samples"][2, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ for sample 'latent\[2\]'") as err:
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(batch_size=1, output_name="runs/nan"))
    assert "saved the last good LoRA" in str(err.value)
    with safe_open(str(loras / "runs" / "nan.safetensors"), "pt") as f:
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())


def test_gradient_checkpointing_gives_the_same_lora_and_restores_the_blocks(env):
    from safetensors.torch import load_file

    tiny_models, Trainer, _ = env
    latents, positive = data(6)
    model = tiny_models.tiny_zimage(0)
    _, plain, _, _ = Trainer.execute(model=model, latents=latents, positive=positive, **settings(steps=3, output_name="runs/plain")).result
    _, ckpt, _, _ = Trainer.execute(model=model, latents=latents, positive=positive, **settings(steps=3, output_name="runs/ckpt", gradient_checkpointing=True)).result
    a, b = load_file(plain), load_file(ckpt)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert all("forward" not in block.__dict__ for block in model.model.diffusion_model.layers)
    from flowlora.trainer_core.checkpointing import checkpointed, transformer_blocks

    layers = model.model.diffusion_model.layers
    assert transformer_blocks(model.model.diffusion_model) == list(layers)  # what the trainer wrapped
    with checkpointed(model.model.diffusion_model) as wrapped:
        assert wrapped == len(layers) and all("forward" in block.__dict__ for block in layers)


def test_bf16_autocast_trains_and_saves_fp32_factors(env):
    from safetensors.torch import load_file

    tiny_models, Trainer, _ = env
    latents, positive = data(7)
    _, path, run_log, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=3, output_name="runs/bf16", training_dtype="bf16")).result
    lora = load_file(path)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in lora.values())
    assert any(k.endswith("lora_B.weight") and t.abs().max() > 0 for k, t in lora.items())  # B moved off zero
    assert all(math.isfinite(r["loss"]) for r in run_log.records())


def test_trains_a_model_loaded_under_inference_mode(env):
    """ComfyUI runs loader nodes under torch.inference_mode(); their weights are inference tensors."""
    tiny_models, Trainer, _ = env
    with torch.inference_mode():
        model = tiny_models.tiny_zimage(0)
        latents, positive = data(8)
    assert next(model.model.diffusion_model.parameters()).is_inference()
    _, _, run_log, _ = Trainer.execute(model=model, latents=latents, positive=positive, **settings(steps=2, output_name="runs/inference")).result
    assert [r["step"] for r in run_log.records()] == [1, 2]


def test_validation_names_the_bad_field(env):
    _, Trainer, _ = env
    assert Trainer.validate_inputs(output_name="../escape").startswith("output_name = '../escape'")
    assert Trainer.validate_inputs(output_name="/abs/path").startswith("output_name = '/abs/path'")
    assert Trainer.validate_inputs(output_name="ok/name", p_text=0.7, p_both=0.5).startswith("p_text + p_both = 1.2")
    assert Trainer.validate_inputs(output_name="styles/mine", p_text=0.1, p_both=0.1) is True
