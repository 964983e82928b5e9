"""The pack's UI -> API workflow converter (scripts/workflow_api.py), on hand-made graphs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import workflow_api as api  # noqa: E402

OBJECT_INFO = {
    "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}}, "input_order": {"required": ["name"]}, "output": ["MODEL"], "display_name": "Load"},
    "Shift": {"input": {"required": {"model": ["MODEL", {}], "shift": ["FLOAT", {"default": 3.0}]}}, "input_order": {"required": ["model", "shift"]}, "output": ["MODEL"]},
    "Lora": {"input": {"required": {"model": ["MODEL", {}], "lora_name": ["COMBO", {"options": ["x"]}], "strength": ["FLOAT", {}]}}, "input_order": {"required": ["model", "lora_name", "strength"]}, "output": ["MODEL"]},
    "Sampler": {
        "input": {
            "required": {
                "model": ["MODEL", {}],
                "seed": ["INT", {"control_after_generate": True}],
                "steps": ["INT", {}],
                "text": ["STRING", {"multiline": True}],
                "forced": ["INT", {"forceInput": True}],
            },
            "optional": {"extra": ["MODEL", {}], "flag": ["BOOLEAN", {}], "pick": ["COMBO", {"options": ["p", "q"], "control_after_generate": True}]},
        },
        "input_order": {"required": ["model", "seed", "steps", "text", "forced"], "optional": ["extra", "flag", "pick"]},
        "output": ["LATENT"],
    },
    "Trainer": {"input": {"required": {"seed": ["INT", {}], "tiny": ["INT", {}]}}, "output": ["MODEL"]},
}


def node(node_id, node_type, widgets=(), inputs=(), mode=0, title=None):
    out = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": node_id, "mode": mode, "inputs": [dict(i) for i in inputs], "outputs": [], "widgets_values": list(widgets)}
    if title:
        out["title"] = title
    return out


def socket(name, type_, link):
    return {"name": name, "type": type_, "link": link}


def graph(*nodes, links=()):
    return {"nodes": list(nodes), "links": [list(link) for link in links], "groups": [], "extra": {}, "version": 0.4}


def sampler(node_id=9, model_link=1, extra_link=None, widgets=(5, "fixed", 8, "hi", True, "q", "fixed")):
    inputs = [socket("model", "MODEL", model_link)]
    if extra_link is not None:
        inputs.append(socket("extra", "MODEL", extra_link))
    return node(node_id, "Sampler", widgets, inputs)


def test_widgets_in_order_controls_skipped_links_win():
    wf = graph(node(1, "Loader", ["a.safetensors"], title="My loader"), sampler(), links=[(1, 1, 0, 9, 0, "MODEL")])
    prompt = api.to_api(wf, OBJECT_INFO)
    assert prompt["1"] == {"class_type": "Loader", "inputs": {"name": "a.safetensors"}, "_meta": {"title": "My loader"}}
    assert prompt["9"]["inputs"] == {"model": ["1", 0], "seed": 5, "steps": 8, "text": "hi", "flag": True, "pick": "q"}
    assert prompt["9"]["_meta"]["title"] == "Sampler"


def test_seed_named_int_has_a_control_value_even_without_the_flag():
    layout = api.widget_layout(OBJECT_INFO["Trainer"])
    assert [w.name for w in layout] == ["seed", "control_after_generate", "tiny"]
    prompt = api.to_api(graph(node(3, "Trainer", [7, "fixed", 2])), OBJECT_INFO)
    assert prompt["3"]["inputs"] == {"seed": 7, "tiny": 2}


def test_widget_count_mismatch_names_the_node():
    wf = graph(node(4, "Trainer", [7, 2], title="Train it"))
    with pytest.raises(api.WorkflowError, match=r"node 4 \(Trainer, 'Train it'\): 2 widget values.*3 widgets \(seed, control_after_generate, tiny\)"):
        api.to_api(wf, OBJECT_INFO)


def test_widgets_added_since_the_file_was_saved_take_their_defaults():
    """A node that gained widgets at the end (the frontend loads such a file with those widgets at their defaults);
    a shortfall ending in a widget without a default stays an error."""
    info = {**OBJECT_INFO, "Grown": {"input": {"required": {"a": ["INT", {}], "b": ["FLOAT", {"default": 0.5}], "c": [["x", "y"], {}]}}, "output": ["MODEL"]}}
    prompt = api.to_api(graph(node(5, "Grown", [4])), info)
    assert prompt["5"]["inputs"] == {"a": 4, "b": 0.5, "c": "x"}
    with pytest.raises(api.WorkflowError, match=r"node 6 \(Lora\): 1 widget values"):
        api.to_api(graph(node(6, "Lora", ["x"])), info)


def test_missing_node_type_is_named():
    with pytest.raises(api.WorkflowError, match=r"node 2 \(Nope\).*no node type 'Nope'"):
        api.to_api(graph(node(2, "Nope")), OBJECT_INFO)


def test_notes_reroutes_and_primitives():
    wf = graph(
        node(1, "Loader", ["b.safetensors"]),
        node(2, "Note", ["text"]),
        node(3, "MarkdownNote", ["# md"]),
        node(4, "Reroute", [], [socket("", "*", 1)]),
        node(5, "Reroute", [], [socket("", "*", 2)]),
        node(6, "PrimitiveNode", [42, "fixed"]),
        node(7, "Trainer", [11, "fixed", 3], [{"name": "tiny", "type": "INT", "link": 4, "widget": {"name": "tiny"}}]),
        sampler(model_link=3),
        links=[(1, 1, 0, 4, 0, "MODEL"), (2, 4, 0, 5, 0, "MODEL"), (3, 5, 0, 9, 0, "MODEL"), (4, 6, 0, 7, 1, "INT")],
    )
    prompt = api.to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"1", "7", "9"}
    assert prompt["9"]["inputs"]["model"] == ["1", 0]  # through two reroutes
    assert prompt["7"]["inputs"] == {"seed": 11, "tiny": 3}  # the primitive's value lives in the target widget


def test_bypass_passes_the_matching_input_through():
    wf = graph(
        node(1, "Loader", ["a.safetensors"]),
        node(2, "Lora", ["x", 1.0], [socket("model", "MODEL", 1)], mode=4),
        node(3, "Shift", [3.0], [socket("model", "MODEL", 2)], mode=4),
        sampler(model_link=3),
        links=[(1, 1, 0, 2, 0, "MODEL"), (2, 2, 0, 3, 0, "MODEL"), (3, 3, 0, 9, 0, "MODEL")],
    )
    prompt = api.to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"1", "9"}
    assert prompt["9"]["inputs"]["model"] == ["1", 0]


def test_bypass_without_matching_input_or_upstream_drops_the_input():
    wf = graph(
        node(1, "Loader", ["a.safetensors"], mode=4),  # no MODEL input to pass through
        node(2, "Lora", ["x", 1.0], [socket("model", "MODEL", None)], mode=4),  # matching input, unconnected
        sampler(model_link=1, extra_link=2),
        links=[(1, 1, 0, 9, 0, "MODEL"), (2, 2, 0, 9, 5, "MODEL")],
    )
    prompt = api.to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"9"}
    assert "model" not in prompt["9"]["inputs"] and "extra" not in prompt["9"]["inputs"]


def test_muted_nodes_are_left_out_with_the_inputs_they_fed():
    wf = graph(
        node(1, "Loader", ["a.safetensors"]),
        node(2, "Shift", [3.0], [socket("model", "MODEL", 1)], mode=2),
        sampler(model_link=1, extra_link=2),
        links=[(1, 1, 0, 2, 0, "MODEL"), (2, 2, 0, 9, 5, "MODEL")],
    )
    prompt = api.to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"1", "9"}
    assert prompt["9"]["inputs"]["model"] == ["1", 0] and "extra" not in prompt["9"]["inputs"]


def test_dangling_link_is_an_error():
    with pytest.raises(api.WorkflowError, match="link 7 is not in the workflow"):
        api.to_api(graph(node(1, "Loader", ["a.safetensors"]), sampler(model_link=7)), OBJECT_INFO)


def test_shipped_workflows_are_frontend_shaped():
    """Every shipped workflow: version 0.4, unique ids, links consistent with both ends' slots."""
    files = sorted((REPO / "workflows").glob("*.json"))
    assert files, "no shipped workflows"
    for path in files:
        wf = json.loads(path.read_text(encoding="utf-8"))
        assert wf["version"] == 0.4, path.name
        nodes = {n["id"]: n for n in wf["nodes"]}
        assert len(nodes) == len(wf["nodes"]), path.name
        assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max((link[0] for link in wf["links"]), default=0)
        for link_id, src, src_slot, dst, dst_slot, type_ in wf["links"]:
            assert link_id in nodes[src]["outputs"][src_slot]["links"], (path.name, link_id)
            target = nodes[dst]["inputs"][dst_slot]
            assert target["link"] == link_id and target["type"] == type_, (path.name, link_id)
        for n in wf["nodes"]:
            for slot in n.get("inputs", []):
                assert slot["link"] is None or any(link[0] == slot["link"] for link in wf["links"]), (path.name, n["id"])
