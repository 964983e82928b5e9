"""LoRA engine: targets from presets and patterns, adapters on the activation path, export.

Typical use by the trainer (``model`` = ComfyUI's ``diffusion_model``, already
loaded and patched by ModelPatcher)::

    config = LoraConfig(preset="zimage_attn", rank=16, alpha=16)   # algorithm="lokr" etc.: .algorithms
    adapters = LoraAdapters.build(model, config, generator=torch.Generator().manual_seed(seed))
    opt = AdamW(adapters.parameters(), lr=1e-4)
    with adapters.attached(model):          # hooks on, base frozen; removed on exit
        for step in ...:
            loss(model(...)).backward(); opt.step(); opt.zero_grad()
    state = adapters.state_dict()           # resumable: load_state_dict() on a new build
    save_lora(path, lora_state_dict(adapters), lora_metadata(adapters, step=n))
"""

from .algorithms import ALGORITHMS
from .config import INITS, LoraConfig
from .engine import LoraAdapters
from .files import read_metadata, save_lora
from .keys import KEY_STYLES, METADATA_KEY, WEIGHT_NAMES, export_name, lora_metadata, lora_state_dict
from .presets import PRESETS, Preset, Split
from .targets import Target, TargetPlan, resolve

__all__ = [
    "ALGORITHMS",
    "INITS",
    "KEY_STYLES",
    "METADATA_KEY",
    "PRESETS",
    "WEIGHT_NAMES",
    "LoraAdapters",
    "LoraConfig",
    "Preset",
    "Split",
    "Target",
    "TargetPlan",
    "export_name",
    "lora_metadata",
    "lora_state_dict",
    "read_metadata",
    "resolve",
    "save_lora",
]
