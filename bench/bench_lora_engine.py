"""Micro-benchmark: forward+backward of one LoRA training step, three engines, one model.

Engines, all on the same frozen stack of ``layers`` Linear(width, width) with
SiLU between (linear-heavy, as real DiT blocks are), rank ``rank`` on every layer:

- ``hooks``: FlowLoRA's engine (:class:`trainer_core.lora.LoraAdapters`,
  forward hooks, ``y = W x + s B A x``; frozen weights need no gradient);
- ``peft``: ``peft.inject_adapter_in_model`` (same maths, modules replaced);
- ``weight_wrapper``: ``y = (W + s B A) x`` with ``W + s B A`` re-materialised
  every forward, as ComfyUI's built-in trainer does (autograd then computes the
  full ``(out, in)`` gradient of the merged weight, ``X^T dY``, every step);
- ``frozen``: no adapter, input requires grad (the floor: activation gradients only).

Run by hand (CPU unless --device is given), prints a markdown table::

    .venv/bin/python bench/bench_lora_engine.py --tokens 2048 --width 1024 --layers 4 --rank 16 --repeats 10
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import harness

harness.register_package()
from flowlora.trainer_core.lora import LoraAdapters, LoraConfig  # noqa: E402


class Stack(nn.Module):
    def __init__(self, width: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x):
        for block in self.blocks:
            x = F.silu(block(x))
        return x


class WeightWrapped(nn.Module):
    """``(W + s B A) x``: the merged weight is rebuilt each forward."""

    def __init__(self, base: nn.Linear, rank: int, scale: float):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features, device=base.weight.device) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        self.scale = scale

    def forward(self, x):
        return F.linear(x, self.base.weight + self.scale * self.B @ self.A, self.base.bias)


def timed_interleaved(steps: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each engine, timed round-robin so load changes hit all alike."""
    for step in steps.values():
        step()
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = Stack(args.width, args.layers).to(device)
    for p in base.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, args.tokens, args.width, device=device)
    steps = {}
    with contextlib.ExitStack() as stack:
        model_h = copy.deepcopy(base)
        adapters = LoraAdapters.build(model_h, LoraConfig(preset="all_linear", rank=args.rank, alpha=args.rank), device=device)
        stack.enter_context(adapters.attached(model_h))
        steps["hooks (FlowLoRA)"] = lambda: model_h(x).square().mean().backward()

        try:
            from peft import LoraConfig as PeftConfig
            from peft import inject_adapter_in_model

            targets = [f"blocks.{i}" for i in range(args.layers)]
            model_p = inject_adapter_in_model(PeftConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets), copy.deepcopy(base))
            steps["peft inject_adapter_in_model"] = lambda: model_p(x).square().mean().backward()
        except ImportError as e:
            print(f"peft unavailable: {e}", file=sys.stderr)

        model_w = copy.deepcopy(base)
        for i, block in enumerate(model_w.blocks):
            model_w.blocks[i] = WeightWrapped(block, args.rank, 1.0)
        steps["weight wrapper (W + BA per forward)"] = lambda: model_w(x).square().mean().backward()

        model_f = copy.deepcopy(base)
        xg = x.clone().requires_grad_(True)
        steps["frozen, no adapter (floor)"] = lambda: model_f(xg).square().mean().backward()

        results = timed_interleaved(steps, args.repeats, device)

    ref = results["hooks (FlowLoRA)"]
    print(f"tokens {args.tokens}, width {args.width}, layers {args.layers}, rank {args.rank}, {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.repeats}, interleaved")
    print()
    print("| engine | fwd+bwd ms | vs hooks |")
    print("|---|---:|---:|")
    for name, t in results.items():
        print(f"| {name} | {t * 1e3:.1f} | {t / ref:.2f}x |")


if __name__ == "__main__":
    main()
