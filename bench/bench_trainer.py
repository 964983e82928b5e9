"""Benchmark: our LoRA Trainer node vs ComfyUI's built-in TrainLoraNode vs a hand-written loop.

All engines train the same tiny real Z-Image (ComfyUI's own classes,
``tests/tiny_models.tiny_zimage``) made linear-heavy (``--dim`` wide, head_dim
64, ``--layers`` main layers, a ``--size`` x ``--size`` latent = (size/2)^2
image tokens), fp32, no gradient checkpointing, AdamW (lr 1e-4, weight decay
0.01), no gradient clipping, rank ``--rank``, batch ``--batch``, on CPU:

- ``ours attn_ffn``: ``flowlora.nodes.trainer.LoraTrainer.execute`` with preset
  ``zimage_attn_ffn`` (to_q/to_k/to_v/out + w1/w2/w3 of the main layers);
- ``ours all_linear``: the same node with preset ``all_linear`` (every Linear,
  the closest to what the built-in trains);
- ``built-in``: ``comfy_extras.nodes_train.TrainLoraNode.execute`` (list
  inputs; LoRA on every >= 2-D weight that has ``weight_function``, plus a
  full "diff" on every 1-D weight and bias: it trains more parameters);
- ``hand attn_ffn`` / ``hand all_linear``: a minimal PyTorch loop, the floor:
  our ``LoraAdapters`` attached, ``model_sampling.noise_scaling``,
  ``apply_model``, MSE on x0, backward, AdamW step, nothing else.

Every measurement is a fresh subprocess (one engine, one run), launched
round-robin over ``--rounds`` rounds (order rotated each round), so load
changes on the shared machine hit all engines alike; medians are reported.
Per-step time: a forward pre-hook on the diffusion model stamps every step's
forward; the step time is the median interval between consecutive stamps,
the first interval (warm-up) dropped. That is the steady-state step of each
engine's own loop, everything between two forwards included (optimizer,
logging, RNG capture...). ``CPU s/step`` is the same interval in process
CPU time (``time.process_time``): with one torch thread (the default here) it
is the engine's own compute, much less sensitive than wall-clock time to other
work on a shared machine. ``call s`` is the whole node/loop call for
``--steps`` steps (setup, saving and return included). Peak RSS is the
subprocess's ``ru_maxrss`` after the run; ``base RSS`` is its resident set
just before the engine starts (Python, torch, ComfyUI, the model and data).

``--baseline DIR`` adds ``baseline attn_ffn``: the ``ours attn_ffn`` worker of
another checkout (``git worktree add DIR REV``) on this checkout's ComfyUI, in
the same rounds, to show what a change costs the trainer (e.g. issue 14: with
previews off, steps/s unchanged from before previews existed).

Run by hand, prints a markdown table::

    .venv/bin/python bench/bench_trainer.py
    .venv/bin/python bench/bench_trainer.py --engines ours_attn_ffn,baseline_attn_ffn --baseline /tmp/pre-previews
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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
ENGINES = ("ours_attn_ffn", "ours_all_linear", "builtin", "hand_attn_ffn", "hand_all_linear")
LABELS = {
    "ours_attn_ffn": "ours attn_ffn (LoraTrainer)",
    "ours_all_linear": "ours all_linear (LoraTrainer)",
    "builtin": "built-in TrainLoraNode",
    "hand_attn_ffn": "hand loop attn_ffn",
    "hand_all_linear": "hand loop all_linear",
    "baseline_attn_ffn": "ours attn_ffn at --baseline",
}
BASELINE = "baseline_attn_ffn"
"""Not in ENGINES: runs only with --baseline, as the baseline checkout's own ``ours_attn_ffn`` worker."""
PRESETS = {"ours_attn_ffn": "zimage_attn_ffn", "ours_all_linear": "all_linear", "hand_attn_ffn": "zimage_attn_ffn", "hand_all_linear": "all_linear"}
LR = 1e-4
CONTEXT_TOKENS = 8


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=768, help="model width (head_dim 64: n_heads = dim / 64)")
    ap.add_argument("--layers", type=int, default=4, help="main transformer layers (1 noise + 1 context refiner besides)")
    ap.add_argument("--size", type=int, default=64, help="latent height = width (16 channels); tokens = (size / 2)^2")
    ap.add_argument("--images", type=int, default=4, help="latents in the training set")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per run (>= 3)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each subprocess (0: torch's default); 1 keeps a shared 2-core machine from stalling OpenMP barriers")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}, {BASELINE}")
    ap.add_argument("--baseline", type=Path, help=f"another checkout of the pack (git worktree add DIR REV): its ours_attn_ffn worker is the {BASELINE} engine")
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---------------------------------------------------------------- worker side


def worker(args: argparse.Namespace) -> dict:
    torch = start_host(args.threads)
    # every engine's modules imported before timing, in every worker alike (equal base RSS), as a
    # running ComfyUI has them loaded. `server` (our node's progress text imports it) does not
    # import outside main.py (`utils` resolves to comfy/utils.py): the first failed try costs
    # about 0.35 s and is taken here; the node still retries it at every step (about 15 ms).
    import comfy_extras.nodes_train  # noqa: F401
    import flowlora.nodes.trainer  # noqa: F401
    import folder_paths
    import tiny_models

    try:
        import server  # noqa: F401
    except ImportError:
        pass

    lora_dir = tempfile.mkdtemp(prefix="bench_trainer_loras_")
    folder_paths.folder_names_and_paths["loras"] = ([lora_dir], folder_paths.folder_names_and_paths["loras"][1])

    model = tiny_models.tiny_zimage(0, dim=args.dim, n_heads=args.dim // 64, n_kv_heads=args.dim // 64, n_layers=args.layers)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(args.images, 16, args.size, args.size, generator=g)
    context = torch.randn(1, CONTEXT_TOKENS, tiny_models.ZIMAGE_TINY["cap_feat_dim"], generator=g)
    positive = [[context, {}]]

    stamps: list[tuple[float, float]] = []  # (wall, process CPU) at every step's forward
    diffusion_model = model.model.diffusion_model
    handle = diffusion_model.register_forward_pre_hook(lambda m, a: stamps.append((time.perf_counter(), time.process_time())))
    engine = args.worker
    base_rss = rss_mb()
    t0 = time.perf_counter()
    trainable = ENGINE_FNS[engine.split("_")[0]](args, model, latents, positive, context, PRESETS.get(engine))
    call_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    handle.remove()
    shutil.rmtree(lora_dir, ignore_errors=True)
    if trainable is None:  # ours: count what the node trained (after the peak was read)
        from flowlora.trainer_core.lora.config import LoraConfig
        from flowlora.trainer_core.lora.engine import LoraAdapters

        adapters = LoraAdapters.build(diffusion_model, LoraConfig(preset=PRESETS[engine], rank=args.rank, alpha=args.rank))
        trainable = sum(p.numel() for p in adapters.lora_parameters())
    intervals = [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
    cpu_intervals = [b[1] - a[1] for a, b in itertools.pairwise(stamps)]
    if len(stamps) != args.steps:
        raise RuntimeError(f"{engine}: {len(stamps)} forwards for {args.steps} steps")
    return {
        "engine": engine,
        "step_s": statistics.median(intervals[1:]),
        "cpu_step_s": statistics.median(cpu_intervals[1:]),
        "intervals": intervals,
        "call_s": call_s,
        "peak_rss_mb": peak_mb,
        "base_rss_mb": base_rss,
        "trainable": trainable,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_ours(args, model, latents, positive, context, preset):
    from flowlora.nodes.trainer import LoraTrainer
    from flowlora.trainer_core import losses, optim, timesteps
    from flowlora.trainer_core.lora.config import LoraConfig

    LoraTrainer.execute(
        model=model, latents={"samples": latents}, positive=positive,
        timesteps=timesteps.TimestepConfig(timesteps.Uniform(0.0, 1.0)),
        loss=losses.LossConfig({"x0_mse": 1.0}),
        lora=LoraConfig(preset=preset, rank=args.rank, alpha=args.rank),
        optimizer=optim.OptimizerConfig("adamw", LR, weight_decay=0.01, max_grad_norm=0.0),
        steps=args.steps, epochs=0, batch_size=args.batch, seed=0, p_text=0.0, p_both=0.0,
        training_dtype="fp32", gradient_checkpointing=False, save_every=0, output_name="bench/run", resume=False,
    )
    return None


def run_builtin(args, model, latents, positive, context, preset):
    from comfy_extras.nodes_train import TrainLoraNode

    # 0.3.75: list inputs; a single LATENT batch leaves `multi_res` unset, so one LATENT per image
    out = TrainLoraNode.execute(
        model=[model], latents=[{"samples": latents[i : i + 1]} for i in range(latents.shape[0])], positive=[positive],
        batch_size=[args.batch], steps=[args.steps], grad_accumulation_steps=[1], learning_rate=[LR], rank=[args.rank],
        optimizer=["AdamW"], loss_function=["MSE"], seed=[0], training_dtype=["fp32"], lora_dtype=["fp32"],
        algorithm=["LoRA"], gradient_checkpointing=[False], existing_lora=["[None]"],
    )
    return sum(p.numel() for p in out.result[1].values())


def run_hand(args, model, latents, positive, context, preset):
    """The floor: same model, same adapters, same maths, nothing else."""
    import comfy.model_management
    import torch
    import torch.nn.functional as F
    from flowlora.trainer_core.lora.config import LoraConfig
    from flowlora.trainer_core.lora.engine import LoraAdapters

    with torch.inference_mode(False), torch.enable_grad():
        patcher = model.clone()
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
        base = patcher.model
        dm = base.diffusion_model
        adapters = LoraAdapters.build(dm, LoraConfig(preset=preset, rank=args.rank, alpha=args.rank), generator=torch.Generator().manual_seed(0))
        params = adapters.lora_parameters()
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
        sampling = base.model_sampling
        x0_all = base.process_latent_in(latents.clone())
        ctx = context.expand(args.batch, -1, -1)
        g = torch.Generator().manual_seed(0)
        with adapters.attached(dm):
            for _ in range(args.steps):
                idx = torch.randint(0, x0_all.shape[0], (args.batch,), generator=g)
                x0 = x0_all[idx]
                sigma = torch.rand(args.batch, generator=g)
                eps = torch.randn(x0.shape, generator=g)
                x = sampling.noise_scaling(sigma, eps, x0)
                pred = base.apply_model(x, sigma, c_crossattn=ctx, num_tokens=CONTEXT_TOKENS)
                F.mse_loss(pred, x0).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
    return sum(p.numel() for p in params)


ENGINE_FNS = {"ours": run_ours, "builtin": run_builtin, "hand": run_hand}


# ---------------------------------------------------------------- driver side


def spawn(engine: str, args: argparse.Namespace) -> dict:
    options = ("dim", "layers", "size", "images", "rank", "batch", "steps", "threads")
    if engine == BASELINE:  # the other checkout's worker and code, this checkout's ComfyUI
        comfy = os.environ.get("COMFYUI_PATH") or str(HERE.parents[1] / ".comfyui" / "ComfyUI")
        return subprocesses.spawn(args.baseline.resolve() / "bench" / "bench_trainer.py", "ours_attn_ffn", args, options, env={"COMFYUI_PATH": comfy})
    return subprocesses.spawn(HERE, engine, args, options)


def ratio(med: dict, a: str, b: str, key: str) -> float:
    return med[a][key] / med[b][key]


def holds(value: float, target: str) -> str:
    op, bound = target.split()
    return "yes" if (value >= float(bound) if op == ">=" else value <= float(bound)) else "no"


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.steps < 3:
        raise SystemExit("--steps must be >= 3 (the first step interval is dropped as warm-up)")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if BASELINE in engines and args.baseline is None:
        raise SystemExit(f"--engines {BASELINE} needs --baseline DIR (a checkout of the commit to compare with)")
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    start = time.perf_counter()
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[: r % len(engines)]
        for engine in order:
            res = spawn(engine, args)
            runs[engine].append(res)
            print(f"round {r + 1}/{args.rounds} {engine}: step {res['step_s']:.3f} s, call {res['call_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start

    med = {e: {k: statistics.median(r[k] for r in rs) for k in ("step_s", "cpu_step_s", "call_s", "peak_rss_mb", "base_rss_mb")} for e, rs in runs.items()}
    first = next(iter(runs.values()))[0]
    tokens = (args.size // 2) ** 2
    print(f"tiny Z-Image dim {args.dim}, {args.dim // 64} heads, {args.layers} layers (+2 refiners), latent 16x{args.size}x{args.size} ({tokens} image tokens + {CONTEXT_TOKENS} caption), "
          f"rank {args.rank}, batch {args.batch}, {args.steps} steps per run, fp32, AdamW, cpu, torch {first['torch']}, threads {first['threads']}, "
          f"{args.rounds} rounds round-robin, one subprocess per measurement, medians; total {wall:.0f} s")
    print()
    print("| engine | trainable params | s/step | steps/s | CPU s/step | call s | base RSS MB | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in engines:
        m = med[e]
        print(f"| {LABELS[e]} | {runs[e][0]['trainable']:,} | {m['step_s']:.3f} | {1 / m['step_s']:.3f} | {m['cpu_step_s']:.3f} | {m['call_s']:.1f} | {m['base_rss_mb']:.0f} | {m['peak_rss_mb']:.0f} |")
    print()
    ratios = []
    for preset in ("attn_ffn", "all_linear"):
        ours, hand = f"ours_{preset}", f"hand_{preset}"
        if ours in med and "builtin" in med:
            ratios.append((f"ours {preset} steps/s / built-in steps/s", ratio(med, "builtin", ours, "step_s"), ratio(med, "builtin", ours, "cpu_step_s"), ">= 1.3"))
        if ours in med and hand in med:
            ratios.append((f"ours {preset} time / hand loop {preset} time", ratio(med, ours, hand, "step_s"), ratio(med, ours, hand, "cpu_step_s"), "<= 1.05"))
        if ours in med and "builtin" in med:
            peak = ratio(med, ours, "builtin", "peak_rss_mb")
            ratios.append((f"ours {preset} peak RSS / built-in peak RSS", peak, peak, "<= 1.00"))
    if BASELINE in med and "ours_attn_ffn" in med:
        ratios.append(("ours attn_ffn steps/s / same at --baseline", ratio(med, BASELINE, "ours_attn_ffn", "step_s"), ratio(med, BASELINE, "ours_attn_ffn", "cpu_step_s"), ">= 0.97"))
    if ratios:
        print("| ratio | wall-clock | CPU time | target | holds (wall / CPU) |")
        print("|---|---:|---:|---|---|")
        for name, wall_value, cpu_value, target in ratios:
            print(f"| {name} | {wall_value:.3f} | {cpu_value:.3f} | {target} | {holds(wall_value, target)} / {holds(cpu_value, target)} |")
    print()
    print("per-run s/step (round order):", "; ".join(f"{e}: " + ", ".join(f"{r['step_s']:.3f}" for r in runs[e]) for e in engines))


if __name__ == "__main__":
    main()
