"""Tiny U1: sharded checkpoint round trip, prefix-KV cache exactness, shapes and conventions."""

from __future__ import annotations

import json

import pytest
import torch
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.models.u1 import PrefixKV, forward_uncached
from flowlora.trainer_core.models.u1.checkpoint import INDEX_NAME, load_towers
from flowlora.trainer_core.models.u1.layers import patchify32, unpatchify32
from flowlora.trainer_core.models.u1.sampling import clamped_denoised, official_timesteps, raw_x0, u1_velocity
from tiny_u1 import tiny_config, write_tiny_checkpoint


@pytest.fixture(scope="module", params=[False, True], ids=["u1_mlp_head", "u15_conv_head"])
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("u1")
    state = write_tiny_checkpoint(folder, pixel_head=request.param)
    cfg, prefix, gen = load_towers(folder)
    return folder, state, cfg, prefix, gen


def test_official_layout_and_values(tiny):
    folder, state, cfg, prefix, gen = tiny
    index = json.loads((folder / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) == 2
    assert set(index["weight_map"]) == set(state)
    loaded = {**prefix.state_dict(), **gen.state_dict()}
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert loaded[k].dtype == torch.bfloat16 and loaded[k].device.type == "cpu"
        assert torch.equal(loaded[k], v), k
    assert cfg == tiny_config(cfg.use_pixel_head)


def test_head_must_match_keys(tiny, tmp_path):
    folder, *_ = tiny
    for f in folder.iterdir():
        (tmp_path / f.name).symlink_to(f)
    raw = json.loads((folder / "config.json").read_text())
    raw["use_pixel_head"] = not raw["use_pixel_head"]
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="use_pixel_head"):
        load_towers(tmp_path)


def test_patchify_layout():
    x = torch.arange(2 * 3 * 64 * 96, dtype=torch.float32).view(2, 3, 64, 96)
    tokens = patchify32(x)
    assert tokens.shape == (2, 6, 3072)
    # token 4 = row 1, col 1; entry (p*32 + q)*3 + c
    p, q, c = 5, 7, 2
    assert tokens[1, 4, (p * 32 + q) * 3 + c] == x[1, c, 32 + p, 32 + q]
    assert torch.equal(unpatchify32(tokens, 2, 3), x)


def test_cached_equals_uncached_forward_and_gradients(tiny):
    """A training step with the cached prefix KV equals the joint (uncached) forward."""
    _, _, cfg, prefix, gen = tiny
    prefix, gen = prefix.float(), gen.float()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 151000, (1, 9), generator=g)
    x0 = torch.rand(2, 3, 64, 96, generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g) * cfg.noise_scale_for(6)
    t = torch.tensor([0.3, 0.8])
    z = t.view(-1, 1, 1, 1) * x0 + (1 - t.view(-1, 1, 1, 1)) * eps

    def step(fn):
        gen.zero_grad()
        out = fn()
        loss = (out.float() - x0).pow(2).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in gen.named_parameters()}
        return out.detach(), grads

    kv = prefix.encode(ids)
    cached, g_cached = step(lambda: gen(z, t, kv))
    uncached, g_uncached = step(lambda: forward_uncached(prefix, gen, ids, z, t))
    assert cached.shape == x0.shape
    torch.testing.assert_close(cached, uncached, rtol=1e-4, atol=1e-5)
    for n in g_cached:
        torch.testing.assert_close(g_cached[n], g_uncached[n], rtol=1e-3, atol=1e-6, msg=n)
    # pack/unpack is lossless and the packed form drives the same forward
    packed = kv.pack()
    assert packed.shape == (1, 9, 2 * 2 * 2 * 16)
    again = PrefixKV.unpack(packed, 2, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(gen(z, t, again), cached, rtol=0, atol=0)
    prefix.bfloat16(), gen.bfloat16()


def test_prefix_changes_output(tiny):
    _, _, _cfg, prefix, gen = tiny
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = gen(x, torch.tensor([0.5]), prefix.encode(torch.tensor([[1, 2, 3]])))
        b = gen(x, torch.tensor([0.5]), prefix.encode(torch.tensor([[1, 2, 4]])))
    assert not torch.equal(a, b)


def test_bad_size_names_the_rule(tiny):
    _, _, _, prefix, gen = tiny
    with pytest.raises(ConfigError, match="multiples of 32"):
        gen(torch.zeros(1, 3, 48, 32), torch.tensor([0.5]), prefix.encode(torch.tensor([[1]])))


def test_schedule_and_clamp():
    t = official_timesteps(8, 3.0)
    expect = [0, 0.045455, 0.1, 0.166667, 0.25, 0.357143, 0.5, 0.7, 1.0]
    torch.testing.assert_close(t, torch.tensor(expect, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(official_timesteps(50, 3.0)[-3:], torch.tensor([0.888889, 0.942308, 1.0], dtype=torch.float64), atol=1e-6, rtol=0)
    x, x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.5, 0.01], dtype=torch.float64).view(-1, 1, 1, 1)
    d = clamped_denoised(x, x0, sigma, 0.05)
    torch.testing.assert_close(d[0], x0[0])
    torch.testing.assert_close(u1_velocity(x, d, sigma)[1], (x0[1] - x[1]) / 0.05)
    torch.testing.assert_close(raw_x0(x, d, sigma, 0.05), x0)
