"""The all-in-one Timestep Sampler of earlier workflows (deprecated: :mod:`.timesteps` has one node per family).

Kept so that saved workflows load and train exactly as before: ComfyUI hides a
deprecated node from search but still runs it. Same configs as the family
nodes (tests/test_node_families.py), same histogram.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..trainer_core import timesteps as ts
from ..trainer_core.errors import ConfigError
from .timesteps import histogram
from .types import CATEGORY, PREFIX, Timesteps, check_inputs, validation_message


def build_config(sampler: str, shift_mode: str, clamp_min: float, clamp_max: float, anchor_sigmas=None, **values) -> ts.TimestepConfig:
    """Node widgets (and the optional SIGMAS) -> :class:`TimestepConfig`; raises ConfigError naming the bad field."""
    if anchor_sigmas is not None:
        if sampler != "anchor_coupled":
            raise ConfigError("anchor_sigmas", "connected", f"only the anchor_coupled sampler uses it (sampler = {sampler!r}); disconnect or bypass it, or pick anchor_coupled")
        values["anchor_sigmas"] = ts.anchors_from_sigmas(anchor_sigmas)
    return ts.TimestepConfig(ts.make_sampler(sampler, **values), ts.make_shift(shift_mode, **values), clamp_min, clamp_max)


class TimestepSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}TimestepSampler",
            display_name="Timestep Sampler (FlowLoRA)",
            category=CATEGORY,
            is_deprecated=True,
            description="Deprecated: use the Timesteps family nodes (Uniform, Logit-Normal, Sigmoid, Anchor-Coupled) and Timestep Shift, which show only the chosen family's settings. Chooses the noise levels sigma (1 = noise) that training draws, and previews 4,096 draws as a histogram.",
            inputs=[
                io.Combo.Input("sampler", options=ts.SAMPLERS.names(), default="uniform", tooltip="Base distribution. uniform: sigma_min/sigma_max. logit_normal: mean/std/space (U1: -0.8/0.8 in t). sigmoid: scale. anchor_coupled: AC-RF anchors (num_anchors, anchor_shift, jitter)."),
                io.Float.Input("sigma_min", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="uniform: lowest sigma. U1's t in [0.05, 1) is sigma in [0, 0.95]."),
                io.Float.Input("sigma_max", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="uniform: highest sigma."),
                io.Float.Input("mean", default=0.0, min=-10.0, max=10.0, step=0.01, tooltip="logit_normal: mean of the normal before the sigmoid, in the chosen space."),
                io.Float.Input("std", default=1.0, min=0.001, max=10.0, step=0.01, tooltip="logit_normal: std of the normal before the sigmoid."),
                io.Combo.Input("space", options=list(ts.SPACES), default="sigma", tooltip="logit_normal: 't' reads mean/std in U1's time t = 1 - sigma (the U1 report's -0.8/0.8); 'sigma' reads them in sigma (SD3)."),
                io.Float.Input("scale", default=1.0, min=0.001, max=10.0, step=0.01, tooltip="sigmoid: sigma = sigmoid(scale * N(0, 1))."),
                io.Int.Input("num_anchors", default=10, min=1, max=1000, tooltip="anchor_coupled: K, the inference step count whose sigmas are the anchors (Z-Image Turbo: 10). Unused when anchor_sigmas is connected."),
                io.Float.Input("anchor_shift", default=3.0, min=0.01, max=100.0, step=0.01, tooltip="anchor_coupled: shift of the flow-match Euler scheduler that makes the anchors (Turbo: 3), as the AC-RF report (diffusers' scheduler). Unused when anchor_sigmas is connected."),
                io.Float.Input("jitter", default=0.02, min=0.0, max=0.5, step=0.001, tooltip="anchor_coupled: jitter eta around each anchor (AC-RF: 0.02)."),
                io.Combo.Input("jitter_kind", options=list(ts.JITTER_KINDS), default="uniform", tooltip="anchor_coupled: uniform U(-eta, eta) is the AC-RF report's section 2.2 formula and the pack's default (every draw stays within eta of its anchor); gaussian N(0, eta^2) is the report's own appendix B and its reference code (acrf_trainer.py L131), which the AC-RF workflow follows (tails reach past eta; the clamp [0.001, 0.999] still applies)."),
                io.Combo.Input("shift_mode", options=ts.SHIFTS.names(), default="none", tooltip="Shift applied after the base draw: none, static (shift) or resolution (from the image token count). Not with anchor_coupled."),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01, tooltip="static shift s: sigma -> s*sigma / (1 + (s-1)*sigma)."),
                io.Float.Input("base_shift", default=0.5, min=-10.0, max=10.0, step=0.01, tooltip="resolution shift: mu at base_seq_len tokens."),
                io.Float.Input("max_shift", default=1.15, min=-10.0, max=10.0, step=0.01, tooltip="resolution shift: mu at max_seq_len tokens."),
                io.Float.Input("clamp_min", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Final clamp, lower sigma (U1 logit-normal: 0.05)."),
                io.Float.Input("clamp_max", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="Final clamp, upper sigma (U1 logit-normal: 0.95)."),
                io.Combo.Input("preview_axis", options=["t", "sigma"], default="t", tooltip="Axis of the histogram: U1's t = 1 - sigma, or sigma."),
                io.Int.Input("preview_batch_size", default=1, min=1, max=4096, tooltip="Batch size the preview draws with (anchor_coupled stratifies batches of at least num_anchors)."),
                io.Int.Input("preview_seq_len", default=4096, min=1, max=1_000_000, tooltip="Image token count the preview assumes (resolution shift only)."),
                io.Int.Input("preview_seed", default=0, min=0, max=2**63 - 1, tooltip="Seed of the preview draws; training uses the trainer's seed."),
                io.Sigmas.Input("anchor_sigmas", optional=True, tooltip="anchor_coupled only, optional: the sigmas you sample with (e.g. BasicScheduler on the model being trained, with your steps and scheduler). The anchors are then exactly these, without the final 0, instead of the AC-RF report's flow-match Euler sigmas (num_anchors and anchor_shift unused); AC-RF's premise is 'train where you infer', and ComfyUI's schedulers place their sigmas differently from diffusers'. The histogram says which anchors are used."),
            ],
            outputs=[
                Timesteps.Output(display_name="timesteps", tooltip="Sampler settings for the trainer."),
                io.Image.Output(display_name="histogram", tooltip="Histogram of 4,096 draws with mean and median."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(build_config, **_config_args(kw))

    @classmethod
    def execute(cls, preview_axis: str, preview_batch_size: int, preview_seq_len: int, preview_seed: int, **kw) -> io.NodeOutput:
        config = build_config(**_config_args(kw))
        _, image = histogram(config, preview_axis, preview_batch_size, preview_seed, preview_seq_len)
        return io.NodeOutput(config, image)


def _config_args(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if not k.startswith("preview_")}
