"""FlowLoRA: train LoRAs for flow-matching image models inside ComfyUI.

ComfyUI loads this package from ``custom_nodes`` and calls
:func:`comfy_entrypoint`. Importing it without ComfyUI succeeds and registers
nothing, so :mod:`trainer_core` stays usable on its own. Inside a ComfyUI older
than :data:`MIN_COMFYUI` (no V3 node API) it logs one error naming the minimum
version, registers nothing, and the server starts as usual. Every other
difference between supported ComfyUI versions lives in :mod:`.nodes.compat`.
"""

import importlib.util
import logging

MIN_COMFYUI = "0.3.75"
"""The first ComfyUI with Z-Image and the V3 node API this pack is written against."""

WEB_DIRECTORY = "./web"
"""Served by ComfyUI at ``/extensions/<this folder's name>/`` (its loader reads it for V3
extensions too). ``web/docs/<node id>.md`` and ``web/docs/<node id>/zh.md`` are the node
help pages the frontend fetches; the folder holds no JavaScript."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def host_problem() -> str | None:
    """Why this ComfyUI cannot run the pack, or ``None`` (also ``None`` outside ComfyUI)."""
    if importlib.util.find_spec("comfy") is None:
        return None  # plain import, e.g. trainer_core used as a library
    try:
        from comfyui_version import __version__ as version
    except ImportError:
        version = "unknown"
    try:
        from comfy_api.latest import ComfyExtension, io  # noqa: F401
    except ImportError:
        return f"FlowLoRA needs ComfyUI {MIN_COMFYUI} or later (V3 node API, comfy_api.latest); this ComfyUI (version {version}) has none. Update ComfyUI; the pack's nodes are not loaded."
    if version != "unknown" and _version_tuple(version) < _version_tuple(MIN_COMFYUI):
        return f"FlowLoRA needs ComfyUI {MIN_COMFYUI} or later; this is ComfyUI {version}. Update ComfyUI; the pack's nodes are not loaded."
    return None


_problem = host_problem()
if _problem is not None:
    logging.getLogger(__name__).error(_problem)
    NODE_CLASS_MAPPINGS: dict = {}  # ComfyUI's loader takes an empty V1 mapping quietly (it warns when there is none)
elif importlib.util.find_spec("comfy") is not None:

    async def comfy_entrypoint():
        from .nodes import FlowLoraExtension

        return FlowLoraExtension()
