"""U1's generation token size from config.json (``vision_config.patch_size`` / ``downsample_ratio``).

Official checkpoints keep 32-px tokens (16-px patches merged 2 x 2); a small
model (the tiny-world U1) can use smaller tokens, and every place the token
size enters follows the config: patch embedder, head, (un)patchify, the token
grid and the noise-scale token count.
"""

from __future__ import annotations

import json

import pytest
import torch
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.models.u1 import U1_8B_MOT, U15_8B_MOT, U1Config, build_towers, forward_uncached
from flowlora.trainer_core.models.u1.config import VisionConfig
from flowlora.trainer_core.models.u1.layers import patchify, patchify32, unpatchify
from tiny_u1 import TINY_LLM, tiny_state_dict

SMALL = VisionConfig(hidden_size=32, patch_size=4, downsample_ratio=0.5)


def _small(pixel_head: bool = False) -> U1Config:
    return U1Config(llm=TINY_LLM, vision=SMALL, use_pixel_head=pixel_head)


def test_official_default_is_32px():
    for cfg in (U1_8B_MOT, U15_8B_MOT, U1Config()):
        assert cfg.token_px == 32 and cfg.vision.patch_size == 16 and cfg.vision.merge == 2
    with torch.device("meta"):
        _, gen = build_towers(U1_8B_MOT)
    emb = gen.fm_modules["vision_model_mot_gen"].embeddings
    assert emb.patch_embedding.weight.shape == (1024, 3, 16, 16)
    assert emb.dense_embedding.weight.shape == (4096, 1024, 2, 2)
    assert gen.fm_modules["fm_head"][2].weight.shape == (3072, 4096)
    assert U1_8B_MOT.noise_scale_for(64 * 64) == 8.0  # spec 8: 2048^2 -> 4096 tokens -> s_eff 8


def test_official_config_json_layout_reads_32px():
    """The official file: ``vision_config.patch_size`` 16, ``downsample_ratio`` 0.5 at the top (and as a 1-list in vision_config)."""
    raw = {"downsample_ratio": 0.5, "llm_config": {"hidden_size": 4096}, "vision_config": {"hidden_size": 1024, "patch_size": 16, "downsample_ratio": [0.5]}}
    assert U1Config.from_dict(raw).token_px == 32
    assert U1Config.from_dict({}).token_px == 32  # both absent: official values


def test_round_trip_keeps_token_size(tmp_path):
    cfg = _small()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    back = U1Config.from_json(path)
    assert back == cfg and back.token_px == 8
    raw = json.loads(path.read_text())
    assert raw["vision_config"]["patch_size"] == 4 and raw["downsample_ratio"] == 0.5


@pytest.mark.parametrize("patch, ratio", [(4, 0.3), (0, 0.5), (4, 2.0)])
def test_bad_token_fields_named(patch, ratio):
    with pytest.raises(ConfigError, match=r"downsample_ratio|patch_size"):
        VisionConfig(patch_size=patch, downsample_ratio=ratio)


@pytest.mark.parametrize("pixel_head", [False, True], ids=["mlp_head", "conv_head"])
def test_small_tokens_shapes_and_forward(pixel_head):
    cfg = _small(pixel_head)
    prefix, gen = build_towers(cfg)
    prefix.load_state_dict(state := tiny_state_dict(cfg), strict=False)
    gen.load_state_dict(state, strict=False)
    prefix.float(), gen.float()
    emb = gen.fm_modules["vision_model_mot_gen"].embeddings
    assert emb.patch_embedding.weight.shape == (32, 3, 4, 4)
    assert emb.dense_embedding.weight.shape == (64, 32, 2, 2)
    if not pixel_head:
        assert gen.fm_modules["fm_head"][2].weight.shape == (8 * 8 * 3, 64)
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    assert gen.embed(x, torch.tensor([0.5, 0.5])).shape == (2, 8 * 6, 64)
    ids = torch.tensor([[1, 5, 9, 2]])
    kv = prefix.encode(ids)
    out = gen(x, torch.tensor([0.3, 0.7]), kv)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(forward_uncached(prefix, gen, ids, x, torch.tensor([0.3, 0.7])), out, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="multiples of 8"):
        gen(torch.zeros(1, 3, 64, 60), torch.tensor([0.5]), kv)


def test_noise_scale_counts_own_tokens():
    """64 x 64 at 8-px tokens is 64 tokens: s_eff = sqrt(64 / 64) = 1 (32-px tokens would give 0.25)."""
    cfg = _small()
    assert cfg.token_grid(64, 64) == (8, 8)
    assert cfg.noise_scale_for(8 * 8) == 1.0
    assert cfg.noise_scale_for(16 * 16) == 2.0


def test_patchify_any_token_size():
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).view(2, 3, 16, 24)
    tokens = patchify(x, 8)
    assert tokens.shape == (2, 6, 192)
    b, c, p, q = 1, 2, 3, 5  # token 4 = row 1, col 1; entry (p*8 + q)*3 + c
    assert tokens[b, 4, (p * 8 + q) * 3 + c] == x[b, c, 8 + p, 8 + q]
    assert torch.equal(unpatchify(tokens, 2, 3, 8), x)
    assert torch.equal(patchify(x.repeat(1, 1, 2, 4)[..., :64, :96], 32), patchify32(x.repeat(1, 1, 2, 4)[..., :64, :96]))
