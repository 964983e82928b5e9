"""A tiny SenseNova-U1 with the official key names, written in the official layout.

Same tensor names and nesting as the 8B checkpoint, small widths: hidden 64,
2 layers, 4 query / 2 KV heads of 16, vision width 32, real vocabulary size
(151936) so ComfyUI's bundled Qwen tokenizer ids fit. About 20 M parameters,
mostly the embedding table and lm_head; 40 MB in bf16.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flowlora.trainer_core.models.u1 import U1Config, build_towers
from flowlora.trainer_core.models.u1.checkpoint import save_sharded
from flowlora.trainer_core.models.u1.config import LLMConfig, VisionConfig

TINY_LLM = LLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
TINY_VISION = VisionConfig(hidden_size=32)


def tiny_config(pixel_head: bool = False) -> U1Config:
    """U1 (MLP head, noise max 8) or U1.5 (ConvDecoder, noise max 16) at tiny width."""
    return U1Config(llm=TINY_LLM, vision=TINY_VISION, use_pixel_head=pixel_head, noise_scale_max_value=16.0 if pixel_head else 8.0)


def tiny_state_dict(cfg: U1Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of both towers drawn from one seeded generator, bf16.

    Matrices ~ N(0, 1/fan_in) (so activations stay O(1) through the layers),
    biases ~ N(0, 0.02^2), norm weights 1 + N(0, 0.1^2).
    """
    with torch.device("meta"):
        prefix, gen = build_towers(cfg)
    shapes = {k: v.shape for k, v in {**prefix.state_dict(), **gen.state_dict()}.items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if len(shape) == 1 and "norm" in name:
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            t = 0.02 * torch.randn(shape, generator=g)
        else:
            fan_in = shape[1] if "embed_tokens" not in name else 1
            fan_in *= int(torch.Size(shape[2:]).numel()) if len(shape) > 2 else 1
            t = torch.randn(shape, generator=g) / fan_in**0.5
        out[name] = t.to(torch.bfloat16)
    return out


def write_tiny_checkpoint(folder: Path, pixel_head: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Save config.json + index + 2 shards into ``folder``; returns the state dict written."""
    cfg = tiny_config(pixel_head)
    state = tiny_state_dict(cfg, seed)
    save_sharded(folder, state, cfg, num_shards=2)
    return state
