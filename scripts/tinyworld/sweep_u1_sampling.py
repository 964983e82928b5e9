"""Choose the tiny U1's KSampler settings on validation prompts, apart from the prompts the card reports.

    .venv/bin/python scripts/tinyworld/sweep_u1_sampling.py --shifts 1 2 3 --samplers euler --schedulers simple
    .venv/bin/python scripts/tinyworld/sweep_u1_sampling.py --shifts 3 --samplers euler euler_ancestral dpmpp_2m lcm

Every (shift, sampler, scheduler) of the product samples held-out prompts
``--first`` .. ``--first + --prompts - 1`` (default 1000-1099; the model card
reports prompts 0-199, so a setting picked here is not scored on the prompts it
was picked on) at the card's steps and cfg through :func:`evaluate_u1.evaluate`
(pack loader, stock KSampler, pixel_space VAE). Prints a markdown table, best
first, and with ``--json`` appends one record per setting (a later run adds to
the same file).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "scripts", REPO / "tests", REPO / "scripts" / "tinyworld"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import evaluate_u1 as eu  # noqa: E402  (registers the pack and finds ComfyUI)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, nargs="?", default=eu.DEFAULT_MODEL)
    ap.add_argument("--shifts", type=float, nargs="+", default=[3.0])
    ap.add_argument("--samplers", nargs="+", default=["euler"])
    ap.add_argument("--schedulers", nargs="+", default=["simple"])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--first", type=int, default=1000, help="first held-out prompt (keep clear of 0-199, which the card reports)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, help="append one JSON line per setting here")
    args = ap.parse_args(argv)
    if args.first < 200:
        raise SystemExit(f"--first {args.first}: prompts 0-199 are the card's test prompts; choose settings on others (e.g. 1000)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for shift, sampler, scheduler in itertools.product(args.shifts, args.samplers, args.schedulers):
        m, _ = eu.evaluate(args.model, args.prompts, args.steps, args.cfg, sampler=sampler, scheduler=scheduler, shift=shift, first=args.first)
        row = {k: m[k] for k in ("shift", "sampler", "steps", "cfg", "prompts", "first_prompt", "content_accuracy", "per_attribute", "sampling_seconds")}
        rows.append(row)
        print(f"shift {shift:g} {sampler} / {scheduler}: {m['content_accuracy']:.1%}", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n| shift | sampler / scheduler | content ({args.prompts} prompts from #{args.first}) | shape | colour | position |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["content_accuracy"]):
        a = r["per_attribute"]
        print(f"| {r['shift']:g} | {r['sampler'].split(' (')[0]} | {r['content_accuracy']:.1%} | {a['shape']:.1%} | {a['colour']:.1%} | {a['position']:.1%} |")


if __name__ == "__main__":
    main()
