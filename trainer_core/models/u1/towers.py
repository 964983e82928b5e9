"""The two SenseNova-U1 towers as separate module trees with the official key names.

The checkpoint's 1116 tensors split into two disjoint trees whose
``state_dict()`` keys are exactly the checkpoint's:

- :class:`PrefixTower` (understanding): ``language_model.model.embed_tokens``,
  every non-``_mot_gen`` layer parameter, ``language_model.model.norm``,
  ``language_model.lm_head`` and ``vision_model.*`` (the last two unused by T2I).
  It turns the prompt prefix into the **prefix KV** once per prompt.
- :class:`GenerationTower`: every ``*_mot_gen`` parameter,
  ``language_model.model.norm_mot_gen`` and ``fm_modules.*``. It maps a noisy
  image to the x0 prediction, attending to the frozen prefix KV.

Keeping them apart lets a host hold the generation tower on the device for
sampling and training while the understanding tower stays on the CPU.

Time convention here is U1's: ``t`` in [0, 1], t = 1 is clean,
``z_t = t * x0 + (1 - t) * s_eff * eps`` (the pack's sigma is ``1 - t``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...errors import ConfigError
from .config import U1Config
from .layers import HEADS, TORCH_OPS, DecoderLayer, RMSNorm, TimestepEmbedder, VisionModel, attend

log = logging.getLogger(__name__)

GEN = "_mot_gen"


@dataclass(frozen=True)
class PrefixKV:
    """Per-layer K (after q/k norm and RoPE) and V of a prompt prefix.

    ``keys[i]`` and ``values[i]`` are ``(B, KV, L, hd)``. The image tokens'
    shared t position is ``L`` (:attr:`length`).
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def pack(self) -> Tensor:
        """One tensor ``(B, L, layers * 2 * KV * hd)``: per token, layer-major, K then V.

        This is what the ComfyUI CONDITIONING carries (a ``(B, L, C)`` tensor,
        so ComfyUI's batching, device moves and batch repeats work on it).
        """
        kv = torch.stack([torch.stack([k, v], dim=0) for k, v in zip(self.keys, self.values, strict=True)], dim=0)  # (layers, 2, B, KV, L, hd)
        n_layers, _, b, n_kv, length, hd = kv.shape
        return kv.permute(2, 4, 0, 1, 3, 5).reshape(b, length, n_layers * 2 * n_kv * hd)

    @classmethod
    def unpack(cls, packed: Tensor, num_layers: int, num_kv_heads: int, head_dim: int) -> PrefixKV:
        """Inverse of :meth:`pack`; checks the channel count against the model."""
        b, length, c = packed.shape
        if c != num_layers * 2 * num_kv_heads * head_dim:
            raise ConfigError("prefix KV channels", c, f"expected layers {num_layers} x 2 x kv heads {num_kv_heads} x head dim {head_dim} = {num_layers * 2 * num_kv_heads * head_dim}: the conditioning was encoded for a different U1 model")
        kv = packed.view(b, length, num_layers, 2, num_kv_heads, head_dim).permute(2, 3, 0, 4, 1, 5)
        return cls(tuple(kv[i, 0] for i in range(num_layers)), tuple(kv[i, 1] for i in range(num_layers)))


def text_positions(length: int, start: int = 0, device=None) -> Tensor:
    """``(L, 3)`` text positions ``(start + i, 0, 0)``."""
    pos = torch.zeros(length, 3, dtype=torch.long, device=device)
    pos[:, 0] = torch.arange(start, start + length, device=device)
    return pos


def image_positions(t_img: int, th: int, tw: int, device=None) -> Tensor:
    """``(th*tw, 3)`` image positions ``(t_img, row, col)``, row-major."""
    rows = torch.arange(th, device=device).repeat_interleave(tw)
    cols = torch.arange(tw, device=device).repeat(th)
    return torch.stack([torch.full_like(rows, t_img), rows, cols], dim=1)


class _Holder(nn.Module):
    """An empty module used only to reproduce the official nesting of names."""


class PrefixTower(nn.Module):
    """Understanding tower: prompt ids -> :class:`PrefixKV` (spec 3.2).

    :attr:`compute_dtype` (default None: the weights' dtype) is the activation
    dtype, for hosts whose layers cast stored weights per call.
    """

    def __init__(self, cfg: U1Config, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.cfg = cfg
        self.compute_dtype: torch.dtype | None = None
        llm = cfg.llm
        self.language_model = _Holder()
        self.language_model.model = _Holder()
        m = self.language_model.model
        m.embed_tokens = ops.Embedding(llm.vocab_size, llm.hidden_size, dtype=dtype, device=device)
        m.layers = nn.ModuleList(DecoderLayer(llm, "", ops, dtype, device) for _ in range(llm.num_hidden_layers))
        m.norm = RMSNorm(llm.hidden_size, llm.rms_norm_eps, dtype, device)
        self.language_model.lm_head = ops.Linear(llm.hidden_size, llm.vocab_size, bias=False, dtype=dtype, device=device)
        self.vision_model = VisionModel(cfg.vision, llm.hidden_size, ops, dtype, device)

    @torch.no_grad()
    def encode(self, input_ids: Tensor) -> PrefixKV:
        """``input_ids (B, L)`` long -> :class:`PrefixKV` (causal, positions ``(i, 0, 0)``)."""
        m = self.language_model.model
        device = m.embed_tokens.weight.device
        input_ids = input_ids.to(device)
        x = m.embed_tokens(input_ids)
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        pos = text_positions(input_ids.shape[1], device=device)
        keys, values = [], []
        for layer in m.layers:
            x, (k, v) = layer(x, pos, causal=True)
            keys.append(k)
            values.append(v)
        return PrefixKV(tuple(keys), tuple(values))


    @torch.no_grad()
    def next_token_logits(self, input_ids: Tensor) -> Tensor:
        """Reference without a cache: ``input_ids (1, L)`` -> logits ``(V,)`` of the next token (full causal pass + ``lm_head``)."""
        m = self.language_model.model
        device = m.embed_tokens.weight.device
        x = m.embed_tokens(input_ids.to(device))
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        pos = text_positions(input_ids.shape[1], device=device)
        for layer in m.layers:
            x, _ = layer(x, pos, causal=True)
        return self.language_model.lm_head(m.norm(x[:, -1])).float()[0]

    @torch.no_grad()
    def greedy(self, input_ids: Tensor, stop_id: int, end_id: int, max_new_tokens: int = 1024) -> tuple[list[int], str]:
        """Greedy decoding with a KV cache, as the official think generation (spec 4.5).

        ``input_ids (1, L)``; each new token at text position ``(t_prev + 1, 0, 0)``.
        Stops after ``stop_id`` (``</think>``: kept), at ``end_id``
        (``<|im_end|>``: not kept) or after ``max_new_tokens``. Returns the new
        ids and why it stopped: ``"stop"``, ``"end"`` or ``"length"``.
        """
        m = self.language_model.model
        device = m.embed_tokens.weight.device

        def embed(ids: Tensor) -> Tensor:
            x = m.embed_tokens(ids.to(device))
            return x.to(self.compute_dtype) if self.compute_dtype is not None else x

        x = embed(input_ids)
        length = input_ids.shape[1]
        cache = []
        for layer in m.layers:
            x, kv = layer(x, text_positions(length, device=device), causal=True)
            cache.append(kv)
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(self.language_model.lm_head(m.norm(x[:, -1])).float()[0].argmax())
            if token == end_id:
                return out, "end"
            out.append(token)
            if token == stop_id:
                return out, "stop"
            x = embed(torch.tensor([[token]], device=device))
            pos = text_positions(1, start=length, device=device)
            for i, layer in enumerate(m.layers):
                x, (k, v) = layer(x, pos, past_kv=cache[i], causal=False)  # one query: sees the whole cache and itself
                cache[i] = (torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2))
            length += 1
        return out, "length"


class GenerationTower(nn.Module):
    """Generation tower + ``fm_modules``: noisy image -> x0 prediction (spec 3.3 to 3.8).

    Set :attr:`gradient_checkpointing` to wrap each layer in non-reentrant
    activation checkpointing while gradients are enabled, and
    :attr:`compute_dtype` (default None: the weights' dtype) for the activations.
    """

    def __init__(self, cfg: U1Config, ops=TORCH_OPS, dtype=None, device=None):
        super().__init__()
        self.cfg = cfg
        self.compute_dtype: torch.dtype | None = None
        llm = cfg.llm
        self.gradient_checkpointing = False
        self.language_model = _Holder()
        self.language_model.model = _Holder()
        m = self.language_model.model
        m.layers = nn.ModuleList(DecoderLayer(llm, GEN, ops, dtype, device) for _ in range(llm.num_hidden_layers))
        m.norm_mot_gen = RMSNorm(llm.hidden_size, llm.rms_norm_eps, dtype, device)
        self.fm_modules = nn.ModuleDict(
            {
                "timestep_embedder": TimestepEmbedder(llm.hidden_size, ops, dtype, device),
                "noise_scale_embedder": TimestepEmbedder(llm.hidden_size, ops, dtype, device),
                "vision_model_mot_gen": VisionModel(cfg.vision, llm.hidden_size, ops, dtype, device),
                "fm_head": HEADS.get(cfg.head_kind, "use_pixel_head")(llm.hidden_size, ops, dtype, device, token_px=cfg.token_px),
            }
        )
        if not cfg.add_noise_scale_embedding:
            log.warning("add_noise_scale_embedding is false in config.json; the noise-scale embedding is still built (its keys exist in the checkpoint) but not added")

    @property
    def dtype(self) -> torch.dtype:
        return self.fm_modules["timestep_embedder"].mlp[0].weight.dtype

    def embed(self, x: Tensor, t: Tensor, noise_scale: float | None = None) -> Tensor:
        """``h0 = VisionGen(x) + E_t(t) + E_s(s_eff / max)``: ``(B, 3, H, W)`` -> ``(B, N, D)``."""
        fm = self.fm_modules
        s_eff = self.cfg.noise_scale_for_image(*x.shape[-2:]) if noise_scale is None else noise_scale
        dt = self.compute_dtype or self.dtype
        h = fm["vision_model_mot_gen"](x.to(dt))
        h = h + fm["timestep_embedder"](t.reshape(-1).to(h.device).expand(x.shape[0]), dt)[:, None, :]
        if self.cfg.add_noise_scale_embedding:
            s = torch.full((x.shape[0],), s_eff / self.cfg.noise_scale_max_value, device=h.device)
            h = h + fm["noise_scale_embedder"](s, dt)[:, None, :]
        return h

    def forward(self, x: Tensor, t: Tensor, prefix: PrefixKV, noise_scale: float | None = None) -> Tensor:
        """x0 prediction in pixel space.

        ``x``: noisy image ``(B, 3, H, W)``, H and W multiples of the token size (official 32 px), the state
        ``z_t`` in [-1, 1] units (noise already scaled by ``s_eff``).
        ``t``: U1 time ``(B,)`` or scalar, 1 = clean. ``prefix``: per-layer KV
        with batch 1 or B. ``noise_scale``: ``s_eff``, default from the token
        count by the config's resolution rule. Returns ``(B, 3, H, W)`` in the
        tower's dtype.
        """
        th, tw = self.cfg.token_grid(*x.shape[-2:])
        h = self.embed(x, t, noise_scale)
        pos = image_positions(prefix.length, th, tw, device=h.device)
        b = h.shape[0]
        for layer, k, v in zip(self.language_model.model.layers, prefix.keys, prefix.values, strict=True):
            past = (_batch(k, b).to(h.device), _batch(v, b).to(h.device))
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(_layer_out, layer, h, pos, past, use_reentrant=False)
            else:
                h = _layer_out(layer, h, pos, past)
        h = self.language_model.model.norm_mot_gen(h)
        return self.fm_modules["fm_head"](h, th, tw)


def _layer_out(layer: DecoderLayer, h: Tensor, pos: Tensor, past: tuple[Tensor, Tensor]) -> Tensor:
    return layer(h, pos, past_kv=past, causal=False)[0]


def _batch(x: Tensor, b: int) -> Tensor:
    if x.shape[0] == b:
        return x
    if x.shape[0] == 1:
        return x.expand(b, *x.shape[1:])
    raise ConfigError("prefix KV batch", x.shape[0], f"must be 1 or the image batch {b}")


def forward_uncached(prefix_tower: PrefixTower, gen_tower: GenerationTower, input_ids: Tensor, x: Tensor, t: Tensor, noise_scale: float | None = None) -> Tensor:
    """Reference forward without the cache: text and image in one sequence.

    Every layer runs the text tokens through the understanding weights and the
    image tokens through the ``_mot_gen`` weights over one joint attention with
    the block mask (text causal and blind to the image; image tokens see all).
    Equal to ``gen_tower(x, t, prefix_tower.encode(input_ids))``; exists to
    prove the prefix-KV cache exact, and is L/N times costlier per step.
    """
    pm, gm = prefix_tower.language_model.model, gen_tower.language_model.model
    th, tw = gen_tower.cfg.token_grid(*x.shape[-2:])
    b, length = x.shape[0], input_ids.shape[1]
    n = th * tw
    xi = gen_tower.embed(x, t, noise_scale)
    xt = pm.embed_tokens(input_ids.to(pm.embed_tokens.weight.device)).to(xi.dtype).expand(b, -1, -1)
    pos_t = text_positions(length, device=xi.device)
    pos_i = image_positions(length, th, tw, device=xi.device)
    mask = torch.ones(length + n, length + n, dtype=torch.bool, device=xi.device)
    mask[:length, :length] = torch.tril(mask[:length, :length])
    mask[:length, length:] = False
    for und, gen in zip(pm.layers, gm.layers, strict=True):
        qt, kt, vt = und.qkv(xt, pos_t)
        qi, ki, vi = gen.qkv(xi, pos_i)
        out = attend(torch.cat([qt, qi], 2), torch.cat([kt, ki], 2), torch.cat([vt, vi], 2), mask=mask)
        xt, xi = und.finish(xt, out[:, :, :length]), gen.finish(xi, out[:, :, length:])
    return gen_tower.fm_modules["fm_head"](gm.norm_mot_gen(xi), th, tw)


def build_towers(cfg: U1Config, ops=TORCH_OPS, dtype=None, device=None) -> tuple[PrefixTower, GenerationTower]:
    """Both towers, uninitialised beyond torch's defaults (load weights after)."""
    return PrefixTower(cfg, ops, dtype, device), GenerationTower(cfg, ops, dtype, device)
