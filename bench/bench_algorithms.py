"""Benchmark: step time and memory of the five adapter algorithms, and of ComfyUI's built-in trainer's four.

Same tiny real Z-Image for every engine (ComfyUI's own classes,
``tests/tiny_models.tiny_zimage``; ``--dim`` wide, head_dim 64, ``--layers``
main layers, a ``--size`` x ``--size`` latent = (size/2)^2 image tokens), fp32,
batch ``--batch``, rank ``--rank`` (alpha = rank), AdamW lr 1e-4, no gradient
checkpointing, ``--steps`` steps per run:

- ``ours <algorithm>``: ``flowlora.nodes.trainer.LoraTrainer.execute`` with
  ``LoraConfig(preset="all_linear", algorithm=...)`` (every Linear: the closest
  to what the built-in trains; OFT: rank = block size);
- ``built-in <algorithm>``: ``comfy_extras.nodes_train.TrainLoraNode.execute``
  with its ``algorithm`` input (LoRA, LoHa, LoKr, OFT): an adapter on every
  >= 2-D weight plus a full diff of every 1-D weight and bias, applied as a
  weight wrapper (``W + delta`` rebuilt every forward).

Every measurement is a fresh subprocess (one engine, one run), engines run
round-robin over ``--rounds`` rounds, medians reported. s/step: median
interval between consecutive forwards of the diffusion model (first interval
dropped); CPU s/step: the same in process CPU time (1 torch thread: robust to
other work on a shared machine). Memory: ``--device cpu``: peak RSS of the
subprocess minus its RSS just before training ("growth", MB); ``--device
cuda``: ``torch.cuda.max_memory_allocated`` during the run minus before.
"ratio" columns divide by ``ours lora`` (and, for built-in rows, by ours with
the same algorithm).

Run by hand, prints a markdown table::

    .venv/bin/python bench/bench_algorithms.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import subprocesses
from subprocesses import rss_mb, start_host

HERE = Path(__file__).resolve()
OURS = ("lora", "dora", "loha", "lokr", "oft")
BUILTIN = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr", "oft": "OFT"}
ENGINES = tuple(f"ours_{a}" for a in OURS) + tuple(f"builtin_{a}" for a in BUILTIN)
LR = 1e-4
CONTEXT_TOKENS = 8


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512, help="model width (head_dim 64: n_heads = dim / 64)")
    ap.add_argument("--layers", type=int, default=2, help="main transformer layers (1 noise + 1 context refiner besides)")
    ap.add_argument("--size", type=int, default=32, help="latent height = width (16 channels); tokens = (size / 2)^2")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run (>= 3)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per subprocess (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def worker(args: argparse.Namespace) -> dict:
    torch = start_host(args.threads, args.device)
    import comfy.model_management
    import comfy.model_patcher
    import comfy_extras.nodes_train  # noqa: F401  (every engine imported before timing, in every worker alike)
    import flowlora.nodes.trainer  # noqa: F401
    import folder_paths
    import peft  # noqa: F401  (ours imports it for the algorithms; loaded in every worker alike)
    import tiny_models

    lora_dir = tempfile.mkdtemp(prefix="bench_algorithms_")
    folder_paths.folder_names_and_paths["loras"] = ([lora_dir], folder_paths.folder_names_and_paths["loras"][1])
    model = tiny_models.tiny_zimage(0, dim=args.dim, n_heads=args.dim // 64, n_kv_heads=args.dim // 64, n_layers=args.layers)
    if args.device == "cuda":
        device = torch.device("cuda")
        model = comfy.model_patcher.ModelPatcher(model.model, load_device=device, offload_device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(args.images, 16, args.size, args.size, generator=g)
    context = torch.randn(1, CONTEXT_TOKENS, tiny_models.ZIMAGE_TINY["cap_feat_dim"], generator=g)
    positive = [[context, {}]]

    stamps: list[tuple[float, float]] = []
    dm = model.model.diffusion_model

    def stamp(module, inputs):
        if args.device == "cuda":
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))

    handle = dm.register_forward_pre_hook(stamp)
    kind, algorithm = args.worker.split("_", 1)
    base_rss = rss_mb()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    trainable = (run_ours if kind == "ours" else run_builtin)(args, model, latents, positive, algorithm)
    call_s = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    growth = peak_rss - base_rss if args.device != "cuda" else (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    handle.remove()
    shutil.rmtree(lora_dir, ignore_errors=True)
    if len(stamps) != args.steps:
        raise RuntimeError(f"{args.worker}: {len(stamps)} forwards for {args.steps} steps")
    wall = [b[0] - a[0] for a, b in itertools.pairwise(stamps)][1:]
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(stamps)][1:]
    return {"engine": args.worker, "step_s": statistics.median(wall), "cpu_step_s": statistics.median(cpu), "call_s": call_s,
            "growth_mb": growth, "peak_rss_mb": peak_rss, "trainable": trainable, "torch": torch.__version__, "threads": torch.get_num_threads()}


def run_ours(args, model, latents, positive, algorithm: str) -> int:
    from flowlora.nodes.trainer import LoraTrainer
    from flowlora.trainer_core import losses, optim, timesteps
    from flowlora.trainer_core.lora import LoraAdapters, LoraConfig

    config = LoraConfig(preset="all_linear", rank=args.rank, alpha=args.rank, algorithm=algorithm)
    LoraTrainer.execute(
        model=model, latents={"samples": latents}, positive=positive,
        timesteps=timesteps.TimestepConfig(timesteps.Uniform(0.0, 1.0)), loss=losses.LossConfig({"x0_mse": 1.0}), lora=config,
        optimizer=optim.OptimizerConfig("adamw", LR, weight_decay=0.01, max_grad_norm=0.0),
        steps=args.steps, epochs=0, batch_size=args.batch, seed=0, p_text=0.0, p_both=0.0,
        training_dtype="fp32", gradient_checkpointing=False, save_every=0, output_name="bench/run", resume=False,
    )
    return sum(p.numel() for p in LoraAdapters.build(model.model.diffusion_model, config).lora_parameters())


def run_builtin(args, model, latents, positive, algorithm: str) -> int:
    from comfy_extras.nodes_train import TrainLoraNode

    out = TrainLoraNode.execute(  # 0.3.75: list inputs; one LATENT per image (a single batch leaves multi_res unset)
        model=[model], latents=[{"samples": latents[i : i + 1]} for i in range(latents.shape[0])], positive=[positive],
        batch_size=[args.batch], steps=[args.steps], grad_accumulation_steps=[1], learning_rate=[LR], rank=[args.rank],
        optimizer=["AdamW"], loss_function=["MSE"], seed=[0], training_dtype=["fp32"], lora_dtype=["fp32"],
        algorithm=[BUILTIN[algorithm]], gradient_checkpointing=[False], existing_lora=["[None]"],
    )
    return sum(p.numel() for p in out.result[1].values())


def spawn(engine: str, args: argparse.Namespace) -> dict:
    return subprocesses.spawn(HERE, engine, args, ("dim", "layers", "size", "images", "rank", "batch", "steps", "threads", "device"))


def label(engine: str) -> str:
    kind, algorithm = engine.split("_", 1)
    return f"ours {algorithm}" if kind == "ours" else f"built-in {BUILTIN[algorithm]}"


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.steps < 3:
        raise SystemExit("--steps must be >= 3 (the first step interval is dropped as warm-up)")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for engine in engines[r % len(engines):] + engines[: r % len(engines)]:
            runs[engine].append(spawn(engine, args))
            print(f"round {r + 1}: {engine} {runs[engine][-1]['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    med = {e: {k: statistics.median(run[k] for run in runs[e]) for k in ("step_s", "cpu_step_s", "call_s", "growth_mb", "peak_rss_mb")} | {"trainable": runs[e][0]["trainable"]} for e in engines}
    first = next(iter(runs.values()))[0]
    memory = "growth MB (peak RSS - before)" if args.device != "cuda" else "peak GPU MB (max allocated - before)"
    print(f"tiny Z-Image dim {args.dim}, {args.dim // 64} heads, {args.layers} layers (+2 refiners), latent 16x{args.size}x{args.size} "
          f"({(args.size // 2) ** 2} image tokens + {CONTEXT_TOKENS} caption), rank {args.rank}, batch {args.batch}, {args.steps} steps per run, fp32, AdamW, "
          f"{args.device}, torch {first['torch']}, threads {first['threads']}, {args.rounds} rounds round-robin, one subprocess per run, medians; total {time.perf_counter() - t0:.0f} s")
    print()
    print(f"| engine | trainable params | s/step | CPU s/step | {memory} | CPU time vs ours lora | memory vs ours lora | CPU time vs ours, same algorithm |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ref = med.get("ours_lora")
    for e in engines:
        m = med[e]
        same = med.get("ours_" + e.split("_", 1)[1]) if e.startswith("builtin_") else None
        cells = [
            f"{m['cpu_step_s'] / ref['cpu_step_s']:.2f}x" if ref else "-",
            f"{m['growth_mb'] / ref['growth_mb']:.2f}x" if ref and ref["growth_mb"] > 0 else "-",
            f"{m['cpu_step_s'] / same['cpu_step_s']:.2f}x" if same else "-",
        ]
        print(f"| {label(e)} | {m['trainable']:,} | {m['step_s']:.3f} | {m['cpu_step_s']:.3f} | {m['growth_mb']:.0f} | " + " | ".join(cells) + " |")
    print()
    print("per-run CPU s/step: " + "; ".join(f"{label(e)}: " + ", ".join(f"{run['cpu_step_s']:.3f}" for run in runs[e]) for e in engines))


if __name__ == "__main__":
    main()
