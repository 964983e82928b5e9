"""The all-in-one Loss Builder of earlier workflows (deprecated: :mod:`.losses` chains one node per term).

Kept so that saved workflows load and train exactly as before: ComfyUI hides a
deprecated node from search but still runs it. Same configs as the chained
nodes (tests/test_node_families.py).
"""

from __future__ import annotations

from comfy_api.latest import io

from ..trainer_core import losses as ls
from ..trainer_core.errors import ConfigError
from .types import CATEGORY, PREFIX, Loss, check_inputs, validation_message

PRIMARY = [name for name in ls.TERMS.names() if not name.endswith(("_cosine", "_fft"))]
FFT_SPACES = {"velocity": "v_fft", "x0": "x0_fft"}


def build_config(primary: str, primary_weight: float, cosine_weight: float, fft_weight: float, fft_space: str, weighting: str, snr_gamma: float, t_eps: float, huber_delta: float, charbonnier_eps: float, fft_norm: str) -> ls.LossConfig:
    """Node widgets -> :class:`LossConfig`; raises ConfigError naming the bad field."""
    if fft_space not in FFT_SPACES:
        raise ConfigError("fft_space", fft_space, f"must be one of {', '.join(FFT_SPACES)}")
    terms = {primary: primary_weight, "v_cosine": cosine_weight, FFT_SPACES[fft_space]: fft_weight}
    terms = {name: lam for name, lam in terms.items() if lam != 0.0 or name == primary}
    return ls.LossConfig(terms, weighting, snr_gamma, t_eps, ls.TermParams(huber_delta, charbonnier_eps, fft_norm))


class LossBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}LossBuilder",
            display_name="Loss Builder (FlowLoRA)",
            category=CATEGORY,
            is_deprecated=True,
            description="Deprecated: use Loss: MSE / Huber / Charbonnier, then Loss + Cosine, Loss + FFT and a Loss Weighting node, which show only the settings in use. Training loss = w(sigma) * (primary_weight * primary + cosine_weight * cosine + fft_weight * FFT), from the model's x0 estimate.",
            inputs=[
                io.Combo.Input("primary", options=PRIMARY, default="x0_mse", tooltip="Main term. x0_mse: U1 baseline. v_mse: U1's velocity loss (= x0-MSE / sigma^2). *_huber: Huber. v_charbonnier: AC-RF's sqrt(d^2 + eps) - sqrt(eps)."),
                io.Float.Input("primary_weight", default=1.0, min=0.0, max=100.0, step=0.01, tooltip="lambda_1 of the primary term."),
                io.Float.Input("cosine_weight", default=0.0, min=0.0, max=100.0, step=0.01, tooltip="lambda_2 of 1 - cos(v_pred, v), one cosine per sample over its whole flattened velocity, as AC-RF's reference code (acrf_trainer.py L202-204; the report's formula leaves per sample or per pixel open) (AC-RF: 0.1)."),
                io.Float.Input("fft_weight", default=0.0, min=0.0, max=100.0, step=0.01, tooltip="lambda_3 of the L1 distance between 2-D Fourier transforms (AC-RF: 0.1)."),
                io.Combo.Input("fft_space", options=list(FFT_SPACES), default="velocity", tooltip="FFT term on velocities (as the AC-RF report writes) or on x0."),
                io.Combo.Input("weighting", options=ls.WEIGHTINGS.names(), default="none", tooltip="Per-sample weight w(sigma). min_snr: AC-RF's clamp(min(SNR, gamma)/SNR, 0.1, 1) with SNR = ((1-sigma)/sigma)^2."),
                io.Float.Input("snr_gamma", default=5.0, min=0.0, max=1000.0, step=0.1, tooltip="min_snr: gamma (AC-RF: 5); 0 disables."),
                io.Float.Input("t_eps", default=0.001, min=0.0001, max=0.5, step=0.0001, tooltip="Training t_eps: floor on sigma when dividing by it for velocities (U1: 0.05, the training value of config.json and train_u1's constants.py L43). The SenseNova-U1 loader's t_eps (0.02, the official sampler's) is for sampling only."),
                io.Float.Input("huber_delta", default=1.0, min=0.0001, max=100.0, step=0.01, tooltip="*_huber: delta where the loss turns from quadratic to linear (U1: 1.0)."),
                io.Float.Input("charbonnier_eps", default=1e-6, min=1e-12, max=1.0, step=1e-7, round=False, tooltip="*_charbonnier: eps in sqrt(d^2 + eps) - sqrt(eps) (AC-RF: 1e-6 under the root, as its reference code's sqrt(diff^2 + 1e-6), acrf_trainer.py L195; the report leaves eps open). The code does not subtract sqrt(eps): a constant, same gradients."),
                io.Combo.Input("fft_norm", options=list(ls.FFT_NORMS), default="ortho", tooltip="FFT normalisation. ortho (default; the AC-RF workflow): scaled by 1/sqrt(H*W), so the term's size does not grow with resolution; AC-RF's reference code uses it (acrf_trainer.py L255-256 norm='ortho'). backward: torch.fft.fft2's default with no scaling, what the report's pseudo-code fft2(...) gives if read literally; about 128x larger on a 128x128 latent, where 0.1 x FFT then outweighs the Charbonnier term."),
            ],
            outputs=[Loss.Output(display_name="loss", tooltip="Loss settings for the trainer.")],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(build_config, **kw)

    @classmethod
    def execute(cls, **kw) -> io.NodeOutput:
        return io.NodeOutput(build_config(**kw))
