"""The workflow the runner trains: read (UI or API format), overridden (``--set``), its trainers.

UI-format files (what the frontend saves, the pack's ``workflows/``) are converted with the
pack's converter (``scripts/workflow_api.py``), exactly as the frontend's "Export (API)"
does; API-format files (``{node id: {"class_type", "inputs"}}``) are taken as they are.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from .host import REPO

TRAINER = "FlowLoRALoraTrainer"


class GraphError(ValueError):
    """A workflow or override the runner cannot use; the message names the file, node or input."""


def converter():
    """``scripts/workflow_api.py`` as a module (scripts/ is not a package)."""
    name = "flowlora_workflow_api"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "workflow_api.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def load(path: str | Path, object_info: dict) -> dict[str, dict]:
    """The API-format prompt of the workflow file at ``path``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraphError(f"{path}: no such workflow file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GraphError(f"{path}: not a readable workflow JSON ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        api = converter()
        try:
            return api.to_api(data, object_info)
        except api.WorkflowError as e:
            raise GraphError(f"{path}: {e}") from None
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return {str(k): {**v, "inputs": dict(v.get("inputs", {}))} for k, v in data.items()}
    raise GraphError(f"{path}: neither a UI-format workflow (a 'nodes' list) nor an API-format prompt ({{id: {{class_type, inputs}}}})")


def find_node(prompt: dict, key: str) -> str:
    """A node by id, exact title or class type (the last two must be unique)."""
    if key in prompt:
        return key
    for field, label in ((lambda n: n.get("_meta", {}).get("title"), "title"), (lambda n: n["class_type"], "class type")):
        matches = [i for i, n in prompt.items() if field(n) == key]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise GraphError(f"{len(matches)} nodes have the {label} {key!r} (ids {', '.join(matches)}); name the node by id")
    known = ", ".join(f"{i} ({n.get('_meta', {}).get('title') or n['class_type']})" for i, n in prompt.items())
    raise GraphError(f"no node {key!r} in the workflow (by id, title or class type); nodes: {known}")


def parse_value(text: str) -> Any:
    """A JSON literal (``500``, ``1e-4``, ``true``, ``"a"``) or else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: dict, overrides: list[str], object_info: dict) -> list[str]:
    """``NODE.INPUT=VALUE`` settings onto ``prompt`` (in place); returns one line per change."""
    changes = []
    for item in overrides:
        target, sep, text = item.partition("=")
        node_key, dot, name = target.rpartition(".")
        if not sep or not dot or not node_key or not name:
            raise GraphError(f"--set {item!r}: write NODE.INPUT=VALUE (NODE: id, title or class type), e.g. --set 10.steps=500")
        node_id = find_node(prompt, node_key)
        node = prompt[node_id]
        spec = object_info.get(node["class_type"], {}).get("input", {})
        names = [n for section in ("required", "optional") for n in spec.get(section, {})]
        if name not in names:
            raise GraphError(f"--set {item!r}: node {node_id} ({node['class_type']}) has no input {name!r}; inputs: {', '.join(names)}")
        if isinstance(node["inputs"].get(name), list):
            raise GraphError(f"--set {item!r}: input {name!r} of node {node_id} is a link, not a value")
        value = parse_value(text)
        changes.append(f"node {node_id} ({node['class_type']}).{name}: {node['inputs'].get(name)!r} -> {value!r}")
        node["inputs"][name] = value
    return changes


def trainers(prompt: dict, chosen: list[str]) -> list[str]:
    """The LoRA Trainer nodes to run: ``chosen`` (ids, titles), else every one in id order."""
    if chosen:
        ids = [find_node(prompt, key) for key in chosen]
        wrong = [i for i in ids if prompt[i]["class_type"] != TRAINER]
        if wrong:
            raise GraphError(f"--trainer {', '.join(wrong)}: not a LoRA Trainer ({', '.join(prompt[i]['class_type'] for i in wrong)})")
        return ids
    found = sorted((i for i, n in prompt.items() if n["class_type"] == TRAINER), key=lambda i: (len(i), i))
    if not found:
        raise GraphError(f"the workflow has no LoRA Trainer ({TRAINER}) node to run")
    return found
