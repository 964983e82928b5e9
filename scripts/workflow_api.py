"""Convert a ComfyUI workflow (UI format, as the frontend saves it) to API format.

    python scripts/workflow_api.py WORKFLOW.json --object-info object_info.json > api.json
    python scripts/workflow_api.py WORKFLOW.json --url http://127.0.0.1:8188 > api.json

Pure Python given the server's ``/object_info``. It does what the frontend's
"Export (API)" does:

- widget values are read from ``widgets_values`` in widget order (the node's
  ``input_order``: required, then optional inputs that are widgets); INT
  widgets named ``seed``/``noise_seed`` or marked ``control_after_generate``
  carry one extra value (the "control after generate" choice), which is not
  sent; a workflow saved before a node gained widgets at the end (fewer values
  than widgets) gets those widgets' defaults, as the frontend gives them when it
  loads such a file; any other count mismatch is an error naming the node;
- links overwrite widget values of inputs that were turned into sockets;
- ``Note``, ``MarkdownNote``, ``Reroute`` and ``PrimitiveNode`` are not sent:
  links pass through reroutes, and an input fed by a PrimitiveNode keeps the
  value stored in its own widget;
- muted nodes (mode 2) are not sent, and inputs they fed are dropped;
- bypassed nodes (mode 4) are not sent; an input they fed is connected to what
  feeds the bypassed node's input of the same type (the slot with the same
  index first, then the first input of that type), or dropped when there is none.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIRTUAL = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
"""Frontend-only node types: never sent to the server."""
MODE_MUTED = 2
MODE_BYPASS = 4
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_NAMES = frozenset({"seed", "noise_seed"})


class WorkflowError(ValueError):
    """A workflow the converter cannot turn into a prompt; the message names the node."""


NO_DEFAULT = object()


@dataclass(frozen=True)
class Widget:
    """One entry of a node's ``widgets_values``: an input widget or a frontend-only companion."""

    name: str
    sent: bool = True  # False for "control_after_generate" and upload buttons
    default: Any = NO_DEFAULT  # the value a widget missing from an older file takes


def widget_layout(node_def: dict) -> list[Widget]:
    """The ``widgets_values`` layout of a node type, from its ``/object_info`` entry."""
    inputs = node_def.get("input", {})
    order = node_def.get("input_order") or {section: list(inputs.get(section, {})) for section in ("required", "optional")}
    layout: list[Widget] = []
    for section in ("required", "optional"):
        specs = inputs.get(section, {})
        for name in order.get(section, []):
            spec = specs.get(name)
            if spec is None:
                continue
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            is_combo = isinstance(kind, list) or kind == "COMBO"
            if not (is_combo or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            choices = kind if isinstance(kind, list) else options.get("options", [])
            layout.append(Widget(name, default=options.get("default", choices[0] if is_combo and choices else NO_DEFAULT)))
            control = options.get("control_after_generate")
            if kind == "INT" and (control if control is not None else name in CONTROL_NAMES):
                layout.append(Widget("control_after_generate", sent=False))
            elif is_combo and control:
                layout.append(Widget("control_after_generate", sent=False))
            if is_combo and (options.get("image_upload") or options.get("video_upload") or options.get("audio_upload")):
                layout.append(Widget("upload", sent=False))
    return layout


def describe(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(title) if title else ''})"


def widget_values(node: dict, node_def: dict) -> dict[str, Any]:
    """``{input name: value}`` of a node's widgets; raises WorkflowError on a count mismatch."""
    layout = widget_layout(node_def)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some custom frontends save a name -> value mapping
        return {w.name: values[w.name] for w in layout if w.sent and w.name in values}
    missing = layout[len(values):]
    if missing and all(w.default is not NO_DEFAULT or not w.sent for w in missing):
        values = [*values, *(w.default for w in missing)]  # widgets added since the file was saved
    if len(values) != len(layout):
        names = ", ".join(w.name for w in layout) or "none"
        raise WorkflowError(f"{describe(node)}: {len(values)} widget values, but this ComfyUI's {node.get('type')} has {len(layout)} widgets ({names}); re-save the workflow with this ComfyUI or fix widgets_values")
    return {w.name: v for w, v in zip(layout, values, strict=True) if w.sent}


class _Graph:
    def __init__(self, workflow: dict):
        self.nodes = {int(n["id"]): n for n in workflow.get("nodes", [])}
        self.links: dict[int, list] = {}
        for link in workflow.get("links", []):
            if isinstance(link, dict):  # a newer frontend's object form
                link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"], link.get("type")]
            self.links[int(link[0])] = link

    def link(self, link_id: int, where: str) -> list:
        if link_id not in self.links:
            raise WorkflowError(f"{where}: link {link_id} is not in the workflow's links")
        return self.links[link_id]

    def source(self, link_id: int, want_type: str, where: str) -> tuple[str, Any]:
        """Where a link really comes from: ("node", [id, slot]), ("keep", None) or ("drop", None).

        "keep": nothing upstream (a PrimitiveNode, an unconnected reroute or
        bypassed input), the target keeps its widget value if it has one.
        "drop": the source is muted or bypassed without a matching input; the
        frontend removes the input altogether.
        """
        link = self.link(link_id, where)
        node, slot = self.nodes.get(int(link[1])), int(link[2])
        for _ in range(len(self.nodes) + 1):
            if node is None:
                raise WorkflowError(f"{where}: link {link_id} comes from node {link[1]}, which is not in the workflow")
            if node.get("type") in VIRTUAL:
                upstream = (node.get("inputs") or [{}])[0].get("link") if node.get("type") == "Reroute" else None
                if upstream is None:
                    return "keep", None
                link = self.link(int(upstream), describe(node))
            elif node.get("mode", 0) == MODE_BYPASS:
                node_inputs = node.get("inputs") or []
                match = next((i for i in [slot, *range(len(node_inputs))] if i < len(node_inputs) and node_inputs[i].get("type") == want_type), None)
                if match is None:
                    return "drop", None
                upstream = node_inputs[match].get("link")
                if upstream is None:
                    return "keep", None
                link = self.link(int(upstream), describe(node))
            elif node.get("mode", 0) == MODE_MUTED:
                return "drop", None
            else:
                return "node", [str(node["id"]), slot]
            node, slot = self.nodes.get(int(link[1])), int(link[2])
        raise WorkflowError(f"{where}: link {link_id} runs in a cycle through reroutes or bypassed nodes")


def to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """API-format prompt ``{node id: {"class_type", "inputs", "_meta"}}`` of a UI-format workflow."""
    graph = _Graph(workflow)
    prompt: dict[str, dict] = {}
    for node_id in sorted(graph.nodes):
        node = graph.nodes[node_id]
        node_type = node.get("type")
        if node_type in VIRTUAL or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        if node_type not in object_info:
            raise WorkflowError(f"{describe(node)}: this ComfyUI has no node type {node_type!r} (a custom node package is missing)")
        node_def = object_info[node_type]
        inputs = widget_values(node, node_def)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            kind, value = graph.source(int(slot["link"]), slot.get("type"), f"{describe(node)} input {slot.get('name')!r}")
            if kind == "node":
                inputs[slot["name"]] = value
            elif kind == "drop":
                inputs.pop(slot["name"], None)
        prompt[str(node_id)] = {"class_type": node_type, "inputs": inputs, "_meta": {"title": node.get("title") or node_def.get("display_name") or node_type}}
    return prompt


def fetch_object_info(url: str, timeout: float = 60.0) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=timeout) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a UI-format ComfyUI workflow to an API-format prompt.")
    parser.add_argument("workflow", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--object-info", type=Path, help="a saved /object_info JSON")
    source.add_argument("--url", help="a running ComfyUI, e.g. http://127.0.0.1:8188")
    args = parser.parse_args(argv)
    object_info = json.loads(args.object_info.read_text()) if args.object_info else fetch_object_info(args.url)
    try:
        prompt = to_api(json.loads(args.workflow.read_text(encoding="utf-8")), object_info)
    except WorkflowError as e:
        raise SystemExit(f"{args.workflow}: {e}") from None
    json.dump(prompt, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
