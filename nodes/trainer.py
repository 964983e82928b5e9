"""The LoRA Trainer node: trains on the MODEL it is given and returns it with the LoRA applied."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import logging
import math
import os
import sys
from pathlib import Path

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from .. import trainer_core
from ..trainer_core import files, step_saves
from ..trainer_core import validation as validation_core
from ..trainer_core.batching import EpochBatches
from ..trainer_core.checkpointing import checkpointed
from ..trainer_core.data.buckets import Bucket
from ..trainer_core.data.dataset import Dataset, Sample
from ..trainer_core.data_parallel import DataParallel
from ..trainer_core.dropout import ConditionDropout
from ..trainer_core.errors import ConfigError
from ..trainer_core.logs import TrainingLog
from ..trainer_core.loop import DTYPES, SaveReport, TrainConfig, TrainTask, train
from ..trainer_core.lora.engine import LoraAdapters
from ..trainer_core.lora.files import network_metadata
from ..trainer_core.lora.keys import lora_metadata, lora_state_dict
from . import training
from .lora_patch import apply_lora, load_lora_file
from .preview import Previewer, PreviewSettings, placeholder
from .types import CATEGORY, PREFIX, Loss, Preview, Timesteps, Validation, check_inputs, validation_message
from .validation import ValidationSettings

log = logging.getLogger(__name__)

Dataset_ = io.Custom("FLOWLORA_DATASET")
LoraConfig_ = io.Custom("FLOWLORA_LORA_CONFIG")
Optimizer_ = io.Custom("FLOWLORA_OPTIMIZER")
Log_ = io.Custom("FLOWLORA_LOG")

RUN_EVENTS: contextvars.ContextVar = contextvars.ContextVar("flowlora_run_events", default=None)
"""Set by the headless runner (``run.py``) around ComfyUI's executor to follow a run: a callable
``(event, data)`` with events ``"start"`` (``step``, ``total``), ``"update"`` (the step's log record and
``total``) and ``"save"`` (``text``). The server never sets it; the node then only reports to ComfyUI."""


def dataset_from_latents(latents: dict, positive: list, empty_prompt: list | None) -> Dataset:
    """A LATENT batch and a CONDITIONING (one entry for all latents, or one per latent) as a Dataset."""
    samples = latents["samples"]
    if samples.ndim != 4:
        raise ConfigError("latents", tuple(samples.shape), "must be an image LATENT (B, C, H, W)")
    count = samples.shape[0]
    if len(positive) not in (1, count):
        raise ConfigError("positive", f"{len(positive)} entries", f"give one conditioning for all {count} latents or one per latent")
    conditionings = tuple([entry] for entry in positive)
    out = []
    for i in range(count):
        h, w = samples.shape[-2:]
        out.append(Sample(source=Path(f"latent[{i}]"), bucket=Bucket(int(w) * 8, int(h) * 8), latent=samples[i].float(), prompt="", conditioning=i if len(positive) == count else 0))
    return Dataset(tuple(out), conditionings, empty_prompt)


def dataset_fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha256()
    for s in dataset.samples:
        digest.update(s.latent.detach().float().cpu().numpy().tobytes())
        digest.update(f"{s.prompt}|{s.repeats}|{s.bucket}".encode())
    return digest.hexdigest()[:32]


class LoraTrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}LoraTrainer",
            display_name="LoRA Trainer (FlowLoRA)",
            category=CATEGORY,
            description="Trains a LoRA on the given flow model and returns the model with it applied, the LoRA file and the training log.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The flow model to train on, as ComfyUI loaded it; LoRAs already applied (e.g. a training adapter) are trained on top of. It is not modified."),
                Timesteps.Input("timesteps", tooltip="Timestep Sampler settings."),
                Loss.Input("loss", tooltip="Loss Builder settings."),
                LoraConfig_.Input("lora", tooltip="LoRA Config: targets, rank, alpha, unfrozen tensors."),
                Optimizer_.Input("optimizer", tooltip="Optimizer Config: optimizer, lr, schedule, clipping, accumulation."),
                io.Int.Input("steps", default=500, min=1, max=1_000_000, tooltip="Optimizer updates (each takes grad_accumulation batches). Ignored when epochs > 0."),
                io.Int.Input("epochs", default=0, min=0, max=10_000, tooltip="If > 0, train this many passes over the dataset (repeats counted) instead of 'steps'."),
                io.Int.Input("batch_size", default=1, min=1, max=256, tooltip="Images per batch; a batch never mixes aspect buckets."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of every random draw (batches, timesteps, noise, dropout, LoRA init). Same seed, same run."),
                io.Float.Input("p_text", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Condition dropout: probability that a sample trains on the empty prompt instead of its caption (U1: 0.1)."),
                io.Float.Input("p_both", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Condition dropout: probability of dropping text and image condition (U1: 0.1; in text-to-image also the empty prompt). p_text + p_both <= 1."),
                io.Combo.Input("training_dtype", options=list(DTYPES), default="bf16", tooltip="Autocast precision of the forward pass; LoRA weights and optimizer stay fp32. Use fp32 on CPU or for exact tests."),
                io.Boolean.Input("gradient_checkpointing", default=True, tooltip="Recompute block activations in the backward pass: much less memory, about 30% slower."),
                io.Int.Input("save_every", default=0, min=0, max=1_000_000, tooltip="Also save the LoRA and resumable state every N updates (0: only at the end, on cancel and on failure). Each periodic save is also kept as <output_name>/steps/step_000500.safetensors, for the LoRA Step x Strength Grid or any LoRA loader."),
                io.String.Input("output_name", default="flowlora/my_lora", tooltip="File name under models/loras (subfolders allowed, no '..'); the log and resumable state are saved beside it."),
                io.Boolean.Input("resume", default=False, tooltip="Continue from the resumable state saved beside output_name (after a cancel, failure or periodic save)."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing LoRA (and its state and log) of the same output_name with a new run. Off: such a name is refused, so that no run, and no second queued prompt, silently overwrites another's files."),
                Dataset_.Input("dataset", optional=True, tooltip="A FlowLoRA Dataset (images, captions, buckets, cached latents). Or connect latents and positive instead."),
                io.Latent.Input("latents", optional=True, tooltip="Training latents (B, C, H, W) from VAE Encode, when no dataset is connected."),
                io.Conditioning.Input("positive", optional=True, tooltip="Captions for 'latents': one conditioning for all, or one entry per latent."),
                io.Conditioning.Input("empty_prompt", optional=True, tooltip="Conditioning of the empty prompt, for condition dropout (a dataset carries its own)."),
                io.Model.Input("apply_to", optional=True, tooltip="Model the output MODEL applies the trained LoRA to (default: 'model'). Connect the base model here when 'model' carries a training-only adapter, e.g. a de-distillation LoRA for Z-Image Turbo."),
                Preview.Input("preview", optional=True, tooltip="A Training Preview node: samples its prompts with ComfyUI's KSampler on the output MODEL with the LoRA as it stands, at the start, every N steps and at the end; shown on this node while it trains and saved in <output_name>/previews beside the LoRA. Training is the same with or without it."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05, optional=True, tooltip="Strength of the trained LoRA in the output MODEL, as a LoRA loader's strength_model (1 = as trained; a style LoRA often keeps more of the model's content at 0.6 to 0.8). The saved file is not affected."),
                Validation.Input("validation", optional=True, tooltip="A Validation node: scores its held-out dataset at a fixed sigma grid with fixed noise, at the start, every N steps and at the end; written to <output_name>.val.jsonl beside the log and plotted by Training Plots (one curve per sigma). Training is the same with or without it."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="'apply_to' (or the input model) with the trained LoRA applied as an ordinary LoRA patch, at 'strength'."),
                io.String.Output(display_name="lora_path", tooltip="Path of the saved LoRA file."),
                Log_.Output(display_name="log", tooltip="Training log, for the plot nodes."),
                io.Image.Output(display_name="previews", tooltip="The previews of this run as one labelled grid: a row per prompt, a column per previewed step (a note when no Training Preview is connected)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, output_name: str = "flowlora/my_lora", p_text: float = 0.0, p_both: float = 0.0, resume: bool = False, overwrite: bool = False, **kw) -> bool | str:
        ranges = check_inputs(cls, {"output_name": output_name, "p_text": p_text, "p_both": p_both, "resume": resume, "overwrite": overwrite, **kw})
        if ranges is not True:
            return ranges
        dropout = validation_message(ConditionDropout, p_text, p_both)
        return dropout if dropout is not True else validation_message(output_path, output_name, resume, overwrite)

    @classmethod
    def execute(cls, model, timesteps, loss, lora, optimizer, steps, epochs, batch_size, seed, p_text, p_both, training_dtype, gradient_checkpointing, save_every, output_name, resume, overwrite=False, dataset=None, latents=None, positive=None, empty_prompt=None, apply_to=None, preview=None, validation=None, strength=1.0) -> io.NodeOutput:
        training.require_flow_model(model)
        if preview is not None:
            preview.check(apply_to if apply_to is not None else model)
        if validation is not None:
            validation.check(model)
        if dataset is None:
            if latents is None or positive is None:
                raise ConfigError("dataset", None, "connect a FlowLoRA Dataset, or both latents and positive")
            dataset = dataset_from_latents(latents, positive, empty_prompt)
        uncond = empty_prompt if empty_prompt is not None else dataset.empty_conditioning
        lora_path = output_path(output_name, resume, overwrite)  # again: another prompt may have written it since validation
        stem = lora_path[: -len(".safetensors")]
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        result, adapters_summary, grid = run_training(
            model, dataset, uncond, timesteps, loss, lora, optimizer, steps, epochs, batch_size, seed,
            ConditionDropout(p_text, p_both), training_dtype, gradient_checkpointing, save_every, lora_path, stem, resume, node_id,
            preview=preview, apply_to=apply_to, validation=validation,
        )
        if result.stopped:
            comfy.model_management.throw_exception_if_processing_interrupted()
        applied = apply_lora(apply_to if apply_to is not None else model, load_lora_file(lora_path), strength)
        trained, unloaded = applied.model, applied.not_loaded()
        if unloaded:
            raise RuntimeError(f"ComfyUI did not map {len(unloaded)} keys of {lora_path}: {', '.join(unloaded[:10])}; please report this with the LoRA Config used")
        run_log = TrainingLog(label=os.path.basename(stem), log_path=stem + training.LOG_SUFFIX, lora_path=lora_path, steps=result.steps, stopped=result.stopped, config={"lora": adapters_summary},
                              validation_path=stem + validation_core.SUFFIX if validation is not None else "")
        return io.NodeOutput(trained, lora_path, run_log, grid)


def output_path(output_name: str, resume: bool, overwrite: bool) -> str:
    """The LoRA path for ``output_name`` (:func:`training.lora_output_path`); refused if a
    LoRA or resumable state of that name exists, unless ``resume`` or ``overwrite``.

    Checked at validation and again when the node runs: two prompts queued with
    the same name both pass validation while neither file exists, and the
    second is then refused here instead of overwriting the first's files.
    """
    lora_path = training.lora_output_path(output_name)
    stem = lora_path[: -len(".safetensors")]
    existing = [p for p in (lora_path, stem + training.STATE_SUFFIX) if os.path.exists(p)]
    if existing and not (resume or overwrite):
        raise ConfigError("output_name", output_name, f"{existing[0]} already exists (from another run); turn on resume to continue it, overwrite to replace it, or choose another name")
    return lora_path


def run_training(model, dataset, uncond, timesteps, loss, lora, optimizer, steps, epochs, batch_size, seed, dropout, training_dtype, gradient_checkpointing, save_every, lora_path, stem, resume, node_id,
                 preview: PreviewSettings | None = None, apply_to=None, validation: ValidationSettings | None = None):
    """Load the model through ComfyUI's model management, attach adapters, run the loop.

    Returns ``(TrainResult, adapters summary, previews grid IMAGE)``; with ``preview``, a
    :class:`Previewer` renders on the output model (``apply_to`` or ``model``) at the start,
    on its schedule and at the end; with ``validation``, a :class:`validation_core.Validator` scores
    the held-out set on the training model at the start, on its schedule and at the end.
    """
    parallel = DataParallel.from_environment()  # torchrun + the headless runner; None in ComfyUI's server
    if parallel is not None and not parallel.writes_files:
        preview = validation = None  # rank 0 previews, validates and writes; the others only train
    world = parallel.world_size if parallel is not None else 1
    events = RUN_EVENTS.get()
    patcher = model.clone()
    with training.training_mode():
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
        device = patcher.load_device
        diffusion_model = patcher.model.diffusion_model
        training.own_tensors(diffusion_model)  # weights a loader node made under inference_mode
        adapters = LoraAdapters.build(diffusion_model, lora, generator=torch.Generator().manual_seed(seed), device=device)
        log.info("LoRA: %s", adapters.plan.summary())
        # data parallel: batch_size is per rank, the run draws global batches of batch_size * world (trainer_core.data_parallel)
        batches = EpochBatches(dataset, batch_size * world, lambda x: patcher.model.process_latent_in(x.clone()))
        total = steps if epochs == 0 else max(1, math.ceil(epochs * batches.steps_per_epoch() / optimizer.grad_accumulation))
        config = TrainConfig(steps=total, batch_size=batch_size * world, seed=seed, save_every=save_every, dtype=training_dtype, dropout=dropout)
        settings = {
            "train": config.to_dict(),
            "timesteps": timesteps.to_dict(),
            "loss": loss.to_dict(),
            "lora": lora.to_dict(),
            "optimizer": optimizer.to_dict(),
            "epochs": epochs,
            "dataset": dict(dataset.settings),
        }
        identity = training.model_identity(patcher)
        fingerprint = dataset_fingerprint(dataset)

        def save_lora(step: int) -> str:
            metadata = lora_metadata(
                adapters,
                **{
                    "flowlora.version": trainer_core.__version__,
                    "flowlora.schema": "1",
                    "flowlora.training": settings,
                    "flowlora.base_model": identity,
                    "flowlora.step": str(step),
                    "flowlora.dataset_fingerprint": fingerprint,
                    **network_metadata(lora.algorithm, lora.rank, lora.alpha),
                    "ss_steps": str(step),
                    "ss_output_name": os.path.basename(stem),
                },
            )
            files.save_safetensors(lora_path, lora_state_dict(adapters), metadata)
            return lora_path

        attached = _Attached(adapters, patcher, gradient_checkpointing)

        progress = comfy.utils.ProgressBar(total)
        previewer = None
        if preview is not None:
            previewer = Previewer(
                preview, apply_to if apply_to is not None else model, lambda: lora_state_dict(adapters), previews_folder(stem),
                os.path.basename(stem), total, attached.lifted,
                lambda step, image: progress.update_absolute(step, total, ("PNG", image, _preview_size())),
            )

        denoiser = _network_x0(training.ComfyDenoiser(patcher, device), patcher)
        add_noise = training.noise_fn(patcher)
        validator = None
        if validation is not None:
            validator = validation_core.Validator(
                validation.config, validation.held_out(patcher.model.process_latent_in), denoiser, add_noise, stem + validation_core.SUFFIX,
                total, device, DTYPES[training_dtype], [patcher.model, adapters],
            )

        kept_saves = step_saves_folder(stem)

        def on_start(step: int) -> None:
            if events is not None:
                events("start", {"step": step, "total": total})
            if parallel is None or parallel.writes_files:
                step_saves.remove_after(kept_saves, step)  # an earlier or killed run's; this run saves those steps again
            if validator is not None:
                validator.at_start(step)
            if previewer is not None:
                previewer.at_start(step)

        def on_save(report: SaveReport) -> None:
            """Keep a periodic save per step; say where a save went (log and the node's progress text); a cancel's save says how to go on."""
            text = f"{report.reason} at step {report.step}/{total}: LoRA {report.lora_path}, resumable state {report.state_path}"
            if report.reason == "periodic":
                text += f", kept as {step_saves.keep(report.lora_path, kept_saves, report.step)}"
            if report.reason == "stopped":
                text += " (resume = true continues from here)"
            elif report.reason == "non-finite":
                text += " (lower the learning rate; resume = true continues from here)"
            log.info("FlowLoRA %s", text)
            _progress_text(text, node_id)
            if events is not None:
                events("save", {"text": text, "reason": report.reason, "step": report.step})

        def on_update(record: dict) -> None:
            # ComfyUI's cancel raises InterruptProcessingException from this progress hook (and from
            # every ComfyUI layer's forward); the loop saves the last completed step and re-raises it.
            progress.update_absolute(record["step"], total)
            if events is not None:
                events("update", {**record, "total": total})
            text = f"step {record['step']}/{total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}"
            _progress_text(text, node_id)
            if record["step"] % 10 == 0 or record["step"] == total:
                log.info("FlowLoRA %s", text)
            if validator is not None:
                validator.after_update(record["step"])
                if validator.last is not None and validator.last["step"] == record["step"]:
                    _progress_text(f"{text}  validation x0-MSE {validator.last['mean']:.4f}", node_id)
            if previewer is not None:
                previewer.after_update(record["step"])

        task = TrainTask(
            denoiser=denoiser,
            data=batches,
            trainable=_Trainable(adapters),
            timesteps=timesteps,
            loss=loss,
            optimizer=optimizer,
            config=config,
            save_lora=save_lora,
            log_path=stem + training.LOG_SUFFIX,
            state_path=stem + training.STATE_SUFFIX,
            device=device,
            uncond=uncond,
            noise_fn=add_noise,
            on_start=on_start,
            on_update=on_update,
            should_stop=comfy.model_management.processing_interrupted,
            on_save=on_save,
            resume=resume,
            settings=settings,
            parallel=parallel,
        )
        with attached:
            result = train(task)
    grid = previewer.grid() if previewer is not None else placeholder("Connect a Training Preview (FlowLoRA) node to the trainer's preview input for previews while it trains.")
    return result, adapters.plan.summary(), grid


def step_saves_folder(stem: str) -> str:
    """Periodic saves of ``<models/loras>/<output_name>.safetensors`` are kept in ``<models/loras>/<output_name>/steps/``."""
    return os.path.join(stem, step_saves.FOLDER)


def previews_folder(stem: str) -> str:
    """Previews of ``<models/loras>/<output_name>.safetensors`` go to ``<models/loras>/<output_name>/previews/``."""
    return os.path.join(stem, "previews")


class _Attached:
    """The adapters' hooks and gradient checkpointing on the training patcher's model, for a ``with`` block.

    :meth:`lifted` takes both off for a moment, so that ComfyUI can load and
    patch the shared model for a preview (:mod:`.preview`), then reloads the
    training patcher (its own patches back, the preview's gone) and attaches
    both again. The adapters' tensors and the optimizer are untouched by it.
    """

    def __init__(self, adapters: LoraAdapters, patcher, gradient_checkpointing: bool):
        self.adapters = adapters
        self.patcher = patcher
        self.gradient_checkpointing = gradient_checkpointing
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> _Attached:
        module = self.patcher.model.diffusion_model
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.adapters.attached(module))
            stack.enter_context(checkpointed(module, self.gradient_checkpointing))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> bool:
        stack, self._stack = self._stack, None
        return bool(stack.__exit__(*exc)) if stack is not None else False

    @contextlib.contextmanager
    def lifted(self):
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
            training.own_tensors(self.patcher.model.diffusion_model)
            self.__enter__()


def _preview_size() -> int:
    """Largest side of previews sent to the frontend: ComfyUI's ``--preview-size`` (512 by default)."""
    from comfy.cli_args import args

    return int(getattr(args, "preview_size", 512) or 512)


def _network_x0(denoiser, patcher):
    """Losses on the network's own x0 where the model_sampling clamps its denoised output.

    A model_sampling with ``flowlora_network_x0(sigma, denoised, x)`` (SenseNova-U1: below
    sigma = t_eps) maps ComfyUI's denoised output back; others pass through.
    """
    to_x0 = getattr(patcher.get_model_object("model_sampling"), "flowlora_network_x0", None)
    if to_x0 is None:
        return denoiser
    return lambda x_sigma, sigma, conds: to_x0(sigma, denoiser(x_sigma, sigma, conds), x_sigma)


@dataclasses.dataclass
class _Trainable:
    """The loop's view of the adapters: parameters and their state."""

    adapters: LoraAdapters

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.adapters.lora_parameters() + self.adapters.unfrozen_parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.adapters.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.adapters.load_state_dict(state)


def _progress_text(text: str, node_id: str | None) -> None:
    """Show ``text`` under the node in the ComfyUI frontend (when a server is running)."""
    server = sys.modules.get("server")  # ComfyUI's server module, only when ComfyUI runs as a server
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if node_id is not None and instance is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)
