"""The Dataset node on real ComfyUI parts: a tiny AutoencoderKL built by ``comfy.sd.VAE``,
ComfyUI's pixel-space VAE, and a tiny SD1 CLIP built by ``comfy.sd.CLIP`` with
ComfyUI's own CLIP tokenizer. Encoder calls are counted on the real models.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_support import save_exif_rotated, save_rgb

WIDGETS = dict(
    trigger="sks", template="{trigger}, {caption}", caption_dropout=0.1, missing_caption="default", default_caption="a grey square",
    bad_files="skip", background="#000000", bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, max_aspect=4.0,
    bucket_list="", allow_upscale=False, crop="center", seed=0, use_cache=True,
)
DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def tiny_vae(seed: int = 0):
    """A real ComfyUI VAE (AutoencoderKL, 4 latent channels, /8) from a seeded state dict."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    g = torch.Generator().manual_seed(seed)
    shapes = AutoencoderKL(ddconfig=DDCONFIG, embed_dim=4).state_dict()
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in shapes.items()}
    return comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": DDCONFIG, "embed_dim": 4}})


def tiny_clip(seed: int = 0):
    """A real ComfyUI CLIP: SD1ClipModel at width 32, 2 layers, ComfyUI's CLIP-L tokenizer."""
    import comfy.sd
    import comfy.sd1_clip

    target = types.SimpleNamespace(params={}, clip=comfy.sd1_clip.SD1ClipModel, tokenizer=comfy.sd1_clip.SD1Tokenizer)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2, "projection_dim": 32}
    clip = comfy.sd.CLIP(target, model_options={"clip_l_model_config": small})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clip.cond_stage_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return clip


def count_calls(obj, name: str) -> list[int]:
    """Count calls of ``obj.name`` (the real method still runs)."""
    calls = [0]
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    setattr(obj, name, counted)
    return calls


@pytest.fixture(autouse=True)
def input_in_tmp(comfy_root, tmp_path):
    """ComfyUI's input folder is the test's tmp_path, so the node accepts the tmp folders (paths are confined)."""
    import folder_paths

    before = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path))
    yield
    folder_paths.set_input_directory(before)


@pytest.fixture(scope="module")
def parts(comfy_root):
    from flowlora.nodes import dataset as node

    vae, clip = tiny_vae(), tiny_clip()
    vae_calls = count_calls(vae.first_stage_model, "encode")
    clip_calls = count_calls(clip.cond_stage_model, "encode_token_weights")
    return node, vae, clip, vae_calls, clip_calls


def make_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    Image.new("L", (64, 64), 128).save(root / "grey.png")  # no caption -> default caption
    a = np.zeros((48, 80, 4), dtype=np.uint8)
    a[..., 0] = 255
    a[..., 3] = 255
    Image.fromarray(a, "RGBA").save(root / "red.png")
    (root / "red.txt").write_text("a red card")
    save_exif_rotated(root / "rot.jpg", 96, 48, 6)
    (root / "rot.txt").write_text("halves\n---think---\nred on top")
    save_rgb(root / "2_noise" / "n.png", 70, 70, seed=4)
    (root / "2_noise" / "n.txt").write_text("static")
    (root / "broken.png").write_bytes(b"")
    return root


def test_two_runs_second_calls_no_encoder(parts, tmp_path):
    import comfy.model_management as mm

    import nodes as comfy_nodes

    node, vae, clip, vae_calls, clip_calls = parts
    folder = make_folder(tmp_path / "data")
    vae_calls[0] = clip_calls[0] = 0
    dataset, image = node.DatasetNode.execute(folder=str(folder), vae=vae, clip=clip, cache_dir=str(tmp_path / "cache"), **WIDGETS).result
    assert vae_calls[0] == 4 and clip_calls[0] == 4 + 1  # 4 images; 4 distinct prompts + the empty prompt
    for loaded in mm.current_loaded_models:  # both encoders were released
        assert loaded.model is not vae.patcher and not vae.patcher.is_clone(loaded.model)
        assert loaded.model is not clip.patcher and not clip.patcher.is_clone(loaded.model)

    assert [s.source.name for s in dataset.samples] == ["grey.png", "red.png", "rot.jpg", "n.png"]
    assert [p for p, _ in dataset.skipped] == [str(folder / "broken.png")]
    assert image.shape == (1, 512, 768, 3) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert dataset.caption_dropout == 0.1 and dataset.epoch_length == 5

    grey, red, rot, _noise = dataset.samples
    assert grey.bucket.label == "64x64" and grey.latent.shape == (4, 8, 8)
    direct = vae.encode(torch.full((1, 64, 64, 3), 128 / 255.0))  # what VAEEncode would give for this image
    assert torch.allclose(grey.latent, direct[0], atol=1e-5)
    assert rot.original_size == (48, 96) and rot.bucket.height > rot.bucket.width and rot.think == "red on top"

    prompt_cond = comfy_nodes.CLIPTextEncode().encode(clip, "sks, a red card")[0]
    got = dataset.conditionings[red.conditioning]
    assert red.prompt == "sks, a red card"
    assert torch.equal(got[0][0], prompt_cond[0][0]) and torch.equal(got[0][1]["pooled_output"], prompt_cond[0][1]["pooled_output"])
    empty = comfy_nodes.CLIPTextEncode().encode(clip, "")[0]
    assert torch.equal(dataset.empty_conditioning[0][0], empty[0][0])

    assert node.release_encoders(vae.patcher, clip.patcher) == 2  # the direct encodes above loaded both again
    assert not [m for m in mm.current_loaded_models if m.model is vae.patcher or m.model is clip.patcher]

    vae_calls[0] = clip_calls[0] = 0
    again, _ = node.DatasetNode.execute(folder=str(folder), vae=vae, clip=clip, cache_dir=str(tmp_path / "cache"), **WIDGETS).result
    assert (vae_calls[0], clip_calls[0]) == (0, 0)
    assert all(torch.equal(a.latent, b.latent) for a, b in zip(dataset.samples, again.samples, strict=True))
    assert torch.equal(again.conditionings[again.samples[1].conditioning][0][0], prompt_cond[0][0])

    other_vae = tiny_vae(seed=1)  # different weights -> different identity -> re-encode images only
    other_calls = count_calls(other_vae.first_stage_model, "encode")
    node.DatasetNode.execute(folder=str(folder), vae=other_vae, clip=clip, cache_dir=str(tmp_path / "cache"), **WIDGETS)
    assert other_calls[0] == 4 and clip_calls[0] == 0


def test_pixel_space_vae_and_default_cache_folder(parts, tmp_path):
    import comfy.sd

    node, _, clip, _, _ = parts
    folder = make_folder(tmp_path / "data")
    pixel_vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    dataset, _ = node.DatasetNode.execute(folder=str(folder), vae=pixel_vae, clip=clip, **{**WIDGETS, "bucket_step": 32, "max_pixels": 32 * 32}).result
    grey = dataset.samples[0]
    assert grey.bucket.label == "32x32" and grey.latent.shape == (3, 32, 32)
    assert torch.allclose(grey.latent, torch.full_like(grey.latent, 128 / 255.0 * 2 - 1), atol=1e-6)  # pixels in [-1, 1]
    red = dataset.samples[1]
    assert torch.allclose(red.latent[0], torch.ones_like(red.latent[0])) and torch.allclose(red.latent[1:], -torch.ones_like(red.latent[1:]))
    assert len(list((folder / ".flowlora_cache" / "latents").rglob("*.safetensors"))) == 4


def test_relative_folder_errors_and_validation(parts, tmp_path):
    import folder_paths
    from flowlora.trainer_core.data.errors import DataError

    node, vae, clip, _, _ = parts
    before = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    try:
        make_folder(tmp_path / "input" / "my set")
        assert node.resolve_folder("my set") == tmp_path / "input" / "my set"
        dataset, _ = node.DatasetNode.execute(folder="my set", vae=vae, clip=clip, **{**WIDGETS, "use_cache": False}).result
        assert len(dataset) == 4
        with pytest.raises(DataError, match="nothing here: does not exist; give an absolute folder path"):
            node.DatasetNode.execute(folder="nothing here", vae=vae, clip=clip, **WIDGETS)
        signature = node.DatasetNode.fingerprint_inputs(folder="my set")
        (tmp_path / "input" / "my set" / "red.txt").write_text("a crimson card")
        assert node.DatasetNode.fingerprint_inputs(folder="my set") != signature
    finally:
        folder_paths.set_input_directory(before)

    assert node.DatasetNode.validate_inputs(**WIDGETS) is True
    assert "background = 'pink'" in node.DatasetNode.validate_inputs(**{**WIDGETS, "background": "pink"})
    assert "unknown placeholder(s) captoin" in node.DatasetNode.validate_inputs(**{**WIDGETS, "template": "{captoin}"})
    assert "preset sensenova_u1 needs a multiple of 32" in node.DatasetNode.validate_inputs(**{**WIDGETS, "bucket_mode": "sensenova_u1"})
    assert node.parse_colour("#ff8000") == (255, 128, 0) and node.parse_colour("1, 2, 3") == (1, 2, 3)
