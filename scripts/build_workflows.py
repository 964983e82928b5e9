"""Build the shipped workflows (``workflows/*.json``) from the readable specs below.

    .venv/bin/python scripts/build_workflows.py            # starts a ComfyUI to read /object_info
    .venv/bin/python scripts/build_workflows.py --url http://127.0.0.1:8188
    .venv/bin/python scripts/build_workflows.py --check    # fail if a JSON file is out of date

Each spec names node types, widget values by input name and links by output
name. Widget order, defaults, seed "control after generate" values, socket
lists and link ids come from the server's ``/object_info`` (the same source the
frontend uses), so the JSON is what ComfyUI's frontend would save (format 0.4).
The server this script starts has the pack and ``scripts/flowlora_tiny`` (the
demo's tiny text-encoder loader) installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from workflow_api import VIRTUAL, fetch_object_info, widget_layout  # noqa: E402

WORKFLOWS = REPO / "workflows"
FRONTEND_VERSION = "1.32.9"
NODE_WIDTH = 340
NOTE_TYPES = ("Note", "MarkdownNote")
INSTALLED_CHOICES = {
    ("FlowLoRAU1Loader", "checkpoint"), ("FlowLoRATinyTextEncoderLoader", "clip_name"), ("UNETLoader", "unet_name"),
    ("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"), ("LoraLoaderModelOnly", "lora_name"),
}
"""Choice lists made of what is installed on the machine that builds; any value is fine."""
GROUP_COLOURS = {"models": "#3f789e", "data": "#88a", "recipe": "#a1309b", "train": "#b06634", "samples": "#8a8", "plots": "#b58b2a", "notes": "#444"}


# ---------------------------------------------------------------- graph model


@dataclass(frozen=True)
class Out:
    """One output of a node: ``node["MODEL"]`` or ``node[0]``."""

    node: Node
    output: str | int


@dataclass(eq=False)
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    values: dict[str, Any]
    title: str | None = None
    mode: int = 0
    size: tuple[float, float] | None = None
    color: str | None = None

    def __getitem__(self, output: str | int) -> Out:
        return Out(self, output)


@dataclass
class Workflow:
    """A graph under construction; :meth:`build` turns it into frontend JSON."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    groups: list[tuple[str, list[Node], str]] = field(default_factory=list)

    def add(self, node_type: str, pos: tuple[float, float], *, node_title: str | None = None, mode: int = 0, size=None, color=None, **values) -> Node:
        """A node; ``values`` are widget values and links (``other["OUTPUT"]``) by input name."""
        node = Node(len(self.nodes) + 1, node_type, pos, values, node_title, mode, size, color)
        self.nodes.append(node)
        return node

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420, 300), title: str | None = None, markdown: bool = True) -> Node:
        return self.add("MarkdownNote" if markdown else "Note", pos, node_title=title, size=size, text=text.strip() + "\n")

    def group(self, title: str, nodes: list[Node], colour: str) -> None:
        self.groups.append((title, nodes, colour))

    def build(self, object_info: dict) -> dict:
        return _Builder(self, object_info).build()


class _Builder:
    def __init__(self, workflow: Workflow, object_info: dict):
        self.wf, self.info = workflow, object_info
        self.links: list[list] = []
        self.out_links: dict[tuple[int, int], list[int]] = {}
        self.sizes: dict[int, tuple[float, float]] = {}

    def build(self) -> dict:
        nodes = [self.node_json(n) for n in self.wf.nodes]
        order = self.order()
        for n in nodes:
            n["order"] = order[n["id"]]
            for slot, out in enumerate(n["outputs"]):
                out["links"] = self.out_links.get((n["id"], slot), [])
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowlora/workflows/{self.wf.name}")),
            "revision": 0,
            "last_node_id": max(n["id"] for n in nodes),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": [self.group_json(i + 1, *g) for i, g in enumerate(self.wf.groups)],
            "config": {},
            "extra": {"ds": {"scale": 0.55, "offset": [40, 40]}, "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }

    def node_json(self, node: Node) -> dict:
        base = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": None, "flags": {}, "order": 0, "mode": node.mode, "inputs": [], "outputs": [], "properties": {}}
        if node.title:
            base["title"] = node.title
        if node.color:
            base["color"], base["bgcolor"] = node.color
        if node.type in NOTE_TYPES:
            base["widgets_values"] = [node.values["text"]]
            base["size"] = list(node.size or (420, 300))
            self.sizes[node.id] = tuple(base["size"])
            return base
        if node.type not in self.info:
            raise KeyError(f"{self.wf.name}: node {node.id} {node.type!r} is not in /object_info (is the pack up to date?)")
        spec = self.info[node.type]
        layout = widget_layout(spec)
        widget_names = {w.name for w in layout if w.sent}
        sockets = self.sockets(spec, widget_names)
        unknown = set(node.values) - widget_names - {name for name, _ in sockets}
        if unknown:
            raise KeyError(f"{self.wf.name}: {node.type} has no input {sorted(unknown)}; widgets {sorted(widget_names)}, sockets {[s for s, _ in sockets]}")
        base["properties"] = {"Node name for S&R": node.type}
        for name, kind in sockets:
            base["inputs"].append({"name": name, "type": kind, "link": None})
        values = []
        for w in layout:
            if not w.sent:
                values.append("fixed" if w.name == "control_after_generate" else "image")
                continue
            value = node.values.get(w.name, self.default(spec, w.name))
            if isinstance(value, Out):
                raise TypeError(f"{self.wf.name}: {node.type}.{w.name} is a widget; linking widgets is not supported by this builder")
            self.check_combo(node, spec, w.name, value)
            values.append(value)
        base["widgets_values"] = values
        for slot, (name, kind) in enumerate(sockets):
            source = node.values.get(name)
            if source is None:
                continue
            if not isinstance(source, Out):
                raise TypeError(f"{self.wf.name}: {node.type}.{name} takes a link, got {source!r}")
            src_slot, src_type = self.output_slot(source)
            if src_type != kind and "*" not in (src_type, kind):
                raise TypeError(f"{self.wf.name}: {source.node.type} output {source.output!r} is {src_type}, {node.type}.{name} wants {kind}")
            link_id = len(self.links) + 1
            self.links.append([link_id, source.node.id, src_slot, node.id, slot, src_type])
            self.out_links.setdefault((source.node.id, src_slot), []).append(link_id)
            base["inputs"][slot]["link"] = link_id
        names = spec.get("output_name") or spec["output"]
        base["outputs"] = [{"name": names[i], "type": t, "links": [], "slot_index": i} for i, t in enumerate(spec["output"])]
        multiline = sum(1 for w in layout if w.sent and self.option(spec, w.name).get("multiline"))
        height = 34 + 22 * max(len(sockets), len(base["outputs"])) + 26 * len(layout) + 60 * multiline
        base["size"] = list(node.size or (NODE_WIDTH, height))
        self.sizes[node.id] = tuple(base["size"])
        return base

    @staticmethod
    def sockets(spec: dict, widget_names: set[str]) -> list[tuple[str, str]]:
        order = spec.get("input_order") or {s: list(spec["input"].get(s, {})) for s in ("required", "optional")}
        out = []
        for section in ("required", "optional"):
            for name in order.get(section, []):
                if name in widget_names:
                    continue
                kind = spec["input"][section][name][0]
                out.append((name, kind if isinstance(kind, str) else "COMBO"))
        return out

    def option(self, spec: dict, name: str) -> dict:
        for section in ("required", "optional"):
            entry = spec["input"].get(section, {}).get(name)
            if entry is not None:
                return entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
        return {}

    def combo_options(self, spec: dict, name: str) -> list | None:
        for section in ("required", "optional"):
            entry = spec["input"].get(section, {}).get(name)
            if entry is not None:
                if isinstance(entry[0], list):
                    return entry[0]
                if entry[0] == "COMBO":
                    return self.option(spec, name).get("options", [])
        return None

    def default(self, spec: dict, name: str) -> Any:
        options = self.option(spec, name)
        if "default" in options:
            return options["default"]
        combo = self.combo_options(spec, name)
        if combo:
            return combo[0]
        kind = next(spec["input"][s][name][0] for s in ("required", "optional") if name in spec["input"].get(s, {}))
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind if isinstance(kind, str) else "", "")

    def check_combo(self, node: Node, spec: dict, name: str, value: Any) -> None:
        """Fixed choice lists (no file names in them) must contain the value."""
        combo = self.combo_options(spec, name)
        if (node.type, name) in INSTALLED_CHOICES:
            return
        if combo and value not in combo and not any("." in str(o) for o in combo):
            raise ValueError(f"{self.wf.name}: {node.type}.{name} = {value!r} is not one of {combo}")

    def output_slot(self, out: Out) -> tuple[int, str]:
        if out.node.type in VIRTUAL:
            raise TypeError("links from notes, reroutes or primitives are not supported by this builder")
        spec = self.info[out.node.type]
        names = spec.get("output_name") or spec["output"]
        slot = out.output if isinstance(out.output, int) else (names.index(out.output) if out.output in names else spec["output"].index(out.output))
        return slot, spec["output"][slot]

    def order(self) -> dict[int, int]:
        deps = {n.id: {v.node.id for v in n.values.values() if isinstance(v, Out)} for n in self.wf.nodes}
        done: dict[int, int] = {}
        while len(done) < len(deps):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= set(done))
            if not ready:
                raise ValueError(f"{self.wf.name}: the graph has a cycle")
            for i in ready:
                done[i] = len(done)
        return done

    def group_json(self, group_id: int, title: str, members: list[Node], colour: str) -> dict:
        boxes = [(n.pos[0], n.pos[1], *self.sizes[n.id]) for n in members]
        x0 = min(b[0] for b in boxes) - 15
        y0 = min(b[1] for b in boxes) - 50
        x1 = max(b[0] + b[2] for b in boxes) + 15
        y1 = max(b[1] + b[3] for b in boxes) + 15
        return {"id": group_id, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": colour, "font_size": 24, "flags": {}}


# ---------------------------------------------------------------- shared pieces

ZIMAGE_FILES = {"unet": "z_image_turbo_bf16.safetensors", "clip": "qwen_3_4b.safetensors", "vae": "ae.safetensors"}
TRAINING_ADAPTER = "zimage_turbo_training_adapter.safetensors"
ACRF_DATASET = "flowlora/acrf_dataset"
U1_CHECKPOINT = "sensenova_u1/SenseNova-U1-8B-MoT"
U1_DATASET = "flowlora/u1_dataset"
U1_PROMPTS = (
    "a dense old-growth forest interior at dawn, god rays through the canopy, moss on the trunks",
    "a deep mountain lake at dawn, pine silhouettes on both shores, mirror-like reflections and mist",
    "a backlit dandelion field at golden hour, seeds drifting, a tree line in the distance",
)
"""Report section 5: samples 00, 02 and 07 of its fixed landscape prompt set."""
U1_SEED = 42
U1_UNFREEZE = "fm_modules.timestep_embedder.*\nfm_modules.noise_scale_embedder.*\nfm_modules.vision_model_mot_gen.*\nfm_modules.fm_head.*"
"""Report table 2: the fm_modules subtree is fine-tuned in full (about 82 M parameters on the 8B)."""
U1_RUNS = {
    # name: (label, primary loss, timesteps, p_text, p_both)
    "baseline": ("baseline (x0, uniform)", "x0_mse", "uniform", 0.0, 0.0),
    "a_velocity": ("(a) + velocity loss", "v_mse", "uniform", 0.0, 0.0),
    "b_logit_normal": ("(b) + logit-normal t", "x0_mse", "logit_normal", 0.0, 0.0),
    "c_dropout": ("(c) + cond. dropout", "x0_mse", "uniform", 0.1, 0.1),
    "d_all": ("(d) full official (a+b+c)", "v_mse", "logit_normal", 0.1, 0.1),
}
"""The report's table 1 (README: the SenseNova-U1 ablation recipes)."""

# Where the AC-RF report is ambiguous, the reference code decides (None9527/None_Z-image-Turbo_trainer @4d8378e, the
# commit whose docs/TECHNICAL_PAPER.md is the report v1.0; src/zimage_trainer/acrf_trainer.py):
# - jitter: section 2.2 writes U(-eta, eta), its appendix B and the code N(0, eta^2) (L131) -> gaussian;
# - FFT normalisation: the report does not say; the code's FFTs use norm='ortho' (L255-256) -> ortho;
# - cosine: one per sample over the flattened tensor (L202-204), as the pack's v_cosine;
# - Charbonnier eps: 1e-6 under the root (L195), as the pack's charbonnier_eps.
ACRF_RECIPE = dict(
    timesteps=dict(num_anchors=10, anchor_shift=3.0, jitter=0.02, jitter_kind="gaussian", clamp_min=0.001, clamp_max=0.999),
    loss=(
        ("FlowLoRALossCharbonnier", "Charbonnier on velocities", dict(space="velocity", weight=1.0, charbonnier_eps=1e-6, t_eps=0.001)),
        ("FlowLoRALossCosine", "+ 0.1 cosine", dict(weight=0.1)),
        ("FlowLoRALossFFT", "+ 0.1 FFT (ortho)", dict(space="velocity", weight=0.1, fft_norm="ortho")),
        ("FlowLoRALossMinSNR", "x Min-SNR, gamma 5", dict(snr_gamma=5.0)),
    ),
    lora=dict(preset="zimage_attn", rank=16, alpha=16.0),
    optimizer=dict(optimizer="adamw8bit", learning_rate=1e-4, schedule="cosine_with_restarts", num_cycles=1, min_lr_ratio=0.01, max_grad_norm=1.0, grad_accumulation=4),
)
"""Each loss entry: (node type, title, widgets), chained in order on the LOSS wire."""


def loss_chain(wf: Workflow, steps, x: float, y: float) -> list[Node]:
    """The loss nodes of ``steps`` ((type, title, widgets), ...) in a column, each fed by the one before."""
    nodes: list[Node] = []
    for node_type, title, values in steps:
        upstream = {"loss": nodes[-1]["loss"]} if nodes else {}
        nodes.append(wf.add(node_type, (x, y), node_title=title, **upstream, **values))
        y += 34 + 22 + 26 * len(values) + 40  # the node's height as _Builder sizes it (one socket row), and a gap
    return nodes


def acrf_recipe(wf: Workflow, x: float, y: float) -> dict[str, Node]:
    """Timesteps (and their histogram), loss chain, LoRA Config and Optimizer Config of the AC-RF report; ``loss`` is the chain's end."""
    r = ACRF_RECIPE
    chain = loss_chain(wf, r["loss"], x + 370, y)
    timesteps = wf.add("FlowLoRATimestepsAnchorCoupled", (x, y), node_title="AC-RF anchors: K 10, shift 3, jitter 0.02 (Gaussian)", **r["timesteps"])
    nodes = {
        "timesteps": timesteps,
        "histogram": (histogram := wf.add("FlowLoRATimestepHistogram", (x, y + 280), timesteps=timesteps["timesteps"], axis="sigma", batch_size=1, seq_len=4096, seed=0)),
        "histogram_image": wf.add("PreviewImage", (x, y + 500), size=(340, 260), node_title="timestep histogram", images=histogram["histogram"]),
        **{f"loss_{i}": node for i, node in enumerate(chain[:-1])},
        "loss": chain[-1],
        "lora": wf.add("FlowLoRALoraConfig", (x + 740, y + 480), node_title="LoRA r16 / a16 on to_q, to_k, to_v, to_out", **r["lora"]),
        "optimizer": wf.add("FlowLoRAOptimizerConfig", (x + 740, y), node_title="AdamW8bit 1e-4, cosine w/ restarts, accum 4", **r["optimizer"]),
    }
    wf.group("3. AC-RF recipe", list(nodes.values()), GROUP_COLOURS["recipe"])
    return nodes


def zimage_samples(wf: Workflow, model: Out, clip: Out, vae: Out, prompts: tuple[str, ...], x: float, y: float, label: str, size: int, seed: int,
                   latent_type: str = "EmptySD3LatentImage") -> tuple[Out, list[Node]]:
    """ModelSamplingAuraFlow(3) -> one KSampler (8 steps, cfg 1, euler/simple) per prompt -> a batch of images.

    ``latent_type``: EmptySD3LatentImage (Z-Image's 16-channel latents) or EmptyChromaRadianceLatentImage (pixel space).
    """
    shifted = wf.add("ModelSamplingAuraFlow", (x, y), node_title=f"{label}: shift 3", model=model, shift=3.0)
    latent = wf.add(latent_type, (x, y + 120), width=size, height=size, batch_size=1)
    members = [shifted, latent]
    images: Out | None = None
    for i, text in enumerate(prompts):
        positive = wf.add("CLIPTextEncode", (x + 370, y + i * 330), node_title=f"prompt {i + 1}", text=text, clip=clip)
        negative = wf.add("ConditioningZeroOut", (x + 370, y + i * 330 + 200), conditioning=positive["CONDITIONING"])
        sample = wf.add("KSampler", (x + 740, y + i * 330), node_title=f"{label}: prompt {i + 1}", model=shifted["MODEL"], positive=positive["CONDITIONING"], negative=negative["CONDITIONING"], latent_image=latent["LATENT"],
                        seed=seed, steps=8, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
        decoded = wf.add("VAEDecode", (x + 1100, y + i * 330), samples=sample["LATENT"], vae=vae)
        members += [positive, negative, sample, decoded]
        if images is None:
            images = decoded["IMAGE"]
        else:
            batch = wf.add("ImageBatch", (x + 1100, y + i * 330 + 90), image1=images, image2=decoded["IMAGE"])
            members.append(batch)
            images = batch["IMAGE"]
    return images, members


def zimage_preview(wf: Workflow, clip: Out, vae: Out, prompts: tuple[str, ...], x: float, y: float, size: int, drift_steps: int = 32) -> Node:
    """Training Preview of ``prompts`` as the Turbo is sampled (8 steps, cfg 1, euler/simple, seed 7), every 10% of the run,
    with few-step drift against ``drift_steps`` steps; one CLIPTextEncode per prompt, joined by Conditioning Combine."""
    conds = [wf.add("CLIPTextEncode", (x, y + i * 220), node_title=f"preview prompt {i + 1}", text=text, clip=clip) for i, text in enumerate(prompts)]
    joined = conds[0]["CONDITIONING"]
    for i, cond in enumerate(conds[1:], start=1):
        joined = wf.add("ConditioningCombine", (x + 370, y + i * 220), conditioning_1=joined, conditioning_2=cond["CONDITIONING"])["CONDITIONING"]
    return wf.add("FlowLoRATrainingPreview", (x + 370, y), node_title="Training Preview: every 10% of the run, 8 steps, drift vs 32",
                  positive=joined, vae=vae, sampler_name="euler", scheduler="simple", steps=8, cfg=1.0, seed=7, width=size, height=size,
                  every_n_steps=0, every_percent=10, drift_steps=drift_steps)


def previews_grid(wf: Workflow, trainer: Node, x: float, y: float) -> Node:
    """Shows the trainer's preview grid (rows: prompts, columns: steps); the PNGs themselves are saved beside the LoRA."""
    return wf.add("PreviewImage", (x, y), size=(420, 300), node_title="previews while training (rows: prompts, columns: steps)", images=trainer["previews"])


def before_after(wf: Workflow, base: Out, trained: Out, clip: Out, vae: Out, prompts: tuple[str, ...], size: int, column_labels: str, title: str, cell: int, prefix: str, group: str,
                 latent_type: str = "EmptySD3LatentImage") -> tuple[Out, Out]:
    """Z-Image samples of ``prompts`` from the base and the trained model, side by side in a labelled grid; returns both IMAGE batches."""
    before, b_nodes = zimage_samples(wf, base, clip, vae, prompts, 2400, 0, "before", size, 7, latent_type)
    after, a_nodes = zimage_samples(wf, trained, clip, vae, prompts, 2400, 330 * len(prompts) + 100, "after", size, 7, latent_type)
    grid = wf.add("FlowLoRAImageGrid", (3900, 0), images_1=before, images_2=after, column_labels=column_labels, row_labels="\n".join(prompts), title=title, cell_size=cell)
    side = 520 if cell > 256 else 420
    save = wf.add("SaveImage", (3900, 420), size=(side, side), images=grid["grid"], filename_prefix=f"{prefix}/before_after")
    wf.group(group, [*b_nodes, *a_nodes, grid, save], GROUP_COLOURS["samples"])
    return before, after


def plots(wf: Workflow, logs: list[Out], labels: list[str], x: float, y: float, prefix: str) -> list[Node]:
    """Training Plots over the logs -> the sheet and the report's five figures saved under output/<prefix>."""
    extra = {f"log_{i}": log for i, log in enumerate(logs[1:], start=2)}
    node = wf.add("FlowLoRATrainingPlots", (x, y), log=logs[0], window=121, labels="\n".join(labels), **extra)
    members = [node]
    for i, name in enumerate(("sheet", "x0_mse", "loss", "v_mse", "t_histogram", "routes")):
        members.append(wf.add("SaveImage", (x + 370 + (i % 3) * 330, y + (i // 3) * 330), size=(310, 300), images=node[name], filename_prefix=f"{prefix}/plots_{name}"))
    wf.group("Training plots (report figures 1-5)", members, GROUP_COLOURS["plots"])
    return members


# ---------------------------------------------------------------- AC-RF / Z-Image Turbo

ACRF_NOTE = f"""
## AC-RF LoRA for Z-Image Turbo

Rebuilds the AC-RF report's recipe (anchor-coupled timesteps, Charbonnier + cosine + FFT
loss with Min-SNR weighting) as a FlowLoRA graph. Queue it once: it encodes the
dataset, trains, saves the LoRA and samples the same prompts **before and after**.

**Model files** (ComfyUI's Z-Image Turbo release, Comfy-Org/z_image_turbo):

| file | folder |
|---|---|
| `{ZIMAGE_FILES['unet']}` | `models/diffusion_models/` |
| `{ZIMAGE_FILES['clip']}` (Load CLIP type **lumina2**) | `models/text_encoders/` |
| `{ZIMAGE_FILES['vae']}` | `models/vae/` |

**Dataset**: images with same-stem `.txt` captions in `ComfyUI/input/{ACRF_DATASET}/`
(or type an absolute path into the Dataset node). Buckets of about 1 MP, sides a
multiple of 16; encodings are cached, so re-queueing skips the encoders.

**Recipe** (report section 8.2): anchors = the 10 sigmas of the flow-match Euler
scheduler at shift 3, jitter 0.02; loss Charbonnier + 0.1 cosine + 0.1 FFT
(velocity), Min-SNR gamma 5; LoRA rank 16 / alpha 16 on to_q, to_k, to_v (row slices of
the fused qkv) and to_out; AdamW8bit lr 1e-4, cosine with restarts down to 1e-6,
gradient clipping 1.0, accumulation 4, batch 1, 10 epochs.

**Where the report is ambiguous, the reference code decides**
(None9527/None_Z-image-Turbo_trainer @4d8378e, `src/zimage_trainer/acrf_trainer.py`;
the other choice is one click away on the node, its tooltip says why):

- jitter: section 2.2 writes U(-eta, eta), its appendix B and the code N(0, eta^2)
  (L131): **gaussian** (`jitter_kind` uniform keeps every draw within eta);
- FFT normalisation: not stated; the code's FFTs use `norm='ortho'` (L255-256):
  **ortho** (`fft_norm` backward, torch's default, is 128x larger on a 128x128 latent);
- cosine: one per sample over the flattened velocity (L202-204), not per pixel;
- Charbonnier eps: 1e-6 under the root (L195); the code omits the constant -sqrt(eps).

Where the code differs from a clear statement of the report, the report is followed:
Min-SNR on every term with sigma clamped at 1e-6 (the code weights only the
Charbonnier term, sigma clamped to [0.01, 0.99], L185-196); FFT of the velocity's
complex spectrum (the code compares amplitudes of the x0 estimate, L212-266;
the Loss + FFT node's `space` x0 is one click away).

**Targets**: the report's attention-only LoRA. In the tiny-world ablation
(docs/ABLATION.md) the same recipe on every Linear (LoRA Config preset `all_linear`)
learned the style far better (style score 0.97 against 0.64) with about the same
content (53% against 55%) and less few-step drift, for 3x the training time: worth
trying when a style does not take.

**Output**: `models/loras/flowlora/acrf_zimage_turbo.safetensors` (+ `.log.jsonl`,
resumable state). Press Cancel to stop and save; queue again with `resume` on.

**Previews**: Turbo samples with 8 steps, cfg 1, shift 3 (ModelSamplingAuraFlow), the
negative zeroed out. The grid shows the base model (left) and the trained LoRA (right)
with the same seed.
"""

ADAPTER_NOTE = f"""
## Optional: de-distillation training adapter

Turbo is step-distilled; training on it directly slowly erodes the distillation. The
common remedy is a **training adapter** LoRA (a de-distillation LoRA for Z-Image Turbo)
applied **during training only**.

To use one: put it in `models/loras/` as `{TRAINING_ADAPTER}` (or pick yours),
select the **Load LoRA (training adapter)** node and press **Ctrl+B** to un-bypass it.
The trainer then trains on Turbo + adapter, while its `apply_to` input still gets the
plain Turbo model, so the output MODEL and the previews carry only your LoRA.
Bypassed (the default), the trainer trains on Turbo directly.
"""


ANCHORS_NOTE = """
## Anchors: the report's, or your sampler's

AC-RF trains "where you infer", but the report's anchors are diffusers' flow-match
Euler sigmas, and ComfyUI's schedulers place theirs differently (`simple`, 10 steps,
shift 3 ends ... 0.4286, 0.25 against the report's ... 0.278, 0.009).

**Bypassed (default)**: the report's anchors. **Ctrl+B on BasicScheduler**: the anchors
are exactly the sigmas it gives (without the final 0) for the model as you sample it
(ModelSamplingAuraFlow shift 3). Set its scheduler and steps to what you sample with
(the previews below use 8 steps). The timestep histogram names the anchors in use.
"""


def graph_anchors(wf: Workflow, model: Out, timesteps: Node, x: float, y: float) -> list[Node]:
    """BasicScheduler on the trained model (shift 3) -> the Anchor-Coupled node's anchor_sigmas, bypassed (mode 4)."""
    shifted = wf.add("ModelSamplingAuraFlow", (x, y), node_title="as sampled: shift 3", model=model, shift=3.0)
    scheduler = wf.add("BasicScheduler", (x, y + 130), node_title="your sampler's sigmas (Ctrl+B to use)", mode=4, model=shifted["MODEL"], scheduler="simple", steps=10, denoise=1.0)
    note = wf.note(ANCHORS_NOTE, (x, y + 300), (340, 380), title="Anchors: report or graph")
    timesteps.values["anchor_sigmas"] = scheduler["SIGMAS"]
    members = [shifted, scheduler, note]
    wf.group("Optional: anchors from your sampler", members, GROUP_COLOURS["recipe"])
    return members


def acrf_zimage_turbo() -> Workflow:
    wf = Workflow("acrf_zimage_turbo")
    wf.note(ACRF_NOTE, (-480, 0), (440, 760), title="Read me: AC-RF on Z-Image Turbo")
    unet = wf.add("UNETLoader", (0, 0), unet_name=ZIMAGE_FILES["unet"], weight_dtype="default")
    clip = wf.add("CLIPLoader", (0, 160), clip_name=ZIMAGE_FILES["clip"], type="lumina2", device="default")
    vae = wf.add("VAELoader", (0, 340), vae_name=ZIMAGE_FILES["vae"])
    adapter = wf.add("LoraLoaderModelOnly", (0, 480), node_title="Load LoRA (training adapter)", mode=4, model=unet["MODEL"], lora_name=TRAINING_ADAPTER, strength_model=1.0)
    adapter_note = wf.note(ADAPTER_NOTE, (0, 640), (340, 420), title="Optional training adapter")
    wf.group("1. Models", [unet, clip, vae, adapter, adapter_note], GROUP_COLOURS["models"])
    dataset = wf.add("FlowLoRADataset", (420, 0), folder=ACRF_DATASET, vae=vae["VAE"], clip=clip["CLIP"], trigger="", bucket_mode="auto", max_pixels=1024 * 1024, bucket_step=16, max_aspect=4.0, crop="center", seed=0)
    buckets = wf.add("PreviewImage", (420, 900), size=(340, 260), node_title="buckets", images=dataset["buckets"])
    wf.group("2. Dataset", [dataset, buckets], GROUP_COLOURS["data"])
    recipe = acrf_recipe(wf, 840, 0)
    graph_anchors(wf, unet["MODEL"], recipe["timesteps"], 840, 1140)
    prompts = ("a portrait photo of a woman with wavy hair by a harbour, pastel houses behind", "a red fox in fresh snow, soft morning light")
    preview = zimage_preview(wf, clip["CLIP"], vae["VAE"], prompts, 1210, 1140, 1024)
    wf.group("Previews while training", [preview], GROUP_COLOURS["samples"])
    trainer = wf.add(
        "FlowLoRALoraTrainer", (1980, 0), node_title="LoRA Trainer: batch 1, 10 epochs",
        model=adapter["MODEL"], apply_to=unet["MODEL"], dataset=dataset["dataset"],
        timesteps=recipe["timesteps"]["timesteps"], loss=recipe["loss"]["loss"], lora=recipe["lora"]["lora"], optimizer=recipe["optimizer"]["optimizer"],
        steps=500, epochs=10, batch_size=1, seed=0, training_dtype="bf16", gradient_checkpointing=True, save_every=0, output_name="flowlora/acrf_zimage_turbo", resume=False,
        preview=preview["preview"],
    )
    wf.group("4. Train", [trainer, previews_grid(wf, trainer, 1980, 1100)], GROUP_COLOURS["train"])
    before_after(wf, unet["MODEL"], trainer["model"], clip["CLIP"], vae["VAE"], prompts, 1024, "before\nafter (AC-RF LoRA)",
                 "AC-RF LoRA on Z-Image Turbo: 8 steps, cfg 1, shift 3", 512, "flowlora/acrf_zimage_turbo", "5. Before / after (Turbo sampling)")
    plots(wf, [trainer["log"]], ["AC-RF"], 1980, 1500, "flowlora/acrf_zimage_turbo")
    return wf


# ---------------------------------------------------------------- SenseNova-U1 ablation

U1_NOTE = f"""
## SenseNova-U1 ablation: {{run}}

One run of the U1 ablation report (tables 1 and 3): LoRA r 64 / alpha 64 on the
generation tower's attention and MLP (294 adapters on the 8B) plus the `fm_modules`
subtree trained in full, PagedAdamW8bit lr 5e-5, 6000 steps, batch 1, fixed seed.
As train_u1 (`train_u1/scripts/train_bf16_offload.py`, lines 639-646 and 745-756): AdamW
betas (0.9, 0.95) and no gradient clipping (`max_grad_norm` 0).

| run | loss | t | p_text, p_both |
|---|---|---|---|
| baseline | x0 | uniform (sigma in [0, 0.95]) | 0, 0 |
| (a) | velocity (t_eps 0.05) | uniform | 0, 0 |
| (b) | x0 | logit-normal mean -0.8, std 0.8 in t, clamp [0.05, 0.95] | 0, 0 |
| (c) | x0 | uniform | 0.1, 0.1 |
| (d) | velocity | logit-normal | 0.1, 0.1 |

**Model**: the official SenseNova-U1 checkpoint folder (config.json,
model.safetensors.index.json and the shards) in
`models/sensenova_u1/SenseNova-U1-8B-MoT/`. It runs in pixel space: the VAE is the
built-in `pixel_space`.

**Dataset**: images + `.txt` captions in `ComfyUI/input/{U1_DATASET}/`, U1's official
buckets (step 32), preprocessed as train_u1 does (`train_u1/data/u1_preprocess.py`
L121-126, `datasets.py` L155-159): every image stretched onto the nearest bucket, small
ones enlarged too (`allow_upscale` on), with Pillow's bicubic filter (`resize_filter`),
and images without a `.txt` skipped (`missing_caption` skip). Put your style trigger into the
Dataset's `trigger`. Text after a `---think---` line in a caption goes into the think
block (the report trains with the think sidecar).

**Sampling** (report section 3.4): 50-step Euler, cfg 4, shift 3 (set on the loader),
fixed prompts and seed. The loader's `t_eps` 0.02 is the official sampler's
(`modeling_neo_chat.py` `t2i_generate`); the training `t_eps` 0.05 is the Loss: MSE node's.
The sheet shows the base model and the trained LoRA.

**Output**: `models/loras/flowlora/u1_{{name}}.safetensors` with its log; plots of the
report's figures 1-5 in `output/flowlora/u1_{{name}}/`.
"""


def u1_recipe(wf: Workflow, name: str, x: float, y: float) -> dict[str, Node]:
    label, primary, sampler, _, _ = U1_RUNS[name]
    if sampler == "uniform":
        timesteps = wf.add("FlowLoRATimestepsUniform", (x, y), node_title=f"{label}: uniform t", sigma_min=0.0, sigma_max=0.95, clamp_min=0.0, clamp_max=1.0)
    else:
        timesteps = wf.add("FlowLoRATimestepsLogitNormal", (x, y), node_title=f"{label}: logit-normal t", mean=-0.8, std=0.8, space="t", clamp_min=0.05, clamp_max=0.95)
    space = {"x0_mse": "x0", "v_mse": "velocity"}[primary]
    return {
        "timesteps": timesteps,
        # training t_eps 0.05: train_u1 train_u1/constants.py L43 (T_EPS_DEFAULT), used by its v target (train_bf16_offload.py L736)
        "loss": wf.add("FlowLoRALossMSE", (x, y + 220), node_title=f"{label}: {primary}", space=space, weight=1.0, t_eps=0.05),
    }


def u1_shared(wf: Workflow, x: float, y: float) -> dict[str, Node]:
    # t_eps 0.02 for sampling, as the official t2i_generate (modeling_neo_chat.py L1578, L1583); training keeps
    # 0.05 through the Loss: MSE node's t_eps (u1_recipe), which is what the training losses divide by.
    loader = wf.add("FlowLoRAU1Loader", (x, y), checkpoint=U1_CHECKPOINT, shift=3.0, t_eps=0.02, weight_dtype="checkpoint")
    vae = wf.add("VAELoader", (x, y + 200), node_title="pixel_space VAE", vae_name="pixel_space")
    wf.group("1. SenseNova-U1", [loader, vae], GROUP_COLOURS["models"])
    # Preprocessing as train_u1 (Yidhar/sensenova-u1-lora-trainer @555d1c0): train_u1/data/u1_preprocess.py L121-126
    # resizes every image straight onto the nearest official bucket (stretch, small images enlarged too) with
    # Pillow's default filter (bicubic); train_u1/data/datasets.py L155-159 pairs only images that have a .txt.
    dataset = wf.add("FlowLoRADataset", (x, y + 380), folder=U1_DATASET, vae=vae["VAE"], u1_text_encoder=loader["text_encoder"], trigger="", template="{trigger}, {caption}\n---think---\n{think}",
                     missing_caption="skip", bucket_mode="sensenova_u1", bucket_step=32, allow_upscale=True, crop="stretch", resize_filter="bicubic", seed=0)
    lora = wf.add("FlowLoRALoraConfig", (x + 370, y), node_title="LoRA r64 / a64 + fm_modules in full", preset="u1_attn_mlp_no_head", rank=64, alpha=64.0, unfreeze=U1_UNFREEZE)
    # train_u1 (Yidhar/sensenova-u1-lora-trainer @555d1c0) train_u1/scripts/train_bf16_offload.py:639-646: PagedAdamW8bit
    # with betas (0.9, 0.95) and bnb's defaults otherwise (eps 1e-8, weight decay 0.01, as the node's); L745-756:
    # backward, then optimizer.step() with no gradient clipping in between.
    optimizer = wf.add("FlowLoRAOptimizerConfig", (x + 370, y + 520), node_title="PagedAdamW8bit 5e-5, betas (0.9, 0.95), no clipping", optimizer="paged_adamw8bit", learning_rate=5e-5,
                       beta1=0.9, beta2=0.95, schedule="constant", grad_accumulation=1, max_grad_norm=0.0)
    wf.group("2. Dataset and shared settings (table 3)", [dataset, lora, optimizer], GROUP_COLOURS["data"])
    return {"loader": loader, "vae": vae, "dataset": dataset, "lora": lora, "optimizer": optimizer}


def u1_trainer(wf: Workflow, shared: dict[str, Node], recipe: dict[str, Node], name: str, x: float, y: float, preview: Node, folder: str = "flowlora/u1_") -> Node:
    """One run's trainer; ``folder + name`` is its output name (the all-in-one graph uses its own, so running
    it after a single-run workflow never collides with that run's files)."""
    label, _, _, p_text, p_both = U1_RUNS[name]
    return wf.add(
        "FlowLoRALoraTrainer", (x, y), node_title=f"Train {label}",
        model=shared["loader"]["MODEL"], dataset=shared["dataset"]["dataset"], timesteps=recipe["timesteps"]["timesteps"], loss=recipe["loss"]["loss"],
        lora=shared["lora"]["lora"], optimizer=shared["optimizer"]["optimizer"],
        steps=6000, epochs=0, batch_size=1, seed=U1_SEED, p_text=p_text, p_both=p_both, training_dtype="bf16", gradient_checkpointing=True, save_every=500,
        output_name=f"{folder}{name}", resume=False, preview=preview["preview"],
    )


def u1_preview(wf: Workflow, shared: dict[str, Node], conds: list[Node], size: int, x: float, y: float) -> Node:
    """Training Preview of the fixed prompts as the report samples them (50-step Euler, cfg 4, seed 42), every 10% of the run."""
    joined = conds[0]["positive"]
    members = []
    for i, cond in enumerate(conds[1:], start=1):
        combine = wf.add("ConditioningCombine", (x, y + i * 120), conditioning_1=joined, conditioning_2=cond["positive"])
        members.append(combine)
        joined = combine["CONDITIONING"]
    preview = wf.add("FlowLoRATrainingPreview", (x, y + len(conds) * 120), node_title="Training Preview: every 10% of the run, 50 steps, cfg 4",
                     positive=joined, negative=conds[0]["negative"], vae=shared["vae"]["VAE"], sampler_name="euler", scheduler="simple", steps=50, cfg=4.0, seed=U1_SEED,
                     width=size, height=size, every_n_steps=0, every_percent=10, drift_steps=0)
    wf.group("Previews while training", [*members, preview], GROUP_COLOURS["samples"])
    return preview


def u1_samples(wf: Workflow, model: Out, shared: dict[str, Node], conds: list[Node], latent: Node, x: float, y: float, label: str) -> tuple[Out, list[Node]]:
    """One 50-step Euler, cfg 4 KSampler per fixed prompt, decoded with pixel_space, as one batch."""
    members: list[Node] = []
    images: Out | None = None
    for i, cond in enumerate(conds):
        sample = wf.add("KSampler", (x, y + i * 300), node_title=f"{label}: prompt {i + 1}", model=model, positive=cond["positive"], negative=cond["negative"], latent_image=latent["LATENT"],
                        seed=U1_SEED, steps=50, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
        decoded = wf.add("VAEDecode", (x + 360, y + i * 300), samples=sample["LATENT"], vae=shared["vae"]["VAE"])
        members += [sample, decoded]
        if images is None:
            images = decoded["IMAGE"]
        else:
            batch = wf.add("ImageBatch", (x + 360, y + i * 300 + 100), image1=images, image2=decoded["IMAGE"])
            members.append(batch)
            images = batch["IMAGE"]
    return images, members


def u1_prompts(wf: Workflow, shared: dict[str, Node], x: float, y: float) -> tuple[list[Node], Node]:
    conds = [wf.add("FlowLoRAU1PromptEncode", (x, y + i * 260), node_title=f"prompt {i + 1}", text_encoder=shared["loader"]["text_encoder"], prompt=text, think="") for i, text in enumerate(U1_PROMPTS)]
    latent = wf.add("EmptyChromaRadianceLatentImage", (x, y + len(U1_PROMPTS) * 260), node_title="1024 x 1024 pixels", width=1024, height=1024, batch_size=1)
    wf.group("Fixed prompts (report 5.1: samples 00, 02, 07)", [*conds, latent], GROUP_COLOURS["samples"])
    return conds, latent


def u1_run(name: str) -> Workflow:
    label = U1_RUNS[name][0]
    wf = Workflow(f"u1_{name}")
    wf.note(U1_NOTE.replace("{run}", label).replace("{name}", name), (-520, 0), (480, 820), title="Read me: SenseNova-U1 ablation run")
    shared = u1_shared(wf, 0, 0)
    recipe = u1_recipe(wf, name, 780, 0)
    wf.group(f"3. Run {label}", list(recipe.values()), GROUP_COLOURS["recipe"])
    conds, latent = u1_prompts(wf, shared, 1560, 0)
    preview = u1_preview(wf, shared, conds, 1024, 780, 1300)
    trainer = u1_trainer(wf, shared, recipe, name, 1160, 0, preview)
    wf.group("4. Train", [trainer, previews_grid(wf, trainer, 1160, 1300)], GROUP_COLOURS["train"])
    base, b_nodes = u1_samples(wf, shared["loader"]["MODEL"], shared, conds, latent, 1940, 0, "base")
    after, a_nodes = u1_samples(wf, trainer["model"], shared, conds, latent, 1940, 960, label)
    grid = wf.add("FlowLoRAImageGrid", (2700, 0), images_1=base, images_2=after, column_labels=f"base\n{label}", row_labels="\n".join(U1_PROMPTS), title=f"SenseNova-U1 {label}: 50-step Euler, cfg 4, shift 3, seed {U1_SEED}", cell_size=384)
    save = wf.add("SaveImage", (2700, 420), size=(520, 520), images=grid["grid"], filename_prefix=f"flowlora/u1_{name}/samples")
    wf.group("5. Samples", [*b_nodes, *a_nodes, grid, save], GROUP_COLOURS["samples"])
    plots(wf, [trainer["log"]], [label], 1160, 2000, f"flowlora/u1_{name}")
    return wf


ALL_NOTE = """
## SenseNova-U1 ablation: all five runs

Trains the five runs of the report's table 1 one after another on the same model,
dataset and shared settings (table 3), samples the same fixed prompts with the same
seed from the base model and every run (50-step Euler, cfg 4, shift 3), and builds

- the **comparison sheet** (rows: prompts; columns: base, baseline, (a), (b), (c), (d)),
  saved in `output/flowlora/u1_ablation/`, and
- the **training plots** with all five runs overlaid (report figures 1-5: x0-MSE,
  active loss and v-MSE with a 121-step moving average, the t histogram, dropout routes).

Each run's LoRA lands in `models/loras/flowlora/u1_ablation/<run>.safetensors` (its own names, so
the single-run workflows' files are never touched). On the 8B
model every run takes hours: use the single-run workflows to run them separately.
Model and dataset locations, optimizer (train_u1's AdamW betas (0.9, 0.95), no gradient
clipping) and preprocessing: as in the single-run workflows (see their notes).
"""


def u1_ablation_all() -> Workflow:
    wf = Workflow("u1_ablation_all")
    wf.note(ALL_NOTE, (-520, 0), (480, 600), title="Read me: the whole U1 ablation")
    shared = u1_shared(wf, 0, 0)
    conds, latent = u1_prompts(wf, shared, 0, 1300)
    preview = u1_preview(wf, shared, conds, 1024, 400 + 7 * 760, 0)
    trainers = {}
    for i, name in enumerate(U1_RUNS):
        recipe = u1_recipe(wf, name, 780 + i * 760, 0)
        trainer = u1_trainer(wf, shared, recipe, name, 1160 + i * 760, 0, preview, folder="flowlora/u1_ablation/")
        wf.group(f"Run {U1_RUNS[name][0]}", [*recipe.values(), trainer], GROUP_COLOURS["recipe"])
        trainers[name] = trainer
    columns, members = [], []
    base, nodes = u1_samples(wf, shared["loader"]["MODEL"], shared, conds, latent, 400, 1300, "base")
    columns.append(base)
    members += nodes
    for i, (name, trainer) in enumerate(trainers.items(), start=1):
        images, nodes = u1_samples(wf, trainer["model"], shared, conds, latent, 400 + i * 760, 1300, U1_RUNS[name][0])
        columns.append(images)
        members += nodes
    labels = ["base", *(U1_RUNS[n][0] for n in U1_RUNS)]
    grid = wf.add("FlowLoRAImageGrid", (400 + 6 * 760, 1300), images_1=columns[0], **{f"images_{i}": c for i, c in enumerate(columns[1:], start=2)},
                  column_labels="\n".join(labels), row_labels="\n".join(U1_PROMPTS), title=f"SenseNova-U1 ablation: 50-step Euler, cfg 4, shift 3, seed {U1_SEED}", cell_size=384)
    save = wf.add("SaveImage", (400 + 6 * 760, 1720), size=(620, 520), images=grid["grid"], filename_prefix="flowlora/u1_ablation/comparison_sheet")
    wf.group("Comparison sheet", [*members, grid, save], GROUP_COLOURS["samples"])
    plots(wf, [t["log"] for t in trainers.values()], [U1_RUNS[n][0] for n in trainers], 400, 2400, "flowlora/u1_ablation")
    return wf


# ---------------------------------------------------------------- tiny demo

DEMO_FILES = {"unet": "flowlora_demo_zimage.safetensors", "clip": "flowlora_demo_qwen3.safetensors", "vae": "flowlora_demo_ae.safetensors"}
DEMO_NOTE = """
## FlowLoRA demo (tiny random model)

`make demo` runs this graph on a **tiny Z-Image with random weights** that
`scripts/make_demo_model.py` writes (4.4 M parameters; text encoder 5 M). It shows the
whole machinery in a few minutes on a CPU: dataset encoding and caching, the AC-RF
recipe, training, the LoRA file with metadata, training plots and a before/after
sheet. The pictures are noise: the weights are random.

The stock **Load Diffusion Model** loads the tiny file once the demo-only package
`scripts/flowlora_tiny` is in `custom_nodes` (it registers the tiny width with
ComfyUI's model detection). The stock Load CLIP builds Qwen3-4B at its real size, so
the demo uses **Tiny Text Encoder Loader (FlowLoRA demo)** from the same package.
For real training use `acrf_zimage_turbo.json`.
"""


def demo_tiny() -> Workflow:
    wf = Workflow("demo_tiny")
    wf.note(DEMO_NOTE, (-480, 0), (440, 520), title="Read me: tiny demo")
    unet = wf.add("UNETLoader", (0, 0), unet_name=DEMO_FILES["unet"], weight_dtype="default")
    clip = wf.add("FlowLoRATinyTextEncoderLoader", (0, 160), clip_name=DEMO_FILES["clip"], type="lumina2")
    vae = wf.add("VAELoader", (0, 320), vae_name=DEMO_FILES["vae"])
    wf.group("1. Tiny models", [unet, clip, vae], GROUP_COLOURS["models"])
    dataset = wf.add("FlowLoRADataset", (420, 0), folder="flowlora_demo", vae=vae["VAE"], clip=clip["CLIP"], trigger="demo", bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, crop="center", seed=0)
    wf.group("2. Dataset", [dataset], GROUP_COLOURS["data"])
    recipe = acrf_recipe(wf, 840, 0)
    recipe["lora"].values.update(rank=8, alpha=8.0)
    recipe["lora"].title = "LoRA r8 / a8 on to_q, to_k, to_v, to_out"
    recipe["optimizer"].values.update(optimizer="adamw", learning_rate=1e-3, grad_accumulation=1)
    recipe["optimizer"].title = "AdamW 1e-3 (tiny model), cosine w/ restarts"
    trainer = wf.add(
        "FlowLoRALoraTrainer", (1980, 0), node_title="LoRA Trainer: 40 steps",
        model=unet["MODEL"], dataset=dataset["dataset"], timesteps=recipe["timesteps"]["timesteps"], loss=recipe["loss"]["loss"], lora=recipe["lora"]["lora"], optimizer=recipe["optimizer"]["optimizer"],
        steps=40, epochs=0, batch_size=1, seed=0, training_dtype="fp32", gradient_checkpointing=False, save_every=20, output_name="flowlora/demo_tiny", resume=False, overwrite=True,
    )
    wf.group("4. Train", [trainer], GROUP_COLOURS["train"])
    prompts = ("demo, a red circle on a cream background", "demo, a yellow star on a cream background")
    before_after(wf, unet["MODEL"], trainer["model"], clip["CLIP"], vae["VAE"], prompts, 64, "before\nafter",
                 "FlowLoRA demo (tiny random model)", 128, "flowlora/demo_tiny", "5. Before / after")
    plots(wf, [trainer["log"]], ["demo"], 1980, 1500, "flowlora/demo_tiny")
    return wf


# ---------------------------------------------------------------- tiny world: a style LoRA on the tiny Turbo

TINYWORLD = REPO / "scripts" / "tinyworld"
TINYWORLD_FILES = {"unet": "tinyworld_zimage_turbo.safetensors", "clip": "flowlora_demo_qwen3.safetensors"}
"""Names ``scripts/tinyworld/assets.py`` installs the committed tiny-world models under."""
TINYWORLD_STYLE = "mosaic"
TINYWORLD_PROMPT_COUNT = 8
TINYWORLD_STEPS = 600
"""Optimizer updates of the Turbo demo LoRA (batch 4): about a minute on 2 CPU cores."""
TINYWORLD_U1_STEPS = 300
"""Steps of the U1 demo LoRA (batch 1, the report's)."""
TINYWORLD_U1_STRENGTH = 0.6
"""LoRA strength of the U1 demo's trained model: chosen on validation prompts, held-out scenes 100-123
(``scripts/tinyworld/ablation.py curve u1_baseline --every 100 --strengths 0.5 0.6 0.7 0.8``), none of the demo's:
the largest strength there that lost under 5 points of content (2.9, style 0.69; at 0.7 and 0.8: 5.7 and 4.8)."""
TINYWORLD_LORA = dict(preset="all_linear", rank=8, alpha=8.0)
"""The Turbo demo's LoRA: every Linear layer, not AC-RF's attention-only targets (on the tiny model the attention-only
LoRA costs 15 points of content for the same style; docs/ABLATION.md)."""
TINYWORLD_LEARNING_RATE = 3e-4
TINYWORLD_LR_TEXT = f"{TINYWORLD_LEARNING_RATE:.0e}".replace("e-0", "e-")
"""How titles and notes write :data:`TINYWORLD_LEARNING_RATE`."""
TINYWORLD_STRENGTH = 0.7
"""LoRA strength of the Turbo demo's trained model: chosen on validation prompts, held-out scenes 100-147
(``scripts/tinyworld/ablation.py curve turbo_acrf_all_linear_lr3e-4 --strengths 0.6 0.7 0.8``), none of the demo's."""


def tinyworld_prompts(style: str = TINYWORLD_STYLE, count: int = TINYWORLD_PROMPT_COUNT) -> tuple[str, ...]:
    """The first held-out prompts of a style set (their scenes never occur in any training split)."""
    return tuple(json.loads((TINYWORLD / "style_sets" / style / "heldout_prompts.json").read_text(encoding="utf-8"))[:count])


def tinyworld_metrics(wf: Workflow, before: Out, after: Out, folder: str, prompts: tuple[str, ...], x: float, y: float) -> None:
    """Style Distance and Content Accuracy of the before and after samples, side by side (group "6. Metrics")."""
    metrics = [
        wf.add("FlowLoRAStyleDistance", (x, y), node_title="style before (score 0 by definition)", images=before, reference_folder=folder, baseline_images=before),
        wf.add("FlowLoRAStyleDistance", (x + 400, y), node_title="style after: score 0 = base look, 1 = style set", images=after, reference_folder=folder, baseline_images=before),
        wf.add("FlowLoRATinyContentAccuracy", (x + 800, y), node_title="content before", images=before, prompts="\n".join(prompts)),
        wf.add("FlowLoRATinyContentAccuracy", (x + 1200, y), node_title="content after", images=after, prompts="\n".join(prompts)),
    ]
    wf.group("6. Metrics", metrics, GROUP_COLOURS["plots"])


TINYWORLD_NOTE = f"""
## Tiny world: a mosaic-style LoRA on the tiny Z-Image Turbo

`make demo` runs this graph. Everything in it is real and small: a **Z-Image Turbo
pretrained here** on the tiny world (ComfyUI's own Z-Image classes, 4.3 M parameters,
64 x 64 RGB pixel space; `scripts/tinyworld/models/zimage_turbo.md`), its frozen tiny
Qwen3 text encoder, and the **mosaic style set** (48 captioned images: saturated tiles
with grout lines). The LoRA is always on (no trigger word): the tiny text encoder is
random and frozen, the base never read `mosaicstyle`, and a leading trigger costs it
most of its content accuracy before any training. With a real text encoder, set the
Dataset node's `trigger`.

1. **Train** a rank-8 LoRA with the AC-RF recipe (anchor-coupled timesteps, Charbonnier +
   cosine + FFT, Min-SNR), {TINYWORLD_STEPS} updates of batch 4, AdamW {TINYWORLD_LR_TEXT}, on every
   Linear layer (the report trains attention only; on this tiny model that costs far more
   content for the same style, docs/ABLATION.md).
2. **Sample** {TINYWORLD_PROMPT_COUNT} held-out prompts (scenes that never occur in any
   training set) with the Turbo's 8 steps, cfg 1, before and after, same seeds; after
   with the LoRA at strength {TINYWORLD_STRENGTH:g} (the trainer's `strength`, a LoRA loader's
   `strength_model`), chosen on other held-out prompts: at 1 the style is stronger and
   more content is lost.
3. **Measure** in the graph: *Style Distance* (palette and texture statistics against the
   mosaic set; style score 0 = the base model's look, 1 = the mosaic set's) and *Content
   Accuracy* (are the prompt's shapes, colours and positions still drawn?).

Needs the demo-only package `scripts/flowlora_tiny` in `custom_nodes` (it registers the
tiny pixel-space Z-Image with ComfyUI's model detection, loads the tiny text encoder and
provides Content Accuracy); `make demo` sets everything up.
"""


def tinyworld_zimage() -> Workflow:
    wf = Workflow("demo_tinyworld")
    wf.note(TINYWORLD_NOTE, (-480, 0), (440, 620), title="Read me: tiny-world style LoRA")
    unet = wf.add("UNETLoader", (0, 0), node_title="tiny Z-Image Turbo (tiny world)", unet_name=TINYWORLD_FILES["unet"], weight_dtype="default")
    clip = wf.add("FlowLoRATinyTextEncoderLoader", (0, 160), clip_name=TINYWORLD_FILES["clip"], type="lumina2")
    vae = wf.add("VAELoader", (0, 320), node_title="pixel_space (64 x 64 RGB)", vae_name="pixel_space")
    wf.group("1. Tiny-world models", [unet, clip, vae], GROUP_COLOURS["models"])
    folder = f"tinyworld_{TINYWORLD_STYLE}"
    # no trigger: see the note (style.json beside the images names the set's word for other encoders)
    dataset = wf.add("FlowLoRADataset", (420, 0), node_title=f"{TINYWORLD_STYLE} style set (input/{folder})", folder=folder, vae=vae["VAE"], clip=clip["CLIP"], trigger="",
                     bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, crop="center", seed=0)
    wf.group("2. Dataset", [dataset], GROUP_COLOURS["data"])
    recipe = acrf_recipe(wf, 840, 0)
    recipe["lora"].values.update(TINYWORLD_LORA)
    recipe["lora"].title = "LoRA r8 / a8 on every Linear"
    recipe["optimizer"].values.update(optimizer="adamw", learning_rate=TINYWORLD_LEARNING_RATE, grad_accumulation=1)
    recipe["optimizer"].title = f"AdamW {TINYWORLD_LR_TEXT} (tiny model), cosine w/ restarts"
    prompts = tinyworld_prompts()
    preview = zimage_preview(wf, clip["CLIP"], vae["VAE"], prompts[:4], 840, 1140, 64)
    wf.group("Previews while training", [preview], GROUP_COLOURS["samples"])
    trainer = wf.add(
        "FlowLoRALoraTrainer", (1980, 0), node_title=f"LoRA Trainer: {TINYWORLD_STEPS} updates, output at strength {TINYWORLD_STRENGTH:g}",
        model=unet["MODEL"], dataset=dataset["dataset"], timesteps=recipe["timesteps"]["timesteps"], loss=recipe["loss"]["loss"], lora=recipe["lora"]["lora"], optimizer=recipe["optimizer"]["optimizer"],
        steps=TINYWORLD_STEPS, epochs=0, batch_size=4, seed=0, training_dtype="fp32", gradient_checkpointing=False, save_every=100, output_name=f"flowlora/tinyworld_{TINYWORLD_STYLE}", resume=False, overwrite=True,
        strength=TINYWORLD_STRENGTH, preview=preview["preview"],
    )
    wf.group("4. Train", [trainer, previews_grid(wf, trainer, 1980, 1100)], GROUP_COLOURS["train"])
    before, after = before_after(wf, unet["MODEL"], trainer["model"], clip["CLIP"], vae["VAE"], prompts, 64, "before\nafter",
                                 f"Tiny-world Turbo, {TINYWORLD_STYLE} LoRA: 8 steps, cfg 1, seed 7 (held-out prompts)", 128, f"flowlora/tinyworld_{TINYWORLD_STYLE}", "5. Before / after", "EmptyChromaRadianceLatentImage")
    y = 330 * len(prompts) * 2 + 300
    tinyworld_metrics(wf, before, after, folder, prompts, 2400, y)
    plots(wf, [trainer["log"]], [f"{TINYWORLD_STYLE} LoRA"], 1980, 1500, f"flowlora/tinyworld_{TINYWORLD_STYLE}")
    return wf


TINYWORLD_U1_NOTE = f"""
## Tiny world: a {TINYWORLD_STYLE}-style LoRA on the tiny SenseNova-U1

`make demo-u1` runs this graph: the same study as `demo_tinyworld.json` on the **tiny
SenseNova-U1 pretrained here** (the pack's own U1 classes with the official key names
and sharded layout, 8-pixel tokens on 64 x 64 RGB; `scripts/tinyworld/models/u1/README.md`),
with the U1 report's release recipe: x0 loss, uniform t, no condition dropout,
AdamW betas (0.9, 0.95) without clipping (train_u1's), rank 8 plus fm_modules in full.
{TINYWORLD_U1_STEPS} steps of batch 1, then {TINYWORLD_PROMPT_COUNT} held-out prompts
sampled before and after (50 Euler steps, cfg 4, shift 3, same seeds; after with the
LoRA at strength {TINYWORLD_U1_STRENGTH:g}, chosen on other held-out prompts as the Turbo
demo's) and measured by Style Distance and Content Accuracy.
"""


def tinyworld_u1() -> Workflow:
    from tinyworld import assets

    wf = Workflow("demo_tinyworld_u1")
    wf.note(TINYWORLD_U1_NOTE, (-520, 0), (480, 520), title="Read me: tiny-world U1 style LoRA")
    loader = wf.add("FlowLoRAU1Loader", (0, 0), node_title="tiny SenseNova-U1 (tiny world)", checkpoint=assets.U1_CHECKPOINT, shift=3.0, t_eps=0.02, weight_dtype="float32")
    vae = wf.add("VAELoader", (0, 200), node_title="pixel_space VAE", vae_name="pixel_space")
    wf.group("1. Tiny-world SenseNova-U1", [loader, vae], GROUP_COLOURS["models"])
    folder = f"tinyworld_{TINYWORLD_STYLE}"
    dataset = wf.add("FlowLoRADataset", (420, 0), node_title=f"{TINYWORLD_STYLE} style set (input/{folder})", folder=folder, vae=vae["VAE"], u1_text_encoder=loader["text_encoder"], trigger="",
                     missing_caption="skip", bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, crop="center", resize_filter="bicubic", seed=0)
    lora = wf.add("FlowLoRALoraConfig", (420, 420), node_title="LoRA r8 / a8 + fm_modules in full", preset="u1_attn_mlp_no_head", rank=8, alpha=8.0, unfreeze=U1_UNFREEZE)
    optimizer = wf.add("FlowLoRAOptimizerConfig", (420, 760), node_title="AdamW 1e-3 (tiny model), betas (0.9, 0.95), no clipping", optimizer="adamw", learning_rate=1e-3,
                       beta1=0.9, beta2=0.95, schedule="constant", grad_accumulation=1, max_grad_norm=0.0)
    wf.group("2. Dataset and shared settings", [dataset, lora, optimizer], GROUP_COLOURS["data"])
    recipe = u1_recipe(wf, "baseline", 840, 0)
    wf.group("3. The report's release recipe (baseline)", list(recipe.values()), GROUP_COLOURS["recipe"])
    shared = {"loader": loader, "vae": vae}
    prompts = tinyworld_prompts()
    conds = [wf.add("FlowLoRAU1PromptEncode", (1660, i * 260), node_title=f"prompt {i + 1}", text_encoder=loader["text_encoder"], prompt=text, think="") for i, text in enumerate(prompts)]
    preview = u1_preview(wf, shared, conds[:4], 64, 840, 1300)
    trainer = wf.add(
        "FlowLoRALoraTrainer", (1260, 0), node_title=f"LoRA Trainer: {TINYWORLD_U1_STEPS} steps, output at strength {TINYWORLD_U1_STRENGTH:g}",
        model=loader["MODEL"], dataset=dataset["dataset"], timesteps=recipe["timesteps"]["timesteps"], loss=recipe["loss"]["loss"], lora=lora["lora"], optimizer=optimizer["optimizer"],
        steps=TINYWORLD_U1_STEPS, epochs=0, batch_size=1, seed=0, p_text=0.0, p_both=0.0, training_dtype="fp32", gradient_checkpointing=False, save_every=100,
        output_name=f"flowlora/tinyworld_u1_{TINYWORLD_STYLE}", resume=False, overwrite=True, strength=TINYWORLD_U1_STRENGTH, preview=preview["preview"],
    )
    wf.group("4. Train", [trainer, previews_grid(wf, trainer, 1260, 1100)], GROUP_COLOURS["train"])
    latent = wf.add("EmptyChromaRadianceLatentImage", (1660, len(prompts) * 260), node_title="64 x 64 pixels", width=64, height=64, batch_size=1)
    before, b_nodes = u1_samples(wf, loader["MODEL"], shared, conds, latent, 2040, 0, "before")
    after, a_nodes = u1_samples(wf, trainer["model"], shared, conds, latent, 2040, 300 * len(prompts) + 100, "after")
    grid = wf.add("FlowLoRAImageGrid", (2800, 0), images_1=before, images_2=after, column_labels="before\nafter", row_labels="\n".join(prompts),
                  title=f"Tiny-world SenseNova-U1, {TINYWORLD_STYLE} LoRA: 50 steps, cfg 4, seed {U1_SEED} (held-out prompts)", cell_size=128)
    save = wf.add("SaveImage", (2800, 420), size=(420, 420), images=grid["grid"], filename_prefix=f"flowlora/tinyworld_u1_{TINYWORLD_STYLE}/before_after")
    wf.group("5. Before / after", [*conds, latent, *b_nodes, *a_nodes, grid, save], GROUP_COLOURS["samples"])
    y = 300 * len(prompts) * 2 + 300
    tinyworld_metrics(wf, before, after, folder, prompts, 2040, y)
    plots(wf, [trainer["log"]], [f"{TINYWORLD_STYLE} LoRA (U1)"], 1260, 1500, f"flowlora/tinyworld_u1_{TINYWORLD_STYLE}")
    return wf


SPECS = {
    "acrf_zimage_turbo": acrf_zimage_turbo,
    **{f"u1_{name}": (lambda n=name: u1_run(n)) for name in U1_RUNS},
    "u1_ablation_all": u1_ablation_all,
    "demo_tiny": demo_tiny,
    "demo_tinyworld": tinyworld_zimage,
    "demo_tinyworld_u1": tinyworld_u1,
}


# ---------------------------------------------------------------- entry point


def object_info_from_server() -> dict:
    """Start a ComfyUI with the pack and the demo package, read /object_info, stop it."""
    sys.path.insert(0, str(REPO / "tests"))
    import harness

    with tempfile.TemporaryDirectory(prefix="flowlora-build-") as tmp:
        base = Path(tmp)
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / "flowlora_tiny").symlink_to(REPO / "scripts" / "flowlora_tiny", target_is_directory=True)
        with harness.comfy_server(base) as server:
            return server.get("/object_info", timeout=120)


def build_all(object_info: dict) -> dict[str, dict]:
    return {name: make().build(object_info) for name, make in SPECS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write workflows/*.json from the specs in this file.")
    parser.add_argument("--url", help="read /object_info from this running ComfyUI instead of starting one")
    parser.add_argument("--object-info", type=Path, help="read a saved /object_info JSON")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    args = parser.parse_args(argv)
    if args.object_info:
        info = json.loads(args.object_info.read_text())
    else:
        info = fetch_object_info(args.url) if args.url else object_info_from_server()
    stale = []
    for name, workflow in build_all(info).items():
        path = WORKFLOWS / f"{name}.json"
        text = json.dumps(workflow, indent=1, ensure_ascii=False) + "\n"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)} ({len(workflow['nodes'])} nodes, {len(workflow['links'])} links)")
    if stale:
        raise SystemExit(f"out of date: {', '.join(stale)}; run scripts/build_workflows.py")


if __name__ == "__main__":
    main()
