"""Training the tiny SenseNova-U1 through the real Dataset and LoRA Trainer nodes (in-process, CPU, fp32).

Covers issue 5's training items: prefix KVs computed once per caption with the
official template (and the official unconditional prefix once), the five
ablation configurations of the U1 report, condition-dropout routing to the
unconditional prefix, and the default export applying to the U1 MODEL.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from PIL import Image
from tiny_u1 import write_tiny_checkpoint

SHIFT, T_EPS = 3.0, 0.05


@pytest.fixture(scope="module")
def env(comfy_root, tmp_path_factory):
    import comfy.sd
    import folder_paths
    from flowlora.nodes.u1 import model as u1m

    ckpt = tmp_path_factory.mktemp("u1ckpt")
    write_tiny_checkpoint(ckpt)
    loras = tmp_path_factory.mktemp("loras")
    saved = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], saved[1])
    env = {
        "ckpt": ckpt,
        "patcher": u1m.load_u1_model(str(ckpt), SHIFT, T_EPS),
        "encoder": u1m.load_u1_text_encoder(str(ckpt)),
        "vae": comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)}),
        "loras": loras,
    }
    yield env
    folder_paths.folder_names_and_paths["loras"] = saved


def make_images(root):
    """Two 32x32 images (one with a think section) and one 64x32, with captions."""
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for name, size in (("a", (32, 32)), ("b", (32, 32)), ("c", (64, 32))):
        pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(root / f"{name}.png")
    (root / "a.txt").write_text("a red square")
    (root / "b.txt").write_text("a green square\n---think---\n1. **Instruction Understanding:** a square.\n")
    (root / "c.txt").write_text("a blue bar")
    return root


DATASET_WIDGETS = dict(
    trigger="sks style", caption_dropout=0.0, missing_caption="skip", default_caption="", bad_files="fail", background="#FFFFFF",
    bucket_mode="list", max_pixels=32 * 32, bucket_step=32, max_aspect=4.0, bucket_list="32x32, 64x32", allow_upscale=False, crop="stretch", seed=0,
)


def build_dataset(env, folder, template, cache_dir):
    from flowlora.nodes.dataset import DatasetNode
    from flowlora.nodes.paths import ALLOW_ANY_PATH_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ALLOW_ANY_PATH_ENV, "1")  # the tmp folders lie outside ComfyUI's folders
        return DatasetNode.execute(folder=str(folder), vae=env["vae"], u1_text_encoder=env["encoder"], template=template, use_cache=True, cache_dir=str(cache_dir), **DATASET_WIDGETS).result[0]


@pytest.fixture(scope="module")
def dataset(env, tmp_path_factory):
    from flowlora.trainer_core.models.u1.prompts import OFFICIAL_THINK_TEMPLATE

    root = tmp_path_factory.mktemp("u1data")
    return build_dataset(env, make_images(root / "images"), OFFICIAL_THINK_TEMPLATE, root / "cache")


def count_encodes(encoder, monkeypatch) -> list[str]:
    """Record every prefix string the understanding tower encodes."""
    seen: list[str] = []
    real = type(encoder).encode_text

    def spy(self, text):
        seen.append(text)
        return real(self, text)

    monkeypatch.setattr(type(encoder), "encode_text", spy)
    return seen


# ---------------------------------------------------------------- the dataset


def test_dataset_prefixes_are_the_official_strings_encoded_once(env, tmp_path, monkeypatch):
    from flowlora.trainer_core.models.u1 import prompts

    enc = env["encoder"]
    seen = count_encodes(enc, monkeypatch)
    images = make_images(tmp_path / "images")
    ds = build_dataset(env, images, prompts.OFFICIAL_THINK_TEMPLATE, tmp_path / "cache")
    think = "1. **Instruction Understanding:** a square."
    expected = [
        prompts.conditional_prefix("sks style, a red square"),
        prompts.conditional_prefix("sks style, a green square", think),
        prompts.conditional_prefix("sks style, a blue bar"),
        prompts.UNCONDITIONAL_PREFIX,
    ]
    assert sorted(seen) == sorted(expected)  # each caption once, the unconditional prefix once
    assert expected[1].endswith(f"<|im_start|>user\nsks style, a green square<|im_end|>\n<|im_start|>assistant\n<think>\n{think}\n</think>\n\n<img>")
    assert prompts.UNCONDITIONAL_PREFIX == "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<img>"
    by_source = {s.source.name: ds.conditionings[s.conditioning] for s in ds.samples}
    seen.clear()
    for name, text in (("a.png", expected[0]), ("b.png", expected[1]), ("c.png", expected[2])):
        kv = by_source[name][0][0]
        assert torch.equal(kv, enc.encode_text(text)), name
        assert by_source[name][0][1] == {"u1_prefix_length": kv.shape[1]}
    uncond = ds.empty_conditioning[0][0]
    assert torch.equal(uncond, enc.encode_text(prompts.UNCONDITIONAL_PREFIX))
    assert uncond.shape[1] == len(prompts.tokenize(enc.tokenizer, prompts.UNCONDITIONAL_PREFIX))
    # the think label reaches the prefix only through the think template; the default template is train_u1 without think labels
    seen.clear()
    plain = build_dataset(env, images, prompts.OFFICIAL_TEMPLATE, tmp_path / "cache")
    assert sorted(seen) == sorted([expected[0], prompts.conditional_prefix("sks style, a green square"), expected[2]])  # the unconditional prefix came from the cache
    assert torch.equal(plain.empty_conditioning[0][0], uncond)
    # second run: everything from the disk cache, no tower call
    seen.clear()
    again = build_dataset(env, images, prompts.OFFICIAL_THINK_TEMPLATE, tmp_path / "cache")
    assert seen == [] and again.stats["text_encodes"] == 0
    assert all(torch.equal(a[0][0], b[0][0]) for a, b in zip(again.conditionings, ds.conditionings, strict=True))


def test_dataset_needs_exactly_one_text_encoder(env, tmp_path):
    from flowlora.nodes.dataset import DatasetNode
    from flowlora.trainer_core.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one text encoder"):
        DatasetNode.execute(folder=str(tmp_path), vae=env["vae"], template="{caption}", use_cache=False, **DATASET_WIDGETS)
    schema = DatasetNode.define_schema()
    assert all(i.tooltip for i in schema.inputs)


def test_training_prefix_rules():
    from flowlora.trainer_core.models.u1 import prompts

    assert prompts.training_prefix("") == prompts.UNCONDITIONAL_PREFIX
    assert prompts.training_prefix("a cat") == prompts.conditional_prefix("a cat")
    assert prompts.training_prefix("a cat\n---think---") == prompts.conditional_prefix("a cat")
    assert prompts.training_prefix("a cat\n---think---\nwhy\n--- THINK ---\nmore") == prompts.conditional_prefix("a cat", "why\n--- THINK ---\nmore")


# ---------------------------------------------------------------- training


def trainer_settings(recipe: str, **changes):
    from flowlora.trainer_core import optim
    from flowlora.trainer_core.lora.config import LoraConfig
    from flowlora.trainer_core.models.u1.presets import DEFAULT_UNFREEZE_PATTERNS
    from flowlora.trainer_core.models.u1.recipes import RECIPES

    r = RECIPES.get(recipe)
    kw = dict(
        timesteps=r.timesteps, loss=r.loss, p_text=r.dropout.p_text, p_both=r.dropout.p_both,
        lora=LoraConfig(preset="u1_attn_mlp_no_head", rank=4, alpha=4, unfreeze=DEFAULT_UNFREEZE_PATTERNS),
        optimizer=optim.OptimizerConfig("adamw", 1e-3, betas=(0.9, 0.95)),
        steps=6, epochs=0, batch_size=1, seed=0, training_dtype="fp32", gradient_checkpointing=False,
        save_every=0, output_name=f"u1/{recipe}", resume=False,
    )
    kw.update(changes)
    return kw


def spy_forward(monkeypatch) -> list[tuple[int, int]]:
    """``(batch, prefix length)`` of every generation-tower call."""
    from flowlora.nodes.u1.model import U1DiffusionModel

    calls: list[tuple[int, int]] = []
    real = U1DiffusionModel.forward

    def spy(self, x, timesteps, context=None, **kw):
        calls.append((x.shape[0], context.shape[1]))
        return real(self, x, timesteps, context, **kw)

    monkeypatch.setattr(U1DiffusionModel, "forward", spy)
    return calls


@pytest.mark.parametrize("recipe", ["baseline", "v_loss", "logit_normal", "cond_dropout", "official"])
def test_ablation_configuration_trains_and_logs(env, dataset, recipe, monkeypatch):
    from flowlora.nodes.trainer import LoraTrainer
    from flowlora.trainer_core.loop import make_generators
    from flowlora.trainer_core.models.u1.recipes import RECIPES

    r = RECIPES.get(recipe)
    calls = spy_forward(monkeypatch)
    base = env["patcher"]
    before = {k: v.clone() for k, v in base.model.diffusion_model.state_dict().items()}
    kw = trainer_settings(recipe)
    trained, _, run_log, _ = LoraTrainer.execute(model=base, dataset=dataset, **kw).result
    records = run_log.records()
    assert len(records) == kw["steps"]
    for rec in records:
        assert {"loss", "x0_mse", "v_mse", "t", "sigma", "route"} <= set(rec)
        (sigma,), (t,) = rec["sigma"], rec["t"]
        assert math.isfinite(rec["loss"]) and rec["x0_mse"] > 0
        # U1's eq. 2 with its clamp: v-MSE = x0-MSE / max(1 - t, t_eps)^2
        assert rec["v_mse"] == pytest.approx(rec["x0_mse"] / max(sigma, T_EPS) ** 2, rel=1e-5)
        assert rec["loss"] == pytest.approx(rec["v_mse"] if recipe in ("v_loss", "official") else rec["x0_mse"], rel=1e-6)
        assert t == pytest.approx(1.0 - sigma)
    ts = torch.tensor([rec["t"][0] for rec in records], dtype=torch.float64)
    # the logged t are exactly the recipe's draws from the run's timestep stream
    gen = make_generators(kw["seed"])["timesteps"]
    expected = 1.0 - torch.cat([r.timesteps.sample(1, gen) for _ in records])
    torch.testing.assert_close(ts, expected, rtol=0, atol=1e-6)  # logged from float32
    lo, hi = (T_EPS, 1.0 - T_EPS) if recipe in ("logit_normal", "official") else (T_EPS, 1.0)
    assert all(lo <= t <= hi for t in ts.tolist())
    routes = [rec["route"][0] for rec in records]
    if r.dropout.enabled:
        assert set(routes) <= {"cond", "drop_text", "drop_both"}
    else:
        assert set(routes) == {"cond"}
    # dropped samples ran on the unconditional prefix, kept ones on their caption's
    uncond_len = dataset.empty_conditioning[0][0].shape[1]
    assert sum(b for b, length in calls if length == uncond_len) == sum(r != "cond" for r in routes)
    stats = {"t_mean": float(ts.mean()), "t_min": float(ts.min()), "t_max": float(ts.max()), "x0_mse": records[-1]["x0_mse"], "v_mse": records[-1]["v_mse"], "routes": {k: routes.count(k) for k in set(routes)}}
    logging.getLogger(__name__).info("%s: %s", recipe, stats)
    # base untouched; the saved default export applies to the U1 MODEL through ComfyUI's LoRA loading
    after = base.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trained is not base and trained.patches


def test_dropout_routes_about_20_percent_unconditional(env, dataset, monkeypatch):
    """p_text = p_both = 0.1: the trainer's log over 240 samples (30 steps x 8), and 200,000 draws of the same routing."""
    from flowlora.nodes.trainer import LoraTrainer
    from flowlora.trainer_core.dropout import ConditionDropout
    from flowlora.trainer_core.lora.config import LoraConfig

    calls = spy_forward(monkeypatch)
    kw = trainer_settings("cond_dropout", steps=30, batch_size=8, lora=LoraConfig(preset="u1_attn_only", rank=1, alpha=1), output_name="u1/routes")
    latents = {"samples": torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1}
    _, _, run_log, _ = LoraTrainer.execute(model=env["patcher"], latents=latents, positive=dataset.conditionings[0], empty_prompt=dataset.empty_conditioning, **kw).result
    routes = [r for rec in run_log.records() for r in rec["route"]]
    n = len(routes)
    assert n == 240
    dropped = sum(r != "cond" for r in routes)
    bound = 4 * math.sqrt(0.2 * 0.8 / n)  # 4 standard deviations of the binomial proportion
    assert abs(dropped / n - 0.2) <= bound, (dropped, n)
    logging.getLogger(__name__).info("routes over %d samples: %s", n, {k: routes.count(k) for k in ("cond", "drop_text", "drop_both")})
    uncond_len = dataset.empty_conditioning[0][0].shape[1]
    assert sum(b for b, length in calls if length == uncond_len) == dropped

    draws = ConditionDropout(0.1, 0.1).routes(200_000, torch.Generator().manual_seed(1))
    share = torch.bincount(draws, minlength=3).double() / draws.numel()
    sd = math.sqrt(0.1 * 0.9 / draws.numel())
    assert abs(float(share[1]) - 0.1) <= 4.5 * sd and abs(float(share[2]) - 0.1) <= 4.5 * sd
    assert abs(float(share[1] + share[2]) - 0.2) <= 4.5 * math.sqrt(0.16 / draws.numel())


def test_logit_normal_recipe_statistics():
    """The report's logit-normal in t: mean 0.331, median 0.310 (before the [t_eps, 1 - t_eps] clamp changes little)."""
    from flowlora.trainer_core.models.u1.recipes import RECIPES

    t = 1.0 - RECIPES.get("logit_normal").timesteps.sample(400_000, torch.Generator().manual_seed(0))
    assert float(t.mean()) == pytest.approx(0.331, abs=0.003)
    assert float(t.median()) == pytest.approx(0.310, abs=0.003)
    assert float(t.min()) >= T_EPS and float(t.max()) <= 1 - T_EPS
    u = 1.0 - RECIPES.get("baseline").timesteps.sample(400_000, torch.Generator().manual_seed(0))
    assert float(u.min()) >= T_EPS and float(u.max()) < 1.0 and float(u.mean()) == pytest.approx(0.525, abs=0.003)


def test_loss_uses_the_network_x0_below_t_eps(env):
    """Below sigma = t_eps ComfyUI's denoised is clamped for Euler; the trainer maps it back to U1's x0_hat."""
    from flowlora.nodes.trainer import _network_x0

    patcher = env["patcher"]
    ms = patcher.get_model_object("model_sampling")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    x0_hat = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.01, 0.5])

    def denoiser(x_sigma, s, conds):
        return ms.calculate_denoised(s, x0_hat, x_sigma)

    assert not torch.allclose(denoiser(x, sigma, None)[0], x0_hat[0])
    torch.testing.assert_close(_network_x0(denoiser, patcher)(x, sigma, None), x0_hat, rtol=1e-5, atol=1e-5)


def test_velocity_target_uses_u1_noise_scale(env):
    """U1 noises with s_eff * eps; the loss's velocity target must be (x_sigma - x0) / sigma, U1's v*."""
    from flowlora.nodes import training
    from flowlora.trainer_core.losses import FlowPrediction

    patcher = env["patcher"]
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    x_sigma, eps_eff = training.noise_fn(patcher)(x0, eps, sigma)
    s = patcher.get_model_object("model_sampling").u1_noise_scale(x0)
    assert s != 1.0
    torch.testing.assert_close(eps_eff, s * eps)
    p = FlowPrediction(x0, eps_eff, sigma, x0, t_eps=T_EPS)
    torch.testing.assert_close(p.v_target, (x_sigma - x0) / sigma.view(-1, 1, 1, 1), rtol=1e-4, atol=1e-4)
