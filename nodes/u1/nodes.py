"""U1 Loader and U1 Prompt Encode nodes (thin: list folders, call :mod:`.model`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ...trainer_core import files
from ...trainer_core.errors import ConfigError
from ...trainer_core.models.u1 import official_lora
from ...trainer_core.models.u1.checkpoint import is_checkpoint_dir
from .. import paths
from ..lora_patch import load_lora_file
from ..types import CATEGORY, PREFIX, check_inputs
from . import model as u1

log = logging.getLogger(__name__)

U1TextEncoderType = io.Custom("FLOWLORA_U1_TEXT_ENCODER")
"""A :class:`model.U1TextEncoder` (understanding tower + tokenizer)."""

SEARCH_FOLDERS = ("diffusion_models", "sensenova_u1")
"""ComfyUI model folder names searched for checkpoint folders; ``sensenova_u1`` is models/sensenova_u1/."""


def checkpoint_folders() -> dict[str, str]:
    """``{display name: absolute folder}`` of official U1 checkpoint folders (index + config.json).

    Looks one and two levels below every ComfyUI ``diffusion_models`` path and
    ``models/sensenova_u1`` (and ``models/sensenova``, the official nodes' folder).
    """
    roots: list[tuple[str, str]] = []
    for kind in ("diffusion_models",):
        roots += [(kind, p) for p in folder_paths.get_folder_paths(kind)]
    for sub in ("sensenova_u1", "sensenova"):
        roots.append((sub, os.path.join(folder_paths.models_dir, sub)))
    found: dict[str, str] = {}
    for label, root in roots:
        base = Path(root)
        if not base.is_dir():
            continue
        candidates = [base, *sorted(p for p in base.iterdir() if p.is_dir())]
        candidates += sorted(q for p in candidates[1:] for q in p.iterdir() if q.is_dir())
        for folder in candidates:
            if is_checkpoint_dir(folder):
                rel = folder.relative_to(base).as_posix()
                found.setdefault(f"{label}/{rel}" if rel != "." else label, str(folder))
    return found


class U1Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}U1Loader",
            display_name="SenseNova-U1 Loader (FlowLoRA)",
            category=CATEGORY,
            description="Loads an official SenseNova-U1 / U1.5 checkpoint folder (model.safetensors.index.json + shards + config.json). MODEL samples with the stock KSampler in pixel space (decode with the pixel_space VAE); the text encoder feeds 'SenseNova-U1 Prompt Encode'.",
            inputs=[
                io.Combo.Input("checkpoint", options=sorted(checkpoint_folders()) or ["(none found)"], tooltip="A checkpoint folder with config.json and model.safetensors.index.json, found under models/diffusion_models, models/sensenova_u1 or models/sensenova (one or two folders deep)."),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01, tooltip="Timestep shift of the sampling schedule (official examples and the U1 report: 3.0). Use the 'simple' scheduler to get U1's exact t grid."),
                # Sampling t_eps: the official t2i_generate (OpenSenseNova/SenseNova-U1 @df86ca9,
                # src/sensenova_u1/models/neo_unify/modeling_neo_chat.py L1578) defaults to t_eps=0.02 and writes it
                # into config.t_eps (L1583) before its Euler loop. Training's 0.05 (config.json, train_u1
                # constants.py L43) is the Loss Builder's t_eps: the trainer maps this clamp back exactly
                # (U1ModelSampling.flowlora_network_x0), so this value never reaches a training loss.
                io.Float.Input("t_eps", default=0.02, min=0.001, max=0.5, step=0.001, tooltip="Sampling velocity clamp: v = (x0 - z) / max(1 - t, t_eps) in the sampler's steps. 0.02 as the official sampler (modeling_neo_chat.py t2i_generate); at 50 steps with shift 3 it never triggers, at 59-148 steps 0.05 would leave residual noise. Training is not affected: the trainer undoes this clamp and the training t_eps (U1: 0.05, config.json and train_u1) is the Loss Builder's t_eps."),
                io.Combo.Input("weight_dtype", options=u1.WEIGHT_DTYPES.names(), default="checkpoint", tooltip="Dtype the weights are held in (CPU-resident). 'checkpoint' keeps the stored bf16 (35 GB for U1-8B)."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The generation tower as a ComfyUI MODEL (x0 prediction, t = 1 - sigma)."),
                U1TextEncoderType.Output(display_name="text_encoder", tooltip="The understanding tower and tokenizer; turns prompts into prefix-KV CONDITIONING."),
            ],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)  # checkpoint: its own message below
        if ranges is not True:
            return ranges
        if checkpoint not in checkpoint_folders():
            return f"checkpoint = {checkpoint!r}: no such SenseNova-U1 folder; put the official download (config.json, model.safetensors.index.json, shards) in models/sensenova_u1/<name>/"
        return True

    @classmethod
    def execute(cls, checkpoint: str, shift: float, t_eps: float, weight_dtype: str) -> io.NodeOutput:
        folder = checkpoint_folders()[checkpoint]
        return io.NodeOutput(u1.load_u1_model(folder, shift, t_eps, weight_dtype), u1.load_u1_text_encoder(folder, weight_dtype))


THINK_MODES = ("given", "generate")


class U1PromptEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}U1PromptEncode",
            display_name="SenseNova-U1 Prompt Encode (FlowLoRA)",
            category=CATEGORY,
            description="Runs U1's understanding tower once over the official prompt prefix and returns its per-layer K/V as CONDITIONING, plus the official unconditional prefix for CFG (the report samples with cfg 4.0).",
            inputs=[
                U1TextEncoderType.Input("text_encoder", tooltip="From 'SenseNova-U1 Loader (FlowLoRA)'."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The image description, wrapped in the official system message and chat template."),
                io.String.Input("think", multiline=True, default="", optional=True, tooltip="think_mode 'given': reasoning text placed inside the <think> block (as train_u1's think labels); empty gives the official empty think block. Ignored when think_mode is 'generate'."),
                io.Combo.Input("think_mode", options=list(THINK_MODES), default="given", optional=True, tooltip="given: the think text above (or none). generate: the official think mode: the model writes its own reasoning with its language head (greedy, until </think>), shown on the think_text output."),
                io.Int.Input("think_max_tokens", default=1024, min=1, max=8192, optional=True, tooltip="think_mode 'generate': at most this many tokens of reasoning (official default 1024)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="The prompt's prefix KV; wire to KSampler positive."),
                io.Conditioning.Output(display_name="negative", tooltip="The official unconditional prefix's KV (empty user turn, no think block); wire to KSampler negative for CFG."),
                io.String.Output(display_name="think_text", tooltip="The reasoning in the <think> block: the generated text in 'generate' mode, else the given text."),
            ],
        )

    @classmethod
    def execute(cls, text_encoder: u1.U1TextEncoder, prompt: str, think: str = "", think_mode: str = "given", think_max_tokens: int = 1024) -> io.NodeOutput:
        if think_mode not in THINK_MODES:
            raise ConfigError("think_mode", think_mode, f"must be one of {', '.join(THINK_MODES)}")
        if think_mode == "generate":
            cond, think = text_encoder.generate_think(prompt, think_max_tokens)
            uncond = text_encoder.encode_text(u1.prompts.UNCONDITIONAL_PREFIX)
        else:
            cond, uncond = text_encoder.encode(prompt, think or "")
        return io.NodeOutput([[cond, {"u1_prefix_length": cond.shape[1]}]], [[uncond, {"u1_prefix_length": uncond.shape[1]}]], (think or "").strip())


OFFICIAL_SUFFIX = ".u1_official.safetensors"


def loras_folder() -> str:
    """ComfyUI's first models/loras folder: where a relative ``lora_path`` starts."""
    return folder_paths.get_folder_paths("loras")[0]


def trained_lora_path(lora_path: str) -> str:
    """An existing .safetensors LoRA inside ComfyUI's folders (a relative path is under models/loras); ConfigError otherwise."""
    path = str(paths.confine("lora_path", lora_path, loras_folder()))
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        raise ConfigError("lora_path", lora_path, "must be an existing .safetensors LoRA file (connect the trainer's lora_path)")
    return path


class U1SaveOfficialLora(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}U1SaveOfficialLora",
            display_name="SenseNova-U1 Save Official LoRA (FlowLoRA)",
            category=CATEGORY,
            description="Writes a FlowLoRA LoRA trained on SenseNova-U1 in the official inference format (<param>.lora_down.weight, .lora_up.weight, .alpha; fully trained tensors under their own names), beside the original as <name>.u1_official.safetensors.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The SenseNova-U1 MODEL the LoRA was trained on: fully trained tensors are saved as its weights plus the trained change."),
                io.String.Input("lora_path", default="", tooltip="The FlowLoRA LoRA file: connect the trainer's lora_path, or type a path inside ComfyUI's folders (a relative one is under models/loras). The official file is written beside it."),
                io.Boolean.Input("include_full_tensors", default=False, tooltip="Off (default): LoRA keys only, which the official --lora_path loader needs (it fails on the first full bias tensor); the fully trained fm_modules tensors, and head adapters folded into them, are left out, with a warning naming them. For a file that keeps everything use 'SenseNova-U1 Save Merged Checkpoint'. On: also save the fully trained tensors at their names (train_u1's loader reads them; the official one does not)."),
            ],
            outputs=[io.String.Output(display_name="official_path", tooltip="Path of the file written.")],
        )

    @classmethod
    def validate_inputs(cls, lora_path: str | None = None, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else paths.check("lora_path", lora_path, loras_folder())

    @classmethod
    def execute(cls, model, lora_path: str, include_full_tensors: bool = False) -> io.NodeOutput:
        path = trained_lora_path(lora_path)
        lora = load_lora_file(path)
        official = official_lora.to_official(lora, u1.base_weights(model), include_full=include_full_tensors)
        out = path[: -len(".safetensors")] + OFFICIAL_SUFFIX
        files.save_safetensors(out, official, {"format": "sensenova_u1.lora", "naming": "lora_down/lora_up/.alpha", "source": os.path.basename(path)})
        log.info("official SenseNova-U1 LoRA: %s (%d tensors)", out, len(official))
        return io.NodeOutput(out)


MERGED_FOLDER = "sensenova_u1"
"""Merged checkpoints go to models/<MERGED_FOLDER>/<output_name>/, where the U1 Loader finds them."""


class U1SaveMergedCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}U1SaveMergedCheckpoint",
            display_name="SenseNova-U1 Save Merged Checkpoint (FlowLoRA)",
            category=CATEGORY,
            description=(
                "Writes the base checkpoint with a trained LoRA merged in (adapters by the official formula W + (alpha / r) up @ down, "
                "fully trained fm_modules tensors replaced) as an official checkpoint folder: the base's config, tokenizer files, index and shard layout, "
                "official tensor names. Official inference and the SenseNova-U1 Loader load it as-is; nothing of the training is left out."
            ),
            is_output_node=True,
            inputs=[
                io.Combo.Input("checkpoint", options=sorted(checkpoint_folders()), tooltip="The base checkpoint the LoRA was trained on (as in the SenseNova-U1 Loader)."),
                io.String.Input("lora_path", default="", tooltip="The FlowLoRA LoRA file: connect the trainer's lora_path, or type a path inside ComfyUI's folders (a relative one is under models/loras)."),
                io.String.Input("output_name", default="my_u1_merged", tooltip=f"Folder name under models/{MERGED_FOLDER}/ for the merged checkpoint (letters, digits, '-', '_', '.'; no path)."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05, tooltip="Strength of the adapters merged in (1 = as trained). Fully trained fm_modules tensors are copied as trained, whatever the strength, as the official merge does."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing folder of that name. Off: an existing folder is refused, so no checkpoint is overwritten by accident."),
            ],
            outputs=[io.String.Output(display_name="checkpoint_path", tooltip="The folder written.")],
        )

    @classmethod
    def validate_inputs(cls, lora_path: str | None = None, output_name: str | None = None, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        if ranges is not True:
            return ranges
        if output_name is not None and not valid_folder_name(output_name):
            return f"output_name = {output_name!r}: use a plain folder name (letters, digits, '-', '_', '.'), no '/' or '..'"
        return paths.check("lora_path", lora_path, loras_folder())

    @classmethod
    def execute(cls, checkpoint: str, lora_path: str, output_name: str, strength: float = 1.0, overwrite: bool = False) -> io.NodeOutput:
        from ...trainer_core.models.u1 import checkpoint as ckpt

        folders = checkpoint_folders()
        if checkpoint not in folders:
            raise ConfigError("checkpoint", checkpoint, f"no such SenseNova-U1 folder; found: {', '.join(sorted(folders)) or 'none'}")
        if not valid_folder_name(output_name):
            raise ConfigError("output_name", output_name, "use a plain folder name (letters, digits, '-', '_', '.'), no '/' or '..'")
        out = Path(folder_paths.models_dir) / MERGED_FOLDER / output_name
        if out.exists() and not overwrite:
            raise ConfigError("output_name", output_name, f"{out} exists: pick another name or turn on overwrite")
        state = ckpt.load_state_dict(folders[checkpoint])
        official = official_lora.to_official(load_lora_file(trained_lora_path(lora_path)), state, include_full=True)
        merged = official_lora.merge_official(state, official, strength)
        changed = sum(1 for k in merged if merged[k] is not state[k])
        ckpt.write_merged(folders[checkpoint], merged, out)
        log.info("merged SenseNova-U1 checkpoint: %s (%d of %d tensors changed)", out, changed, len(state))
        return io.NodeOutput(str(out))


def valid_folder_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and all(c.isalnum() or c in "-_." for c in name)
