"""Timestep samplers against values computed independently in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flowlora.trainer_core import flow
from flowlora.trainer_core import timesteps as ts
from flowlora.trainer_core.errors import ConfigError

# AC-RF report section 2.1 (DESIGN.md section 3).
REPORT_ANCHORS = [1.000, 0.960, 0.913, 0.858, 0.790, 0.707, 0.602, 0.465, 0.278, 0.009]


def shift(s, x):
    return s * x / (1 + (s - 1) * x)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_anchors_equal_the_report_to_three_decimals():
    anchors = ts.AnchorCoupled(num_anchors=10, anchor_shift=3.0).anchors
    assert anchors.dtype == torch.float64
    assert np.round(anchors.numpy(), 3).tolist() == REPORT_ANCHORS


def test_anchors_follow_the_scheduler_construction():
    # Independent float64 re-derivation for another K and shift.
    k, s = 4, 2.0
    sigma_min = shift(s, 1 / 1000)
    t = np.linspace(1000.0, sigma_min * 1000, k) / 1000
    expected = shift(s, t)
    np.testing.assert_allclose(ts.flow_match_euler_sigmas(k, s).numpy(), expected, rtol=0, atol=1e-15)


def test_anchor_stratified_when_batch_at_least_k():
    sampler = ts.AnchorCoupled(num_anchors=10, jitter=0.02)
    anchors = sampler.anchors
    b = 25
    idx = sampler.anchor_indices(b, gen())
    assert idx.tolist() == [i * 10 // b for i in range(b)]
    sigma = sampler.sample(b, gen())
    assert set(idx.tolist()) == set(range(10))
    dev = (sigma - anchors[idx]).abs()
    # the clamp can only move draws towards the anchor's side of [0.001, 0.999]
    assert float(dev.max()) <= 0.02 + 1e-12


def test_anchor_random_without_replacement_when_batch_below_k():
    sampler = ts.AnchorCoupled(num_anchors=10, jitter=0.0)
    g = gen(3)
    seen = set()
    for _ in range(200):
        idx = sampler.anchor_indices(4, g)
        assert len(set(idx.tolist())) == 4
        seen.update(idx.tolist())
    assert seen == set(range(10))
    sigma = sampler.sample(4, gen(1))
    assert all(any(abs(float(s) - float(a)) < 1e-12 for a in sampler.anchors) for s in sigma.clamp(0.001, 0.999))


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_anchor_jitter_distribution_and_clamp(kind):
    sampler = ts.AnchorCoupled(num_anchors=10, jitter=0.02, jitter_kind=kind)
    draws = sampler.sample(20_000, gen(7))
    idx = sampler.anchor_indices(20_000, gen(7))  # stratified: deterministic
    offsets = draws - sampler.anchors[idx]
    interior = (idx >= 1) & (idx <= 8)  # anchors far from the clamp
    if kind == "uniform":
        assert float(offsets[interior].abs().max()) <= 0.02
        assert abs(float(offsets[interior].std()) - 0.02 / math.sqrt(3)) < 0.0005
    else:
        assert abs(float(offsets[interior].std()) - 0.02) < 0.0005
    assert abs(float(offsets[interior].mean())) < 0.0005
    assert float(draws.min()) >= 0.001 and float(draws.max()) <= 0.999
    assert float(draws.max()) == 0.999  # anchor 1.000 + positive jitter is clamped


def test_uniform_range_and_determinism():
    cfg = ts.TimestepConfig(ts.Uniform(0.0, 0.95))
    a, b = cfg.sample(5000, gen(1)), cfg.sample(5000, gen(1))
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 0.95
    assert abs(float(a.mean()) - 0.475) < 0.01
    u = torch.rand(5000, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close(a, 0.95 * u, rtol=0, atol=1e-15)


def test_logit_normal_in_t_draws_as_u1_and_converts_to_sigma():
    a = ts.LogitNormal(mean=-0.8, std=0.8, space="t").sample(1000, gen(5))
    # U1's definition with the same normal draws: t = sigmoid(-0.8 + 0.8 u), sigma = 1 - t.
    u = torch.randn(1000, generator=gen(5), dtype=torch.float64).numpy()
    np.testing.assert_allclose(a.numpy(), 1 - 1 / (1 + np.exp(-(-0.8 + 0.8 * u))), atol=1e-12)
    # sigma-space (+0.8, 0.8) is the same distribution: sigma = sigmoid(0.8 + 0.8 u).
    b = ts.LogitNormal(mean=0.8, std=0.8, space="sigma").sample(1000, gen(5))
    np.testing.assert_allclose(b.numpy(), 1 / (1 + np.exp(-(0.8 + 0.8 * u))), atol=1e-12)
    qa = np.quantile(ts.LogitNormal(-0.8, 0.8, "t").sample(100_000, gen(6)).numpy(), [0.1, 0.5, 0.9])
    qb = np.quantile(ts.LogitNormal(0.8, 0.8, "sigma").sample(100_000, gen(7)).numpy(), [0.1, 0.5, 0.9])
    np.testing.assert_allclose(qa, qb, atol=0.005)


def test_logit_normal_statistics_in_t():
    # E[t] by quadrature in float64; the median is sigmoid(-0.8) exactly.
    z = np.linspace(-10, 10, 200001)
    pdf = np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    mean_t = np.trapezoid(pdf / (1 + np.exp(-(-0.8 + 0.8 * z))), z)
    assert round(mean_t, 3) == 0.331
    assert round(1 / (1 + math.exp(0.8)), 3) == 0.310
    sigma = ts.TimestepConfig(ts.LogitNormal(-0.8, 0.8, "t")).sample(200_000, gen(0))
    t = 1 - sigma
    assert abs(float(t.mean()) - mean_t) < 0.002
    assert abs(float(t.median()) - 1 / (1 + math.exp(0.8))) < 0.002


def test_u1_logit_normal_clamp():
    cfg = ts.TimestepConfig(ts.LogitNormal(-0.8, 0.8, "t"), clamp_min=0.05, clamp_max=0.95)
    sigma = cfg.sample(100_000, gen(2))
    assert float(sigma.min()) >= 0.05 and float(sigma.max()) == 0.95  # t < 0.05 happens (p = 0.4%)


def test_sigmoid_sampler():
    sigma = ts.Sigmoid(scale=1.5).sample(100, gen(4))
    expected = 1 / (1 + np.exp(-1.5 * torch.randn(100, generator=gen(4), dtype=torch.float64).numpy()))
    np.testing.assert_allclose(sigma.numpy(), expected, atol=1e-15)


def test_static_shift():
    cfg = ts.TimestepConfig(ts.Uniform(), ts.StaticShift(3.0))
    sigma = cfg.sample(100, gen(9))
    u = torch.rand(100, generator=gen(9), dtype=torch.float64).numpy()
    np.testing.assert_allclose(sigma.numpy(), 3 * u / (1 + 2 * u), atol=1e-15)
    assert float(flow.shift_sigma(torch.tensor(0.5, dtype=torch.float64), 3.0)) == 0.75


def test_resolution_shift():
    cfg = ts.TimestepConfig(ts.Uniform(), ts.ResolutionShift(0.5, 1.15, 256, 4096))
    u = torch.rand(50, generator=gen(9), dtype=torch.float64).numpy()
    for seq in (256, 1024, 4096):
        mu = 0.5 + (1.15 - 0.5) * (seq - 256) / (4096 - 256)
        expected = np.exp(mu) / (np.exp(mu) + (1 / u - 1))  # the SD3/Flux time shift
        np.testing.assert_allclose(cfg.sample(50, gen(9), image_seq_len=seq).numpy(), expected, rtol=1e-12)
    with pytest.raises(ConfigError, match="image token count"):
        cfg.sample(2, gen(), image_seq_len=None)


def test_same_seed_same_draws_for_every_sampler():
    for name in ts.SAMPLERS:
        cfg = ts.TimestepConfig(ts.make_sampler(name))
        assert torch.equal(cfg.sample(16, gen(11)), cfg.sample(16, gen(11))), name
        assert not torch.equal(cfg.sample(16, gen(11)), cfg.sample(16, gen(12))), name


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ts.Uniform(0.6, 0.6), "sigma_min"),
        (lambda: ts.Uniform(0.0, 1.5), "sigma_max"),
        (lambda: ts.LogitNormal(0.0, 0.0), "std"),
        (lambda: ts.LogitNormal(0.0, -1.0), "std"),
        (lambda: ts.LogitNormal(0.0, 1.0, "tau"), "space"),
        (lambda: ts.Sigmoid(0.0), "scale"),
        (lambda: ts.AnchorCoupled(num_anchors=0), "num_anchors"),
        (lambda: ts.AnchorCoupled(jitter_kind="laplace"), "jitter_kind"),
        (lambda: ts.StaticShift(-1.0), "shift"),
        (lambda: ts.TimestepConfig(clamp_min=0.9, clamp_max=0.1), "clamp_min"),
        (lambda: ts.TimestepConfig(ts.AnchorCoupled(), ts.StaticShift(3.0)), "shift"),
        (lambda: ts.make_sampler("beta"), "sampler"),
    ],
)
def test_impossible_settings_name_the_field(build, field):
    with pytest.raises(ConfigError) as err:
        build()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field} = ")


def test_config_round_trips_through_json_dict():
    import json

    for cfg in (
        ts.TimestepConfig(ts.AnchorCoupled(jitter_kind="gaussian")),
        ts.TimestepConfig(ts.LogitNormal(-0.8, 0.8, "t"), clamp_min=0.05, clamp_max=0.95),
        ts.TimestepConfig(ts.Uniform(0.1, 0.9), ts.ResolutionShift()),
    ):
        assert ts.TimestepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown settings"):
        ts.TimestepConfig.from_dict({"sampler": {"name": "uniform", "sigma_mn": 0.1}})
