"""LoRA Config and LoRA Loader nodes."""

from __future__ import annotations

import json
import logging

from comfy_api.latest import io

from ..trainer_core.errors import ConfigError
from ..trainer_core.lora import INITS, METADATA_KEY, PRESETS, LoraConfig, read_metadata, resolve
from ..trainer_core.lora.algorithms import ALGORITHMS
from . import lora_patch
from .types import CATEGORY, PREFIX, check_inputs, validation_message

log = logging.getLogger(__name__)

LoraConfigType = io.Custom("FLOWLORA_LORA_CONFIG")
"""A :class:`trainer_core.lora.LoraConfig` (stable name: saved workflows use it)."""

PATTERN_HELP = "One pattern per line (or comma-separated): a glob such as layers.*.attention.out (* crosses dots), or a regex after 're:' matched against the whole name."


def build_config(preset: str, rank: int, alpha: float, dropout: float, init: str, include: str = "", exclude: str = "", unfreeze: str = "", algorithm: str = "lora") -> LoraConfig:
    """Node widgets -> :class:`LoraConfig`; raises ConfigError naming the bad field."""
    return LoraConfig(preset=preset, include=include, exclude=exclude, rank=rank, alpha=alpha, dropout=dropout, init=init, unfreeze=unfreeze, algorithm=algorithm)


ALGORITHM_HELP = {
    "lora": "LoRA: y += alpha/rank * B A x (the AC-RF and U1 recipes).",
    "dora": "DoRA: LoRA plus a trained magnitude per output row (peft's DoRA); a little slower, saved with dora_scale.",
    "loha": "LoHa: Hadamard product of two rank-r pairs (peft); rank up to r^2 for 2x LoRA's parameters, slowest (builds the full delta every step).",
    "lokr": "LoKr: Kronecker product w1 x w2 (peft); far fewer parameters, fast, small files.",
    "oft": "OFT: block-diagonal orthogonal rotation of each layer's output rows (peft's Cayley rotation); rank = block size and must divide each layer's rows; alpha unused.",
}


def describe_targets(config: LoraConfig, model) -> str:
    """What ``config`` trains on ``model`` (a ModelPatcher): counts, then every adapter and unfrozen tensor."""
    plan = resolve(model.model.diffusion_model, config)
    lines = [plan.summary(), ""]
    lines += [f"{t.name}  [{t.module} rows {t.rows[0]}:{t.rows[0] + t.rows[1]}]" if t.rows else t.name for t in plan.targets]
    lines += [f"unfrozen: {name}" for name in plan.unfrozen]
    return "\n".join(lines)


class LoraConfigNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}LoraConfig",
            display_name="LoRA Config (FlowLoRA)",
            category=CATEGORY,
            description="Which layers the LoRA trains (preset + patterns), its rank, alpha, dropout and init, which tensors are trained in full, and the adapter algorithm (LoRA, DoRA, LoHa, LoKr, OFT). Connect a MODEL to list what matches.",
            inputs=[
                io.Combo.Input("preset", options=PRESETS.names(), default="zimage_attn", tooltip=" | ".join(f"{name}: {PRESETS.get(name).description}" for name in PRESETS.names())),
                io.Int.Input("rank", default=16, min=1, max=1024, tooltip="LoRA rank r: width of the A (r x in) and B (out x r) factors (AC-RF: 16, U1: 64)."),
                io.Float.Input("alpha", default=16.0, min=0.01, max=4096.0, step=0.01, tooltip="LoRA alpha: the update is scaled by alpha / rank (alpha = rank gives 1; AC-RF 16/16, U1 64/64)."),
                io.Float.Input("dropout", default=0.0, min=0.0, max=0.99, step=0.01, tooltip="Dropout on the adapter's input during training only (0 = off)."),
                io.Combo.Input("init", options=list(INITS), default="default", tooltip="default: A kaiming-uniform, B zero. gaussian: A ~ N(0, 1/rank^2), B zero. Both start with the model unchanged."),
                io.String.Input("include", default="", multiline=True, tooltip="Extra adapter names to train on top of the preset. " + PATTERN_HELP + " With a Z-Image preset the fused qkv appears as to_q, to_k, to_v."),
                io.String.Input("exclude", default="", multiline=True, tooltip="Adapter names to leave out (applied after preset and include). " + PATTERN_HELP),
                io.String.Input("unfreeze", default="", multiline=True, tooltip="Parameter names trained in full and saved in the LoRA as weight differences, e.g. layers.*.attention_norm1.weight. " + PATTERN_HELP),
                io.Combo.Input("algorithm", options=ALGORITHMS.names(), default="lora", tooltip="Adapter form; every one is saved in the keys ComfyUI's LoRA loaders read. " + " | ".join(ALGORITHM_HELP[name] for name in ALGORITHMS.names())),
                io.Model.Input("model", optional=True, tooltip="Optional: the MODEL to check the targets on; the report lists every match, and zero matches is an error that lists close names."),
            ],
            outputs=[
                LoraConfigType.Output(display_name="lora", tooltip="LoRA settings for the trainer."),
                io.String.Output(display_name="report", tooltip="Targets and parameter counts on the connected MODEL (or the settings when none)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model=None, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(build_config, **kw)

    @classmethod
    def execute(cls, model=None, **kw) -> io.NodeOutput:
        config = build_config(**kw)
        report = describe_targets(config, model) if model is not None else config.describe()
        return io.NodeOutput(config, report)


class LoraLoaderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        return io.Schema(
            node_id=f"{PREFIX}LoraLoader",
            display_name="LoRA Loader (FlowLoRA)",
            category=CATEGORY,
            description="Applies a LoRA from models/loras to a MODEL with ComfyUI's own LoRA loading (FlowLoRA files and other trainers'), and reports every key it could not map.",
            inputs=[
                io.Model.Input("model", tooltip="The model to apply the LoRA to; it is cloned, never changed."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"), tooltip="LoRA file in ComfyUI's models/loras folder."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01, tooltip="Multiplier of the LoRA's change (1 = as trained, 0 = off, negative = inverted)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A clone of the model with the LoRA as an ordinary ComfyUI patch."),
                io.String.Output(display_name="report", tooltip="How many keys loaded, and the name of every key that did not (empty list = all matched)."),
            ],
        )

    @classmethod
    def execute(cls, model, lora_name: str, strength_model: float) -> io.NodeOutput:
        import folder_paths

        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        lora = official_u1_keys(model, lora_patch.load_lora_file(path))
        if strength_model == 0:
            return io.NodeOutput(model, f"{lora_name}: strength 0, not applied")
        result = lora_patch.apply_lora(model, lora, strength_model)
        if lora and not result.applied:
            first = [str(m) for m in result.mismatches[:3]] or result.unloaded[:3]
            raise ConfigError("lora_name", lora_name, f"{path}: none of its {len(lora)} keys fits this model ({len(result.mismatches)} shape mismatches, {len(result.unloaded)} keys not mapped; first: {'; '.join(first)}). Is the LoRA for another model, or another size of it?")
        return io.NodeOutput(result.model, loader_report(lora_name, path, lora, result.unloaded, result.mismatches))


def official_u1_keys(model, lora: dict) -> dict:
    """SenseNova-U1's official LoRA files (bare parameter names, e.g. the 8-step LoRA) as ComfyUI keys; other files unchanged."""
    from ..trainer_core.models.u1 import official_lora

    if not official_lora.is_official(lora):
        return lora
    from .u1.model import base_weights

    log.info("SenseNova-U1 official LoRA format: converting %d keys to ComfyUI's", len(lora))
    return official_lora.official_to_comfy(lora, base_weights(model))


def loader_report(lora_name: str, path: str, lora: dict, unloaded: list[str], mismatches: list[lora_patch.Mismatch]) -> str:
    """The Loader's report: keys loaded out of the file's, FlowLoRA settings, then every key not loaded.

    A shape mismatch counts every file tensor under its key (up, down, alpha) as not loaded.
    """
    mismatched = sum(1 for k in lora for m in mismatches if k.startswith(m.key + "."))
    lines = [f"{lora_name}: {len(lora) - len(unloaded) - mismatched} of {len(lora)} keys loaded"]
    if path.endswith(".safetensors"):
        config = read_metadata(path).get(METADATA_KEY)
        if config:
            try:
                lines.append("trained with FlowLoRA: " + LoraConfig.from_dict(json.loads(config)).describe())
            except (ValueError, TypeError) as e:
                lines.append(f"FlowLoRA metadata unreadable: {e}")
    if mismatches:
        lines.append(f"shape mismatches (not loaded): {len(mismatches)}")
        lines += [f"  {m}" for m in mismatches]
    lines.append("unmatched keys:" if unloaded else "unmatched keys: none")
    lines += [f"  {k}" for k in unloaded]
    return "\n".join(lines)


LORA_NODES: list[type[io.ComfyNode]] = [LoraConfigNode, LoraLoaderNode]
