"""Wire types the pack adds to ComfyUI (stable names: saved workflows use them)."""

import math
from collections.abc import Callable, Mapping
from typing import Any

from comfy_api.latest import io

from ..trainer_core.errors import ConfigError

Timesteps = io.Custom("FLOWLORA_TIMESTEPS")
"""A :class:`trainer_core.timesteps.TimestepConfig`."""

Loss = io.Custom("FLOWLORA_LOSS")
"""A :class:`trainer_core.losses.LossConfig`."""

Preview = io.Custom("FLOWLORA_PREVIEW")
"""A :class:`nodes.preview.PreviewSettings` (prompts, VAE and :class:`trainer_core.previews.PreviewConfig`)."""

Validation = io.Custom("FLOWLORA_VALIDATION")
"""A :class:`nodes.validation.ValidationSettings` (held-out dataset and :class:`trainer_core.validation.ValidationConfig`)."""

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


def check_inputs(node: type[io.ComfyNode], values: Mapping[str, Any]) -> bool | str:
    """``True``, or a message naming the first widget value outside the node's declared range.

    ComfyUI checks ``min``/``max`` and combo options itself only for inputs a
    node's ``validate_inputs`` neither names nor takes through ``**kwargs``
    (``execution.validate_inputs``, 0.3.75 and 0.33): so every pack node's
    ``validate_inputs`` calls this first with the values it received. Checks
    the node's own ``define_schema()`` inputs: Int/Float ``min``/``max``
    (NaN and infinity are out of range too) and Combo ``options``. Linked or
    absent inputs (``None``) are skipped. Messages read like ConfigError's:
    ``steps = 0: must lie in [1, 1000000]``.
    """
    for spec in node.define_schema().inputs:
        value = values.get(spec.id)
        if value is None:
            continue
        if isinstance(spec, (io.Int.Input, io.Float.Input)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            low = -math.inf if spec.min is None else spec.min
            high = math.inf if spec.max is None else spec.max
            if not low <= value <= high:
                return str(ConfigError(spec.id, value, f"must lie in [{_number(spec.min)}, {_number(spec.max)}]"))
        elif isinstance(spec, io.Combo.Input) and spec.options is not None and value not in spec.options:
            shown = ", ".join(map(str, spec.options)) if len(spec.options) <= 20 else f"one of the {len(spec.options)} listed"
            return str(ConfigError(spec.id, value, f"must be one of {shown}"))
    return True


def _number(limit: float | None) -> str:
    return "unbounded" if limit is None else f"{limit:g}" if isinstance(limit, float) else str(limit)
