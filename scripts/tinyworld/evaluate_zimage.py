"""Content accuracy of a tiny-world Z-Image on held-out prompts, sampled by ComfyUI's own code.

    .venv/bin/python scripts/tinyworld/evaluate_zimage.py scripts/tinyworld/models/zimage_turbo.safetensors --steps 8 --cfg 1
    .venv/bin/python scripts/tinyworld/evaluate_zimage.py scripts/tinyworld/models/zimage_base.safetensors --steps 50 --cfg 3

The model loads through the stock UNETLoader (the demo package registers the
tiny pixel-space Z-Image with ComfyUI's detection), prompts are encoded by the
stock CLIPTextEncode on the tiny text encoder, and images come from
``nodes.common_ksampler`` (what the KSampler node runs: euler, "simple"
schedule, the model's shift 3) and the stock VAEDecode with the
``pixel_space`` VAE. Prompts of one caption token length share a batch (one
conditioning row per image). Prints (and with ``--json`` writes) the content
accuracy over shape, colour and position, per attribute too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import pretrain_zimage as pz  # noqa: E402

tw = pz.tw


def heldout_prompts(count: int, start: int = 0) -> list[str]:
    """Captions of ``tinyworld.scene(i, "heldout")`` for i in [start, start + count): never seen in training."""
    return [tw.caption(tw.scene(i, "heldout")) for i in range(start, start + count)]


def load_unet(path: Path, weight_dtype: str = "default"):
    """ModelPatcher from the stock UNETLoader node, with ``path``'s folder added to ``diffusion_models``."""
    import folder_paths

    import nodes

    folder_paths.add_model_folder_path("diffusion_models", str(Path(path).resolve().parent))
    return nodes.UNETLoader().load_unet(Path(path).name, weight_dtype)[0]


def encode(clip, prompts: list[str]) -> list:
    """Stock CLIPTextEncode per prompt: one CONDITIONING (``[[cond (1, T, 32), extras]]``) each."""
    import nodes

    return [nodes.CLIPTextEncode().encode(clip, p)[0] for p in prompts]


def batch_conditioning(conds: list) -> list:
    """One CONDITIONING whose cond rows are the given one-prompt conds (all of one token length): row i goes with latent i.

    The all-ones attention mask is left out: ComfyUI ignores a full mask, but
    would count a batched one's sum as the token count.
    """
    import torch

    return [[torch.cat([c[0][0] for c in conds]), {"pooled_output": None}]]


def sample(model, positive, negative, count: int, steps: int, cfg: float, seed: int, sampler: str = "euler", scheduler: str = "simple"):
    """``common_ksampler`` (the KSampler node's body) on an empty 64 x 64 pixel latent, decoded by the pixel_space VAE: IMAGE ``(B, 64, 64, 3)``."""
    import comfy.sd
    import torch

    import nodes

    latent = {"samples": torch.zeros(count, 3, pz.IMAGE, pz.IMAGE)}
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative, latent, denoise=1.0)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    return nodes.VAEDecode().decode(vae, out)[0]


def generate(model, clip, prompts: list[str], steps: int, cfg: float, seed: int = 0, max_batch: int = 50, sampler: str = "euler", scheduler: str = "simple"):
    """IMAGE ``(N, 64, 64, 3)`` for ``prompts`` (in their order), batched by caption token length (KSampler ``sampler`` / ``scheduler``)."""
    import torch

    conds = encode(clip, prompts)
    negative = encode(clip, [""])[0]
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(conds):
        groups.setdefault(int(c[0][0].shape[1]), []).append(i)
    images = [None] * len(prompts)
    for n, (_, members) in enumerate(sorted(groups.items())):
        for k in range(0, len(members), max_batch):
            chunk = members[k:k + max_batch]
            out = sample(model, batch_conditioning([conds[i] for i in chunk]), negative, len(chunk), steps, cfg, seed + 1000 * n + k, sampler, scheduler)
            for i, image in zip(chunk, out, strict=True):
                images[i] = image
    return torch.stack(images)


def score(images, prompts: list[str]) -> dict:
    scenes = [tw.parse_caption(p) for p in prompts]
    scores = tw.score_images(images, scenes)
    return {"accuracy": tw.accuracy(scores), **{f"{k}_accuracy": v for k, v in tw.content.attribute_accuracy(scores).items()},
            "shape_confusion": tw.content.confusion(scores), "by_object_count": tw.content.by_object_count(scores),
            "by_size": tw.content.by_size(scores)}


def sheet(images, path: Path, columns: int = 8, scale: int = 2) -> Path:
    """A grid PNG of the first images (``scale`` x nearest-neighbour)."""
    import numpy as np
    from PIL import Image

    images = (images.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    rows = (len(images) + columns - 1) // columns
    side = pz.IMAGE * scale + 2
    grid = Image.new("RGB", (columns * side, rows * side), "white")
    for i, im in enumerate(images):
        grid.paste(Image.fromarray(im).resize((pz.IMAGE * scale,) * 2, Image.NEAREST), ((i % columns) * side + 1, (i // columns) * side + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def evaluate(model_path: Path, prompts: int = 200, steps: int = 8, cfg: float = 1.0, seed: int = 0, clip=None, model=None,
             sampler: str = "euler", scheduler: str = "simple", first: int = 0) -> dict:
    """Content accuracy of ``model_path`` on held-out prompts ``first .. first + prompts - 1``: dict with accuracy, per attribute, seconds.

    The cards report prompts 0-199; sampling settings are compared on others
    (``first`` 1000) so that a reported figure is not the one a setting was picked on.
    """
    pz.import_comfy()
    model = model or load_unet(model_path)
    clip = clip or pz.load_text_encoder()
    texts = heldout_prompts(prompts, first)
    t0 = time.monotonic()
    images = generate(model, clip, texts, steps, cfg, seed, sampler=sampler, scheduler=scheduler)
    result = {"model": Path(model_path).name, "prompts": prompts, "steps": steps, "cfg": cfg, "seed": seed, "sampler": sampler, "scheduler": scheduler,
              **({"first_prompt": first} if first else {}), **score(images, texts), "seconds": round(time.monotonic() - t0, 1)}
    return result, images


CARD_RUNS = {
    "base": [(50, 3.0), (8, 3.0), (8, 1.0)],
    "turbo": [(8, 1.0), (4, 1.0)],
}
"""(steps, cfg) the model card reports for each kind."""

BASE_STAGES = (
    {"steps": (0, 2662), "law": "logit-normal(0, 1) at shift 3", "lr": "constant 8e-4", "note": "55 min on a CPU shared with other jobs",
     "command": "nice .venv/bin/python scripts/tinyworld/pretrain_zimage.py --max-steps 2662 --minutes 600"},
    {"steps": (2662, 8068), "law": "logit-normal(0, 1) at shift 3", "lr": "8e-4 falling linearly towards 0.1 x at step 9,500, stopped by its 40-minute budget at 8,068",
     "note": "fresh AdamW and EMA",
     "command": "nice .venv/bin/python scripts/tinyworld/pretrain_zimage.py --init scripts/tinyworld/models/zimage_base.safetensors "
                "--run .cache/tinyworld/zimage_base2 --max-steps 9500 --decay-to 0.1 --stop-at 8068 --minutes 600"},
    {"steps": (8068, 11500), "law": "uniform, unshifted", "lr": "4e-4 falling linearly to 0.1 x at step 11,500",
     "note": "fresh AdamW and EMA; 1 thread beside another 1-thread job on the 2 cores",
     "command": "nice .venv/bin/python scripts/tinyworld/pretrain_zimage.py --init scripts/tinyworld/models/zimage_base.safetensors "
                "--run .cache/tinyworld/zimage_base3 --sigma-law uniform --train-shift 1 --lr 4e-4 --max-steps 11500 --decay-to 0.1 --minutes 600"},
)
"""How the committed base was made: three runs, each continuing the previous one's export (``--init``); why stage 3
changed the sigma law: ``pretrain_zimage.py``'s docstring. The first two exports predate the metadata that ``--init``
now writes, so the history lives here."""

REPRODUCE = {
    "base": "\n".join(stage["command"] for stage in BASE_STAGES),
    "turbo": "nice .venv/bin/python scripts/tinyworld/distill_turbo.py --max-steps 1400 --minutes 600   # reads models/zimage_base.safetensors",
}
"""How each committed model was made (the base in three stages: each continued the previous export)."""

TARGET = 0.85
"""Issue 12's content-accuracy target for the base models."""

BUDGET_MINUTES = 45
"""Issue 12's pretraining budget for one base model on 2 CPU cores."""


def model_card(model_path: Path, results: list[dict]) -> str:
    """Markdown card from the weights' metadata and measured ``results`` (:func:`evaluate` dicts)."""
    from safetensors import safe_open

    with safe_open(str(model_path), "pt") as f:
        meta = json.loads(f.metadata()["flowlora_tinyworld"])
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    kind = meta["kind"]
    name = Path(model_path).stem
    cfg = meta["config"]
    rows = "\n".join(
        f"| {r['steps']} | {r['cfg']:g} | {100 * r['accuracy']:.1f}% | {100 * r['shape_accuracy']:.1f}% | {100 * r['colour_accuracy']:.1f}% | {100 * r['position_accuracy']:.1f}% | "
        f"`.venv/bin/python scripts/tinyworld/evaluate_zimage.py scripts/tinyworld/models/{name}.safetensors --steps {r['steps']} --cfg {r['cfg']:g}{_prompts_flag(r['prompts'])}` |"
        for r in results
    )
    title = "Tiny Z-Image base (tiny world)" if kind == "base" else "Tiny Z-Image Turbo (tiny world)"
    status = ""
    if results[0]["accuracy"] < TARGET:
        status = (f"\n**Status: below target.** Content accuracy {100 * results[0]['accuracy']:.1f}% on {results[0]['prompts']} held-out prompts "
                  f"({results[0]['steps']} steps), against the {100 * TARGET:.0f}% issue 12 asks of the base models;\n"
                  "the per-attribute table below shows where it fails.\n")
    budget = ""
    if kind == "base" and meta["train_seconds"] > BUDGET_MINUTES * 60:
        budget = (f"\n**Over budget.** {meta['train_seconds'] / 60:.0f} minutes of training in all, against the {BUDGET_MINUTES} minutes issue 12 allows "
                  "a base model; a one-stage recipe that fits has not been found yet (stages below).\n")
    stages = ""
    if kind == "base":
        stages = "".join(f"- Stage {k + 1}, steps {st['steps'][0]:,} to {st['steps'][1]:,}: sigma {st['law']}, lr {st['lr']} ({st['note']}).\n"
                         for k, st in enumerate(BASE_STAGES))
    return f"""# {title}

Demo model, not for real use: ComfyUI's own Z-Image (`NextDiT`) at toy size,
trained from scratch on the tiny world (`scripts/tinyworld`) on CPU.
{status}{budget}
## Architecture
- ComfyUI `comfy.supported_models.ZImage` subclass `TinyPixelZImage`
  (`scripts/flowlora_tiny`), registered with ComfyUI's detection at width
  {cfg['dim']}: loads with the stock **Load Diffusion Model** (UNETLoader).
- Width {cfg['dim']}, {cfg['n_heads']} heads x {cfg['dim'] // cfg['n_heads']}, rotary axes {cfg['axes_dims']},
  {cfg['n_layers']} layers + {cfg['n_refiner_layers']} noise refiner + {cfg['n_refiner_layers']} context refiner,
  FFN hidden 256, caption width {cfg['cap_feat_dim']}; {params / 1e6:.2f} M parameters, stored fp16
  ({Path(model_path).stat().st_size / 1e6:.1f} MB).
- Pixel space: 64 x 64 RGB in [-1, 1] (ComfyUI's `pixel_space` VAE convention,
  latent format `ChromaRadiance`), patch {cfg['patch_size']}: 64 image tokens,
  captions padded to 32 tokens by the model. Sample with
  **EmptyChromaRadianceLatentImage** 64 x 64, **KSampler**, **VAELoader**
  `pixel_space` + **VAEDecode**. Shift 3 (Z-Image's), flow (CONST) sampling.
- Text encoder: the tiny Qwen3 (width 32, 3 layers, random and frozen, seed
  {pz.TEXT_ENCODER_SEED}) that `scripts/make_demo_model.py` writes as
  `flowlora_demo_qwen3.safetensors`; load it with **Tiny Text Encoder Loader
  (FlowLoRA demo)**, encode with **CLIPTextEncode**.

## Training
- {meta['objective']}{' (the last stage; each stage is listed below)' if kind == 'base' else ''}.
- Data: `tinyworld.scene(i, "train")` for i = 0, 1, 2, ... (rendered on the fly,
  plain style, grammar captions); held-out contents never appear.
- Steps {meta['step']}, batch {meta['batch']}, seed {meta['seed']}, AdamW, EMA weights exported;
  wall time {meta['train_seconds'] / 60:.1f} min of training on a 2-core CPU.
{stages}- Reproduce:

```sh
{REPRODUCE[kind]}
```

![loss]({name}_loss.png)

## Content accuracy
{results[0]['prompts']} held-out prompts (`tinyworld.scene(i, "heldout")`, i < {results[0]['prompts']}), euler, simple
schedule, shift 3, seed 0; shape, colour and position of every object
(`tinyworld.content`, analytic).

| steps | cfg | accuracy | shape | colour | position | command |
|---|---|---|---|---|---|---|
{rows}
{_confusion_section(results[0])}"""


def _confusion_section(result: dict) -> str:
    """The card's shape confusion of one measured setting (absent in results measured before it existed)."""
    if "shape_confusion" not in result:
        return ""
    return f"""
How the shapes of the first row ({result['steps']} steps, cfg {result['cfg']:g}) are read. {tw.content.CONFUSION_NOTE}

{tw.content.confusion_markdown(result['shape_confusion'])}
{_table_sections(result)}"""


TABLE_SECTIONS = (
    ("by_object_count", tw.content.BINDING_NOTE, tw.content.by_object_count_markdown),
    ("by_size", tw.content.SIZE_NOTE, tw.content.by_size_markdown),
)
"""The card's attribute tables under the shape confusion: (metrics key, note printed above it, Markdown writer)."""


def _table_sections(result: dict) -> str:
    """The card's :data:`TABLE_SECTIONS` of one measured setting, each with its note (those absent in older results skipped)."""
    return "".join(f"""
{note}

{markdown(result[key])}
""" for key, note, markdown in TABLE_SECTIONS if key in result)


def write_card(model_path: Path, prompts: int = 200, seed: int = 0) -> Path:
    """Evaluate the card's settings and write ``<model>.md``, ``<model>_metrics.json``, ``<model>_samples.png``."""
    from safetensors import safe_open

    with safe_open(str(model_path), "pt") as f:
        kind = json.loads(f.metadata()["flowlora_tinyworld"])["kind"]
    pz.import_comfy()
    model, clip = load_unet(model_path), pz.load_text_encoder()
    results = []
    model_path = Path(model_path)
    for steps, cfg in CARD_RUNS[kind]:
        result, images = evaluate(model_path, prompts, steps, cfg, seed, clip=clip, model=model)
        print(json.dumps(result))
        results.append(result)
        if len(results) == 1:
            sheet(images[:32], model_path.with_name(model_path.stem + "_samples.png"))
    model_path.with_name(model_path.stem + "_metrics.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    card = model_path.with_suffix(".md")
    card.write_text(model_card(model_path, results), encoding="utf-8")
    return card


def _prompts_flag(prompts: int) -> str:
    return "" if prompts == 200 else f" --prompts {prompts}"


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a tiny-world Z-Image .safetensors (diffusion model weights)")
    parser.add_argument("--prompts", type=int, default=200, help="held-out prompts (the first N of the held-out split)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument("--sheet", type=Path, help="PNG grid of the first 32 samples")
    parser.add_argument("--card", action="store_true", help="measure the card's settings (base: 50/8 steps; turbo: 8/4) and write <model>.md, <model>_metrics.json and <model>_samples.png beside the model")
    args = parser.parse_args(argv)
    if args.card:
        write_card(args.model, args.prompts, args.seed)
        return
    result, images = evaluate(args.model, args.prompts, args.steps, args.cfg, args.seed)
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.sheet:
        sheet(images[:32], args.sheet)


if __name__ == "__main__":
    main()
