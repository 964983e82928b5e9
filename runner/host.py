"""ComfyUI in this process, as ``main.py`` sets it up, without the server.

:func:`start` finds a ComfyUI, sets its command-line settings (device, base directory),
imports it, registers the built-in extra nodes, this pack's nodes and the other custom
node packages of its ``custom_nodes`` folders; :func:`object_info` is what the server's
``/object_info`` returns for the parts the workflow converter reads; :class:`Executor`
runs a prompt's outputs with ComfyUI's own ``execution.PromptExecutor``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


class HostError(RuntimeError):
    """ComfyUI or a custom node package cannot be set up; the message says what to do."""


def find_comfyui(explicit: str | None = None) -> Path:
    """``explicit``, else ``COMFYUI_PATH``, else the ComfyUI whose ``custom_nodes`` holds this pack,
    else the test host ``.comfyui/ComfyUI`` of a development clone."""
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("--comfyui", Path(explicit)))
    elif os.environ.get("COMFYUI_PATH"):
        candidates.append(("COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"])))
    else:
        for where in (Path(os.path.abspath(__file__)).parents[1], REPO):  # as installed (a link in custom_nodes), then resolved
            if where.parent.name == "custom_nodes":
                candidates.append(("the ComfyUI holding this pack", where.parent.parent))
        candidates.append(("the development host", REPO / ".comfyui" / "ComfyUI"))
    for _, root in candidates:
        if (root / "main.py").is_file() and (root / "comfy").is_dir():
            return root.resolve()
    tried = "; ".join(f"{label}: {root}" for label, root in candidates)
    raise HostError(f"no ComfyUI found ({tried}); pass --comfyui /path/to/ComfyUI or set COMFYUI_PATH")


def start(root: Path, *, cpu: bool, base_directory: str | None = None) -> None:
    """Import ComfyUI from ``root`` with ``--cpu`` / ``--base-directory`` as ``main.py`` would take them."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = cpu
    if base_directory is not None:
        if not hasattr(args, "base_directory"):
            raise HostError(f"this ComfyUI ({root}) has no --base-directory; run without --base-directory")
        args.base_directory = os.path.abspath(base_directory)
    import comfy.model_management  # noqa: F401  (reads args at import)
    import folder_paths  # noqa: F401  (reads args.base_directory at import)


def load_nodes(extra_packages: list[str], other_custom_nodes: bool) -> list[str]:
    """Register ComfyUI's nodes, this pack's and other custom node packages; returns the packages that failed."""
    import folder_paths

    import nodes  # ComfyUI's nodes.py (this repo's root is never on sys.path)

    from ..nodes import FlowLoraExtension

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    for node_cls in asyncio.run(FlowLoraExtension().get_node_list()):
        schema = node_cls.GET_SCHEMA()
        nodes.NODE_CLASS_MAPPINGS[schema.node_id] = node_cls
        node_cls.RELATIVE_PYTHON_MODULE = "custom_nodes.flowlora"
        if schema.display_name is not None:
            nodes.NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] = schema.display_name
    packages = [os.path.abspath(p) for p in extra_packages]
    if other_custom_nodes:
        for folder in folder_paths.get_folder_paths("custom_nodes"):
            if os.path.isdir(folder):
                packages += [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name != "__pycache__" and not name.endswith(".disabled")]
    failed = []
    for path in packages:
        if os.path.realpath(path) == os.path.realpath(REPO):
            continue  # this pack: registered above from the same modules the runner uses
        if os.path.isfile(path) and not path.endswith(".py"):
            continue
        if not asyncio.run(nodes.load_custom_node(path, ignore=set(nodes.NODE_CLASS_MAPPINGS), module_parent="custom_nodes")):
            failed.append(path)
    return failed


def object_info() -> dict[str, dict]:
    """``/object_info`` of every registered node (inputs, input order, outputs, display name)."""
    import nodes  # ComfyUI's nodes.py (this repo's root is never on sys.path)

    out = {}
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        if hasattr(cls, "GET_NODE_INFO_V1"):
            out[name] = cls.GET_NODE_INFO_V1()
            continue
        inputs = cls.INPUT_TYPES()
        out[name] = {
            "input": inputs,
            "input_order": {key: list(value) for key, value in inputs.items()},
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "name": name,
            "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return out


def validate(prompt: dict, outputs: list[str]) -> None:
    """ComfyUI's own prompt validation (ranges, choices, links) of what ``outputs`` need; raises naming nodes and inputs."""
    import execution

    ok, error, _, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, outputs))
    if ok:
        return
    lines = [error.get("message", "invalid prompt") + (f": {error['details']}" if error.get("details") else "")]
    for node_id, entry in node_errors.items():
        node = prompt.get(node_id, {})
        title = node.get("_meta", {}).get("title") or node.get("class_type")
        for e in entry.get("errors", []):
            lines.append(f"  node {node_id} ({title}): {e.get('message')}: {e.get('details', '')}")
    raise HostError("ComfyUI refused the workflow:\n" + "\n".join(lines))


@dataclass
class _Messages:
    """Stands in for ComfyUI's server (no websocket clients): the executor sends it nothing the
    runner needs. The executor's outcome is read from its own ``status_messages``, which holds
    "execution_error" too (sent to a server only for a prompt with a client id)."""

    client_id: str | None = None
    last_node_id: str | None = None

    def send_sync(self, event, data, sid=None) -> None:
        pass

    def queue_updated(self) -> None:
        pass


class ExecutionFailed(RuntimeError):
    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


class Executor:
    """ComfyUI's ``PromptExecutor`` with its cache kept between calls (several trainers share loaders)."""

    def __init__(self):
        import execution

        self.messages = _Messages()
        self.executor = execution.PromptExecutor(self.messages, cache_type=False, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})

    def run(self, prompt: dict, outputs: list[str]) -> None:
        """Execute what ``outputs`` need; raises :class:`ExecutionFailed` with ComfyUI's message naming the node."""
        self.executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
        for event, data in self.executor.status_messages:
            node = f"node {data.get('node_id')} ({data.get('node_type')})"
            if event == "execution_interrupted":
                raise ExecutionFailed(f"interrupted in {node}", interrupted=True)
            if event == "execution_error":
                raise ExecutionFailed(f"{node} failed: {data.get('exception_type')}: {data.get('exception_message')}")
        if not self.executor.success:
            raise ExecutionFailed("ComfyUI's executor reported a failure without a message")
