"""Other trainers' configs as workflows: train_u1's YAML and the AC-RF trainer's TOML.

Facts from the public sources (read, not copied): train_u1 = ``Yidhar/sensenova-u1-lora-trainer``
@555d1c0 (``train_u1/config.py``: sections data, style, lora, unfreeze, train, runtime; its
``configs/default.yaml`` and ``configs/official_alignment.yaml``; presets in
``train_u1/model/lora.py`` are r64 / alpha 64); AC-RF = ``None9527/None_Z-image-Turbo_trainer``
(``config/acrf_config.toml``: sections model, acrf, lora, training, optimization, advanced, dataset).

Each import starts from a shipped workflow that already holds the recipe's graph (for
train_u1 the U1 ablation run with the same loss and timestep distribution; for AC-RF
``acrf_zimage_turbo.json``) and sets widget values from the config. Every setting is
accounted for: set on a widget (``changed`` when it differs from the template), equal to
the template already, or listed in ``unmapped`` with the reason (no equivalent, or
approximated); the list is also written into the workflow as a note. A key the source
trainer does not know is listed too, never dropped in silence.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .graph import converter
from .host import REPO

WORKFLOWS = REPO / "workflows"
U1_TEMPLATES = {("x0", "uniform"): "u1_baseline", ("v", "uniform"): "u1_a_velocity", ("x0", "logit_normal"): "u1_b_logit_normal", ("v", "logit_normal"): "u1_d_all"}
U1_PRESETS = {"default": "u1_default", "attn_mlp_no_head": "u1_attn_mlp_no_head", "attn_only": "u1_attn_only", "attn_only_no_head": "u1_attn_only"}
U1_PRESET_RANK = 64  # every non-MoE train_u1 preset is r64a64 (train_u1/model/lora.py LORA_PRESETS)
U1_KEYS = {
    "run_name": None,
    "data": {"data_dir", "cap_max_pixels", "snap_bucket", "n_samples", "sample_buckets_file", "use_think_labels"},
    "style": {"trigger", "prompt_template"},
    "lora": {"preset", "spec", "dropout"},
    "unfreeze": None,
    "train": {"steps", "lr", "seed", "shuffle", "grad_accum", "checkpoint_every", "checkpoint_dir", "loss_type", "huber_delta", "t_dist", "t_logit_mean", "t_logit_std", "cond_dropout_text", "cond_dropout_both"},
    "runtime": {"keep_kvs_on_gpu", "gc_skip_last", "device", "cpu_device", "upstream_lora_path", "upstream_lora_skip"},
}
IMPORTED = " (edited by import)"
U1_OFFICIAL_MAX_PIXELS = 4_194_304  # the official buckets' cap (2048 x 2048), what bucket_mode sensenova_u1 uses


class ImportError_(ValueError):
    """A config the importer cannot read or map; the message names the file and key."""


@dataclass
class Imported:
    workflow: dict
    changed: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    template: str = ""

    def report(self) -> str:
        lines = [f"template: workflows/{self.template}.json", "changed from the template:"]
        lines += [f"  {c}" for c in self.changed] or ["  (nothing)"]
        lines += ["not imported (no equivalent in the pack, or approximated):"]
        lines += [f"  {u}" for u in self.unmapped] or ["  (nothing)"]
        return "\n".join(lines)


class _Template:
    """A shipped UI-format workflow whose widgets are set by input name (layout from /object_info)."""

    def __init__(self, name: str, object_info: dict, source: str):
        self.name, self.info, self.source = name, object_info, source
        path = WORKFLOWS / f"{name}.json"
        self.workflow = json.loads(path.read_text(encoding="utf-8"))
        self.changed: list[str] = []
        self.layout = converter().widget_layout

    def node(self, node_type: str) -> dict:
        found = [n for n in self.workflow["nodes"] if n["type"] == node_type and n.get("mode", 0) == 0]
        if len(found) != 1:
            raise ImportError_(f"workflows/{self.name}.json has {len(found)} active {node_type} nodes; the importer expects one (is the template up to date?)")
        return found[0]

    def get(self, node_type: str, widget: str) -> Any:
        node = self.node(node_type)
        return node["widgets_values"][self._index(node, widget)]

    def set(self, node_type: str, widget: str, value: Any, key: str) -> None:
        node = self.node(node_type)
        i = self._index(node, widget)
        old = node["widgets_values"][i]
        if old != value:
            node["widgets_values"][i] = value
            title = node.get("title") or node_type
            self.changed.append(f"{title.removesuffix(IMPORTED)} [{node['id']}].{widget}: {old!r} -> {value!r} ({key})")
            if "title" in node and not title.endswith(IMPORTED):
                node["title"] = title + IMPORTED  # the template's title may describe the old values

    def _index(self, node: dict, widget: str) -> int:
        names = [w.name for w in self.layout(self.info[node["type"]])]
        if widget not in names:
            raise ImportError_(f"{node['type']} has no widget {widget!r} (widgets: {', '.join(names)})")
        return names.index(widget)

    def finish(self, unmapped: list[str], title: str) -> Imported:
        wf = self.workflow
        wf["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowlora/import/{self.source}"))
        text = f"## Imported from `{self.source}`\n\n{title}\n\nChanged from the template `workflows/{self.name}.json`:\n\n" + (
            "\n".join(f"- {c}" for c in self.changed) or "- nothing") + "\n\nNot imported (no equivalent, or approximated):\n\n" + ("\n".join(f"- {u}" for u in unmapped) or "- nothing") + "\n"
        note_id = max(n["id"] for n in wf["nodes"]) + 1
        wf["nodes"].append({"id": note_id, "type": "MarkdownNote", "pos": [-520, -700], "size": [520, 640], "flags": {}, "order": len(wf["nodes"]), "mode": 0,
                            "inputs": [], "outputs": [], "properties": {}, "title": "Imported settings", "widgets_values": [text]})
        wf["last_node_id"] = max(wf.get("last_node_id", 0), note_id)
        return Imported(wf, list(self.changed), unmapped, self.name)


def _glob_or_regex(pattern: str) -> str:
    """A train_u1 unfreeze regex (matched from the start of the name) as the LoRA Config's pattern:
    a literal prefix ``^a\\.b\\.`` becomes the glob ``a.b.*``, anything else ``re:`` + the regex + ``.*``."""
    literal = re.fullmatch(r"\^((?:[A-Za-z0-9_]|\\\.)+)", pattern)
    if literal:
        return literal.group(1).replace("\\.", ".") + "*"
    return "re:" + pattern.removeprefix("^") + ".*"


def _unknown(config: dict, schema: dict, unmapped: list[str]) -> None:
    for key, value in config.items():
        if key not in schema:
            unmapped.append(f"{key}: not a train_u1 setting (train_u1 ignores unknown keys too)")
        elif isinstance(schema[key], set):
            if not isinstance(value, dict):
                raise ImportError_(f"{key}: must be a mapping of {', '.join(sorted(schema[key]))}")
            unmapped += [f"{key}.{k}: not a train_u1 setting (train_u1 ignores unknown keys too)" for k in value if k not in schema[key]]


def import_train_u1(config: dict, object_info: dict, source: str) -> Imported:
    """A train_u1 YAML config (parsed) as a workflow built on the U1 ablation run with the same loss and t sampler."""
    if not isinstance(config, dict):
        raise ImportError_(f"{source}: not a train_u1 config (a YAML mapping with data, lora, train, ... sections)")
    unmapped: list[str] = []
    _unknown(config, U1_KEYS, unmapped)
    data, style, lora, train, runtime = (config.get(k) or {} for k in ("data", "style", "lora", "train", "runtime"))
    loss_type = train.get("loss_type", "x0")
    t_dist = train.get("t_dist", "uniform")
    space = {"x0": "x0", "v": "v", "x0_huber": "x0", "v_huber": "v"}.get(loss_type)
    if space is None or t_dist not in ("uniform", "logit_normal"):
        raise ImportError_(f"{source}: train.loss_type {loss_type!r} / train.t_dist {t_dist!r}: train_u1 knows x0, v, x0_huber, v_huber and uniform, logit_normal")
    t = _Template(U1_TEMPLATES[(space, t_dist)], object_info, source)
    if loss_type.endswith("_huber"):
        unmapped.append(f"train.loss_type = {loss_type!r} (huber_delta {train.get('huber_delta', 1.0)}): the template's Loss: MSE is kept; replace it with a Loss: Huber node ({space} space) by hand")
    elif "huber_delta" in train:
        unmapped.append(f"train.huber_delta = {train['huber_delta']!r}: unused with loss_type {loss_type!r} (as in train_u1)")
    if t_dist == "logit_normal":
        t.set("FlowLoRATimestepsLogitNormal", "mean", float(train.get("t_logit_mean", -0.8)), "train.t_logit_mean")
        t.set("FlowLoRATimestepsLogitNormal", "std", float(train.get("t_logit_std", 0.8)), "train.t_logit_std")
        t.set("FlowLoRATimestepsLogitNormal", "space", "t", "train.t_dist (train_u1's t: 1 = clean)")
    else:
        unmapped += [f"train.{k} = {train[k]!r}: unused with t_dist uniform (as in train_u1)" for k in ("t_logit_mean", "t_logit_std") if k in train]

    trainer, dataset, lora_node, optimizer = "FlowLoRALoraTrainer", "FlowLoRADataset", "FlowLoRALoraConfig", "FlowLoRAOptimizerConfig"
    t.set(trainer, "output_name", f"flowlora/{config.get('run_name', 'my_run')}", "run_name")
    t.set(trainer, "steps", int(train.get("steps", 6000)), "train.steps")
    t.set(trainer, "seed", int(train.get("seed", 0)), "train.seed")
    t.set(trainer, "save_every", int(train.get("checkpoint_every", 600)), "train.checkpoint_every")
    t.set(trainer, "p_text", float(train.get("cond_dropout_text", 0.0)), "train.cond_dropout_text")
    t.set(trainer, "p_both", float(train.get("cond_dropout_both", 0.0)), "train.cond_dropout_both")
    t.set(optimizer, "learning_rate", float(train.get("lr", 5e-5)), "train.lr")
    t.set(optimizer, "grad_accumulation", int(train.get("grad_accum", 1)), "train.grad_accum")
    if not train.get("shuffle", True):
        unmapped.append("train.shuffle = False: the pack always shuffles (seeded by the trainer's seed)")
    if train.get("checkpoint_dir"):
        unmapped.append(f"train.checkpoint_dir = {train['checkpoint_dir']!r}: saves go beside the LoRA (<output_name>/steps/)")

    t.set(dataset, "folder", str(data.get("data_dir", "dataset/my_style")), "data.data_dir (absolute, or under ComfyUI's input/)")
    t.set(dataset, "trigger", str(style.get("trigger", "")), "style.trigger")
    template = t.get(dataset, "template")
    if data.get("use_think_labels", False):
        if "{think}" not in template:
            t.set(dataset, "template", template + "\n---think---\n{think}", "data.use_think_labels")
    else:
        t.set(dataset, "template", template.split("\n---think---")[0], "data.use_think_labels = False")
    if not data.get("snap_bucket", True):
        unmapped.append("data.snap_bucket = False: the U1 workflows always snap to the official buckets (bucket_mode sensenova_u1)")
    if int(data.get("cap_max_pixels", U1_OFFICIAL_MAX_PIXELS)) != U1_OFFICIAL_MAX_PIXELS:
        unmapped.append(f"data.cap_max_pixels = {data['cap_max_pixels']}: the official buckets are fixed (about 4 MP); choose bucket_mode auto with max_pixels for other sizes")
    for k in ("n_samples", "sample_buckets_file"):
        if data.get(k) is not None:
            unmapped.append(f"data.{k} = {data[k]!r}: no equivalent (put the images you want in the folder)")
    if style.get("prompt_template", "official") != "official":
        unmapped.append(f"style.prompt_template = {style['prompt_template']!r}: the U1 text encoder always uses the official templates")

    if lora.get("spec"):
        unmapped.append(f"lora.spec = {lora['spec']!r}: per-target ranks have no equivalent; the preset's targets are kept")
    preset = lora.get("preset", "attn_mlp_no_head")
    if preset not in U1_PRESETS:
        unmapped.append(f"lora.preset = {preset!r}: no pack preset; the template's {t.get(lora_node, 'preset')!r} is kept")
    else:
        t.set(lora_node, "preset", U1_PRESETS[preset], "lora.preset")
        t.set(lora_node, "rank", U1_PRESET_RANK, "lora.preset (r64)")
        t.set(lora_node, "alpha", float(U1_PRESET_RANK), "lora.preset (alpha 64)")
    t.set(lora_node, "dropout", float(lora.get("dropout", 0.0)), "lora.dropout")
    if "unfreeze" in config:
        patterns = config["unfreeze"] or []
        if not isinstance(patterns, list):
            raise ImportError_(f"{source}: unfreeze must be a list of regex patterns")
        t.set(lora_node, "unfreeze", "\n".join(_glob_or_regex(str(p)) for p in patterns), "unfreeze")

    reasons = {"keep_kvs_on_gpu": "ComfyUI's model management places tensors", "gc_skip_last": "gradient_checkpointing checkpoints every block",
               "device": "ComfyUI chooses the device (--cpu, CUDA_VISIBLE_DEVICES)", "cpu_device": "ComfyUI's offloading",
               "upstream_lora_path": "apply it with a LoRA loader node before the trainer", "upstream_lora_skip": "apply it with a LoRA loader node before the trainer"}
    unmapped += [f"runtime.{k} = {v!r}: {reasons[k]}" for k, v in runtime.items() if k in reasons]
    return t.finish(unmapped, "A train_u1 (Yidhar/sensenova-u1-lora-trainer) YAML config on the matching SenseNova-U1 ablation workflow.")


ACRF_OPTIMIZERS = {"adamw": "adamw", "adamw8bit": "adamw8bit", "adafactor": "adafactor", "pagedadamw8bit": "paged_adamw8bit"}
ACRF_SCHEDULES = {"constant": "constant", "linear": "linear", "cosine": "cosine", "cosine_with_restarts": "cosine_with_restarts", "constant_with_warmup": "constant"}


def import_acrf(config: dict, object_info: dict, source: str) -> Imported:
    """The AC-RF trainer's TOML config (parsed) as a workflow on ``acrf_zimage_turbo.json``."""
    if not isinstance(config, dict) or not ({"acrf", "training", "lora"} & set(config)):
        raise ImportError_(f"{source}: not an AC-RF trainer config (TOML with [acrf], [lora], [training] sections)")
    t = _Template("acrf_zimage_turbo", object_info, source)
    unmapped: list[str] = []
    used: set[str] = set()

    def take(section: str, key: str, default=None):
        used.add(f"{section}.{key}")
        return (config.get(section) or {}).get(key, default)

    anchors, trainer, lora_node, optimizer = "FlowLoRATimestepsAnchorCoupled", "FlowLoRALoraTrainer", "FlowLoRALoraConfig", "FlowLoRAOptimizerConfig"
    t.set(anchors, "num_anchors", int(take("acrf", "turbo_steps", 10)), "acrf.turbo_steps")
    t.set(anchors, "anchor_shift", float(take("acrf", "shift", 3.0)), "acrf.shift")
    t.set(anchors, "jitter", float(take("acrf", "jitter_scale", 0.02)), "acrf.jitter_scale")
    if take("acrf", "use_dynamic_shift", False):
        keys = ("base_seq_len", "max_seq_len", "base_shift", "max_shift")
        unmapped.append("acrf.use_dynamic_shift = true (" + ", ".join(f"{k} {take('acrf', k)}" for k in keys) + "): resolution-dependent anchor shift has no equivalent; the static acrf.shift is used")
    else:
        for k in ("base_seq_len", "max_seq_len", "base_shift", "max_shift"):
            take("acrf", k)
    t.set(trainer, "p_text", float(take("acrf", "drop_text_ratio", 0.0)), "acrf.drop_text_ratio")
    t.set(lora_node, "rank", int(take("lora", "network_dim", 16)), "lora.network_dim")
    t.set(lora_node, "alpha", float(take("lora", "network_alpha", 16)), "lora.network_alpha")
    opt = str(take("training", "optimizer_type", "AdamW8bit"))
    if opt.lower() in ACRF_OPTIMIZERS:
        t.set(optimizer, "optimizer", ACRF_OPTIMIZERS[opt.lower()], "training.optimizer_type")
    else:
        unmapped.append(f"training.optimizer_type = {opt!r}: no equivalent; the template's optimizer is kept")
    t.set(optimizer, "learning_rate", float(take("training", "learning_rate", 1e-4)), "training.learning_rate")
    t.set(optimizer, "weight_decay", float(take("training", "weight_decay", 0.01)), "training.weight_decay")
    schedule = str(take("training", "lr_scheduler", "constant"))
    if schedule in ACRF_SCHEDULES:
        t.set(optimizer, "schedule", ACRF_SCHEDULES[schedule], "training.lr_scheduler")
    else:
        unmapped.append(f"training.lr_scheduler = {schedule!r}: no equivalent schedule; the template's is kept")
    t.set(optimizer, "warmup_steps", int(take("training", "lr_warmup_steps", 0)), "training.lr_warmup_steps")
    t.set(optimizer, "num_cycles", int(take("training", "lr_num_cycles", 1)), "training.lr_num_cycles")
    t.set(optimizer, "grad_accumulation", int(take("training", "gradient_accumulation_steps", 1)), "training.gradient_accumulation_steps")
    t.set(optimizer, "max_grad_norm", float(take("advanced", "max_grad_norm", 1.0)), "advanced.max_grad_norm")
    t.set("FlowLoRALossCharbonnier", "weight", float(take("training", "lambda_l1", 1.0)), "training.lambda_l1 (the Charbonnier term)")
    t.set("FlowLoRALossCosine", "weight", float(take("training", "lambda_cosine", 0.1)), "training.lambda_cosine")
    if take("training", "enable_freq", False):
        t.set("FlowLoRALossFFT", "weight", float(take("training", "lambda_freq", 0.1)), "training.lambda_freq")
        unmapped.append(f"training.alpha_hf = {take('training', 'alpha_hf')!r}, beta_lf = {take('training', 'beta_lf')!r}: the high/low-frequency split has no equivalent; the FFT term weighs all frequencies alike")
    else:
        t.set("FlowLoRALossFFT", "weight", 0.0, "training.enable_freq = false")
        for k in ("lambda_freq", "alpha_hf", "beta_lf"):
            take("training", k)
    t.set("FlowLoRALossMinSNR", "snr_gamma", float(take("training", "snr_gamma", 5.0)), "training.snr_gamma")
    t.set(trainer, "epochs", int(take("training", "num_train_epochs", 10)), "training.num_train_epochs")
    t.set(trainer, "seed", int(take("training", "seed", 0)), "training.seed")
    t.set(trainer, "gradient_checkpointing", bool(take("advanced", "gradient_checkpointing", True)), "advanced.gradient_checkpointing")
    precision = str(take("advanced", "mixed_precision", "bf16"))
    t.set(trainer, "training_dtype", "bf16" if precision == "bf16" else "fp32", "advanced.mixed_precision")
    if precision not in ("bf16", "no", "fp32"):
        unmapped.append(f"advanced.mixed_precision = {precision!r}: no fp16 with a loss scaler; training_dtype set to fp32")
    t.set(trainer, "batch_size", int(take("dataset", "batch_size", 1)), "dataset.batch_size")
    epochs_per_save = take("training", "save_every_n_epochs")
    if epochs_per_save:
        unmapped.append(f"training.save_every_n_epochs = {epochs_per_save}: save_every counts updates, not epochs (updates per epoch = images x repeats / (batch x accumulation)); set it by hand")
    output_dir = take("model", "output_dir")
    if output_dir:
        t.set(trainer, "output_name", "flowlora/" + Path(str(output_dir)).name, "model.output_dir (its last folder)")
    dit = take("model", "dit")
    if dit:
        unmapped.append(f"model.dit = {dit!r}: load the model with the Load Diffusion Model node (models/diffusion_models); the template's file name is kept")
    sources = (config.get("dataset") or {}).get("sources") or []
    used.add("dataset.sources")
    for i, src in enumerate(sources):
        unmapped.append(f"dataset.sources[{i}] = {json.dumps(src)}: latent caches of the AC-RF trainer are not images; point the Dataset's folder at the images "
                        "(repeats: name the folder N_name; resolution_limit: the Dataset's max_pixels)")
    for section, values in config.items():
        if not isinstance(values, dict):
            unmapped.append(f"{section} = {values!r}: not an AC-RF setting")
            continue
        for key, value in values.items():
            if f"{section}.{key}" not in used:
                unmapped.append(f"{section}.{key} = {value!r}: no equivalent in the pack")
    return t.finish(unmapped, "An AC-RF trainer (None9527/None_Z-image-Turbo_trainer) TOML config on the AC-RF workflow.")


def import_config(path: str | Path, object_info: dict) -> Imported:
    """Read ``path`` (train_u1 ``.yaml``/``.yml``, AC-RF ``.toml``) and import it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ImportError_(f"{path}: cannot read it ({e})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ImportError_(f"{path}: not valid YAML ({e})") from None
        return import_train_u1(copy.deepcopy(config), object_info, path.name)
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ImportError_(f"{path}: reading TOML needs Python 3.11 or later") from None
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ImportError_(f"{path}: not valid TOML ({e})") from None
        return import_acrf(config, object_info, path.name)
    raise ImportError_(f"{path}: give a train_u1 YAML (.yaml) or an AC-RF trainer TOML (.toml) config")
