"""LoRA Step × Strength Grid node: a run's periodic saves (or any LoRA files) at several strengths, sampled with ComfyUI's own KSampler.

For each LoRA file, each strength and each prompt:

1. the LoRA is put on the MODEL as the LoRA Loader node does (ComfyUI's key
   map and ``comfy.lora.load_lora``, a patched clone, :func:`lora_patch.apply_lora`;
   SenseNova-U1's official files converted first); strength 0 is the MODEL
   itself, sampled once per prompt and shared by every row;
2. the prompt is sampled by ``nodes.common_ksampler`` (the KSampler node's
   body) with the same seed everywhere and decoded as VAE Decode does
   (:func:`preview.sample`, :func:`preview.decode`).

The result is one labelled IMAGE: a row per (file, prompt), labelled by the
step the file's metadata names (``flowlora.step``) or its name, and a column
per strength.

``loras`` lists, one per line, names under models/loras: a file as ComfyUI's
LoRA list shows it (``flowlora/my_lora/steps/step_000500.safetensors``), or a
run's ``output_name`` without extension (``flowlora/my_lora``), which stands
for the saves the trainer kept of it (``<output_name>/steps/``, see
:mod:`trainer_core.step_saves`) followed by its last save
(``<output_name>.safetensors``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import comfy.model_management
import comfy.samplers
import torch
from comfy_api.latest import io

from ..trainer_core import step_saves
from ..trainer_core.errors import ConfigError
from ..trainer_core.lora import read_metadata
from ..trainer_core.previews import PreviewConfig
from . import charts, lora_patch
from .lora import official_u1_keys
from .plots import split_lines
from .preview import PreviewSettings, decode, sample
from .types import CATEGORY, PREFIX, check_inputs, validation_message

log = logging.getLogger(__name__)

NODE = "LoRA Step x Strength Grid"
"""How errors name this node."""


@dataclass(frozen=True)
class LoraFile:
    """One row source: ``name`` as listed (relative to models/loras), ``path`` on disk, ``step`` from its metadata (None when it has none)."""

    name: str
    path: str
    step: int | None

    @property
    def label(self) -> str:
        return f"step {self.step}" if self.step is not None else os.path.basename(self.name)

    @property
    def run(self) -> str:
        """The run a file belongs to: ``flowlora/my_lora`` for ``flowlora/my_lora/steps/step_000500.safetensors`` and ``flowlora/my_lora.safetensors``."""
        folder, base = os.path.split(self.name)
        if step_saves.FILE_PATTERN.fullmatch(base) and os.path.basename(folder) == step_saves.FOLDER:
            return os.path.dirname(folder)
        return os.path.splitext(self.name)[0]


def _step_of(path: str) -> int | None:
    """The training step a LoRA file's metadata names (FlowLoRA's ``flowlora.step``, else kohya's ``ss_steps``)."""
    if not path.endswith((".safetensors", ".sft")):
        return None
    try:
        metadata = read_metadata(path)
    except Exception as e:  # a file safetensors cannot open; loading it later names the problem
        log.debug("no metadata in %s: %s", path, e)
        return None
    for key in ("flowlora.step", "ss_steps"):
        try:
            return int(metadata[key])
        except (KeyError, ValueError):
            continue
    return None


def _lora_file(name: str, path: str) -> LoraFile:
    return LoraFile(name, path, _step_of(path))


def resolve_loras(text: str) -> list[LoraFile]:
    """The rows named by the ``loras`` text (module docstring); ConfigError naming the line that finds nothing."""
    import folder_paths

    lines = [line for line in split_lines(text) if line and not line.startswith("#")]
    if not lines:
        raise ConfigError("loras", text, "list at least one LoRA: a file name under models/loras (as the LoRA loaders list it) or a run's output_name")
    extensions = tuple(folder_paths.supported_pt_extensions)
    out: list[LoraFile] = []
    for number, line in enumerate(lines, 1):
        name = os.path.relpath(os.path.join("/", line.replace("\\", "/")), "/").replace(os.sep, "/")  # stays inside models/loras, as ComfyUI's get_full_path
        if name.lower().endswith(extensions):
            path = folder_paths.get_full_path("loras", name)
            if path is None:
                raise ConfigError(f"loras line {number}", line, f"no such file in models/loras ({_folders()}); use a name as the LoRA loaders list it, or a run's output_name without extension")
            out.append(_lora_file(name, path))
            continue
        found = _run_files(name)
        if not found:
            raise ConfigError(
                f"loras line {number}", line,
                f"no run of that name in models/loras ({_folders()}): expected {name}.safetensors or saves in {name}/{step_saves.FOLDER}/ "
                "(the trainer keeps one per save_every); a single file needs its extension",
            )
        out += found
    return out


def _run_files(name: str) -> list[LoraFile]:
    """A run's kept saves by step, then its last save, from the first loras folder that has the run."""
    import folder_paths

    for root in folder_paths.get_folder_paths("loras"):
        kept = [(f"{name}/{step_saves.FOLDER}/{path.name}", str(path)) for _, path in step_saves.list_saves(os.path.join(root, name, step_saves.FOLDER))]
        last = os.path.join(root, name + ".safetensors")
        files = kept + ([(name + ".safetensors", last)] if os.path.isfile(last) else [])
        if files:
            return [_lora_file(n, p) for n, p in files]
    return []


def _folders() -> str:
    import folder_paths

    return ", ".join(folder_paths.get_folder_paths("loras"))


def row_labels(files: list[LoraFile], prompts: int) -> list[str]:
    """A label per (file, prompt) row: ``step 500`` (``, prompt 1`` with several prompts); the run's name first where labels repeat (several runs)."""
    labels = [f.label for f in files]
    labels = [label if labels.count(label) == 1 else f"{f.run}, {label}" for f, label in zip(files, labels, strict=True)]
    return [label if prompts == 1 else f"{label}, prompt {p}" for label in labels for p in range(prompts)]


def strength_label(strength: float) -> str:
    return f"strength {strength:g}"


def _patched(model, file: LoraFile, tensors: dict, strength: float):
    """``model`` with ``tensors`` at ``strength`` as the LoRA Loader applies them; ConfigError naming the file when nothing fits."""
    applied = lora_patch.apply_lora(model, tensors, strength)
    if tensors and not applied.applied:
        first = [str(m) for m in applied.mismatches[:3]] or applied.unloaded[:3]
        raise ConfigError("loras", file.name, f"{file.path}: none of its {len(tensors)} keys fits this model ({len(applied.mismatches)} shape mismatches, "
                          f"{len(applied.unloaded)} keys not mapped; first: {'; '.join(first)}). Is the LoRA for another model, or another size of it?")
    return applied


def render(model, settings: PreviewSettings, files: list[LoraFile], strengths: tuple[float, ...], cell_size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(grid (1, H, W, 3), images (rows x columns, H, W, 3) row by row, report)``: every file at every strength, every prompt."""
    prompts = settings.prompts
    base: dict[int, torch.Tensor] = {}
    columns: list[list[torch.Tensor]] = [[] for _ in strengths]
    report = []
    first = True

    def draw(patched, index: int) -> torch.Tensor:
        nonlocal first
        try:
            image = decode(settings.vae, sample(patched, settings, index))
        except Exception as e:
            if not first or isinstance(e, (comfy.model_management.InterruptProcessingException, torch.cuda.OutOfMemoryError)):
                raise
            raise ConfigError(
                "positive/negative", f"prompt {index}", f"could not be sampled on this model ({type(e).__name__}: {e}); connect conditioning made by this model's text "
                "encoder, this model's VAE, and a width/height or latent this model can sample",
            ) from e
        first = False
        return image[:1].float().cpu()

    with torch.no_grad():
        for file in files:
            tensors = official_u1_keys(model, lora_patch.load_lora_file(file.path))
            line = f"{file.name} ({file.label}): {len(tensors)} tensors"
            noted = False
            for column, strength in enumerate(strengths):
                if strength == 0:
                    for index in range(prompts):
                        if index not in base:
                            base[index] = draw(model, index)
                        columns[column].append(base[index])
                    continue
                applied = _patched(model, file, tensors, strength)
                if applied.not_loaded() and not noted:
                    line += f"; {len(applied.not_loaded())} not loaded: " + "; ".join(applied.not_loaded()[:10])
                    noted = True
                for index in range(prompts):
                    columns[column].append(draw(applied.model, index))
            report.append(line)
            log.info("step x strength grid: %s done", file.name)
    c = settings.config
    title = f"{c.sampler_name} / {c.scheduler}, {c.steps} steps, cfg {c.cfg:g}, seed {c.seed}"
    batches = [torch.cat(column) for column in columns]
    grid = charts.image_grid(batches, column_labels=[strength_label(s) for s in strengths], row_labels=row_labels(files, prompts), title=title, cell_size=cell_size)
    images = torch.stack(batches, dim=1).reshape(-1, *batches[0].shape[1:])  # row by row: (file, prompt) rows, strength columns
    report.insert(0, f"{len(files)} LoRA file(s) x {len(strengths)} strength(s) ({', '.join(f'{s:g}' for s in strengths)}) x {prompts} prompt(s); {title}")
    return grid, images, "\n".join(report)


def build_config(**widgets) -> PreviewConfig:
    """Sampling widgets -> :class:`PreviewConfig` (ConfigError naming the field)."""
    keep = {k: widgets[k] for k in ("sampler_name", "scheduler", "steps", "cfg", "seed", "width", "height") if widgets.get(k) is not None}
    return PreviewConfig(**keep, every_n_steps=0)


class LoraStrengthGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}LoraStrengthGrid",
            display_name="LoRA Step × Strength Grid (FlowLoRA)",
            category=CATEGORY,
            description="Samples fixed prompts and a fixed seed with ComfyUI's own KSampler for every LoRA file (e.g. the periodic saves of a training run) at every strength, and returns a labelled grid: a row per file (its training step), a column per strength.",
            inputs=[
                io.Model.Input("model", tooltip="The base model the LoRAs were trained for (without them); it is cloned, never changed."),
                io.Vae.Input("vae", tooltip="The model's VAE, decodes every cell (pixel_space for pixel-space models such as SenseNova-U1)."),
                io.Conditioning.Input("positive", tooltip="Prompts from a text encoder: each conditioning entry is one prompt and gets its own row per file (join several with Conditioning Combine)."),
                io.String.Input("loras", multiline=True, default="", tooltip="One per line, names under models/loras: a LoRA file as the LoRA loaders list it (e.g. flowlora/my_lora/steps/step_000500.safetensors), or a run's output_name without extension (e.g. flowlora/my_lora) for every save the trainer kept of it (<output_name>/steps/, one per save_every) and its last save. Lines starting with # are skipped."),
                io.String.Input("strengths", default="0, 0.5, 1", tooltip="LoRA strengths, one column each, separated by commas: 0 is the model without the LoRA, 1 as trained, negative inverts."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler", tooltip="ComfyUI's sampler, as in KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple", tooltip="ComfyUI's scheduler, as in KSampler."),
                io.Int.Input("steps", default=20, min=1, max=10_000, tooltip="Sampling steps per cell (Z-Image Turbo: 8; base models: 20-50)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale (Z-Image Turbo: 1.0, which ignores the negative)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False, tooltip="Noise seed, the same for every cell so that cells compare."),
                io.Int.Input("width", default=1024, min=16, max=16384, step=16, tooltip="Image width in pixels (ignored when a latent is connected)."),
                io.Int.Input("height", default=1024, min=16, max=16384, step=16, tooltip="Image height in pixels (ignored when a latent is connected)."),
                io.Conditioning.Input("negative", optional=True, tooltip="Negative prompt: one entry for all prompts or one per prompt. Not connected: zeros shaped like each prompt (as ConditioningZeroOut)."),
                io.Latent.Input("latent", optional=True, tooltip="Optional LATENT (e.g. from an empty-latent node): only its size is used, replacing width and height; sampling starts from noise."),
                io.Int.Input("cell_size", default=256, min=32, max=2048, optional=True, tooltip="Long side of a grid cell in pixels; images are resized to fit, keeping their aspect. The images output keeps the full size."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="The labelled grid: a row per LoRA file (and prompt), labelled by its training step or name; a column per strength."),
                io.Image.Output(display_name="images", tooltip="Every cell at full size as an IMAGE batch, row by row (file, then prompt), strengths left to right."),
                io.String.Output(display_name="report", tooltip="The files in row order with their steps, and any LoRA keys ComfyUI did not load."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model=None, vae=None, positive=None, negative=None, latent=None, loras=None, strengths=None, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        if ranges is not True:
            return ranges
        for check, value in ((step_saves.parse_strengths, strengths), (resolve_loras, loras)):
            if value is not None:
                message = validation_message(check, value)
                if message is not True:
                    return message
        return validation_message(build_config, **kw)

    @classmethod
    def execute(cls, model, vae, positive, loras, strengths, sampler_name, scheduler, steps, cfg, seed, width, height, negative=None, latent=None, cell_size=256) -> io.NodeOutput:
        values = step_saves.parse_strengths(strengths)
        files = resolve_loras(loras)
        config = build_config(sampler_name=sampler_name, scheduler=scheduler, steps=steps, cfg=cfg, seed=seed, width=width, height=height)
        settings = PreviewSettings(config, list(positive), vae, list(negative) if negative is not None else None, latent, node=f"{NODE} (FlowLoRA)", field_prefix="")
        settings.check(model)
        grid, images, report = render(model, settings, files, values, cell_size)
        return io.NodeOutput(grid, images, report)
