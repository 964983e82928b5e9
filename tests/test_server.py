"""The pack inside ComfyUI's real server: registration, a prompt, a refused prompt."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def pack_nodes(comfy_root):
    from flowlora.nodes import NODES

    return {cls.define_schema().node_id: cls.define_schema() for cls in NODES}


def test_object_info_lists_every_pack_node_with_its_inputs(server, pack_nodes):
    info = server.get("/object_info")
    assert pack_nodes, "the pack defines no nodes"
    for node_id, schema in pack_nodes.items():
        assert node_id in info, f"{node_id} missing from /object_info"
        entry = info[node_id]
        listed = {**entry["input"].get("required", {}), **entry["input"].get("optional", {})}
        assert set(listed) == {i.id for i in schema.inputs}, node_id
        for name, (_, options) in listed.items():
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert entry["category"].startswith("FlowLoRA")
        assert entry["python_module"].endswith("flowlora")


def test_log_shows_the_pack_imported(server):
    log = server.log_text()
    assert re.search(r"seconds: .*custom_nodes[/\\]flowlora\s*$", log, re.M), log[-3000:]
    assert not re.search(r"IMPORT FAILED.*flowlora", log)
    assert "Cannot import" not in log or "flowlora" not in log.split("Cannot import", 1)[1][:300]


def sampler_prompt(family: str = "LogitNormal", **widgets):
    """Timesteps family node -> Timestep Histogram -> SaveImage."""
    family_widgets = {
        "LogitNormal": {"mean": -0.8, "std": 0.8, "space": "t", "clamp_min": 0.0, "clamp_max": 1.0},
        "Uniform": {"sigma_min": 0.0, "sigma_max": 1.0, "clamp_min": 0.0, "clamp_max": 1.0},
    }[family]
    return {
        "1": {"class_type": f"FlowLoRATimesteps{family}", "inputs": {**family_widgets, **widgets}},
        "2": {"class_type": "FlowLoRATimestepHistogram", "inputs": {"timesteps": ["1", 0], "axis": "t", "batch_size": 1, "seq_len": 4096, "seed": 0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "timesteps"}},
    }


def test_histogram_prompt_runs_and_a_bad_one_is_refused(server):
    entry = server.run_prompt(sampler_prompt())
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"]["3"]["images"]
    assert len(images) == 1 and (server.base / "output" / images[0]["filename"]).stat().st_size > 1000

    status, body = server.post("/prompt", {"prompt": sampler_prompt("Uniform", sigma_min=0.7, sigma_max=0.5)})
    assert status == 400
    assert "sigma_min = 0.7" in str(body["node_errors"]["1"])
    assert server.get("/system_stats")["system"]  # still serving
