"""Loss nodes: a primary term, then optional added terms and a weighting, chained on one LOSS wire.

Each node shows only its own settings (as ComfyUI's custom-sampler nodes)::

    Loss: Charbonnier -> Loss + Cosine -> Loss + FFT -> Loss Weighting: Min-SNR -> LoRA Trainer

is AC-RF's ``min_snr(sigma) * (charbonnier + 0.1 cos + 0.1 FFT)``; ``Loss: MSE``
alone (space x0) is the SenseNova-U1 baseline. A primary node makes a
:class:`trainer_core.losses.LossConfig`; every later node returns a copy with
one more term (:meth:`LossConfig.with_term`) or its weighting
(:meth:`LossConfig.with_weighting`). The all-in-one Loss Builder of earlier
workflows lives on, deprecated, in :mod:`.legacy_losses` and builds the same
configs.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..trainer_core import losses as ls
from ..trainer_core.errors import ConfigError
from .types import CATEGORY, PREFIX, Loss, check_inputs, validation_message

SUBCATEGORY = f"{CATEGORY}/loss"
SPACES = {"x0": "x0", "velocity": "v"}
"""Widget value -> term-name prefix (``x0_mse``, ``v_mse``, ...)."""

GAMMA_WEIGHTINGS = ("min_snr",)
"""Weightings with a parameter (their own node); the rest share the Loss Weighting node."""


def term_name(family: str, space: str) -> str:
    return f"{SPACES[space]}_{family}"


def _space(default: str, note: str) -> io.Combo.Input:
    return io.Combo.Input("space", options=list(SPACES), default=default, tooltip=f"Compare x0 estimates (the clean image) or velocities (eps - x0); v-MSE = x0-MSE / sigma^2. {note}")


def _weight(default: float, note: str) -> io.Float.Input:
    return io.Float.Input("weight", default=default, min=0.0, max=100.0, step=0.01, tooltip=f"lambda of this term. {note}")


def _loss_in() -> Loss.Input:
    return Loss.Input("loss", tooltip="The loss so far (a Loss: MSE, Huber or Charbonnier node, or a node after one).")


def _schema(cls: type, name: str, description: str, inputs: list[io.Input]) -> io.Schema:
    return io.Schema(
        node_id=f"{PREFIX}{cls.__name__}",
        display_name=f"{name} (FlowLoRA)",
        category=SUBCATEGORY,
        description=description,
        inputs=inputs,
        outputs=[Loss.Output(display_name="loss", tooltip="For the LoRA Trainer's loss, or the next loss node.")],
    )


class _LossNode(io.ComfyNode):
    """Widgets -> :meth:`build`; ranges and the config's own checks at validation, before anything runs."""

    @classmethod
    def build(cls, loss: ls.LossConfig | None = None, **widgets) -> ls.LossConfig:
        """``loss`` (None: a placeholder x0-MSE, for validation before the graph runs) with this node's part."""
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(cls.build, **{k: v for k, v in kw.items() if k != "loss"})

    @classmethod
    def execute(cls, **kw) -> io.NodeOutput:
        return io.NodeOutput(cls.build(**kw))


class _Primary(_LossNode):
    """A primary term starts a loss; ``FAMILY`` and ``PARAM`` name its term and :class:`TermParams` field."""

    FAMILY = ""
    PARAM: str | None = None

    @classmethod
    def build(cls, loss: None = None, *, space: str, weight: float, t_eps: float, **param) -> ls.LossConfig:
        params = {cls.PARAM: param[cls.PARAM]} if cls.PARAM else {}
        return ls.LossConfig({term_name(cls.FAMILY, space): weight}, t_eps=t_eps, params=ls.TermParams(**params))


def _t_eps() -> io.Float.Input:
    return io.Float.Input("t_eps", default=0.001, min=0.0001, max=0.5, step=0.0001, tooltip="Floor on sigma wherever this loss divides by it (every velocity term, cosine and velocity FFT included). U1 trains with 0.05 (config.json, train_u1 constants.py L43); the U1 loader's 0.02 is for sampling only.")


class LossMSE(_Primary):
    FAMILY = "mse"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(cls, "Loss: MSE", "Mean squared error per sample. x0: the SenseNova-U1 baseline; velocity: U1's velocity loss (ablation (a)).", [
            _space("x0", "U1 baseline: x0; ablation (a): velocity."), _weight(1.0, ""), _t_eps(),
        ])


class LossHuber(_Primary):
    FAMILY, PARAM = "huber", "huber_delta"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(cls, "Loss: Huber", "Huber loss: quadratic below delta, linear above; robust to outlier pixels.", [
            _space("x0", ""), _weight(1.0, ""),
            io.Float.Input("huber_delta", default=1.0, min=0.0001, max=100.0, step=0.01, tooltip="Where the loss turns from quadratic to linear (U1's option: 1.0)."),
            _t_eps(),
        ])


class LossCharbonnier(_Primary):
    FAMILY, PARAM = "charbonnier", "charbonnier_eps"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(cls, "Loss: Charbonnier", "Charbonnier: sqrt(d^2 + eps), a smooth L1 (AC-RF's main term, on velocities).", [
            _space("velocity", "AC-RF: velocity."), _weight(1.0, ""),
            io.Float.Input("charbonnier_eps", default=1e-6, min=1e-12, max=1.0, step=1e-7, round=False, tooltip="eps under the root (AC-RF: 1e-6, its reference code's sqrt(diff^2 + 1e-6), acrf_trainer.py L195)."),
            _t_eps(),
        ])


class LossCosine(_LossNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(cls, "Loss + Cosine", "Adds weight * (1 - cos(v_pred, v)), one cosine per sample over its whole velocity (AC-RF's direction term).", [
            _loss_in(), _weight(0.1, "AC-RF: 0.1."),
        ])

    @classmethod
    def build(cls, loss: ls.LossConfig | None = None, *, weight: float) -> ls.LossConfig:
        return (loss or ls.LossConfig()).with_term("v_cosine", weight)


class LossFFT(_LossNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(cls, "Loss + FFT", "Adds weight * L1 distance between the 2-D Fourier transforms of prediction and target (AC-RF's frequency term).", [
            _loss_in(), _space("velocity", "AC-RF: velocity, as its report writes."), _weight(0.1, "AC-RF: 0.1."),
            io.Combo.Input("fft_norm", options=list(ls.FFT_NORMS), default="ortho", tooltip="ortho: scaled by 1/sqrt(H*W), so the term does not grow with resolution (AC-RF's reference code, acrf_trainer.py L255-256). backward: torch.fft.fft2's unscaled default, about 128x larger on a 128x128 latent."),
        ])

    @classmethod
    def build(cls, loss: ls.LossConfig | None = None, *, space: str, weight: float, fft_norm: str) -> ls.LossConfig:
        loss = loss or ls.LossConfig()
        other = [name for name in loss.terms if name.endswith("_fft")]
        if other and loss.params.fft_norm != fft_norm:  # one TermParams per loss: a second norm would change the first term
            raise ConfigError("fft_norm", fft_norm, f"this loss's {other[0]} term uses {loss.params.fft_norm!r}; both FFT terms of a loss share one normalisation")
        return loss.with_term(term_name("fft", space), weight, fft_norm=fft_norm)


class LossMinSNR(_LossNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(cls, "Loss Weighting: Min-SNR", "Weights each sample by clamp(min(SNR, gamma) / SNR, 0.1, 1), SNR = ((1 - sigma) / sigma)^2: draws with SNR above gamma (the cleanest, small sigma) count less, down to 0.1; noisier ones keep weight 1 (AC-RF section 3).", [
            _loss_in(),
            io.Float.Input("snr_gamma", default=5.0, min=0.0, max=1000.0, step=0.1, tooltip="gamma (AC-RF: 5); 0 disables."),
        ])

    @classmethod
    def build(cls, loss: ls.LossConfig | None = None, *, snr_gamma: float) -> ls.LossConfig:
        return (loss or ls.LossConfig()).with_weighting("min_snr", snr_gamma)


class LossWeighting(_LossNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        options = [name for name in ls.WEIGHTINGS.names() if name not in ("none", *GAMMA_WEIGHTINGS)]
        return _schema(cls, "Loss Weighting", "Weights each sample by a function of its sigma, one of SD3's schemes.", [
            _loss_in(),
            io.Combo.Input("weighting", options=options, default=options[0], tooltip="sigma_sqrt: sigma^-2 (sigma clamped at 1e-3). cosmap: 2 / (pi * (1 - 2 sigma + 2 sigma^2))."),
        ])

    @classmethod
    def build(cls, loss: ls.LossConfig | None = None, *, weighting: str) -> ls.LossConfig:
        return (loss or ls.LossConfig()).with_weighting(weighting)


LOSS_NODES: list[type[io.ComfyNode]] = [LossMSE, LossHuber, LossCharbonnier, LossCosine, LossFFT, LossMinSNR, LossWeighting]
