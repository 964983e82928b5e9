"""LoRA state dicts <-> ComfyUI weight patches (the ComfyUI side of :mod:`trainer_core.lora`).

Everything goes through ComfyUI's own LoRA path, so a trained LoRA behaves on
a MODEL exactly as the saved file will in any ComfyUI:

- ``comfy.lora.model_lora_keys_unet(model.model, {})`` maps file keys to model
  weights (row slices for Z-Image's ``to_q``/``to_k``/``to_v``);
- ``comfy.lora.load_lora(sd, key_map)`` turns them into patches;
- ``ModelPatcher.clone().add_patches(patches, strength)`` puts them on a clone.

Keys ComfyUI does not map are reported by name: ``comfy.lora.load_lora`` logs
``lora key not loaded: <key>`` and ``comfy.sd.load_lora_for_models`` logs
``NOT LOADED <key>`` (0.3.75 and today); :func:`capture_unloaded` collects them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

from torch import Tensor

log = logging.getLogger(__name__)

_NOT_LOADED_PREFIXES = ("lora key not loaded: ", "NOT LOADED ")


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for prefix in _NOT_LOADED_PREFIXES:
            if message.startswith(prefix):
                key = message[len(prefix):].strip()
                if key not in self.keys:
                    self.keys.append(key)


@contextlib.contextmanager
def capture_unloaded() -> Iterator[list[str]]:
    """Collect, into the yielded list, every key ComfyUI's LoRA loading reports as not loaded."""
    handler = _Collector()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.keys
    finally:
        root.removeHandler(handler)


def lora_patches(model_patcher, lora_sd: Mapping[str, Tensor]) -> tuple[dict, list[str]]:
    """``(patches, unloaded_keys)``: ComfyUI patches of ``lora_sd`` for ``model_patcher``'s model.

    ``patches`` is what ``ModelPatcher.add_patches`` takes (keys are model
    weight names, or ``(name, (dim, start, size))`` for row slices).
    """
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model_patcher.model, {})
    with capture_unloaded() as unloaded:
        patches = comfy.lora.load_lora(dict(lora_sd), key_map)
    return patches, list(unloaded)


def apply_lora(model_patcher, lora_sd: Mapping[str, Tensor], strength: float = 1.0) -> tuple[object, list[str]]:
    """A clone of ``model_patcher`` carrying ``lora_sd`` as an ordinary LoRA patch.

    Returns ``(clone, unloaded_keys)``: keys of ``lora_sd`` that ComfyUI did
    not map plus patches whose target weight the model lacks. The input
    patcher is not changed.
    """
    patches, unloaded = lora_patches(model_patcher, lora_sd)
    clone = model_patcher.clone()
    applied = set(clone.add_patches(patches, strength))
    for key in patches:
        if key not in applied:
            unloaded.append(str(key))
    if unloaded:
        log.warning("LoRA: %d keys not loaded: %s", len(unloaded), ", ".join(unloaded))
    return clone, unloaded
