"""Content accuracy of the tiny-world SenseNova-U1 on held-out prompts, sampled by ComfyUI's own code.

    .venv/bin/python scripts/tinyworld/evaluate_u1.py scripts/tinyworld/models/u1 --prompts 200 --steps 50 --cfg 4
    COMFYUI_PATH=$PWD/.comfyui/ComfyUI-0.33 .venv-0.33/bin/python scripts/tinyworld/evaluate_u1.py scripts/tinyworld/models/u1

In-process ComfyUI (CPU): the checkpoint folder loads through the pack's U1
loader (``load_u1_model`` / ``load_u1_text_encoder``, what the 'SenseNova-U1
Loader' node runs), prompts through the 'SenseNova-U1 Prompt Encode' node
(official conditional prefix; its negative is the official unconditional
prefix), images from ``nodes.common_ksampler`` (the KSampler node: euler,
"simple" schedule = U1's exact t grid, shift 3) and the stock VAEDecode with
the ``pixel_space`` VAE. Prompts whose prefixes have one token length share a
batch (one conditioning row per image). Prints (and with ``--json`` writes)
content accuracy over shape, colour and position, per attribute too;
``--grid`` writes a sheet of the first images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "scripts", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import harness  # noqa: E402  (registers the pack as ``flowlora``; finds ComfyUI: COMFYUI_PATH or .comfyui/ComfyUI)

harness.register_package()

from tinyworld import world  # noqa: E402
from tinyworld.content import accuracy, attribute_accuracy, by_object_count, by_size, confusion, score_images  # noqa: E402

DEFAULT_MODEL = REPO / "scripts" / "tinyworld" / "models" / "u1"


def heldout_scenes(count: int, start: int = 0) -> list[world.Scene]:
    """``world.scene(i, "heldout")`` for i in [start, start + count): content never seen in training."""
    return [world.scene(i, "heldout") for i in range(start, start + count)]


def load(folder: Path, shift: float = 3.0, t_eps: float = 0.05, weight_dtype: str = "checkpoint"):
    """``(MODEL patcher, U1TextEncoder)`` through the pack's U1 loader, ComfyUI imported in CPU mode."""
    harness.import_comfy()
    from flowlora.nodes.u1 import model as u1m

    return u1m.load_u1_model(str(folder), shift, t_eps, weight_dtype), u1m.load_u1_text_encoder(str(folder), weight_dtype)


def sample(patcher, encoder, prompts: list[str], steps: int = 50, cfg: float = 4.0, seed: int = 0, max_batch: int = 64,
           sampler: str = "euler", scheduler: str = "simple"):
    """float IMAGE ``(B, 64, 64, 3)`` in [0, 1], one per prompt, in order (KSampler ``sampler`` / ``scheduler``).

    Prompts are grouped by prefix length; each group runs as KSampler batches
    of at most ``max_batch`` with seed ``seed + index of the group's first prompt``.
    """
    import comfy.sd
    import torch
    from flowlora.nodes.u1.nodes import U1PromptEncode

    import nodes

    encoded = [U1PromptEncode.execute(encoder, p).result for p in prompts]
    negative = encoded[0][1]
    groups: dict[int, list[int]] = {}
    for i, (pos, _, _) in enumerate(encoded):
        groups.setdefault(pos[0][0].shape[1], []).append(i)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    out = torch.zeros(len(prompts), 64, 64, 3)
    for rows in groups.values():
        for k in range(0, len(rows), max_batch):
            chunk = rows[k : k + max_batch]
            cond = torch.cat([encoded[i][0][0][0] for i in chunk], dim=0)
            positive = [[cond, {"u1_prefix_length": cond.shape[1]}]]
            latent = {"samples": torch.zeros(len(chunk), 3, 64, 64)}
            (samples,) = nodes.common_ksampler(patcher, seed + chunk[0], steps, cfg, sampler, scheduler, positive, negative, latent)
            (images,) = nodes.VAEDecode().decode(vae, samples)
            out[chunk] = images.float().cpu()
    return out


def evaluate(folder: Path, count: int = 200, steps: int = 50, cfg: float = 4.0, seed: int = 0, weight_dtype: str = "checkpoint",
             sampler: str = "euler", scheduler: str = "simple", shift: float = 3.0, first: int = 0) -> tuple[dict, object]:
    """Metrics of held-out prompts ``first .. first + count - 1`` and the images.

    The model cards report prompts 0-199; settings are chosen on prompts from
    another range (``first`` 1000, ``sweep_sampling.py``) so that the
    reported figure is not the one they were picked on.
    """
    patcher, encoder = load(folder, shift=shift, weight_dtype=weight_dtype)
    scenes = heldout_scenes(count, first)
    start = time.perf_counter()
    images = sample(patcher, encoder, [world.caption(s) for s in scenes], steps, cfg, seed, sampler=sampler, scheduler=scheduler)
    seconds = time.perf_counter() - start
    scores = score_images(images, scenes)
    metrics = {
        "model": str(folder),
        "prompts": count,
        "steps": steps,
        "cfg": cfg,
        "shift": shift,
        "sampler": f"{sampler} / {scheduler} (ComfyUI common_ksampler)",
        **({"first_prompt": first} if first else {}),
        "seed": seed,
        "weight_dtype": weight_dtype,
        "content_accuracy": accuracy(scores),
        "per_attribute": attribute_accuracy(scores),
        "shape_confusion": confusion(scores),
        "by_object_count": by_object_count(scores),
        "by_size": by_size(scores),
        "sampling_seconds": round(seconds, 1),
    }
    if (folder / "training.json").is_file():
        metrics["checkpoint_step"] = json.loads((folder / "training.json").read_text())["step"]
    return metrics, images


def write_grid(images, scenes, path: Path, columns: int = 8) -> None:
    """A sheet of images (2x upscaled) with their held-out captions numbered below the grid."""
    import numpy as np
    from PIL import Image, ImageDraw

    n = len(images)
    rows = -(-n // columns)
    cell = 128
    caption_h = 12 * n + 8
    sheet = Image.new("RGB", (columns * cell, rows * cell + caption_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        img = Image.fromarray((np.asarray(images[i]) * 255).round().astype(np.uint8)).resize((cell, cell), Image.NEAREST)
        sheet.paste(img, ((i % columns) * cell, (i // columns) * cell))
        draw.text(((i % columns) * cell + 2, (i // columns) * cell + 2), str(i), fill="black")
        draw.text((4, rows * cell + 4 + 12 * i), f"{i}: {world.caption(scenes[i])}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL, help="checkpoint folder (config.json, index, shards, tokenizer)")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampler", default="euler", help="KSampler sampler_name")
    ap.add_argument("--scheduler", default="simple", help="KSampler scheduler (simple = U1's exact t grid)")
    ap.add_argument("--shift", type=float, default=3.0, help="the loader's shift (U1's official 3)")
    ap.add_argument("--first", type=int, default=0, help="first held-out prompt index (the cards report 0-199)")
    ap.add_argument("--weight-dtype", default="checkpoint", help="the loader's weight_dtype: checkpoint (bf16), float32, ...")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--json", type=Path, help="write the metrics here")
    ap.add_argument("--grid", type=Path, help="write a sheet of the first 32 images here")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    metrics, images = evaluate(args.model, args.prompts, args.steps, args.cfg, args.seed, args.weight_dtype,
                               args.sampler, args.scheduler, args.shift, args.first)
    print(json.dumps(metrics, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if args.grid:
        write_grid(images[:32], heldout_scenes(min(32, args.prompts), args.first), args.grid)
    if args.json and args.json.resolve().parent == args.model.resolve() and (args.model / "training.json").is_file():
        from tinyworld.pretrain_u1 import write_model_card

        write_model_card(args.model)  # the card shows the new figures


if __name__ == "__main__":
    main()
