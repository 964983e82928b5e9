"""Data-parallel throughput of the headless runner: 1 rank vs 2 gloo ranks on the CPU, one thread each.

    .venv/bin/python bench/bench_ddp.py [--steps 200] [--batch 2] [--repeats 2]

Trains ``workflows/demo_tiny.json`` (tiny random Z-Image, 4 images of 64 x 64, AC-RF recipe, fp32)
with the same per-rank batch on 1 process and on ``torchrun --nproc-per-node 2`` (gloo), in
alternation, and reads the runner's own average seconds per step over the training steps
(start-up, model loading and dataset encoding excluded). samples/s = global batch / (s/step).
Prints a markdown table; the ratio is 2-rank samples/s over 1-rank samples/s (2.0 = perfect
scaling). Record the result with the command in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))


def prepare(base: Path) -> None:
    import make_demo_model

    make_demo_model.import_comfy()
    make_demo_model.write_models(base / "models", **make_demo_model.DEMO_FILES)
    make_demo_model.write_dataset(base / "input" / make_demo_model.DEMO_DATASET, size=64)
    (base / "custom_nodes").mkdir(exist_ok=True)
    link = base / "custom_nodes" / "flowlora_tiny"
    if not link.exists():
        link.symlink_to(REPO / "scripts" / "flowlora_tiny", target_is_directory=True)


def run(base: Path, ranks: int, steps: int, batch: int, name: str) -> float:
    """Seconds per step of one run (the runner's average over its training steps)."""
    args = [str(REPO / "workflows" / "demo_tiny.json"), "--base-directory", str(base), "--no-custom-nodes", "--custom-nodes", str(base / "custom_nodes" / "flowlora_tiny"),
            "--threads", "1", "--overwrite"]
    for key, value in (("steps", steps), ("batch_size", batch), ("save_every", 0), ("training_dtype", '"fp32"'), ("output_name", f'"bench/{name}"')):
        args += ["--set", f"FlowLoRALoraTrainer.{key}={value}"]
    runner = str(REPO / "scripts" / "flowlora_run.py")
    cmd = [sys.executable, runner, *args] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1", "--master-port", "29611", runner, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    last = re.findall(rf"step {steps}/{steps} .*? ([0-9.]+) s/step", done.stdout)
    if not last:
        raise SystemExit(f"no final progress line in the runner's output:\n{done.stdout[-3000:]}")
    return float(last[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=2, help="batch per rank")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flowlora-bench-ddp-") as tmp:
        base = Path(tmp)
        prepare(base)
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for ranks in (1, 2):
                times[ranks].append(run(base, ranks, args.steps, args.batch, f"r{ranks}_{r}"))
                print(f"[bench] {ranks} rank(s), repeat {r + 1}: {times[ranks][-1]:.4f} s/step", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"demo_tiny, {args.steps} steps, batch {args.batch} per rank, fp32, CPU, one thread per rank, {args.repeats} alternating repeats; load average {load[0]:.1f} / {load[1]:.1f}\n")
    print("| ranks | global batch | s/step (each repeat) | samples/s (best repeat) | samples/s (median) |")
    print("|---|---|---|---|---|")
    best = {ranks: ranks * args.batch / min(t) for ranks, t in times.items()}
    median = {ranks: ranks * args.batch / statistics.median(t) for ranks, t in times.items()}
    for ranks in (1, 2):
        print(f"| {ranks} | {ranks * args.batch} | {', '.join(f'{x:.4f}' for x in times[ranks])} | {best[ranks]:.1f} | {median[ranks]:.1f} |")
    print(f"\nratio 2 ranks / 1 rank: {best[2] / best[1]:.2f} (best repeats), {median[2] / median[1]:.2f} (medians)")


if __name__ == "__main__":
    main()
