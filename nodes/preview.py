"""Training Preview node, and the previews the LoRA Trainer renders with it while it trains.

A preview, at the step the run starts from (0, or the step it resumed at),
every ``every_n_steps`` updates and at the last step (:class:`Previewer`):

1. The trainer lifts its adapters' forward hooks and gradient checkpointing off
   the model, so ComfyUI sees its plain model again (LoRA dropout is in the
   hooks, so it is off too).
2. The LoRA as it stands is put on the trainer's output model (``apply_to``, or
   the input model) as an ordinary ComfyUI LoRA patch, as the trainer's MODEL
   output gets it at the end (:func:`lora_patch.apply_lora`): a clone of the
   patcher, no copy of the model's weights. ComfyUI patches the LoRA's layers
   while it samples and puts the originals back when the trainer reloads its
   own patcher.
3. Each prompt is sampled by ``nodes.common_ksampler``, the body of ComfyUI's
   KSampler node (same signature on 0.3.75 and 0.33), and decoded as VAE Decode
   does, under ``torch.no_grad``, autocast off, the host's training flag off
   (:func:`compat.training_flag`), the model in eval mode, and inside
   ``torch.random.fork_rng``: KSampler seeds torch's global RNG, which LoRA
   dropout draws from, so the run's random streams are left as they were and a
   run with previews trains exactly as one without.
4. The trainer reloads its own patcher and puts adapters and checkpointing back.

Few-step drift (``drift_steps`` > 0, for step-distilled models such as Z-Image
Turbo): in step 3 each prompt is sampled a second time with ``drift_steps``
steps (same sampler, scheduler, cfg and seed), and the preview's
:func:`trainer_core.previews.drift` from it is reported at every preview: in
the column labels of the trainer's grid, the title of the image shown while it
trains, the log, each PNG's text and ``<output_name>/previews/drift.jsonl``.
A LoRA that starts breaking the few-step sampling shows as a drift rising
above the step-0 value (the model before training).

Showing previews while the node runs: ``comfy.utils.ProgressBar.update_absolute(
value, total, preview=("PNG", image, max_size))``, the path KSampler's latent
previews take; the trainer calls it through its progress bar. Checked in both
hosts: ``ProgressBar.update_absolute(value, total=None, preview=None)`` (comfy/utils.py,
0.3.75 line 1102, 0.33 line 1314; 0.33 throttles plain updates but sends every
update that carries a preview at once), and main.py's progress hook (0.3.75
lines 257-285, 0.33 lines 485-513, the same code) raises ComfyUI's interrupt
when the user cancelled, then hands the image to the progress registry
(comfy_execution/progress.py ``WebUIProgressHandler.update_handler``), which
sends it to the frontend as the running node's preview image
(``PREVIEW_IMAGE_WITH_METADATA``, or ``UNENCODED_PREVIEW_IMAGE`` to clients
without preview metadata). A node's UI images (``ui=`` of its output) reach the
frontend only after the node has finished, and ``PromptServer.send_sync`` of
an image needs a server (no such path in-process): neither can show a run in
progress on both hosts the way the progress preview does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..trainer_core import previews
from ..trainer_core.errors import ConfigError
from ..trainer_core.previews import PreviewConfig
from . import charts, compat
from .dataset import release_encoders
from .lora_patch import apply_lora
from .types import CATEGORY, PREFIX, Preview, check_inputs, validation_message

log = logging.getLogger(__name__)

GRID_CELL = 256
"""Long side of a cell in the trainer's preview grid (smaller previews keep their size)."""
GRID_MAX_WIDTH = 8192
"""Cells shrink (to 64 pixels at least) when a run previews so many steps that the grid would be wider."""


@dataclass(frozen=True)
class PreviewSettings:
    """What the Training Preview node hands the trainer.

    ``positive``: CONDITIONING, one entry per prompt (several text encodes
    joined by Conditioning Combine); ``negative``: one entry for all prompts,
    one per prompt, or None (zeros shaped like each prompt, as ConditioningZeroOut
    makes); ``vae``: the VAE that decodes previews; ``latent``: a LATENT whose
    size replaces ``config.width``/``height``, or None; ``node`` and
    ``field_prefix``: the node whose inputs these are, and what errors put
    before an input's name.
    """

    config: PreviewConfig
    positive: list
    vae: Any
    negative: list | None = None
    latent: dict | None = None
    node: str = "Training Preview"
    field_prefix: str = "preview "

    @property
    def prompts(self) -> int:
        return len(self.positive)

    def check(self, model) -> None:
        """Refuse, naming the input, what cannot fit ``model`` (the ModelPatcher previews sample); no model call."""
        p = self.field_prefix
        if not isinstance(self.positive, list) or not self.positive:
            raise ConfigError(p + "positive", self.positive if not isinstance(self.positive, list) else "[]", f"is empty; connect a text encoder's output to the {self.node} node")
        if self.negative is not None and len(self.negative) not in (1, self.prompts):
            raise ConfigError(p + "negative", f"{len(self.negative)} entries", f"give one entry for all {self.prompts} prompts, or one per prompt")
        latent_format = model.get_model_object("latent_format")
        channels, vae_channels = getattr(latent_format, "latent_channels", None), getattr(self.vae, "latent_channels", None)
        if channels is not None and vae_channels is not None and channels != vae_channels:
            raise ConfigError(
                p + "vae", f"{type(getattr(self.vae, 'first_stage_model', self.vae)).__name__} with {vae_channels} latent channels",
                f"does not fit the model ({type(model.model).__name__} samples {channels}-channel latents); connect this model's VAE to the {self.node} node",
            )
        if self.latent is not None and self.latent["samples"].ndim != 4:
            raise ConfigError(p + "latent", tuple(self.latent["samples"].shape), "must be an image LATENT (B, C, H, W); only its size is used")
        h, w = self.latent_size()
        if h < 1 or w < 1:
            raise ConfigError(p + "width x height", f"{self.config.width} x {self.config.height}", f"is smaller than one latent pixel ({self.vae.spacial_compression_encode()} pixels)")

    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of the latent previews start from: the LATENT's, else width and height over the VAE's compression."""
        if self.latent is not None:
            h, w = self.latent["samples"].shape[-2:]
            return int(h), int(w)
        ratio = int(self.vae.spacial_compression_encode())
        return self.config.height // ratio, self.config.width // ratio

    def empty_latent(self, model) -> dict:
        """A LATENT of zeros in the model's channels (what the empty-latent nodes make); previews start from noise."""
        h, w = self.latent_size()
        channels = model.get_model_object("latent_format").latent_channels
        return {"samples": torch.zeros(1, channels, h, w)}

    def conditioning(self, index: int) -> tuple[list, list]:
        """``(positive, negative)`` CONDITIONING of prompt ``index``."""
        import nodes as comfy_nodes  # ComfyUI's nodes.py (not this package)

        positive = [self.positive[index]]
        if self.negative is None:
            negative = comfy_nodes.ConditioningZeroOut().zero_out(positive)[0]
        else:
            negative = [self.negative[index if len(self.negative) > 1 else 0]]
        return positive, negative


def sample(model, settings: PreviewSettings, index: int, steps: int | None = None) -> torch.Tensor:
    """Prompt ``index`` sampled as ComfyUI's KSampler node samples it (``steps`` replaces the config's): latent ``(1, C, h, w)``."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py (not this package)

    c = settings.config
    positive, negative = settings.conditioning(index)
    (out,) = comfy_nodes.common_ksampler(model, c.seed, steps or c.steps, c.cfg, c.sampler_name, c.scheduler, positive, negative, settings.empty_latent(model), denoise=1.0)
    return out["samples"]


def decode(vae, samples: torch.Tensor) -> torch.Tensor:
    """``samples`` decoded as ComfyUI's VAE Decode node does: IMAGE ``(B, H, W, 3)``."""
    if getattr(samples, "is_nested", False):
        samples = samples.unbind()[0]
    images = vae.decode(samples)
    if images.ndim == 5:
        images = images.reshape(-1, images.shape[-3], images.shape[-2], images.shape[-1])
    return images


def _passes_through(error: BaseException) -> bool:
    """Errors that say what they are already: a cancel, an out-of-memory."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, (comfy.model_management.InterruptProcessingException, oom))


def _shapes(conditioning: list | None) -> str:
    return "none" if conditioning is None else ", ".join(str(tuple(entry[0].shape)) for entry in conditioning)


@contextlib.contextmanager
def sampler_progress_muted() -> Iterator[None]:
    """Keep the sampler's step count off the trainer's progress bar while a preview samples.

    KSampler's callback makes a ``comfy.utils.ProgressBar`` of its own (8 steps,
    say), which reports to the running node, the trainer: the frontend's bar and
    any client following the websocket would jump from "step 180/600" to "3/8".
    A ProgressBar takes the global hook when it is made, so while previews sample
    the hook keeps only its cancel check (``throw_exception_if_processing_interrupted``,
    what main.py's hook does first; the same in 0.3.75 and 0.33); the trainer's
    own bar, made before, still reports and shows the preview images.
    """
    previous = comfy.utils.PROGRESS_BAR_HOOK

    def cancel_check_only(value, total, preview=None, prompt_id=None, node_id=None):
        comfy.model_management.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(cancel_check_only)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)


@contextlib.contextmanager
def sampling_context(model) -> Iterator[None]:
    """Sample ``model`` (a ModelPatcher) as the stock KSampler would, inside a training run, and leave the run as it was.

    No autograd, no autocast, the host's training flag off, every module in eval
    mode (each module's own flag restored after), torch's global RNG (and the
    CUDA device's) forked, the sampler's own progress kept off the trainer's bar
    (:func:`sampler_progress_muted`).
    """
    device = torch.device(model.load_device)
    modules = list(model.model.modules())
    modes = [m.training for m in modules]
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), torch.autocast(device.type, enabled=False), compat.training_flag(False), sampler_progress_muted():
            model.model.eval()
            yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


class Previewer:
    """Renders, saves and shows the previews of one training call.

    ``model``: the ModelPatcher the LoRA is applied to (the trainer's output
    base); ``lora_tensors()``: the LoRA file's tensors as they stand;
    ``folder``: where PNGs go; ``label``: the run's name (titles, metadata);
    ``total``: the run's last step; ``lift()``: a context that takes the
    trainer's adapters off the model and restores training after;
    ``show(step, image)``: sends a PIL image to the frontend.
    """

    def __init__(self, settings: PreviewSettings, model, lora_tensors: Callable[[], dict], folder: str | Path, label: str, total: int,
                 lift: Callable[[], contextlib.AbstractContextManager], show: Callable[[int, Image.Image], None]):
        self.settings = settings
        self.model = model
        self.lora_tensors = lora_tensors
        self.folder = Path(folder)
        self.label = label
        self.total = total
        self.lift = lift
        self.show = show
        self.start: int | None = None
        self.columns: list[tuple[int, list[np.ndarray]]] = []  # (step, thumbnail per prompt)
        self.drifts: dict[int, float] = {}  # step -> mean drift over the prompts (drift_steps > 0)

    def at_start(self, step: int) -> None:
        """The loop's ``on_start``: drop files of steps this run renders again, preview the starting weights."""
        self.start = step
        previews.remove_after(self.folder, step)
        previews.trim_drift(self.folder, step)
        self.render(step, first=True)

    def after_update(self, step: int) -> None:
        """From the loop's ``on_update``: preview when the schedule says so."""
        if self.start is not None and self.settings.config.due(step, self.start, self.total):
            self.render(step)

    def render(self, step: int, first: bool = False) -> None:
        applied = apply_lora(self.model, self.lora_tensors(), 1.0)
        if applied.not_loaded():
            raise RuntimeError(f"ComfyUI did not map {len(applied.not_loaded())} keys of the LoRA for the preview: {', '.join(applied.not_loaded()[:10])}; please report this with the LoRA Config used")
        drift_steps = self.settings.config.drift_steps
        references = None
        with self.lift():
            with sampling_context(applied.model):
                latents = [self._sample(applied.model, i, first) for i in range(self.settings.prompts)]
                images = [self._decode(latent, first) for latent in latents]
                if drift_steps:
                    references = [self._decode(self._sample(applied.model, i, first, drift_steps), first) for i in range(self.settings.prompts)]
            release_encoders(self.settings.vae.patcher)  # the VAE's memory back to training
        drifts = [previews.drift(a, b) for a, b in zip(images, references, strict=True)] if references is not None else None
        self.save(step, images, drifts)

    def _sample(self, model, index: int, first: bool, steps: int | None = None) -> torch.Tensor:
        try:
            return sample(model, self.settings, index, steps)
        except Exception as e:
            if not first or _passes_through(e):
                raise
            s = self.settings
            raise ConfigError(
                "preview positive/negative", f"prompt {index}: positive {_shapes([s.positive[index]])}, negative {_shapes(s.negative)}",
                f"the first preview could not be sampled on this model ({type(e).__name__}: {e}); connect conditioning made by this "
                "model's text encoder to the Training Preview node, and a width/height or latent this model can sample",
            ) from e

    def _decode(self, latent: torch.Tensor, first: bool) -> torch.Tensor:
        try:
            return decode(self.settings.vae, latent)
        except Exception as e:
            if not first or _passes_through(e):
                raise
            raise ConfigError("preview vae", type(getattr(self.settings.vae, "first_stage_model", self.settings.vae)).__name__,
                              f"could not decode the first preview ({type(e).__name__}: {e}); connect this model's VAE to the Training Preview node") from e

    def save(self, step: int, images: list[torch.Tensor], drifts: list[float] | None = None) -> None:
        """Write each prompt's PNG (and drift record), keep thumbnails for the grid, show the step's images in the frontend."""
        c = self.settings.config
        pixels = [previews.to_pixels(image[0]) for image in images]
        for index, p in enumerate(pixels):
            extra = {"drift": f"{drifts[index]:.6g}"} if drifts is not None else {}
            text = c.png_text(step, index, lora=self.label, width=str(p.shape[1]), height=str(p.shape[0]), **extra)
            previews.save_png(self.folder / previews.file_name(step, index), p, text)
        self.columns.append((step, [_thumbnail(p) for p in pixels]))
        title = f"{self.label}: step {step}"
        if drifts is not None:
            record = previews.drift_record(step, c.steps, c.drift_steps, drifts)
            previews.append_drift(self.folder, record)
            self.drifts[step] = record["mean"]
            title += f", {c.steps}-step drift from {c.drift_steps} steps {record['mean']:.3g}"
            log.info("FlowLoRA preview at step %d: %d-step drift from %d steps %.4g (per prompt: %s)", step, c.steps, c.drift_steps,
                     record["mean"], ", ".join(f"{d:.4g}" for d in drifts))
        log.info("FlowLoRA preview at step %d: %d image(s) in %s", step, len(pixels), self.folder)
        strip = charts.image_grid([_tensor([t]) for t in self.columns[-1][1]], column_labels=[f"prompt {i}" for i in range(len(pixels))],
                                  title=title, cell_size=_cell(self.columns[-1][1][0]))
        self.show(step, _pil(strip))

    def grid(self) -> torch.Tensor:
        """IMAGE ``(1, H, W, 3)``: rows prompts, columns the steps previewed in this call."""
        if not self.columns:
            return placeholder("No preview was rendered in this run.")
        c = self.settings.config
        title = f"{self.label}: {c.sampler_name} / {c.scheduler}, {c.steps} steps, cfg {c.cfg:g}, seed {c.seed}"
        if self.drifts:
            title += f"; drift: mean squared difference from {c.drift_steps} steps"
        cell = min(_cell(self.columns[0][1][0]), max(64, GRID_MAX_WIDTH // len(self.columns)))
        return charts.image_grid([_tensor(thumbs) for _, thumbs in self.columns], column_labels=[column_label(step, self.drifts.get(step)) for step, _ in self.columns],
                                 row_labels=[f"prompt {i}" for i in range(self.settings.prompts)], title=title, cell_size=cell)


def column_label(step: int, drift: float | None = None) -> str:
    """The trainer grid's column label: ``step 500``, with the mean drift when measured (``step 500, drift 0.00123``)."""
    return f"step {step}" if drift is None else f"step {step}, drift {drift:.3g}"


def placeholder(text: str) -> torch.Tensor:
    """The trainer's previews output when there is nothing to show: IMAGE ``(1, 128, 512, 3)`` saying why."""
    return charts.text_panel("Previews", [text], size=(512, 128))


def _cell(pixels: np.ndarray) -> int:
    return max(32, min(GRID_CELL, max(pixels.shape[:2])))


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``(h, w, 3)`` fitting a ``GRID_CELL`` square (aspect kept; small images unchanged)."""
    h, w = pixels.shape[:2]
    if max(h, w) <= GRID_CELL:
        return pixels
    size = charts.fit_size(w, h, GRID_CELL, GRID_CELL)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def _tensor(thumbs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(thumbs)).float() / 255.0


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(previews.to_pixels(image[0]))


class TrainingPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}TrainingPreview",
            display_name="Training Preview (FlowLoRA)",
            category=CATEGORY,
            description="Samples prompts with ComfyUI's own KSampler while the LoRA Trainer trains: at the start, every N steps and at the end, on the trainer's output model with the LoRA as it stands. Shown on the trainer node as they come, saved as PNGs in <output_name>/previews beside the LoRA, and gathered in the trainer's previews grid.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Preview prompts from a text encoder: each conditioning entry is one prompt (join several with Conditioning Combine); p in step_000500_p0.png is its index."),
                io.Vae.Input("vae", tooltip="The VAE that decodes the previews: this model's VAE (pixel_space for pixel-space models such as SenseNova-U1)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler", tooltip="ComfyUI's sampler, as in KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple", tooltip="ComfyUI's scheduler, as in KSampler."),
                io.Int.Input("steps", default=20, min=1, max=10_000, tooltip="Sampling steps per preview (Z-Image Turbo: 8; base models: 20-50)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale (Z-Image Turbo: 1.0, which ignores the negative)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False, tooltip="Noise seed, the same for every prompt and every preview so that steps compare; the training's own random streams are not touched."),
                io.Int.Input("width", default=1024, min=16, max=16384, step=16, tooltip="Preview width in pixels (ignored when a latent is connected)."),
                io.Int.Input("height", default=1024, min=16, max=16384, step=16, tooltip="Preview height in pixels (ignored when a latent is connected)."),
                io.Int.Input("every_n_steps", default=0, min=0, max=1_000_000, tooltip="Preview every N optimizer updates, plus at the start and at the last step. 0 (default): every every_percent % of the run instead."),
                io.Conditioning.Input("negative", optional=True, tooltip="Negative prompt: one entry for all prompts or one per prompt. Not connected: zeros shaped like each prompt (as ConditioningZeroOut)."),
                io.Latent.Input("latent", optional=True, tooltip="Optional LATENT (e.g. from an empty-latent node): only its size is used, replacing width and height; previews start from noise."),
                io.Int.Input("drift_steps", default=0, min=0, max=10_000, optional=True, tooltip="Few-step drift (for step-distilled models such as Z-Image Turbo): also sample each prompt with this many steps (e.g. 32 against 8) and report the mean squared difference of the preview from it, at the start and at every preview (grid labels, PNG text, previews/drift.jsonl). A LoRA that breaks few-step sampling shows as rising drift. 0: off (no extra sampling)."),
                io.Int.Input("every_percent", default=10, min=0, max=100, optional=True, tooltip="With every_n_steps 0: preview every this % of the run's updates (10: eleven previews, at 0%, 10%, ..., 100%; the step count follows from steps or epochs). 0 (and every_n_steps 0): only at the start and at the end."),
            ],
            outputs=[Preview.Output(display_name="preview", tooltip="Preview settings for the LoRA Trainer's preview input.")],
        )

    @classmethod
    def validate_inputs(cls, positive=None, vae=None, negative=None, latent=None, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(build_config, **kw)

    @classmethod
    def execute(cls, positive, vae, sampler_name, scheduler, steps, cfg, seed, width, height, every_n_steps, negative=None, latent=None, drift_steps=0, every_percent=10) -> io.NodeOutput:
        config = build_config(sampler_name=sampler_name, scheduler=scheduler, steps=steps, cfg=cfg, seed=seed, width=width, height=height, every_n_steps=every_n_steps,
                              drift_steps=drift_steps, every_percent=every_percent)
        return io.NodeOutput(PreviewSettings(config, list(positive), vae, list(negative) if negative is not None else None, latent))


def build_config(**widgets) -> PreviewConfig:
    """Node widgets -> :class:`PreviewConfig` (ConfigError naming the field)."""
    keep = {k: widgets[k] for k in ("sampler_name", "scheduler", "steps", "cfg", "seed", "width", "height", "every_n_steps", "drift_steps", "every_percent") if widgets.get(k) is not None}
    return PreviewConfig(**keep)
