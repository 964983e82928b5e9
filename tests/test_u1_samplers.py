"""U1's noise scale in ComfyUI's stock samplers, on whichever host runs the suite.

U1 noises as ``x = (1 - sigma) * x0 + sigma * s * eps`` with a resolution
noise scale ``s``; a stochastic sampler must add its fresh noise at the same
scale. The check: a tiny U1 whose flow head is zero predicts ``x0_hat = 0``, so
every sampler's output is linear in the noise it started from and the noise it
added (the last step stops at sigma > 0, before Euler's jump to ``denoised``).
Two such models that differ only in the checkpoint's ``noise_scale`` must then
give outputs in the ratio of their ``s`` for every sampler, which holds only if
the added noise is scaled as the initial noise is. On 0.33 this goes through
ComfyUI's own ``set_noise_scale``; on 0.3.75 through the pack's sampler wrapper
(``nodes.compat.add_noise_scale``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from flowlora.trainer_core.models.u1.checkpoint import save_sharded
from tiny_u1 import tiny_config, tiny_state_dict

SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m_sde")
STEPS, STOP_AT, SEED, SIZE = 6, 4, 11, 128
NOISE_SCALES = (1.0, 3.0)


@pytest.fixture(scope="module")
def zero_head(comfy_root, tmp_path_factory):
    """``{noise_scale: (patcher, positive, negative)}`` for two zero-head tiny U1 checkpoints."""
    from flowlora.nodes.u1 import model as u1m
    from flowlora.nodes.u1.nodes import U1PromptEncode

    base = tiny_config()
    state = tiny_state_dict(base, seed=2)
    state = {k: torch.zeros_like(v) if k.startswith("fm_modules.fm_head.") else v for k, v in state.items()}
    models = {}
    for scale in NOISE_SCALES:
        folder = tmp_path_factory.mktemp(f"u1-zero-head-{scale}")
        save_sharded(folder, state, dataclasses.replace(base, noise_scale=scale), num_shards=2)
        patcher = u1m.load_u1_model(str(folder), 3.0, 0.05)
        pos, neg, _ = U1PromptEncode.execute(u1m.load_u1_text_encoder(str(folder)), "a red star").result
        models[scale] = (patcher, pos, neg)
    return models


def _sample(patcher, pos, neg, sampler: str) -> torch.Tensor:
    """Stock KSamplerAdvanced path: steps 0..STOP_AT of STEPS, leftover noise kept (last sigma > 0)."""
    import nodes

    latent = {"samples": torch.zeros(1, 3, SIZE, SIZE)}
    (out,) = nodes.common_ksampler(patcher, SEED, STEPS, 4.0, sampler, "simple", pos, neg, latent, start_step=0, last_step=STOP_AT, force_full_denoise=False)
    return out["samples"].float()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_added_noise_follows_u1_noise_scale(zero_head, sampler):
    (low, *low_conds), (high, *high_conds) = (zero_head[s] for s in NOISE_SCALES)
    x = (SIZE // 32) ** 2
    s_low, s_high = (p.model.u1_config.noise_scale_for(x) for p in (low, high))
    assert s_high / s_low == pytest.approx(NOISE_SCALES[1] / NOISE_SCALES[0])
    out_low, out_high = _sample(low, *low_conds, sampler), _sample(high, *high_conds, sampler)
    assert out_low.abs().mean() > 1e-3  # leftover noise, not a collapsed image
    torch.testing.assert_close(out_high, out_low * (s_high / s_low), rtol=1e-4, atol=1e-5)


def test_noise_scale_mechanism_matches_host(zero_head):
    """0.33 reads the float ``noise_scale`` ComfyUI's samplers use; 0.3.75 has none and the wrapper scales ``s_noise``."""
    import comfy.model_sampling
    from flowlora.nodes import compat

    patcher, pos, neg = zero_head[NOISE_SCALES[1]]
    ms = patcher.get_model_object("model_sampling")
    assert compat.NATIVE_NOISE_SCALE == hasattr(comfy.model_sampling.ModelSamplingDiscreteFlow, "set_noise_scale")
    assert callable(ms.u1_noise_scale)  # the pack's method is never hidden by a host attribute
    _sample(patcher, pos, neg, "euler_ancestral")
    if compat.NATIVE_NOISE_SCALE:
        assert ms.noise_scale == pytest.approx(patcher.model.u1_config.noise_scale_for((SIZE // 32) ** 2))
    else:
        assert not hasattr(ms, "noise_scale")
    assert {"euler_ancestral", "dpmpp_2m_sde"} <= set(compat.scalable_samplers())
