"""Benchmark (issue 14, "Speed and memory"): the LoRA Trainer with Training Previews off vs on.

Both runs train the same tiny real Z-Image (ComfyUI's own classes,
``tests/tiny_models.tiny_zimage``, ``--dim`` wide, ``--layers`` layers, a
``--size`` x ``--size`` latent), fp32, rank ``--rank``, batch 1, on CPU, through
``LoraTrainer.execute``. ``on`` adds a Training Preview (one prompt, euler /
simple, ``--sample-steps`` steps, cfg 1, the latent's size, a tiny real ComfyUI
VAE from ``tests/test_training_preview.tiny_vae``) every ``--every`` steps.

Every measurement is a fresh subprocess, launched round-robin over
``--rounds`` rounds (order rotated each round), so load changes on the shared
machine hit both alike; medians are reported. Timing: a forward pre-hook on the
diffusion model stamps every training forward (grad enabled; preview sampling
runs without gradients and is not stamped); ``Previewer.render`` is wrapped and
its time subtracted from the interval it falls in, so ``s/step`` is training
alone (sampling excluded) and ``preview s`` is one preview's sampling, decoding
and saving, reported separately. ``CPU s/step`` is the same in process CPU time.
Peak RSS is the subprocess's ``ru_maxrss`` after the run; ``base RSS`` its
resident set just before the trainer starts (Python, torch, ComfyUI, model,
data, VAE). ``weights MB`` is the diffusion model's fp32 size: a preview that
kept an extra copy of the weights would raise peak RSS by about that much. Peak
RSS also holds what a preview needs while it samples (activations, ComfyUI's
backups of LoRA-patched layers, undone after), so two measures say what stays:
``live tensors after`` sums every tensor storage still reachable once the run
returns (``gc``, unique storages; blind to allocator caching), and ``RSS growth``
is resident memory after the last preview minus after the first (a copy kept
per preview would add ``weights MB`` each time).

Run by hand, prints a markdown table::

    nice -n 19 .venv/bin/python bench/bench_previews.py
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import subprocesses
from subprocesses import rss_mb, start_host

HERE = Path(__file__).resolve()
MODES = ("off", "on")
CONTEXT_TOKENS = 8


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512, help="model width (head_dim 64: n_heads = dim / 64)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--size", type=int, default=32, help="latent height = width (16 channels); preview images are 8x that")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=9, help="optimizer steps per run")
    ap.add_argument("--every", type=int, default=2, help="preview every N steps (plus the start and the end)")
    ap.add_argument("--sample-steps", type=int, default=4, help="sampling steps per preview")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per subprocess (0: torch's default)")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def live_tensor_mb() -> float:
    """Bytes of every tensor storage still reachable (unique storages, views counted once), in MB.

    What the run leaves alive, independent of how the allocator keeps freed pages:
    a preview that left a copy of the weights behind adds about ``weights MB`` here.
    """
    import torch

    storages = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, ReferenceError):  # tensors without storage (sparse, functorch wrappers)
            continue
    return sum(storages.values()) / 2**20


def worker(args: argparse.Namespace) -> dict:
    torch = start_host(args.threads)
    import flowlora.nodes.preview as preview_module
    import folder_paths
    import tiny_models
    from flowlora.nodes.preview import TrainingPreview
    from flowlora.nodes.trainer import LoraTrainer
    from flowlora.trainer_core import losses, optim, timesteps
    from flowlora.trainer_core.lora.config import LoraConfig
    from test_training_preview import tiny_vae

    folder_paths.folder_names_and_paths["loras"] = ([tempfile.mkdtemp(prefix="bench_previews_")], folder_paths.folder_names_and_paths["loras"][1])
    model = tiny_models.tiny_zimage(0, dim=args.dim, n_heads=args.dim // 64, n_kv_heads=args.dim // 64, n_layers=args.layers)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 16, args.size, args.size, generator=g)
    context = torch.randn(1, CONTEXT_TOKENS, tiny_models.ZIMAGE_TINY["cap_feat_dim"], generator=g)
    vae = tiny_vae()  # built in both modes: equal base RSS
    preview = None
    if args.worker == "on":
        prompt = [[torch.randn(1, CONTEXT_TOKENS, tiny_models.ZIMAGE_TINY["cap_feat_dim"], generator=g), {}]]
        widgets = dict(sampler_name="euler", scheduler="simple", steps=args.sample_steps, cfg=1.0, seed=0, width=8 * args.size, height=8 * args.size, every_n_steps=args.every)
        preview = TrainingPreview.execute(positive=prompt, vae=vae, **widgets).result[0]

    stamps: list[tuple[float, float]] = []
    renders: list[tuple[float, float, float, float]] = []  # (wall start, wall s, cpu start, cpu s)
    real_render = preview_module.Previewer.render

    rss_after_preview: list[float] = []

    def timed_render(self, *a, **kw):
        w, c = time.perf_counter(), time.process_time()
        try:
            return real_render(self, *a, **kw)
        finally:
            renders.append((w, time.perf_counter() - w, c, time.process_time() - c))
            rss_after_preview.append(rss_mb())

    preview_module.Previewer.render = timed_render
    handle = model.model.diffusion_model.register_forward_pre_hook(
        lambda m, a: stamps.append((time.perf_counter(), time.process_time())) if torch.is_grad_enabled() else None)
    base_rss = rss_mb()
    t0 = time.perf_counter()
    LoraTrainer.execute(
        model=model, latents={"samples": latents}, positive=[[context, {}]],
        timesteps=timesteps.TimestepConfig(timesteps.Uniform(0.0, 1.0)), loss=losses.LossConfig({"x0_mse": 1.0}),
        lora=LoraConfig(preset="zimage_attn_ffn", rank=args.rank, alpha=args.rank),
        optimizer=optim.OptimizerConfig("adamw", 1e-4, weight_decay=0.01, max_grad_norm=0.0),
        steps=args.steps, epochs=0, batch_size=1, seed=0, p_text=0.0, p_both=0.0, training_dtype="fp32",
        gradient_checkpointing=False, save_every=0, output_name="bench/run", resume=False, preview=preview,
    )
    call_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gc.collect()
    live_mb = live_tensor_mb()
    handle.remove()
    if len(stamps) != args.steps:
        raise RuntimeError(f"{args.worker}: {len(stamps)} training forwards for {args.steps} steps")

    def net(i: int, wall: bool) -> float:
        (w0, c0), (w1, c1) = stamps[i], stamps[i + 1]
        inside = sum((r[1] if wall else r[3]) for r in renders if w0 <= r[0] < w1)
        return (w1 - w0 if wall else c1 - c0) - inside

    weights_mb = sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters()) / 2**20
    return {
        "mode": args.worker, "step_s": statistics.median(net(i, True) for i in range(1, len(stamps) - 1)),
        "cpu_step_s": statistics.median(net(i, False) for i in range(1, len(stamps) - 1)),
        "previews": len(renders), "preview_s": statistics.median(r[1] for r in renders) if renders else 0.0,
        "call_s": call_s, "peak_rss_mb": peak_mb, "base_rss_mb": base_rss, "weights_mb": weights_mb, "live_tensor_mb": live_mb,
        "preview_rss_growth_mb": rss_after_preview[-1] - rss_after_preview[0] if rss_after_preview else 0.0,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def spawn(mode: str, args: argparse.Namespace) -> dict:
    return subprocesses.spawn(HERE, mode, args, ("dim", "layers", "size", "rank", "steps", "every", "sample_steps", "threads"))


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.steps < 4:
        raise SystemExit("--steps must be >= 4 (the first interval is dropped as warm-up)")
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    start = time.perf_counter()
    for r in range(args.rounds):
        for mode in MODES[r % 2 :] + MODES[: r % 2]:
            runs[mode].append(spawn(mode, args))
    keys = ("step_s", "cpu_step_s", "preview_s", "call_s", "peak_rss_mb", "base_rss_mb", "live_tensor_mb", "preview_rss_growth_mb")
    med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in keys} for m in MODES}
    first = runs["on"][0]
    print(f"tiny Z-Image dim {args.dim}, {args.layers} layers, latent 16x{args.size}x{args.size}, rank {args.rank}, batch 1, {args.steps} steps per run, "
          f"previews every {args.every} steps ({first['previews']} per run, 1 prompt, {args.sample_steps} sampling steps, {8 * args.size}x{8 * args.size} px), "
          f"fp32, cpu, torch {first['torch']}, threads {first['threads']}, {args.rounds} rounds round-robin, medians; weights {first['weights_mb']:.0f} MB; "
          f"total {time.perf_counter() - start:.0f} s\n")
    print("| previews | s/step (sampling excluded) | steps/s | CPU s/step | preview s (each) | call s | base RSS MB | peak RSS MB | live tensors after MB | RSS growth first→last preview MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in MODES:
        d = med[m]
        growth = f"{d['preview_rss_growth_mb']:.0f}" if m == "on" else "–"
        print(f"| {m} | {d['step_s']:.3f} | {1 / d['step_s']:.3f} | {d['cpu_step_s']:.3f} | {d['preview_s']:.2f} | {d['call_s']:.1f} | {d['base_rss_mb']:.0f} | {d['peak_rss_mb']:.0f} "
              f"| {d['live_tensor_mb']:.0f} | {growth} |")
    print("\n| ratio (on / off) | value |\n|---|---:|")
    print(f"| steps/s, sampling excluded (wall) | {med['off']['step_s'] / med['on']['step_s']:.3f} |")
    print(f"| steps/s, sampling excluded (CPU) | {med['off']['cpu_step_s'] / med['on']['cpu_step_s']:.3f} |")
    print(f"| peak RSS | {med['on']['peak_rss_mb'] / med['off']['peak_rss_mb']:.3f} |")
    print(f"| peak RSS difference MB (weights {first['weights_mb']:.0f} MB) | {med['on']['peak_rss_mb'] - med['off']['peak_rss_mb']:.0f} |")
    print(f"| live tensors after the run, difference MB (weights {first['weights_mb']:.0f} MB) | {med['on']['live_tensor_mb'] - med['off']['live_tensor_mb']:.1f} |")
    print("\nper-run s/step (round order): " + "; ".join(f"{m}: " + ", ".join(f"{x['step_s']:.3f}" for x in runs[m]) for m in MODES))


if __name__ == "__main__":
    main()
