"""FlowLoRA: train LoRAs for flow-matching image models inside ComfyUI.

ComfyUI loads this package from ``custom_nodes`` and calls
:func:`comfy_entrypoint`. Importing it without ComfyUI succeeds and registers
nothing, so :mod:`trainer_core` stays usable on its own.
"""

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # not running inside ComfyUI
    ComfyExtension = None

if ComfyExtension is not None:

    async def comfy_entrypoint() -> ComfyExtension:
        from .nodes import FlowLoraExtension

        return FlowLoraExtension()
