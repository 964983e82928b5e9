"""Timestep nodes: one small node per sampler family, shifts and a histogram, all on one TIMESTEPS wire.

As ComfyUI's own custom-sampler nodes split a sampler into KSamplerSelect,
BasicScheduler, KarrasScheduler, ..., each family here is its own node and
shows only its own settings::

    Timesteps: Logit-Normal -> [Timestep Shift | Timestep Shift by Resolution] -> LoRA Trainer
                                                                              \\-> Timestep Histogram

A family node makes a :class:`trainer_core.timesteps.TimestepConfig` (base
draw and clamp); a shift node returns a copy with its shift; the histogram
draws from whatever arrives. The all-in-one Timestep Sampler of earlier
workflows lives on, deprecated, in :mod:`.legacy_timesteps` and builds the
same configs.
"""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..trainer_core import timesteps as ts
from ..trainer_core.figures import histogram_chart
from . import figures
from .types import CATEGORY, PREFIX, Timesteps, check_inputs, validation_message

SUBCATEGORY = f"{CATEGORY}/timesteps"
PREVIEW_DRAWS = 4096


def _clamp_inputs(low: float, high: float, note: str) -> list[io.Input]:
    return [
        io.Float.Input("clamp_min", default=low, min=0.0, max=1.0, step=0.001, tooltip=f"Final clamp, lowest sigma. {note}"),
        io.Float.Input("clamp_max", default=high, min=0.0, max=1.0, step=0.001, tooltip=f"Final clamp, highest sigma. {note}"),
    ]


class _Family(io.ComfyNode):
    """Shared by the family nodes: ``SAMPLER`` names the registry entry; widgets go to the sampler and the clamp."""

    SAMPLER = ""

    @classmethod
    def build(cls, clamp_min: float = 0.0, clamp_max: float = 1.0, **values) -> ts.TimestepConfig:
        # make_sampler takes the fields the sampler declares: Anchor-Coupled's draws clamp themselves too (AC-RF L132)
        sampler = ts.make_sampler(cls.SAMPLER, clamp_min=clamp_min, clamp_max=clamp_max, **values)
        return ts.TimestepConfig(sampler, ts.NoShift(), clamp_min, clamp_max)

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(cls.build, **kw)

    @classmethod
    def execute(cls, **kw) -> io.NodeOutput:
        return io.NodeOutput(cls.build(**kw))


def _family_schema(cls: type[_Family], name: str, description: str, inputs: list[io.Input]) -> io.Schema:
    return io.Schema(
        node_id=f"{PREFIX}Timesteps{cls.__name__.removeprefix('Timesteps')}",
        display_name=f"Timesteps: {name} (FlowLoRA)",
        category=SUBCATEGORY,
        description=description,
        inputs=inputs,
        outputs=[Timesteps.Output(display_name="timesteps", tooltip="For the LoRA Trainer's timesteps, a Timestep Shift or a Timestep Histogram.")],
    )


class TimestepsUniform(_Family):
    SAMPLER = "uniform"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _family_schema(cls, "Uniform", "sigma ~ U(sigma_min, sigma_max). The SenseNova-U1 baseline: sigma in [0, 0.95] (its t in [0.05, 1)).", [
            io.Float.Input("sigma_min", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Lowest sigma (1 = noise)."),
            io.Float.Input("sigma_max", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="Highest sigma. U1's t in [0.05, 1) is sigma in [0, 0.95]."),
            *_clamp_inputs(0.0, 1.0, "Applied after a Timestep Shift; without one, the sigma range above already bounds the draws."),
        ])


class TimestepsLogitNormal(_Family):
    SAMPLER = "logit_normal"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _family_schema(cls, "Logit-Normal", "sigmoid of a normal draw: most samples mid-way, few at the ends (SD3; U1 ablation (b): mean -0.8, std 0.8 in t, clamp [0.05, 0.95]).", [
            io.Float.Input("mean", default=0.0, min=-10.0, max=10.0, step=0.01, tooltip="Mean of the normal before the sigmoid, in the chosen space (U1: -0.8 in t)."),
            io.Float.Input("std", default=1.0, min=0.001, max=10.0, step=0.01, tooltip="Std of the normal before the sigmoid (U1: 0.8)."),
            io.Combo.Input("space", options=list(ts.SPACES), default="sigma", tooltip="'t' reads mean/std in U1's time t = 1 - sigma (the U1 report's -0.8/0.8); 'sigma' reads them in sigma (SD3)."),
            *_clamp_inputs(0.0, 1.0, "U1: 0.05 and 0.95."),
        ])


class TimestepsSigmoid(_Family):
    SAMPLER = "sigmoid"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _family_schema(cls, "Sigmoid", "sigma = sigmoid(scale * N(0, 1)): logit-normal centred on sigma 0.5.", [
            io.Float.Input("scale", default=1.0, min=0.001, max=10.0, step=0.01, tooltip="Spread: larger pushes draws toward 0 and 1."),
            *_clamp_inputs(0.0, 1.0, ""),
        ])


class TimestepsAnchorCoupled(_Family):
    SAMPLER = "anchor_coupled"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _family_schema(cls, "Anchor-Coupled (AC-RF)", "AC-RF: train at the sigmas you sample with (anchors) plus a small jitter; batches of at least K are stratified over the anchors. No shift node after it: the anchors carry their shift.", [
            io.Int.Input("num_anchors", default=10, min=1, max=1000, tooltip="K, the inference step count whose sigmas are the anchors (Z-Image Turbo: 10). Unused when anchor_sigmas is connected."),
            io.Float.Input("anchor_shift", default=3.0, min=0.01, max=100.0, step=0.01, tooltip="Shift of the flow-match Euler scheduler that makes the anchors (Turbo: 3), as the AC-RF report (diffusers' scheduler). Unused when anchor_sigmas is connected."),
            io.Float.Input("jitter", default=0.02, min=0.0, max=0.5, step=0.001, tooltip="Jitter eta around each anchor (AC-RF: 0.02)."),
            io.Combo.Input("jitter_kind", options=list(ts.JITTER_KINDS), default="uniform", tooltip="uniform U(-eta, eta): the AC-RF report's section 2.2 formula and the pack's default (every draw stays within eta of its anchor). gaussian N(0, eta^2): the report's appendix B and its reference code (acrf_trainer.py L131), which the AC-RF workflow follows."),
            *_clamp_inputs(0.001, 0.999, "AC-RF's reference code: [0.001, 0.999] (L132)."),
            io.Sigmas.Input("anchor_sigmas", optional=True, tooltip="Optional: the sigmas you sample with (e.g. BasicScheduler on the model being trained, with your steps and scheduler). The anchors are then exactly these, without the final 0 (num_anchors and anchor_shift unused): ComfyUI's schedulers place their sigmas differently from diffusers'."),
        ])

    @classmethod
    def build(cls, anchor_sigmas=None, **values) -> ts.TimestepConfig:
        if anchor_sigmas is not None:
            values["anchor_sigmas"] = ts.anchors_from_sigmas(anchor_sigmas)
        return super().build(**values)


class _Shift(io.ComfyNode):
    """Shared by the shift nodes: ``SHIFT`` names the registry entry; widgets go to that shift."""

    SHIFT = ""

    @classmethod
    def build(cls, timesteps: ts.TimestepConfig | None = None, **values) -> ts.TimestepConfig:
        shift = ts.make_shift(cls.SHIFT, **values)
        return shift if timesteps is None else timesteps.with_shift(shift)

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        widgets = {k: v for k, v in kw.items() if k != "timesteps"}
        return ranges if ranges is not True else validation_message(cls.build, **widgets)

    @classmethod
    def execute(cls, timesteps: ts.TimestepConfig, **kw) -> io.NodeOutput:
        return io.NodeOutput(cls.build(timesteps, **kw))


def _shift_schema(node_id: str, name: str, description: str, inputs: list[io.Input]) -> io.Schema:
    return io.Schema(
        node_id=f"{PREFIX}{node_id}",
        display_name=f"{name} (FlowLoRA)",
        category=SUBCATEGORY,
        description=description,
        inputs=[Timesteps.Input("timesteps", tooltip="A Timesteps family node's output (not Anchor-Coupled: its anchors carry their shift)."), *inputs],
        outputs=[Timesteps.Output(display_name="timesteps", tooltip="The same draws, shifted, then clamped as before.")],
    )


class TimestepShift(_Shift):
    SHIFT = "static"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _shift_schema("TimestepShift", "Timestep Shift", "Moves every draw toward noise: sigma -> s*sigma / (1 + (s - 1)*sigma), as ModelSamplingSD3's shift.", [
            io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01, tooltip="s; 1 leaves sigma unchanged, above 1 trains noisier (SD3: 3)."),
        ])


class TimestepShiftResolution(_Shift):
    SHIFT = "resolution"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _shift_schema("TimestepShiftResolution", "Timestep Shift by Resolution", "Shift exp(mu), mu linear in the batch's image token count (Flux's rule, as ModelSamplingFlux): larger images train noisier.", [
            io.Float.Input("base_shift", default=0.5, min=-10.0, max=10.0, step=0.01, tooltip="mu at base_seq_len tokens (Flux: 0.5)."),
            io.Float.Input("max_shift", default=1.15, min=-10.0, max=10.0, step=0.01, tooltip="mu at max_seq_len tokens (Flux: 1.15)."),
            io.Int.Input("base_seq_len", default=256, min=1, max=1_000_000, tooltip="Token count where mu = base_shift (Flux: 256, a 256x256 image)."),
            io.Int.Input("max_seq_len", default=4096, min=2, max=1_000_000, tooltip="Token count where mu = max_shift (Flux: 4096, a 1024x1024 image)."),
        ])


def histogram(config: ts.TimestepConfig, axis: str, batch_size: int, seed: int, seq_len: int) -> tuple[np.ndarray, torch.Tensor]:
    """4,096 draws in training-sized batches, in ``axis`` ("t" or "sigma"), and their histogram as an IMAGE."""
    generator = torch.Generator().manual_seed(seed)
    draws = [config.sample(batch_size, generator, seq_len) for _ in range(-(-PREVIEW_DRAWS // batch_size))]
    sigma = torch.cat(draws)[:PREVIEW_DRAWS].numpy()
    values = 1.0 - sigma if axis == "t" else sigma
    mean, median = float(values.mean()), float(np.median(values))
    anchors = ""
    if isinstance(config.sampler, ts.AnchorCoupled):
        anchors = ", anchors from the graph's SIGMAS" if config.sampler.anchor_sigmas else ", anchors of the AC-RF report"
    image = figures.render(histogram_chart(
        values,
        title=f"Timesteps: {PREVIEW_DRAWS} draws in {axis}{anchors}",
        xlabel="t = 1 - sigma (1 = clean)" if axis == "t" else "sigma (1 = noise)",
        notes=(config.describe(), f"mean {mean:.3f}   median {median:.3f}   batch {batch_size}   seed {seed}"),
        marks={"mean": mean, "median": median},
    ))
    return values, image


class TimestepHistogram(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}TimestepHistogram",
            display_name="Timestep Histogram (FlowLoRA)",
            category=SUBCATEGORY,
            description="Draws 4,096 timesteps as training would and shows their histogram with mean and median.",
            inputs=[
                Timesteps.Input("timesteps", tooltip="The timesteps the trainer gets."),
                io.Combo.Input("axis", options=["t", "sigma"], default="t", tooltip="U1's t = 1 - sigma (1 = clean), or sigma (1 = noise)."),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Batch size to draw with: the trainer's (anchor-coupled stratifies batches of at least K)."),
                io.Int.Input("seq_len", default=4096, min=1, max=1_000_000, tooltip="Image token count to assume (a resolution shift only)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, tooltip="Seed of these draws; training uses the trainer's seed."),
            ],
            outputs=[io.Image.Output(display_name="histogram", tooltip="Histogram of 4,096 draws, the settings and the anchors in use.")],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        return check_inputs(cls, kw)

    @classmethod
    def execute(cls, timesteps: ts.TimestepConfig, axis: str, batch_size: int, seq_len: int, seed: int) -> io.NodeOutput:
        return io.NodeOutput(histogram(timesteps, axis, batch_size, seed, seq_len)[1])


TIMESTEP_NODES: list[type[io.ComfyNode]] = [
    TimestepsUniform, TimestepsLogitNormal, TimestepsSigmoid, TimestepsAnchorCoupled,
    TimestepShift, TimestepShiftResolution, TimestepHistogram,
]
