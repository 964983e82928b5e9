"""Validation (FlowLoRA) node: a held-out dataset the LoRA Trainer scores while it trains.

The scoring itself is :mod:`trainer_core.validation` (fixed sigma grid, fixed
noise, no gradients, eval mode, random streams untouched); this module turns the
node's widgets into its config and the Dataset into held-out samples in the
model's latent space.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io

from ..trainer_core.data.dataset import Dataset
from ..trainer_core.errors import ConfigError
from ..trainer_core.validation import DEFAULT_SIGMAS, HeldOut, ValidationConfig
from .types import CATEGORY, PREFIX, Validation, check_inputs, validation_message

DatasetType = io.Custom("FLOWLORA_DATASET")


@dataclass(frozen=True)
class ValidationSettings:
    """What the Validation node hands the trainer: the held-out ``dataset`` and the :class:`ValidationConfig`."""

    config: ValidationConfig
    dataset: Dataset

    def check(self, model) -> None:
        """Refuse, naming the input, held-out latents whose channels do not fit ``model`` (a ModelPatcher); no model call."""
        channels = getattr(model.get_model_object("latent_format"), "latent_channels", None)
        for s in self.dataset.samples:
            if s.latent.ndim != 3 or (channels is not None and s.latent.shape[0] != channels):
                raise ConfigError("validation dataset", f"{s.source}: latent {tuple(s.latent.shape)}",
                                  f"does not fit this model (latents of {channels} channels); encode the held-out images with this model's VAE")

    def held_out(self, latent_in) -> list[HeldOut]:
        """The samples in the model's latent space: ``latent_in`` maps ``(1, C, H, W)`` raw latents (``process_latent_in``)."""
        d = self.dataset
        return [HeldOut(latent_in(s.latent[None].float().clone())[0], d.conditionings[s.conditioning], str(s.source)) for s in d.samples]


class ValidationNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}Validation",
            display_name="Validation (FlowLoRA)",
            category=CATEGORY,
            description="Validation loss while the LoRA Trainer trains: scores a held-out dataset at a fixed grid of noise levels with fixed noise, at the start, every N steps and at the end, so the numbers compare across steps and runs. Written to <output_name>.val.jsonl and plotted by Training Plots. Training is the same with or without it.",
            inputs=[
                DatasetType.Input("dataset", tooltip="Held-out images from a second Dataset (FlowLoRA) node, encoded with this model's VAE and text encoder; not trained on."),
                io.String.Input("sigmas", default=", ".join(f"{s:g}" for s in DEFAULT_SIGMAS), tooltip="Noise levels scored, one curve each in Training Plots (sigma = 1 is pure noise), separated by commas. Each value in (0, 1]."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False, tooltip="Seed of the fixed noise: the same noise at every evaluation, so steps compare; keep it to compare runs. The training's random streams are not touched."),
                io.Int.Input("every_n_steps", default=0, min=0, max=1_000_000, tooltip="Score every N optimizer updates, plus at the start and the last step. 0 (default): every every_percent % of the run instead."),
                io.Int.Input("every_percent", default=10, min=0, max=100, tooltip="With every_n_steps 0: score every this % of the run's updates (10: at 0%, 10%, ..., 100%). 0 (and every_n_steps 0): only at the start and the end."),
            ],
            outputs=[Validation.Output(display_name="validation", tooltip="Validation settings for the LoRA Trainer's validation input.")],
        )

    @classmethod
    def validate_inputs(cls, dataset=None, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(build_config, **kw)

    @classmethod
    def execute(cls, dataset, sigmas: str, seed: int, every_n_steps: int, every_percent: int) -> io.NodeOutput:
        config = build_config(sigmas=sigmas, seed=seed, every_n_steps=every_n_steps, every_percent=every_percent)
        return io.NodeOutput(ValidationSettings(config, dataset))


def build_config(**widgets) -> ValidationConfig:
    """Node widgets -> :class:`ValidationConfig` (ConfigError naming the field)."""
    keep = {k: widgets[k] for k in ("sigmas", "seed", "every_n_steps", "every_percent") if widgets.get(k) is not None}
    return ValidationConfig(**keep)
