"""Benchmark: one pretraining step of the tiny-world U1, fp32 against bf16 autocast.

    .venv/bin/python bench/bench_tiny_u1_pretrain.py --rounds 3 --steps 6

The step is ``scripts/tinyworld/pretrain_u1.py``'s own: render the step's batch
(32 scenes), noise it, one padded pass of both towers, x0-MSE, backward, clipping, AdamW
update (:func:`pretrain_u1.update`). For each (vision width, token size, dtype) a fresh model runs ``--steps`` steps; the
first two are dropped (allocator and oneDNN warm-up) and the median of the rest
is kept. Settings are interleaved round-robin over ``--rounds`` rounds, so load
changes on a shared machine hit all of them alike; the table gives the median
over rounds and the ratio to fp32 at the same width, measured side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "tinyworld"))
import pretrain_u1 as pu  # noqa: E402  (registers the pack as ``flowlora``)
from flowlora.trainer_core.models.u1 import prompts  # noqa: E402


def step_seconds(width: int, token_px: int, bf16: bool, steps: int, prefixes) -> float:
    """Median wall seconds of one full pretraining step (batch 32) after two warm-up steps."""
    tc = pu.TrainConfig(bf16=bf16)
    prefix, gen = pu.init_towers(pu.tiny_u1(width, token_px), tc.seed)
    torch.nn.init.normal_(pu.output_layer(gen).weight, std=0.02)  # a live head, as after the first updates
    params = [p for _, p in pu._named_params(prefix, gen)]
    opt = pu.optimizer(params, tc)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        pu.update(step, prefix, gen, prefixes, tc, opt, params)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 192])
    ap.add_argument("--token-px", type=int, nargs="+", default=[8], help="generation token sizes (8: 64 tokens per 64 x 64 image; 4: 256)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    prefixes = pu.Prefixes(prompts.load_tokenizer(REPO / "scripts" / "tinyworld" / "models" / "u1"))
    settings = [(w, px, bf16) for w in args.widths for px in args.token_px for bf16 in (False, True)]
    runs: dict[tuple[int, int, bool], list[float]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in settings[r % len(settings) :] + settings[: r % len(settings)]:
            runs[s].append(step_seconds(*s, args.steps, prefixes))
    print(f"| vision width | token px | dtype | s/step (median of {args.rounds} rounds) | vs fp32 |")
    print("|---|---|---|---|---|")
    for w, px, bf16 in settings:
        med = statistics.median(runs[(w, px, bf16)])
        print(f"| {w} | {px} | {'bf16 autocast' if bf16 else 'fp32'} | {med:.3f} | {statistics.median(runs[(w, px, False)]) / med:.2f}x |")


if __name__ == "__main__":
    main()
