"""Wire types the pack adds to ComfyUI (stable names: saved workflows use them)."""

from collections.abc import Callable
from typing import Any

from comfy_api.latest import io

from ..trainer_core.errors import ConfigError

Timesteps = io.Custom("FLOWLORA_TIMESTEPS")
"""A :class:`trainer_core.timesteps.TimestepConfig`."""

Loss = io.Custom("FLOWLORA_LOSS")
"""A :class:`trainer_core.losses.LossConfig`."""

PREFIX = "FlowLoRA"
"""Node-id prefix; never change it, saved workflows refer to node ids."""

CATEGORY = "FlowLoRA"


def validation_message(build: Callable[..., Any], *args: Any, **kwargs: Any) -> bool | str:
    """``True`` if ``build(*args, **kwargs)`` accepts the settings, else the
    ConfigError text (which names the field and value): what a V3 node's
    ``validate_inputs`` returns, so ComfyUI refuses the prompt before running it."""
    try:
        build(*args, **kwargs)
    except ConfigError as e:
        return str(e)
    return True
