"""The headless runner (``scripts/flowlora_run.py`` = ``python -m flowlora.run``), alone and under
torchrun with gloo: data parallel equals one process with the global batch, and a run moves
between the ComfyUI node (a live server) and headless ranks without changing its trajectory.

Everything is real: the shipped ``workflows/demo_tiny.json`` (tiny random Z-Image, its
4-image dataset, the AC-RF recipe) converted with the pack's converter, ComfyUI's executor
in the runner's processes, ``torchrun`` with two gloo ranks on the CPU, one thread each.
Test-only changes, stated: 4-6 steps instead of 40, no periodic saves, fp32, and (for the
resume test) a constant lr schedule, so that a run given more steps continues the straight
run's schedule (cosine schedules depend on the total).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import harness
import pytest
import standins  # puts scripts/ on sys.path
import torch
import workflow_api
from safetensors import safe_open
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow]

RUNNER = harness.REPO / "scripts" / "flowlora_run.py"
WORKFLOW = harness.REPO / "workflows" / "demo_tiny.json"
TRAINER = "FlowLoRALoraTrainer"


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
"""One thread per process, output as it comes."""


def demo_base(base: Path) -> Path:
    """``base`` made a ComfyUI base directory with the tiny demo model files, the demo dataset and the demo-only node package."""
    import make_demo_model

    standins.link_tiny_package(base)
    make_demo_model.write_models(base / "models", **make_demo_model.DEMO_FILES)
    make_demo_model.write_dataset(base / "input" / make_demo_model.DEMO_DATASET, size=standins.TEST_IMAGE)
    return base


def runner_base_args(base: Path, workflow: Path) -> list[str]:
    """The runner's arguments for ``workflow`` on ``base``: only the demo-only package besides the pack, one thread."""
    return [str(workflow), "--base-directory", str(base), "--no-custom-nodes", "--custom-nodes", str(base / "custom_nodes" / "flowlora_tiny"), "--threads", "1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, comfy_root) -> Path:
    return demo_base(tmp_path_factory.mktemp("headless-base"))


def runner(base: Path, workflow: Path, *args: str, ranks: int = 1, timeout: float = 300) -> str:
    """Run the headless runner (under torchrun when ``ranks`` > 1) with one thread per process; returns its output."""
    common = [*runner_base_args(base, workflow), *args]
    if ranks == 1:
        cmd = [sys.executable, str(RUNNER), *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1", "--master-port", str(harness.free_port()), str(RUNNER), *common]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=harness.REPO)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} exited with {done.returncode}:\n{output[-6000:]}"
    return output


def trainer_overrides(**values) -> list[str]:
    return [a for name, value in values.items() for a in ("--set", f"{TRAINER}.{name}={json.dumps(value)}")]


def lora(base: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(base / "models" / "loras" / f"{name}.safetensors"))


def records(base: Path, name: str) -> list[dict]:
    lines = (base / "models" / "loras" / f"{name}.log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


SAME_LORA_REL = 1e-3
"""Largest relative (Frobenius) difference of one tensor between two runs that should train the same LoRA."""


def assert_same_lora(a: dict, b: dict, rel: float = SAME_LORA_REL) -> None:
    """Same keys, and every tensor equal up to float reduction order.

    Not elementwise: splitting a batch over ranks (or resuming in another
    process) changes the order of float sums, and AdamW's step
    ``g / (sqrt(v) + eps)`` turns a rounding-size difference in a near-zero
    gradient into a step of up to the learning rate in that one element (seen:
    6e-5 in one element of a 0.06 tensor after 4 steps at lr 1e-3, with the
    logged losses equal to 1e-7). Each tensor's difference must be small
    against the tensor: a rank training the wrong samples or a lost step
    differs by order 1.
    """
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = a[key].double(), b[key].double()
        scale = float(y.norm())
        difference = float((x - y).norm())
        assert difference <= rel * scale if scale > 0 else difference == 0, f"{key}: |a - b| = {difference:.3g}, |b| = {scale:.3g}"


def assert_same_log(a: list[dict], b: list[dict]) -> None:
    """Same steps, samples and draws; loss means equal to float rounding."""
    assert [(r["step"], r["sources"], r["route"]) for r in a] == [(r["step"], r["sources"], r["route"]) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["sigma"] == pytest.approx(y["sigma"], abs=1e-7)
        for key in ("loss", "x0_mse", "v_mse"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (x["step"], key)


def test_two_gloo_ranks_equal_one_process_with_the_global_batch(base):
    """2 ranks x batch 2 (each rank trains its half of every global batch of 4) give the LoRA and the
    logged losses of 1 process with batch 4 after the same steps."""
    common = [*trainer_overrides(steps=4, save_every=0, training_dtype="fp32"), "--overwrite"]
    out = runner(base, WORKFLOW, *common, *trainer_overrides(batch_size=2, output_name="headless/ddp"), ranks=2)
    assert "2 ranks (gloo)" in out and "finished at step 4/4" in out, out[-3000:]
    runner(base, WORKFLOW, *common, *trainer_overrides(batch_size=4, output_name="headless/single"))

    ddp, single = lora(base, "headless/ddp"), lora(base, "headless/single")
    assert_same_lora(ddp, single)
    assert max(float(single[k].abs().max()) for k in single if k.endswith("lora_B.weight")) > 1e-4  # it trained
    log_ddp, log_single = records(base, "headless/ddp"), records(base, "headless/single")
    assert len(log_ddp) == 4 and all(len(r["sources"]) == 4 for r in log_ddp)  # rank 0 logs every rank's samples
    assert_same_log(log_ddp, log_single)
    with safe_open(str(base / "models" / "loras" / "headless" / "ddp.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["flowlora.training"])["train"]["batch_size"] == 4 and meta["flowlora.step"] == "4"


def trainer_prompt(server, overrides: dict) -> dict:
    """demo_tiny.json in API format with only what its trainer needs, constant lr, ``overrides`` on the trainer."""
    info = server.get("/object_info", timeout=120)
    prompt = workflow_api.to_api(json.loads(WORKFLOW.read_text(encoding="utf-8")), info)
    trainer = next(i for i, n in prompt.items() if n["class_type"] == TRAINER)
    keep, todo = set(), [trainer]
    while todo:
        node_id = todo.pop()
        if node_id not in keep:
            keep.add(node_id)
            todo += [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)]
    prompt = {i: n for i, n in prompt.items() if i in keep}
    optimizer = next(n for n in prompt.values() if n["class_type"] == "FlowLoRAOptimizerConfig")
    optimizer["inputs"]["schedule"] = "constant"
    prompt[trainer]["inputs"].update({"save_every": 0, "training_dtype": "fp32", "batch_size": 4, **overrides})
    return prompt


def node_run(server, prompt: dict) -> None:
    entry = server.run_prompt(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:4000] + server.log_text()[-3000:]


@pytest.mark.server
def test_node_then_two_headless_ranks_then_node_equals_a_straight_run(base, tmp_path):
    """The same state file carries a run from the ComfyUI node (steps 1-2, batch 4) to 2 headless gloo
    ranks (steps 3-4, batch 2 per rank) and back to the node (steps 5-6): the LoRA and the log equal
    6 straight steps in the node."""
    with harness.comfy_server(base) as server:
        node_run(server, trainer_prompt(server, {"steps": 6, "output_name": "headless/straight", "overwrite": True}))
        node_run(server, trainer_prompt(server, {"steps": 2, "output_name": "headless/moved", "overwrite": True}))
        assert len(records(base, "headless/moved")) == 2

        headless = tmp_path / "moved_api.json"  # the node's own prompt, API format, as the runner's input
        headless.write_text(json.dumps(trainer_prompt(server, {"steps": 4, "output_name": "headless/moved", "resume": True, "batch_size": 2})))
        out = runner(base, headless, ranks=2)
        assert "training steps 3-4" in out and "finished at step 4/4" in out, out[-3000:]
        assert len(records(base, "headless/moved")) == 4

        node_run(server, trainer_prompt(server, {"steps": 6, "output_name": "headless/moved", "resume": True}))
    assert_same_lora(lora(base, "headless/moved"), lora(base, "headless/straight"))
    assert_same_log(records(base, "headless/moved"), records(base, "headless/straight"))
