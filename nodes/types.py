"""Wire types the pack adds to ComfyUI (stable names: saved workflows use them)."""

from comfy_api.latest import io

Timesteps = io.Custom("FLOWLORA_TIMESTEPS")
"""A :class:`trainer_core.timesteps.TimestepConfig`."""

Loss = io.Custom("FLOWLORA_LOSS")
"""A :class:`trainer_core.losses.LossConfig`."""

PREFIX = "FlowLoRA"
"""Node-id prefix; never change it, saved workflows refer to node ids."""

CATEGORY = "FlowLoRA"
