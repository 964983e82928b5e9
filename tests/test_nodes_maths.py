"""The deprecated all-in-one Timestep Sampler and Loss Builder nodes (saved workflows still use them), in-process on ComfyUI's V3 API.

The family nodes that replace them: tests/test_node_families.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

WIDGETS = dict(
    sampler="uniform", sigma_min=0.0, sigma_max=1.0, mean=0.0, std=1.0, space="sigma", scale=1.0, num_anchors=10,
    anchor_shift=3.0, jitter=0.02, jitter_kind="uniform", shift_mode="none", shift=3.0, base_shift=0.5, max_shift=1.15,
    clamp_min=0.0, clamp_max=1.0, preview_axis="t", preview_batch_size=1, preview_seq_len=4096, preview_seed=0,
)
LOSS_WIDGETS = dict(
    primary="x0_mse", primary_weight=1.0, cosine_weight=0.0, fft_weight=0.0, fft_space="velocity", weighting="none",
    snr_gamma=5.0, t_eps=0.001, huber_delta=1.0, charbonnier_eps=1e-6, fft_norm="ortho",
)


@pytest.fixture(scope="module")
def node_modules(comfy_root):
    from flowlora.nodes import legacy_losses, legacy_timesteps

    return legacy_timesteps, legacy_losses


def test_logit_normal_histogram_in_t(node_modules):
    timesteps, _ = node_modules
    w = {**WIDGETS, "sampler": "logit_normal", "mean": -0.8, "std": 0.8, "space": "t"}
    out = timesteps.TimestepSampler.execute(**w)
    config, image = out.result
    from flowlora.nodes.timesteps import histogram

    values, expected_image = histogram(config, "t", 1, 0, 4096)
    assert len(values) == 4096
    assert abs(values.mean() - 0.33) <= 0.01 and abs(np.median(values) - 0.31) <= 0.01
    assert image.shape == (1, 512, 768, 3) and image.dtype == torch.float32
    assert torch.equal(image, expected_image)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert (image < 0.9).any() and (image == 1.0).float().mean() > 0.3  # bars and text on a white page


def test_acrf_sampler_from_widgets(node_modules):
    timesteps, _ = node_modules
    from flowlora.trainer_core import timesteps as ts

    config, _ = timesteps.TimestepSampler.execute(**{**WIDGETS, "sampler": "anchor_coupled"}).result
    assert config == ts.TimestepConfig(ts.AnchorCoupled(10, 3.0, 0.02, "uniform"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sigma_min": 0.6, "sigma_max": 0.5}, "sigma_min = 0.6"),
        ({"sampler": "anchor_coupled", "shift_mode": "static"}, "shift = 'static'"),
        ({"clamp_min": 0.9, "clamp_max": 0.2}, "clamp_min = 0.9"),
    ],
)
def test_timestep_validation_names_the_field(node_modules, changes, message):
    timesteps, _ = node_modules
    w = {k: v for k, v in {**WIDGETS, **changes}.items()}
    result = timesteps.TimestepSampler.validate_inputs(**w)
    assert isinstance(result, str) and result.startswith(message)
    assert timesteps.TimestepSampler.validate_inputs(**WIDGETS) is True


def test_loss_builder_acrf(node_modules):
    _, losses = node_modules
    from flowlora.trainer_core import losses as ls

    w = {**LOSS_WIDGETS, "primary": "v_charbonnier", "cosine_weight": 0.1, "fft_weight": 0.1, "weighting": "min_snr"}
    (config,) = losses.LossBuilder.execute(**w).result
    assert config == ls.LossConfig({"v_charbonnier": 1.0, "v_cosine": 0.1, "v_fft": 0.1}, "min_snr", 5.0, 0.001)
    (baseline,) = losses.LossBuilder.execute(**LOSS_WIDGETS).result
    assert baseline.terms == {"x0_mse": 1.0}


def test_loss_builder_validation(node_modules):
    _, losses = node_modules
    assert losses.LossBuilder.validate_inputs(**{**LOSS_WIDGETS, "primary_weight": 0.0}).startswith("terms = ")
    assert losses.LossBuilder.validate_inputs(**{**LOSS_WIDGETS, "snr_gamma": -1.0}).startswith("snr_gamma = -1.0")
    assert losses.LossBuilder.validate_inputs(**LOSS_WIDGETS) is True
