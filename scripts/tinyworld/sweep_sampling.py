"""Choose a tiny-world model's KSampler settings on validation prompts, apart from the prompts its card reports.

    .venv/bin/python scripts/tinyworld/sweep_sampling.py u1 --shifts 1 2 3
    .venv/bin/python scripts/tinyworld/sweep_sampling.py u1 --samplers euler euler_ancestral dpmpp_2m lcm
    .venv/bin/python scripts/tinyworld/sweep_sampling.py turbo --samplers euler dpmpp_2m lcm --schedulers simple beta
    .venv/bin/python scripts/tinyworld/sweep_sampling.py base --samplers euler dpmpp_2m

Every (shift, sampler, scheduler) of the product samples held-out prompts
``--first`` .. ``--first + --prompts - 1`` (default 1000-1099; the model cards
report prompts 0-199, so a setting picked here is not scored on the prompts it
was picked on) at the card's steps and cfg (U1 50 / 4, base 50 / 3, Turbo 8 /
1) through the evaluation scripts' own code: stock loaders, the stock KSampler
and the pixel_space VAE. The shift is U1's loader shift, or for Z-Image the
stock ModelSamplingAuraFlow node on the loaded model (the card's is 3). Prints
a markdown table, best first; ``--json`` appends one record per setting.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "scripts", REPO / "tests", REPO / "scripts" / "tinyworld"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import evaluate_u1 as eu  # noqa: E402  (registers the pack and finds ComfyUI)
import evaluate_zimage as ez  # noqa: E402

MODELS = REPO / "scripts" / "tinyworld" / "models"
KINDS = {
    "u1": {"model": MODELS / "u1", "steps": 50, "cfg": 4.0},
    "base": {"model": MODELS / "zimage_base.safetensors", "steps": 50, "cfg": 3.0},
    "turbo": {"model": MODELS / "zimage_turbo.safetensors", "steps": 8, "cfg": 1.0},
}
"""Each model and the steps / cfg its card reports."""


@functools.cache
def _zimage_text_encoder():
    """The tiny text encoder, loaded once for every Z-Image setting of a sweep."""
    ez.pz.import_comfy()
    return ez.pz.load_text_encoder()


def measure(kind: str, model: Path, shift: float, sampler: str, scheduler: str, prompts: int, first: int, steps: int, cfg: float) -> dict:
    """Content accuracy and per attribute of one setting: ``{"content_accuracy", "per_attribute": {shape, colour, position}}``."""
    if kind == "u1":
        m, _ = eu.evaluate(model, prompts, steps, cfg, sampler=sampler, scheduler=scheduler, shift=shift, first=first)
        return {"content_accuracy": m["content_accuracy"], "per_attribute": {k: m["per_attribute"][k] for k in ("shape", "colour", "position")}}
    ez.pz.import_comfy()
    from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow

    patched = ModelSamplingAuraFlow().patch_aura(ez.load_unet(model), shift)[0]
    m, _ = ez.evaluate(model, prompts, steps, cfg, clip=_zimage_text_encoder(), model=patched, sampler=sampler, scheduler=scheduler, first=first)
    return {"content_accuracy": m["accuracy"], "per_attribute": {k: m[f"{k}_accuracy"] for k in ("shape", "colour", "position")}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=list(KINDS))
    ap.add_argument("--model", type=Path, help="another checkpoint of this kind (default: the committed one)")
    ap.add_argument("--shifts", type=float, nargs="+", default=[3.0])
    ap.add_argument("--samplers", nargs="+", default=["euler"])
    ap.add_argument("--schedulers", nargs="+", default=["simple"])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--first", type=int, default=1000, help="first held-out prompt (keep clear of 0-199, which the cards report)")
    ap.add_argument("--steps", type=int, help="default: the card's")
    ap.add_argument("--cfg", type=float, help="default: the card's")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, help="append one JSON line per setting here")
    args = ap.parse_args(argv)
    if args.first < 200:
        raise SystemExit(f"--first {args.first}: prompts 0-199 are the cards' test prompts; compare settings on others (e.g. 1000)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    card = KINDS[args.kind]
    model, steps = args.model or card["model"], args.steps or card["steps"]
    cfg = card["cfg"] if args.cfg is None else args.cfg
    rows = []
    for shift, sampler, scheduler in itertools.product(args.shifts, args.samplers, args.schedulers):
        m = measure(args.kind, model, shift, sampler, scheduler, args.prompts, args.first, steps, cfg)
        row = {"kind": args.kind, "model": str(model), "shift": shift, "sampler": sampler, "scheduler": scheduler, "steps": steps, "cfg": cfg,
               "prompts": args.prompts, "first_prompt": args.first, **m}
        rows.append(row)
        print(f"{args.kind} shift {shift:g} {sampler} / {scheduler}: {m['content_accuracy']:.1%}", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n{args.kind} at {steps} steps, cfg {cfg:g}, {args.prompts} held-out prompts from #{args.first}:\n")
    print("| shift | sampler / scheduler | content | shape | colour | position |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["content_accuracy"]):
        a = r["per_attribute"]
        print(f"| {r['shift']:g} | {r['sampler']} / {r['scheduler']} | {r['content_accuracy']:.1%} | {a['shape']:.1%} | {a['colour']:.1%} | {a['position']:.1%} |")


if __name__ == "__main__":
    main()
