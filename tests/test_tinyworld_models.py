"""The committed tiny-world Z-Images (base and Turbo): stock loaders, stock sampling, content accuracy.

``scripts/tinyworld/models/zimage_*.safetensors`` load through the stock
UNETLoader once the demo package has registered the tiny pixel-space Z-Image,
the tiny text encoder through the demo package's loader node, prompts through
CLIPTextEncode, images through ``nodes.common_ksampler`` (the KSampler node) and
the pixel_space VAE. Runs on whichever host the suite runs on (0.3.75 or 0.33).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINYWORLD = REPO / "scripts" / "tinyworld"
for _p in (str(REPO / "scripts"), str(TINYWORLD)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

BASE = TINYWORLD / "models" / "zimage_base.safetensors"
TURBO = TINYWORLD / "models" / "zimage_turbo.safetensors"
PROMPTS = 20
TURBO_MIN_ACCURACY = 0.80
FULL_RUN_STEPS = 1500
"""Base steps of a full pretraining run; the committed weights may be a short checkpoint until the lead's full run lands."""


@pytest.fixture(scope="module")
def zi(comfy_root):
    import evaluate_zimage

    evaluate_zimage.pz.import_comfy()
    return evaluate_zimage


@pytest.fixture(scope="module")
def clip(zi, tmp_path_factory):
    """The tiny text encoder through the demo package's loader node (file rebuilt from its seed)."""
    import flowlora_tiny
    import folder_paths

    folder = tmp_path_factory.mktemp("text_encoders")
    path = zi.pz.text_encoder_path(folder)
    folder_paths.add_model_folder_path("text_encoders", str(folder))
    return flowlora_tiny.TinyTextEncoderLoader.execute(path.name, "lumina2").args[0]


def _meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["flowlora_tinyworld"])


@pytest.mark.parametrize("path", [BASE, TURBO], ids=["base", "turbo"])
def test_committed_weights_load_through_unet_loader(zi, path):
    """Stock UNETLoader: the tiny pixel-space Z-Image class, patch 8 on RGB, identity pixel latents, shift 3."""
    import comfy.latent_formats

    assert path.stat().st_size < 13e6
    patcher = zi.load_unet(path)
    model = patcher.model
    assert type(model.model_config).__name__ == "TinyPixelZImage"
    assert isinstance(model.latent_format, comfy.latent_formats.ChromaRadiance)
    assert model.diffusion_model.patch_size == 8 and model.diffusion_model.in_channels == 3
    assert model.model_sampling.shift == pytest.approx(3.0)
    assert _meta(path)["config"] == zi.pz.UNET_CONFIG


def test_training_features_equal_the_graph(zi, clip):
    """The trainer's batched caption features are CLIPTextEncode's, bit for bit."""
    encoder = zi.pz.CaptionEncoder(clip)
    prompts = ["", *zi.heldout_prompts(3)]
    encoder.check(prompts)
    import nodes

    graph = nodes.CLIPTextEncode().encode(clip, prompts[1])[0][0][0]
    assert graph.shape[0] == 1 and graph.shape[2] == 32
    assert bool((encoder.encode_any(prompts[1:2])[0] == graph[0].float()).all())


def _short_checkpoint() -> bool:
    from safetensors import safe_open

    with safe_open(str(BASE), "pt") as f:
        return json.loads(f.metadata()["flowlora_tinyworld"])["step"] < FULL_RUN_STEPS


@pytest.mark.xfail(_short_checkpoint(), reason=f"committed base is a short checkpoint (< {FULL_RUN_STEPS} steps); run scripts/tinyworld/pretrain_zimage.py and distill_turbo.py in full", strict=True)
def test_turbo_samples_held_out_prompts_in_8_steps(zi, clip):
    """8 Euler steps, cfg 1, 20 held-out prompts, batched: content accuracy >= 80%."""
    model = zi.load_unet(TURBO)
    prompts = zi.heldout_prompts(PROMPTS)
    images = zi.generate(model, clip, prompts, steps=8, cfg=1.0, seed=0)
    assert images.shape == (PROMPTS, 64, 64, 3)
    result = zi.score(images, prompts)
    assert result["accuracy"] >= TURBO_MIN_ACCURACY, result


def test_resume_continues_the_same_trajectory(zi, clip, tmp_path):
    """Two steps in one call equal one step, a saved state, and one more step in a second call."""
    import torch

    pz = zi.pz
    encoder = pz.CaptionEncoder(clip)
    base = ["--batch", "2", "--max-steps", "2", "--no-export", "--warmup", "1"]

    def run(folder, steps):
        args = pz.arguments().parse_args([*base, "--run", str(folder), "--max-steps", str(steps)])
        r = pz.new_run(folder, args)
        pz.train(r, lambda rr, step: pz.flow_loss(rr, step, encoder, args), args)
        return r

    straight = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", 2)
    assert resumed.step == 2 and resumed.stream.state() == straight.stream.state()
    for name, value in straight.model.diffusion_model.state_dict().items():
        torch.testing.assert_close(resumed.model.diffusion_model.state_dict()[name], value, rtol=0, atol=0)
    for name, value in straight.ema.items():
        torch.testing.assert_close(resumed.ema[name], value, rtol=0, atol=0)
