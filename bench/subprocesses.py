"""What the subprocess benchmarks share: one fresh process per measurement, its host and its memory.

A bench script runs itself with ``--worker NAME`` and its size options
(:func:`spawn`); the worker starts the in-process ComfyUI host
(:func:`start_host`), measures, and prints one JSON line, which :func:`spawn`
returns. Resident memory comes from ``/proc/self/status`` (:func:`rss_mb`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """This process's resident set in MB (NaN where ``/proc`` has none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_host(threads: int, device: str = "cpu"):
    """Register the pack as ``flowlora`` and import ComfyUI in-process (``tests/harness.py``); returns torch.

    ``threads`` > 0 sets torch's thread count (1 keeps a shared 2-core machine from stalling OpenMP
    barriers); ``device`` "cuda" lets ComfyUI use the GPU (the harness starts it with ``--cpu``).
    """
    sys.path.insert(0, str(REPO / "tests"))
    import harness

    harness.register_package()
    harness.import_comfy()
    if device == "cuda":
        from comfy.cli_args import args as comfy_args

        comfy_args.cpu = False
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


def spawn(script: Path, worker: str, args: argparse.Namespace, options: tuple[str, ...], env: dict | None = None) -> dict:
    """Run ``script --worker worker`` with ``args``' ``options`` (``sample_steps`` -> ``--sample-steps``) in a
    fresh process, from the checkout holding ``script``; its last stdout line, parsed as JSON."""
    cmd = [sys.executable, str(script), "--worker", worker]
    for name in options:
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=script.parents[1], env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{worker} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
