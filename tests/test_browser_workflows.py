"""Every shipped workflow opens in ComfyUI's own frontend with no missing node and no broken link.

The real server (``main.py --cpu``, the pack in custom_nodes) serves the
frontend of its ``comfyui-frontend-package``; headless Chromium (Debian's)
loads each ``workflows/*.json`` with ``app.loadGraphData`` as a drag-and-drop
would, and :mod:`browser` inspects the graph in the page. One screenshot and
one JSON report per workflow go to ``test-artifacts/browser/``.

Skips, with the reason, where Chromium or Playwright is missing (see
``browser.skip_reason``); ``scripts/host.sh`` installs both when it runs as
root with apt-get.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import browser
import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[1]
# FLOWLORA_WORKFLOWS_DIR checks another folder (a workflow being written) the same way.
WORKFLOWS = sorted(Path(os.environ.get("FLOWLORA_WORKFLOWS_DIR") or REPO / "workflows").glob("*.json"))
ARTIFACTS = REPO / "test-artifacts" / "browser"

_skip = browser.skip_reason()


@pytest.fixture(scope="module")
def frontend(request):
    if _skip:
        pytest.skip(_skip)
    server = request.getfixturevalue("server")  # only once the browser can run
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser.Frontend(server.url) as fe:
        yield fe


def _report_lines(report: browser.WorkflowReport) -> str:
    return "\n  ".join(report.problems())


def test_frontend_starts_clean(frontend):
    """The app comes up with the pack's nodes and no console error beyond the stock offline noise."""
    types = frontend.registered_types()
    assert {"FlowLoRALoraTrainer", "FlowLoRADataset", "FlowLoRALoraConfig", "KSampler", "Note"} <= types
    assert not frontend.startup_errors, "console errors while the frontend started:\n" + "\n".join(f"{e.kind}: {e.text[:1500]}" for e in frontend.startup_errors)


DEMO_ONLY_TYPES = {"FlowLoRATinyTextEncoderLoader"}
"""Nodes of scripts/flowlora_tiny, the demo host's stand-in package (linked into the test server too)."""


@pytest.mark.parametrize("path", WORKFLOWS or [None], ids=[p.stem for p in WORKFLOWS] or ["no-workflows"])
def test_workflow_loads_in_frontend(frontend, path):
    if path is None:
        pytest.skip("no workflows/*.json shipped yet")
    workflow = json.loads(path.read_text())
    if not path.stem.startswith("demo_"):
        # only the demo runs on the demo host (make demo); user workflows use stock and pack nodes
        demo_only = sorted({n["type"] for n in workflow["nodes"]} & DEMO_ONLY_TYPES)
        assert not demo_only, f"{path.name} uses demo-only nodes {demo_only}"
    shot = ARTIFACTS / f"{path.stem}.png"
    report = frontend.load_workflow(workflow, path.name, screenshot=shot)
    (ARTIFACTS / f"{path.stem}.json").write_text(json.dumps(report.to_json(), indent=2))
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot at {shot}"
    assert report.json_nodes > 0, f"{path.name} has no nodes"
    assert not report.problems(), f"{path.name} does not load cleanly in the frontend (screenshot {shot}):\n  {_report_lines(report)}"


# The checker itself: a clean graph passes, and each kind of defect is named.


def _good_workflow() -> dict:
    model_link, config_link = 1, 2
    return {
        "last_node_id": 4,
        "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "UNETLoader", "pos": [0, 0], "size": [320, 90], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "MODEL", "type": "MODEL", "links": [model_link, config_link]}],
             "properties": {"Node name for S&R": "UNETLoader"}, "widgets_values": ["z_image_turbo_bf16.safetensors", "default"]},
            {"id": 2, "type": "FlowLoRALoraLoader", "pos": [400, 0], "size": [320, 100], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "model", "type": "MODEL", "link": model_link}],
             "outputs": [{"name": "model", "type": "MODEL", "links": []}, {"name": "report", "type": "STRING", "links": []}],
             "properties": {}, "widgets_values": ["my_lora.safetensors", 1.0]},
            {"id": 3, "type": "FlowLoRALoraConfig", "pos": [400, 200], "size": [320, 260], "flags": {}, "order": 2, "mode": 0,
             "inputs": [{"name": "model", "type": "MODEL", "link": config_link}],
             "outputs": [{"name": "lora", "type": "FLOWLORA_LORA_CONFIG", "links": []}, {"name": "report", "type": "STRING", "links": []}],
             "properties": {}},
            {"id": 4, "type": "MarkdownNote", "pos": [0, 200], "size": [320, 120], "flags": {}, "order": 3, "mode": 0,
             "inputs": [], "outputs": [], "properties": {}, "widgets_values": ["Put the model in `models/diffusion_models`."]},
        ],
        "links": [[model_link, 1, 0, 2, 0, "MODEL"], [config_link, 1, 0, 3, 0, "MODEL"]],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def test_checker_passes_a_clean_workflow(frontend):
    report = frontend.load_workflow(_good_workflow(), "selftest_good.json")
    assert report.problems() == []
    assert report.graphs[0] == {"where": "root", "nodes": 4, "links": 2}


def test_checker_names_missing_types_and_broken_links(frontend):
    bad = _good_workflow()
    bad["nodes"][2]["type"] = "FlowLoRANoSuchNode"
    bad["nodes"][1]["inputs"][0]["type"] = "CLIP"  # a MODEL link into a CLIP input
    bad["links"][0][5] = "MODEL"
    bad["links"].append([3, 1, 0, 99, 0, "MODEL"])  # to a node that does not exist
    bad["nodes"][0]["outputs"][0]["links"].append(3)
    report = frontend.load_workflow(bad, "selftest_bad.json")
    frontend.close_dialogs()
    text = "\n".join(report.problems())
    assert "node #3 has type 'FlowLoRANoSuchNode'" in text, text
    assert "missing-nodes dialog for: FlowLoRANoSuchNode" in text, text
    assert "link 3 (1:0 -> 99:0, MODEL): target node 99 does not exist" in text, text
    assert "output type MODEL of UNETLoader #1 does not match input 'model' (CLIP) of FlowLoRALoraLoader #2" in text, text
