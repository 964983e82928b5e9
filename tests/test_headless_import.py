"""Config import (issue 15 item 4): train_u1's YAML configs and the AC-RF trainer's TOML config become
workflows (``scripts/import_config.py``), on the real node definitions of the ComfyUI host.

The fixtures are unmodified copies of the projects' own configs (``tests/fixtures/configs/NOTICE.md``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import harness
import pytest
import standins  # noqa: F401  (puts scripts/ on sys.path)
import workflow_api

FIXTURES = harness.REPO / "tests" / "fixtures" / "configs"
SCRIPT = harness.REPO / "scripts" / "import_config.py"

pytestmark = [pytest.mark.slow]


def imported(config: Path, out: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(config), "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COMFYUI_PATH": str(harness.comfy_root())}, cwd=harness.REPO)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return json.loads(out.read_text(encoding="utf-8")), done.stdout


def widgets(workflow: dict) -> dict[int, tuple[str, list]]:
    return {n["id"]: (n["type"], n.get("widgets_values")) for n in workflow["nodes"] if n["type"] not in ("MarkdownNote", "Note")}


def differences(a: dict, b: dict) -> set[tuple[int, int]]:
    """(node id, widget index) where two workflows of the same graph differ."""
    wa, wb = widgets(a), widgets(b)
    assert sorted(wa) == sorted(wb) and all(wa[i][0] == wb[i][0] for i in wa)
    return {(i, k) for i in wa for k, (x, y) in enumerate(zip(wa[i][1] or [], wb[i][1] or [], strict=True)) if x != y}


def test_train_u1_default_equals_the_u1_baseline_workflow_except_what_is_listed(tmp_path):
    baseline = json.loads((harness.REPO / "workflows" / "u1_baseline.json").read_text(encoding="utf-8"))
    workflow, report = imported(FIXTURES / "train_u1_default.yaml", tmp_path / "u1.json")
    assert "template: workflows/u1_baseline.json" in report
    assert workflow["links"] == baseline["links"]
    diff = differences(baseline, workflow)
    changed = {(int(m.group(1)), m.group(2)) for m in re.finditer(r"\[(\d+)\]\.(\w+): ", report.split("not imported")[0])}
    types = {n["id"]: n["type"] for n in baseline["nodes"]}
    # what default.yaml sets differently from the shipped baseline: every differing widget is listed, nothing else differs
    assert {(types[i], name) for i, name in changed} == {("FlowLoRALoraTrainer", "output_name"), ("FlowLoRALoraTrainer", "seed"), ("FlowLoRALoraTrainer", "save_every"),
                                                         ("FlowLoRADataset", "folder"), ("FlowLoRADataset", "trigger"), ("FlowLoRADataset", "template")}, report
    assert len(diff) == len(changed) and {i for i, _ in diff} == {i for i, _ in changed}, (diff, report)
    for expected in ("train.seed", "train.checkpoint_every", "data.data_dir", "style.trigger", "data.use_think_labels = False"):
        assert expected in report
    for listed in ("runtime.keep_kvs_on_gpu", "runtime.gc_skip_last", "runtime.device", "train.t_logit_mean"):
        assert listed in report.split("not imported")[1], report
    note = next(n for n in workflow["nodes"] if n.get("title") == "Imported settings")
    assert "runtime.gc_skip_last" in note["widgets_values"][0] and "train.seed" in note["widgets_values"][0]


def test_official_alignment_and_acrf_configs_import_and_list_what_has_no_equivalent(tmp_path, server):
    info = server.get("/object_info", timeout=120)
    u1, report = imported(FIXTURES / "train_u1_official_alignment.yaml", tmp_path / "official.json")
    assert "template: workflows/u1_d_all.json" in report  # v loss + logit-normal t
    api = workflow_api.to_api(u1, info)  # the frontend's export: every widget layout fits this ComfyUI
    trainer = next(n for n in api.values() if n["class_type"] == "FlowLoRALoraTrainer")["inputs"]
    assert (trainer["p_text"], trainer["p_both"], trainer["steps"]) == (0.1, 0.1, 6000)
    lora = next(n for n in api.values() if n["class_type"] == "FlowLoRALoraConfig")["inputs"]
    assert (lora["preset"], lora["rank"], lora["alpha"]) == ("u1_default", 64, 64.0)
    assert lora["unfreeze"].splitlines()[0] == "fm_modules.timestep_embedder.*"

    acrf, report = imported(FIXTURES / "acrf_config.toml", tmp_path / "acrf.json")
    api = workflow_api.to_api(acrf, info)
    optimizer = next(n for n in api.values() if n["class_type"] == "FlowLoRAOptimizerConfig")["inputs"]
    assert (optimizer["optimizer"], optimizer["learning_rate"], optimizer["grad_accumulation"], optimizer["warmup_steps"]) == ("adamw8bit", 5e-5, 4, 100)
    unlisted = report.split("not imported")[1]
    for key in ("acrf.use_dynamic_shift", "acrf.raft_mode", "acrf.enable_curvature", "training.enable_style", "training.save_every_n_epochs", "dataset.sources[0]", "model.dit"):
        assert key in unlisted, key
