"""The demo's progress output (issue 16): a live tqdm bar on a terminal, sparse distinct lines in a log."""

from __future__ import annotations

import io
import sys

from harness import REPO

sys.path.insert(0, str(REPO / "scripts"))

import demo

PROMPT = {
    "1": {"class_type": "UNETLoader", "_meta": {"title": "model"}},
    "2": {"class_type": "FlowLoRALoraTrainer", "_meta": {"title": "LoRA Trainer"}},
    "3": {"class_type": "KSampler", "_meta": {"title": "sample"}},
}


def feed(progress: demo.Progress, steps: int = 600) -> None:
    """What ComfyUI's websocket sends for a 3-node prompt whose trainer runs ``steps`` steps."""
    progress.handle("executing", {"node": "1"})
    progress.handle("executing", {"node": "2"})
    for k in range(1, steps + 1):
        progress.text = f"step {k}/{steps} loss 0.{k:04d}"  # the trainer's progress text, then ComfyUI's progress event
        progress.handle("progress", {"value": k, "max": steps})
    progress.handle("executing", {"node": "3"})
    for k in range(1, 9):
        progress.handle("progress", {"value": k, "max": 8})
    progress.handle("executed", {"node": "3"})
    progress.close()


def test_log_output_is_sparse_and_never_repeats():
    out = io.StringIO()
    feed(demo.Progress(PROMPT, tty=False, stream=out))
    lines = out.getvalue().splitlines()
    assert len(lines) == len(set(lines)), "a log line repeats"
    trainer = [line for line in lines if "LoRA Trainer" in line]
    # one line when the trainer starts, one at its first step (s/step known), one per further 10% of its 600 steps
    assert len(trainer) == 12, trainer
    assert "600/600" in trainer[-1] and "s/step, ETA" in trainer[-1] and "loss 0.0600" in trainer[-1]
    assert len(lines) <= 1 + 12 + 12


def test_terminal_output_is_one_live_bar():
    out = io.StringIO()
    feed(demo.Progress(PROMPT, tty=True, stream=out))
    text = out.getvalue()
    assert "\n" not in text.rstrip("\n"), "a terminal gets one bar redrawn in place, not lines"
    assert "\r" in text and "nodes" in text and "s/step" in text and "3/3" in text
