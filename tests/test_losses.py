"""Losses and weightings against float64 computations written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flowlora.trainer_core import losses as ls
from flowlora.trainer_core.errors import ConfigError


def batch(seed=0, shape=(3, 4, 8, 6), sigma=(0.05, 0.5, 0.93), err=0.2):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    pred = x0 + err * torch.randn(shape, generator=g, dtype=torch.float64)
    return x0, eps, torch.tensor(sigma, dtype=torch.float64), pred


def np64(*ts):
    return [t.numpy().astype(np.float64) for t in ts]


def per_sample(a):
    return a.reshape(a.shape[0], -1).mean(axis=1)


def velocities(x0, eps, sigma, pred, t_eps):
    """The U1 report's parameterisation, mapped to ours: z_t = t x0 + (1-t) eps, t = 1 - sigma."""
    s = sigma.reshape(-1, 1, 1, 1)
    t = 1 - s
    z = t * x0 + (1 - t) * eps
    denom = np.maximum(1 - t, t_eps)
    v_u1_target = (x0 - z) / denom  # U1's sign: points to the clean image
    v_u1_pred = (pred - z) / denom
    return -v_u1_target, -v_u1_pred  # ours: v = eps - x0


def run(terms, weighting="none", gamma=5.0, t_eps=0.001, params=None, **kw):
    x0, eps, sigma, pred = batch(**kw)
    cfg = ls.LossConfig(terms, weighting, gamma, t_eps, params or ls.TermParams())
    out = cfg(x0, eps, sigma, pred)
    return out, np64(x0, eps, sigma, pred)


def test_x0_mse_and_v_mse_satisfy_u1_eq2():
    out, (x0, eps, sigma, pred) = run({"x0_mse": 1.0})
    x0_mse = per_sample((pred - x0) ** 2)
    np.testing.assert_allclose(out.x0_mse.numpy(), x0_mse, rtol=1e-6)
    # U1 eq. 2: L_v = L_x0 / (1 - t)^2 = L_x0 / sigma^2
    np.testing.assert_allclose(out.v_mse.numpy(), x0_mse / sigma**2, rtol=1e-5)
    v, v_hat = velocities(x0, eps, sigma, pred, 0.001)
    np.testing.assert_allclose(out.v_mse.numpy(), per_sample((v_hat - v) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(out.loss), x0_mse.mean(), rtol=1e-6)


def test_t_eps_clamps_both_sides_as_u1():
    out, (x0, eps, sigma, pred) = run({"v_mse": 1.0}, t_eps=0.1)
    v, v_hat = velocities(x0, eps, sigma, pred, 0.1)
    expected = per_sample((v_hat - v) ** 2)
    np.testing.assert_allclose(out.per_sample.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(expected, per_sample((pred - x0) ** 2) / np.maximum(sigma, 0.1) ** 2, rtol=1e-9)


def test_velocity_model_round_trip():
    """x0_pred from a velocity model (x0 = x_sigma - sigma v) gives back that velocity."""
    x0, eps, sigma, _ = batch()
    v_model = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    x_sigma = (1 - s) * x0 + s * eps
    pred = ls.FlowPrediction(x0, eps, sigma, x_sigma - s * v_model, t_eps=0.001)
    torch.testing.assert_close(pred.v_pred, v_model, rtol=0, atol=1e-12)
    torch.testing.assert_close(pred.v_target, eps - x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("space", ["x0", "v"])
def test_huber(space):
    delta = 0.3
    out, (x0, eps, sigma, pred) = run({f"{space}_huber": 1.0}, params=ls.TermParams(huber_delta=delta))
    v, v_hat = velocities(x0, eps, sigma, pred, 0.001)
    d = np.abs(pred - x0 if space == "x0" else v_hat - v)
    h = np.where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta))
    np.testing.assert_allclose(out.per_sample.numpy(), per_sample(h), rtol=1e-5)


def test_charbonnier_cosine_fft_and_min_snr_compose_as_acrf():
    terms = {"v_charbonnier": 1.0, "v_cosine": 0.1, "v_fft": 0.1}
    out, (x0, eps, sigma, pred) = run(terms, weighting="min_snr", gamma=5.0, params=ls.TermParams(fft_norm="backward"))
    v, v_hat = velocities(x0, eps, sigma, pred, 0.001)
    d = v_hat - v
    char = per_sample(np.sqrt(d**2 + 1e-6) - math.sqrt(1e-6))
    a, b = v_hat.reshape(3, -1), v.reshape(3, -1)
    cos = 1 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    fft = per_sample(np.abs(np.fft.fft2(v_hat) - np.fft.fft2(v)))
    snr = ((1 - sigma) / sigma) ** 2
    w = np.clip(np.minimum(snr, 5.0) / snr, 0.1, 1.0)
    expected = w * (char + 0.1 * cos + 0.1 * fft)
    np.testing.assert_allclose(out.terms["v_charbonnier"].numpy(), char, rtol=1e-5)
    np.testing.assert_allclose(out.terms["v_cosine"].numpy(), cos, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out.terms["v_fft"].numpy(), fft, rtol=1e-5)
    np.testing.assert_allclose(out.weight.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(out.per_sample.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(float(out.loss), expected.mean(), rtol=1e-5)
    # whatever the active loss, x0-MSE, v-MSE and sigma are there for the log
    np.testing.assert_allclose(out.x0_mse.numpy(), per_sample((pred - x0) ** 2), rtol=1e-6)
    np.testing.assert_allclose(out.sigma.numpy(), sigma, rtol=1e-7)
    np.testing.assert_allclose(out.t.numpy(), 1 - sigma, rtol=1e-6)


def test_fft_ortho_and_x0_space():
    out, (x0, _, _, pred) = run({"x0_fft": 1.0}, params=ls.TermParams(fft_norm="ortho"))
    expected = per_sample(np.abs(np.fft.fft2(pred, norm="ortho") - np.fft.fft2(x0, norm="ortho")))
    np.testing.assert_allclose(out.per_sample.numpy(), expected, rtol=1e-5)


def test_min_snr_table_and_gamma_zero():
    sigma = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.0, 1.0], dtype=torch.float64)
    w = ls.WEIGHTINGS.get("min_snr")(sigma, 5.0)
    # SNR = 81, 5.44, 1, 0.18, 0.012 (AC-RF table 3.1): w = 5/81 -> 0.1 floor, 5/5.44, 1, 1, 1
    assert w[:5].tolist() == pytest.approx([0.1, 5 / (0.7 / 0.3) ** 2, 1.0, 1.0, 1.0], rel=1e-12)
    assert w[5].item() == pytest.approx(0.1) and w[6].item() == pytest.approx(1.0)
    assert torch.equal(ls.WEIGHTINGS.get("min_snr")(sigma, 0.0), torch.ones_like(sigma))


def test_sd3_weightings():
    sigma = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    np.testing.assert_allclose(ls.WEIGHTINGS.get("sigma_sqrt")(sigma, 0).numpy(), sigma.numpy() ** -2)
    s = sigma.numpy()
    np.testing.assert_allclose(ls.WEIGHTINGS.get("cosmap")(sigma, 0).numpy(), 2 / (np.pi * (1 - 2 * s + 2 * s**2)))


def test_gradient_flows_only_through_the_prediction():
    x0, eps, sigma, pred = batch()
    pred = pred.clone().requires_grad_(True)
    out = ls.LossConfig({"v_charbonnier": 1.0, "v_cosine": 0.1, "v_fft": 0.1}, "min_snr")(x0, eps, sigma, pred)
    out.loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"terms": {"x0_mse": -1.0}}, "lambda[x0_mse]"),
        ({"terms": {"x0_mse": 0.0}}, "terms"),
        ({"terms": {"l2": 1.0}}, "loss term"),
        ({"weighting": "snr"}, "weighting"),
        ({"snr_gamma": -1.0}, "snr_gamma"),
        ({"t_eps": 0.0}, "t_eps"),
        ({"params": ls.TermParams(huber_delta=0.0)}, "huber_delta"),
        ({"params": ls.TermParams(fft_norm="none")}, "fft_norm"),
    ],
)
def test_impossible_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        ls.LossConfig(**kwargs)
    assert err.value.field == field


def test_config_round_trip():
    cfg = ls.LossConfig({"v_charbonnier": 1.0, "v_cosine": 0.1, "v_fft": 0.1}, "min_snr", 5.0, 0.001, ls.TermParams(fft_norm="backward"))
    assert ls.LossConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.describe() == "(1*v_charbonnier + 0.1*v_cosine + 0.1*v_fft) x min_snr(gamma=5)"
