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

ComfyUI maps keys by name only: a patch whose shape does not fit its weight
is accepted and then fails at sampling time with a logged error, leaving the
weight unchanged. :func:`split_by_shape` checks every LoRA (up/down, LoCon mid)
and ``diff``/``set`` patch against the model's weight, or its row slice for
Z-Image's ``to_q``/``to_k``/``to_v`` on the fused ``qkv``, before patching.
Other adapter types (LoHa, LoKr, OFT, ...) are passed on unchecked.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

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


def load_lora_file(path: str) -> dict[str, Tensor]:
    """The tensors of a LoRA file through ComfyUI's loader; an unreadable file raises naming ``path``."""
    import comfy.utils

    try:
        return comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as e:  # safetensors, pickle and OS errors have no common base; re-raised with the path
        raise ValueError(f"{path}: cannot be read as a LoRA file ({type(e).__name__}: {e}); the file is corrupt, truncated or not a LoRA: download or save it again") from e


@dataclass(frozen=True)
class Mismatch:
    """A patch whose change does not fit its weight: ``key`` is the file's key (prefix), ``target``
    the model weight, ``file_shape`` the change the file holds, ``expected`` the weight's (or slice's) shape."""

    key: str
    target: str
    file_shape: str
    expected: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.key}: file {self.file_shape}, model {self.target} expects {self.expected}"


def split_by_shape(model_patcher, patches: Mapping, key_map: Mapping[str, object], lora_sd: Mapping[str, Tensor]) -> tuple[dict, list[Mismatch]]:
    """``(fitting_patches, mismatches)`` of ComfyUI ``patches`` against ``model_patcher``'s weights.

    ``key_map`` (file key prefix -> patch key) and ``lora_sd`` name each
    mismatch by the file's key. Patches on weights the model lacks pass
    through (``add_patches`` reports those).
    """
    weights = model_patcher.model.state_dict()
    prefixes = {key.rsplit(".", n)[0] for key in lora_sd for n in (1, 2, 3) if key.count(".") >= n}
    fitting, mismatches = {}, []
    for target, value in patches.items():
        name, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        weight = weights.get(name)
        change = None if weight is None else change_shape(value)
        if change is None:
            fitting[target] = value
            continue
        expected = list(weight.shape)
        if offset is not None:
            expected[offset[0]] = offset[2]
        file_shape, flat = change
        if flat == (expected[0], math.prod(expected[1:])):
            fitting[target] = value
        else:
            keys = [k for k, t in key_map.items() if t == target and k in prefixes]
            where = f"{name} rows {offset[1]}:{offset[1] + offset[2]}" if offset is not None else name
            mismatches.append(Mismatch(keys[0] if keys else where, where, file_shape, tuple(expected)))
    return fitting, mismatches


def change_shape(value) -> tuple[str, tuple[int, int]] | None:
    """``(description, (rows, columns))`` of the weight change a ComfyUI patch makes, or None when unchecked.

    LoRA: ``up (out, r) x down (r, in...)`` (lora_up/lora_B x lora_down/lora_A) (a LoCon ``mid`` adds its
    kernel size); ``diff``/``set``: the tensor's shape. A LoRA whose up and down
    ranks differ gives ``(-1, -1)``, which fits nothing.
    """
    if isinstance(value, tuple) and len(value) == 2 and value[0] in ("diff", "set") and isinstance(value[1][0], Tensor):
        shape = tuple(value[1][0].shape)
        return f"{value[0]} {shape}", (shape[0], math.prod(shape[1:])) if shape else (1, 1)
    weights = getattr(value, "weights", None)
    if type(value).__name__ != "LoRAAdapter" or weights is None or len(weights) < 6 or weights[5] is not None:
        return None  # other adapters, and LoRAs with a reshape entry (padded weights)
    up, down, mid = weights[0], weights[1], weights[3]
    description = f"up {tuple(up.shape)} x down {tuple(down.shape)}"
    if math.prod(up.shape[1:]) != down.shape[0]:
        return description + " (ranks differ)", (-1, -1)
    columns = math.prod(down.shape[1:])
    if mid is not None:
        description += f" with mid {tuple(mid.shape)}"
        columns = down.shape[1] * math.prod(mid.shape[2:])
    return description, (up.shape[0], columns)


def mapped_patches(model_patcher, lora_sd: Mapping[str, Tensor]) -> tuple[dict, list[str], list[Mismatch]]:
    """``(fitting patches, unmapped keys, shape mismatches)`` of a LoRA file's tensors on ``model_patcher``.

    As ``comfy.sd.load_lora_for_models`` does for the model: ComfyUI's key map,
    ``comfy.lora_convert.convert_lora`` (other trainers' formats), ``load_lora``;
    then :func:`split_by_shape`.
    """
    import comfy.lora
    import comfy.lora_convert

    key_map = comfy.lora.model_lora_keys_unet(model_patcher.model, {})
    converted = comfy.lora_convert.convert_lora(dict(lora_sd))
    with capture_unloaded() as unloaded:
        patches = comfy.lora.load_lora(converted, key_map)
    fitting, mismatches = split_by_shape(model_patcher, patches, key_map, converted)
    return fitting, list(unloaded), mismatches


@dataclass(frozen=True)
class AppliedLora:
    """What :func:`apply_lora` made: ``model``, a patched clone; ``applied``, how many patches it carries;
    ``unloaded``, file keys ComfyUI did not map and patches on weights the model lacks; ``mismatches``,
    patches whose shape does not fit their weight (not applied)."""

    model: object
    applied: int
    unloaded: list[str]
    mismatches: list[Mismatch]

    def not_loaded(self) -> list[str]:
        """Everything not applied, one line each."""
        return [*self.unloaded, *map(str, self.mismatches)]


def apply_lora(model_patcher, lora_sd: Mapping[str, Tensor], strength: float = 1.0) -> AppliedLora:
    """A clone of ``model_patcher`` carrying ``lora_sd`` as an ordinary LoRA patch, as
    ``comfy.sd.load_lora_for_models`` makes it, with shapes checked first. The input patcher is not changed."""
    patches, unloaded, mismatches = mapped_patches(model_patcher, lora_sd)
    clone = model_patcher.clone()
    applied = set(clone.add_patches(patches, strength))
    unloaded += [str(key) for key in patches if key not in applied]
    result = AppliedLora(clone, len(applied), unloaded, mismatches)
    if result.not_loaded():
        log.warning("LoRA: %d keys not loaded: %s", len(result.not_loaded()), "; ".join(result.not_loaded()))
    return result
