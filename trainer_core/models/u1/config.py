"""SenseNova-U1 configuration, read from the checkpoint's ``config.json``.

Only the fields the text-to-image path uses are kept (spec section 1.2). The
official ``config.json`` nests the Qwen3 fields under ``llm_config`` and the
patch embedder under ``vision_config``; :meth:`U1Config.from_dict` reads that
layout and ignores the rest, logging nothing for absent optional fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError, require

PATCH_SIZE = 16
"""Official pixels per side of one vision patch (``vision_config.patch_size``; the default of :class:`VisionConfig`)."""

MERGE = 2
"""Official patches merged per side into one generation token (1 / ``downsample_ratio`` 0.5)."""

TOKEN_PX = PATCH_SIZE * MERGE
"""Official pixels per side of one generation token: 32. A model's own value is :attr:`U1Config.token_px`."""

TIME_FREQ_DIM = 256
"""Width of the sinusoidal time / noise-scale embedding."""


@dataclass(frozen=True)
class LLMConfig:
    """The Qwen3 decoder shared (in shape) by both towers."""

    hidden_size: int = 4096
    intermediate_size: int = 12288
    num_hidden_layers: int = 42
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    vocab_size: int = 151936
    rms_norm_eps: float = 1e-6
    rope_theta: float = 5_000_000.0
    rope_theta_hw: float = 10_000.0

    def __post_init__(self):
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size"):
            require(getattr(self, name) > 0, f"llm_config.{name}", getattr(self, name), "must be > 0")
        require(self.head_dim % 8 == 0, "llm_config.head_dim", self.head_dim, "must be a multiple of 8 (t half, h and w quarters, each rotated in halves)")
        require(self.num_attention_heads % self.num_key_value_heads == 0, "llm_config.num_key_value_heads", self.num_key_value_heads, f"must divide num_attention_heads = {self.num_attention_heads}")


@dataclass(frozen=True)
class VisionConfig:
    """The two-convolution patch embedder (understanding and generation).

    ``patch_size`` (pixels per side of the first conv's patch) and
    ``downsample_ratio`` (the dense conv merges ``1 / downsample_ratio``
    patches per side) fix the generation token: :attr:`token_px` pixels per
    side, 16 / 0.5 = 32 for every official checkpoint. Both are read from
    config.json (``vision_config``, or the top level for ``downsample_ratio``,
    where the official file also has it), so a smaller model can use smaller tokens.
    """

    hidden_size: int = 1024
    rope_theta_vision: float = 10_000.0
    num_channels: int = 3
    patch_size: int = PATCH_SIZE
    downsample_ratio: float = 1.0 / MERGE

    def __post_init__(self):
        require(self.hidden_size % 4 == 0, "vision_config.hidden_size", self.hidden_size, "must be a multiple of 4 (2-D RoPE over interleaved pairs)")
        require(isinstance(self.patch_size, int) and self.patch_size >= 1, "vision_config.patch_size", self.patch_size, "must be an integer >= 1")
        merge = 1.0 / self.downsample_ratio if self.downsample_ratio > 0 else 0.0
        require(merge >= 1 and abs(merge - round(merge)) < 1e-6, "downsample_ratio", self.downsample_ratio, "must be 1 / k for an integer k >= 1 (official: 0.5)")

    @property
    def merge(self) -> int:
        """Patches merged per side into one generation token (the dense conv's kernel and stride)."""
        return round(1.0 / self.downsample_ratio)

    @property
    def token_px(self) -> int:
        """Pixels per side of one generation token (official: 32)."""
        return self.patch_size * self.merge


@dataclass(frozen=True)
class U1Config:
    """Everything the T2I forward needs. Defaults are SenseNova-U1-8B-MoT."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    use_pixel_head: bool = False
    """False: U1's 2-Linear MLP ``fm_head``; True: U1.5's ConvDecoder."""
    t_eps: float = 0.05
    noise_scale: float = 1.0
    noise_scale_mode: str = "resolution"
    noise_scale_base_image_seq_len: int = 64
    noise_scale_max_value: float = 8.0
    add_noise_scale_embedding: bool = True
    fm_head_layers: int = 2

    def __post_init__(self):
        require(0.0 < self.t_eps < 1.0, "t_eps", self.t_eps, "must lie in (0, 1)")
        require(self.noise_scale > 0, "noise_scale", self.noise_scale, "must be > 0")
        require(self.noise_scale_mode in NOISE_SCALE_MODES, "noise_scale_mode", self.noise_scale_mode, f"must be one of {', '.join(NOISE_SCALE_MODES)}")
        require(self.noise_scale_max_value > 0, "noise_scale_max_value", self.noise_scale_max_value, "must be > 0")
        require(self.fm_head_layers == 2, "fm_head_layers", self.fm_head_layers, "only 2 (the U1/U1.5 heads) is implemented; the deep AdaLN head is not")

    @property
    def token_px(self) -> int:
        """Pixels per side of one generation token: ``vision_config.patch_size / downsample_ratio`` (official: 32)."""
        return self.vision.token_px

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """``(token_h, token_w)`` of an image; ConfigError unless both sides are multiples of :attr:`token_px`."""
        px = self.token_px
        if height % px or width % px:
            raise ConfigError("image size", (width, height), f"this U1 model needs width and height that are multiples of {px} pixels (its generation token)")
        return height // px, width // px

    @property
    def head_kind(self) -> str:
        """Registry name of the output head: ``"mlp"`` (U1) or ``"conv_decoder"`` (U1.5)."""
        return "conv_decoder" if self.use_pixel_head else "mlp"

    def noise_scale_for(self, num_tokens: int) -> float:
        """Effective noise scale ``s_eff`` for ``num_tokens`` generation tokens (spec 4.1).

        ``s = noise_scale * sqrt(N / base)`` (``dynamic_sqrt`` takes a further
        square root), clamped to ``noise_scale_max_value`` as inference does.
        N counts the model's own tokens (:attr:`token_px` per side), as the
        official code does (``gh * gw * downsample_ratio**2`` on its patch
        grid): 32-px tokens for every official checkpoint.
        """
        s = self.noise_scale * math.sqrt(num_tokens / self.noise_scale_base_image_seq_len)
        if self.noise_scale_mode == "dynamic_sqrt":
            s = math.sqrt(s)
        return min(s, self.noise_scale_max_value)

    def noise_scale_for_image(self, height: int, width: int) -> float:
        """:meth:`noise_scale_for` the tokens of a ``height`` x ``width`` image (:meth:`token_grid`, which checks the size)."""
        th, tw = self.token_grid(height, width)
        return self.noise_scale_for(th * tw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> U1Config:
        """Build from the official ``config.json`` layout (unknown keys ignored)."""
        llm_raw = dict(raw.get("llm_config", {}))
        if "head_dim" not in llm_raw and "hidden_size" in llm_raw and "num_attention_heads" in llm_raw:
            llm_raw["head_dim"] = llm_raw["hidden_size"] // llm_raw["num_attention_heads"]
        vis_raw = dict(raw.get("vision_config", {}))
        vis_raw.setdefault("downsample_ratio", raw.get("downsample_ratio", 1.0 / MERGE))
        if isinstance(vis_raw["downsample_ratio"], list | tuple):  # the official 1-tuple quirk (spec 1.2)
            vis_raw["downsample_ratio"] = vis_raw["downsample_ratio"][0]
        top = {f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name not in ("llm", "vision") and f.name in raw}
        return cls(llm=_pick(LLMConfig, llm_raw), vision=_pick(VisionConfig, vis_raw), **top)

    @classmethod
    def from_json(cls, path: str | Path) -> U1Config:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """The official nested layout (what :meth:`from_dict` reads back)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("llm", "vision")}
        out["model_type"] = "neo_chat"
        out["architectures"] = ["NEOChatModel"]
        out["llm_config"] = {**dataclasses.asdict(self.llm), "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}
        out["downsample_ratio"] = self.vision.downsample_ratio
        out["vision_config"] = {**dataclasses.asdict(self.vision), "llm_hidden_size": self.llm.hidden_size}
        return out


NOISE_SCALE_MODES = ("resolution", "dynamic", "dynamic_sqrt")


def _pick(kind, raw: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in raw.items() if k in names})


U1_8B_MOT = U1Config()
"""SenseNova-U1-8B-MoT (spec 1.2)."""

U15_8B_MOT = U1Config(use_pixel_head=True, noise_scale_max_value=16.0)
"""SenseNova-U1.5-8B-MoT: ConvDecoder head, noise-scale max 16."""
