"""SenseNova-U1 / U1.5 text-to-image in plain PyTorch (see /specs/sensenova-u1.md).

- :mod:`.config`: :class:`U1Config` from the checkpoint's config.json.
- :mod:`.towers`: :class:`PrefixTower` (prompt -> :class:`PrefixKV`) and
  :class:`GenerationTower` (noisy image, t, prefix KV -> x0), official key names.
- :mod:`.checkpoint`: the sharded checkpoint (index + shards), load and save.
- :mod:`.prompts`: the official prefixes and the tokenizer.
- :mod:`.presets`: LoRA presets and unfreeze patterns as data.
- :mod:`.sampling`: schedule and the t_eps clamp in sigma terms.
- :mod:`.recipes`: the U1 report's five ablation configurations as loss/timestep/dropout settings.
- :mod:`.official_lora`: the official LoRA file format (export, reference merge, ComfyUI keys).
"""

from .config import U1_8B_MOT, U15_8B_MOT, U1Config
from .towers import GenerationTower, PrefixKV, PrefixTower, build_towers, forward_uncached

__all__ = ["U1_8B_MOT", "U15_8B_MOT", "GenerationTower", "PrefixKV", "PrefixTower", "U1Config", "build_towers", "forward_uncached"]
