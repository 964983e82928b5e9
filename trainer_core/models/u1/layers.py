"""Building blocks of SenseNova-U1's T2I path (spec sections 3.3 to 3.8).

Every module takes ``ops``, a namespace with ``Linear``, ``Conv2d`` and
``Embedding`` classes (default :mod:`torch.nn`), so a host can substitute its
own layer classes (e.g. ones that stream CPU-resident weights to the device)
without this package importing the host. Attribute names are the official
checkpoint's, so ``state_dict()`` keys are the checkpoint's keys.

Shapes: ``B`` batch, ``S`` sequence, ``H``/``KV`` query/key-value heads, ``hd``
head dim, ``D`` hidden size. Positions are a LongTensor ``(S, 3)`` of
``(t, h, w)`` shared by the whole batch.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import Registry
from .config import TIME_FREQ_DIM, TOKEN_PX, LLMConfig, VisionConfig

TORCH_OPS = SimpleNamespace(Linear=nn.Linear, Conv2d=nn.Conv2d, Embedding=nn.Embedding)
"""The default ``ops``: plain torch layers."""


class RMSNorm(nn.Module):
    """Qwen3 RMSNorm: normalise in fp32, cast back to the input dtype, times ``weight``."""

    def __init__(self, dim: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(device=x.device, dtype=x.dtype) * x32.to(x.dtype)


def rope_rotate_half(x: Tensor, pos: Tensor, theta: float) -> Tensor:
    """NeoX rotate-half RoPE on the last dim ``D`` of ``x`` (spec 3.5 step 5).

    ``x``: ``(B, S, heads, D)``; ``pos``: ``(S,)``. ``inv_freq_k = theta^(-2k/D)``;
    cos/sin are computed in fp32 and cast to ``x.dtype`` before multiplying.
    """
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = pos.to(device=x.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # (S, 1, D)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Qwen3 GQA attention with U1's split q/k norms and 3-axis RoPE.

    ``suffix`` is ``""`` (understanding tower) or ``"_mot_gen"`` (generation
    tower) and names the parameters: ``q_proj{suffix}``, ``q_norm{suffix}``,
    ``q_norm_hw{suffix}``, ... The t half (dims ``0..hd/2``) is normed by
    ``q_norm`` and rotated by position t (theta ``rope_theta``); the hw half by
    ``q_norm_hw``, then h (next quarter) and w (last quarter) with ``rope_theta_hw``.
    """

    def __init__(self, cfg: LLMConfig, suffix: str, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.cfg, self.suffix = cfg, suffix
        d, hd = cfg.hidden_size, cfg.head_dim
        kw = dict(bias=False, dtype=dtype, device=device)
        setattr(self, f"q_proj{suffix}", ops.Linear(d, cfg.num_attention_heads * hd, **kw))
        setattr(self, f"k_proj{suffix}", ops.Linear(d, cfg.num_key_value_heads * hd, **kw))
        setattr(self, f"v_proj{suffix}", ops.Linear(d, cfg.num_key_value_heads * hd, **kw))
        setattr(self, f"o_proj{suffix}", ops.Linear(cfg.num_attention_heads * hd, d, **kw))
        for name in ("q_norm", "k_norm", "q_norm_hw", "k_norm_hw"):
            setattr(self, f"{name}{suffix}", RMSNorm(hd // 2, cfg.rms_norm_eps, dtype=dtype, device=device))

    def _part(self, name: str) -> nn.Module:
        return getattr(self, f"{name}{self.suffix}")

    def _norm_rope(self, x: Tensor, which: str, positions: Tensor) -> Tensor:
        hd = self.cfg.head_dim
        half, quarter = hd // 2, hd // 4
        xt = self._part(f"{which}_norm")(x[..., :half])
        xhw = self._part(f"{which}_norm_hw")(x[..., half:])
        xt = rope_rotate_half(xt, positions[:, 0], self.cfg.rope_theta)
        xh = rope_rotate_half(xhw[..., :quarter], positions[:, 1], self.cfg.rope_theta_hw)
        xw = rope_rotate_half(xhw[..., quarter:], positions[:, 2], self.cfg.rope_theta_hw)
        return torch.cat([xt, xh, xw], dim=-1)

    def qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, S, D)`` -> q ``(B, H, S, hd)``, k and v ``(B, KV, S, hd)`` (k after norm + RoPE)."""
        b, s, _ = x.shape
        hd = self.cfg.head_dim
        q = self._part("q_proj")(x).view(b, s, self.cfg.num_attention_heads, hd)
        k = self._part("k_proj")(x).view(b, s, self.cfg.num_key_value_heads, hd)
        v = self._part("v_proj")(x).view(b, s, self.cfg.num_key_value_heads, hd)
        q = self._norm_rope(q, "q", positions)
        k = self._norm_rope(k, "k", positions)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def out(self, attn: Tensor) -> Tensor:
        """``attn (B, H, S, hd)`` -> ``(B, S, D)`` through ``o_proj``."""
        b, h, s, hd = attn.shape
        return self._part("o_proj")(attn.transpose(1, 2).reshape(b, s, h * hd))


def attend(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention with GQA (query head g uses KV head g // group).

    ``q (B, H, Sq, hd)``, ``k``/``v`` ``(B, KV, Sk, hd)``; scale ``1/sqrt(hd)``.
    ``mask`` is a bool ``(Sq, Sk)``, True where attending is allowed.
    """
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: LLMConfig, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        kw = dict(bias=False, dtype=dtype, device=device)
        self.gate_proj = ops.Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.up_proj = ops.Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.down_proj = ops.Linear(cfg.intermediate_size, cfg.hidden_size, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """One pre-norm decoder layer of one tower (spec 3.7); ``suffix`` as in :class:`Attention`.

    Parameters: ``self_attn.*``, ``mlp{suffix}.*``, ``input_layernorm{suffix}``,
    ``post_attention_layernorm{suffix}``.
    """

    def __init__(self, cfg: LLMConfig, suffix: str, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.suffix = suffix
        self.self_attn = Attention(cfg, suffix, ops, dtype, device)
        setattr(self, f"mlp{suffix}", MLP(cfg, ops, dtype, device))
        setattr(self, f"input_layernorm{suffix}", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device))
        setattr(self, f"post_attention_layernorm{suffix}", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device))

    def qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Input norm + projections: see :meth:`Attention.qkv`."""
        return self.self_attn.qkv(getattr(self, f"input_layernorm{self.suffix}")(x), positions)

    def finish(self, x: Tensor, attn: Tensor) -> Tensor:
        """Residual after ``o_proj``, then the MLP residual; ``attn (B, H, S, hd)``."""
        a = x + self.self_attn.out(attn)
        n = getattr(self, f"post_attention_layernorm{self.suffix}")(a)
        return a + getattr(self, f"mlp{self.suffix}")(n)

    def forward(self, x: Tensor, positions: Tensor, past_kv: tuple[Tensor, Tensor] | None = None, causal: bool = False) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x (B, S, D)`` -> ``(x', (k, v))``; keys are ``[past ‖ own]`` when ``past_kv`` is given."""
        q, k, v = self.qkv(x, positions)
        keys, values = k, v
        if past_kv is not None:
            keys = torch.cat([past_kv[0].to(k.dtype), k], dim=2)
            values = torch.cat([past_kv[1].to(v.dtype), v], dim=2)
        return self.finish(x, attend(q, keys, values, causal=causal)), (k, v)


def time_sinusoid(s: Tensor, dim: int = TIME_FREQ_DIM) -> Tensor:
    """``(B,)`` raw values (t in [0, 1], not x1000) -> ``(B, dim)`` fp32, cosine first."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=s.device) / half)
    a = s.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


class TimestepEmbedder(nn.Module):
    """``mlp``: Linear(256, D) -> SiLU -> Linear(D, D) on :func:`time_sinusoid`."""

    def __init__(self, hidden: int, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.mlp = nn.Sequential(ops.Linear(TIME_FREQ_DIM, hidden, dtype=dtype, device=device), nn.SiLU(), ops.Linear(hidden, hidden, dtype=dtype, device=device))

    def forward(self, s: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``(B,)`` -> ``(B, D)``; the sinusoid is cast to ``dtype`` (default: the weights')."""
        emb = time_sinusoid(s)
        return self.mlp(emb.to(dtype or self.mlp[0].weight.dtype))


class VisionEmbeddings(nn.Module):
    """Patch conv (``patch_size``, official 16 px) -> GELU -> 2-D RoPE -> ``merge`` x ``merge`` dense conv (official 2x2; spec 3.3)."""

    def __init__(self, vcfg: VisionConfig, llm_hidden: int, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.theta = vcfg.rope_theta_vision
        p, m = vcfg.patch_size, vcfg.merge
        self.patch_embedding = ops.Conv2d(vcfg.num_channels, vcfg.hidden_size, p, stride=p, dtype=dtype, device=device)
        self.dense_embedding = ops.Conv2d(vcfg.hidden_size, llm_hidden, m, stride=m, dtype=dtype, device=device)

    def rope_2d(self, f: Tensor) -> Tensor:
        """``(B, C, gh, gw)``: channels ``0..C/2`` rotated by column, ``C/2..C`` by row; interleaved pairs, fp32."""
        b, c, gh, gw = f.shape
        half = c // 2
        m = torch.arange(half // 2, device=f.device, dtype=torch.float32)
        inv = self.theta ** (-2.0 * m / half)
        col = torch.arange(gw, device=f.device, dtype=torch.float32)
        row = torch.arange(gh, device=f.device, dtype=torch.float32)
        ang_x = (col[:, None] * inv[None, :])[None, :, :].expand(gh, gw, half // 2)
        ang_y = (row[:, None] * inv[None, :])[:, None, :].expand(gh, gw, half // 2)
        ang = torch.cat([ang_x, ang_y], dim=-1)  # (gh, gw, C/2) one angle per pair
        x = f.float().permute(0, 2, 3, 1).reshape(b, gh, gw, c // 2, 2)
        a, bb = x[..., 0], x[..., 1]
        cos, sin = ang.cos(), ang.sin()
        out = torch.stack([a * cos - bb * sin, a * sin + bb * cos], dim=-1).reshape(b, gh, gw, c)
        return out.permute(0, 3, 1, 2).to(f.dtype)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, N, D)``, tokens row-major over the token grid (official: 32 px)."""
        f = F.gelu(self.patch_embedding(image))
        f = self.dense_embedding(self.rope_2d(f))
        return f.flatten(2).transpose(1, 2)


class VisionModel(nn.Module):
    """Holds ``embeddings`` (the official nesting: ``vision_model.embeddings.*``)."""

    def __init__(self, vcfg: VisionConfig, llm_hidden: int, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.embeddings = VisionEmbeddings(vcfg, llm_hidden, ops, dtype, device)

    def forward(self, image: Tensor) -> Tensor:
        return self.embeddings(image)


def patchify(x: Tensor, px: int = TOKEN_PX) -> Tensor:
    """``(B, 3, H, W)`` -> ``(B, N, px*px*3)``, channel-last inside each ``px``-pixel block: ``(p*px + q)*3 + c``."""
    b, c, h, w = x.shape
    th, tw = h // px, w // px
    x = x.view(b, c, th, px, tw, px).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, th * tw, px * px * c)


def unpatchify(tokens: Tensor, th: int, tw: int, px: int = TOKEN_PX, channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, N, px*px*3)`` -> ``(B, 3, px*th, px*tw)``."""
    b = tokens.shape[0]
    x = tokens.view(b, th, tw, px, px, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, th * px, tw * px)


def patchify32(x: Tensor) -> Tensor:
    """:func:`patchify` with the official 32-px token: ``(B, 3, H, W)`` -> ``(B, N, 3072)``."""
    return patchify(x, TOKEN_PX)


def unpatchify32(tokens: Tensor, th: int, tw: int, channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify32`: ``(B, N, 3072)`` -> ``(B, 3, 32*th, 32*tw)``."""
    return unpatchify(tokens, th, tw, TOKEN_PX, channels)


HEADS: Registry[type] = Registry("U1 fm_head")


@HEADS.register("mlp")
class MLPHead(nn.Sequential):
    """U1: ``0`` Linear(D, D) -> GELU (erf) -> ``2`` Linear(D, px*px*3) (official 3072); tokens unpatchified."""

    def __init__(self, hidden: int, ops=TORCH_OPS, dtype=None, device=None, token_px: int = TOKEN_PX):
        super().__init__(ops.Linear(hidden, hidden, dtype=dtype, device=device), nn.GELU(), ops.Linear(hidden, token_px * token_px * 3, dtype=dtype, device=device))
        self.token_px = token_px

    def forward(self, h: Tensor, th: int, tw: int) -> Tensor:
        """``(B, N, D)`` -> image ``(B, 3, px*th, px*tw)``."""
        return unpatchify(super().forward(h), th, tw, self.token_px)


@HEADS.register("conv_decoder")
class ConvDecoderHead(nn.Module):
    """U1.5: PixelShuffle(2) -> conv1 3x3 -> GELU -> PixelShuffle(2) -> conv2 3x3 -> PixelShuffle(px/4) (official 8)."""

    def __init__(self, hidden: int, ops=TORCH_OPS, dtype=None, device=None, token_px: int = TOKEN_PX):
        super().__init__()
        self.last = token_px // 4
        self.conv1 = ops.Conv2d(hidden // 4, hidden // 4, 3, padding=1, dtype=dtype, device=device)
        self.conv2 = ops.Conv2d(hidden // 16, 3 * self.last * self.last, 3, padding=1, dtype=dtype, device=device)

    def forward(self, h: Tensor, th: int, tw: int) -> Tensor:
        """``(B, N, D)`` -> image ``(B, 3, px*th, px*tw)``."""
        b, _, d = h.shape
        x = h.transpose(1, 2).reshape(b, d, th, tw)
        x = F.gelu(self.conv1(F.pixel_shuffle(x, 2)))
        x = self.conv2(F.pixel_shuffle(x, 2))
        return F.pixel_shuffle(x, self.last)
