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
    # The test host has no model files: both loaders name one, reported as information.
    # (Frontend 1.49 also flags both nodes with has_errors and counts them in its error overlay.)
    info = "\n".join(report.info())
    assert "missing model file: z_image_turbo_bf16.safetensors" in info, info
    assert "missing model file: my_lora.safetensors" in info, info
    assert {(m["node"], m["widget"]) for m in report.missing_models} == {("1", "unet_name"), ("2", "lora_name")}, report.missing_models


def test_checker_names_missing_types_and_broken_links(frontend):
    bad = _good_workflow()
    bad["nodes"][2]["type"] = "FlowLoRANoSuchNode"
    bad["nodes"][1]["inputs"][0]["type"] = "CLIP"  # a MODEL link into a CLIP input
    bad["links"][0][5] = "MODEL"
    bad["links"].append([3, 1, 0, 99, 0, "MODEL"])  # to a node that does not exist
    bad["nodes"][0]["outputs"][0]["links"].append(3)
    report = frontend.load_workflow(bad, "selftest_bad.json", screenshot=ARTIFACTS / "selftest_bad.png")
    frontend.close_dialogs()
    text = "\n".join(report.problems())
    assert "node #3 has type 'FlowLoRANoSuchNode'" in text, text
    # 1.32 opens its missing-nodes dialog; 1.49 an error overlay whose "View details" opens
    # the Errors panel. Either way the user must see the type's name.
    assert "the frontend reported missing node types in its " in text and "FlowLoRANoSuchNode" in str(report.missing_nodes_shown), text
    assert "FlowLoRANoSuchNode" in report.missing_nodes_ui_text, (report.missing_nodes_via, report.missing_nodes_ui_text)
    assert "link 3 (1:0 -> 99:0, MODEL): target node 99 does not exist" in text, text
    assert "output type MODEL of UNETLoader #1 does not match input 'model' (CLIP) of FlowLoRALoraLoader #2" in text, text
    # The missing model files stay information, not problems.
    assert "my_lora.safetensors" not in text, text


def _report(**changes) -> browser.WorkflowReport:
    fields = dict(
        name="x.json", json_nodes=1, json_links=0, missing_types=[], missing_in_graph=[], missing_nodes_shown=None,
        missing_nodes_via=None, missing_nodes_ui_text="", link_problems=[], json_link_problems=[], nodes_in_graph=1,
        links_in_graph=0, load_error=None, console_errors=[], resource_errors=[], warnings=[], dialogs=[], toasts=[],
        seconds=0.0, graphs=[{"where": "root", "nodes": 1, "links": 0}],
    )
    return browser.WorkflowReport(**{**fields, **changes})


def test_report_tells_missing_model_files_from_other_node_errors():
    """No browser: has_errors for a missing file is information, for anything else a problem."""
    model = {"node": "1", "type": "UNETLoader", "widget": "unet_name", "name": "a.safetensors", "directory": "diffusion_models", "source": "missingModel store"}
    flagged_for_file = {"id": 1, "where": "root", "type": "UNETLoader", "registered": True, "missing_model": True}
    ok = _report(flagged=[flagged_for_file], missing_models=[model], error_counts={"total": 1, "missing_models": 1, "missing_nodes": 0})
    assert ok.problems() == []
    assert ok.info() == ["missing model file: a.safetensors (models/diffusion_models) for UNETLoader #1 widget 'unet_name'"]

    other = _report(flagged=[{**flagged_for_file, "missing_model": False}])
    assert "is flagged with errors (has_errors) after loading, and not for a missing model file" in "\n".join(other.problems())

    extra = _report(missing_models=[model], error_counts={"total": 2, "missing_models": 1, "missing_nodes": 0}, other_errors=["lastNodeErrors: {...}"])
    assert "the frontend counts 2 errors" in "\n".join(extra.problems())

    placeholder = _report(missing_in_graph=[{"id": 5, "type": "Gone", "where": "root"}])
    assert "node #5 (Gone) loaded as a placeholder" in "\n".join(placeholder.problems())


def test_checker_reports_console_errors(frontend):
    """A console error while a workflow loads is a problem (here from a page extension made for the test)."""
    frontend.page.evaluate(
        """() => app.registerExtension({name: 'FlowLoRA.selftest.console', loadedGraphNode(node) {
             if (node.title === 'FLOWLORA_SELFTEST_CONSOLE_ERROR') console.error('FlowLoRA self-test: an error while loading');
           }})"""
    )
    workflow = _good_workflow()
    workflow["nodes"][3]["title"] = "FLOWLORA_SELFTEST_CONSOLE_ERROR"
    text = "\n".join(frontend.load_workflow(workflow, "selftest_console.json").problems())
    assert "console error: FlowLoRA self-test: an error while loading" in text, text
    assert text.count("\n") == 0, text  # nothing else
