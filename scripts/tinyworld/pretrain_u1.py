"""Pretrain a tiny SenseNova-U1 on the tiny world, on the CPU, resumably.

    .venv/bin/python scripts/tinyworld/pretrain_u1.py --out scripts/tinyworld/models/u1 --steps 4500 --decay-steps 4500 --decay-to 0.1 --bf16 --loss v --t-law logit_normal --fresh

The model is the pack's own U1 (``trainer_core.models.u1``: both towers, the
official key names, the sharded layout, config.json), small: see
:data:`TINY_U1`. Pixel space, 8-px generation tokens (``vision_config.patch_size``
4, ``downsample_ratio`` 0.5), so a 64 x 64 image is 8 x 8 = 64 tokens
(``--token-px 4``: 256 tokens, 3.0x the step time, not trained to the end).

Trained as U1 trains (spec 5.3 to 5.7), from scratch, both towers jointly:

- ``z_t = t * x0 + (1 - t) * s_eff * eps`` with U1's resolution noise scale
  ``s_eff = min(sqrt(N / 64), 8)``, N = the model's own tokens (1.0 at 64 x 64);
- t uniform on [t_eps, 1), t_eps = 0.05 (train_u1's baseline law; ``--t-law
  logit_normal`` draws U1's logit-normal, mean -0.8, std 0.8, clamped likewise);
- x0 prediction, loss = MSE(x0_hat, x0) in pixel space ([-1, 1]) (train_u1's
  default ``x0`` loss); ``--loss v`` trains its ``v`` loss instead, MSE of the
  velocities, = x0-MSE / max(1 - t, t_eps)^2 (spec 5.6; the pack's
  ``LossConfig``, the same maths the LoRA trainer uses). The shipped model
  trains with ``--loss v --t-law logit_normal``, the objective of train_u1's
  ``configs/official_alignment.yaml`` (spec 5.13; also that of pixel-space
  x-prediction transformers such as JiT):
  71.4% content on 200 held-out prompts against 62.2% for ``x0`` and uniform t,
  both within the 45-minute budget. It is the pair that helps: the v loss with
  uniform t scored 60.2% (shapes 15%; 4,500 steps, 34.7 min). The v loss weights
  the nearly clean end by 1 / (1 - t)^2; logit-normal t (mean t 0.34) draws
  mostly the noisy steps, where layout and binding are decided, and so
  restores their share. The x0 loss with logit-normal t, the missing cell (fp32,
  4,500 steps, otherwise the shipped command), scored 66.2% (shapes 32%).
  train_u1's small-data ablation (spec 5.13) found v and logit-normal t worse for
  *fine-tuning* 56 style images; that is a different question (and
  ``ablation.py`` measures it on this model);
- the official conditional prefix (system message, chat template, empty think
  block, ``<img>``) around the caption; 10% of samples train on the official
  unconditional prefix instead (condition dropout, so CFG works);
- the understanding tower is trained with the generation tower (it is the text
  encoder, and it has to learn the world's words). The whole batch runs as one
  padded pass of both towers (:func:`x0_prediction`): the system-message part
  of the prefix, identical for every caption, runs once per step; captions of
  any length and unconditional samples share the pass. It is exact: checked at
  start against the pack's ``GenerationTower(PrefixTower.encode(...))``, the
  path ComfyUI samples with.

AdamW (betas 0.9 / 0.95), linear warm-up then constant learning rate, gradient
clipping, an EMA of the weights (what is exported). ``--bf16`` runs the forward
and backward under bfloat16 autocast (train_u1 trains in bf16; 0.62 against
0.76 s per batch-32 step on a 2-core AMX CPU, ``bench/bench_tiny_u1_pretrain.py``), weights, optimizer and EMA in fp32;
on a CPU without AMX or AVX-512 BF16 autocast is emulated (20.1 s against 0.82 s fp32
on a 2-core AVX2 EPYC) and the script warns (:mod:`.hardware`). Every batch is a function of
``(seed, step)`` only, so a resumed run continues the same trajectory.
``--minutes`` is the total training time over all resumes; ``--steps`` stops at
a step count instead (machine independent). ``--threads 1`` when other jobs
share the cores (two threads on a contended machine run slower than one).

Writes into ``--out``: config.json, model.safetensors.index.json + 2 bf16 shards
(the EMA weights), the tokenizer (:mod:`.u1_tokenizer`), ``train_log.jsonl``,
``loss.png``; the resumable state (fp32 weights, EMA, optimizer) goes to
``--state`` (default ``.cache/tinyworld-u1``), every ``--save-every`` minutes
and at the end, atomically.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO / "scripts"))
    sys.path.insert(0, str(REPO / "tests"))
    import harness  # registers the pack as ``flowlora`` (as the tests do)

    harness.register_package()
    __package__ = "tinyworld"

from flowlora.trainer_core import files  # noqa: E402
from flowlora.trainer_core.losses import LossConfig  # noqa: E402
from flowlora.trainer_core.models.u1 import U1_8B_MOT, U15_8B_MOT, U1Config, build_towers, prompts  # noqa: E402
from flowlora.trainer_core.models.u1.checkpoint import save_sharded  # noqa: E402
from flowlora.trainer_core.models.u1.config import LLMConfig, VisionConfig  # noqa: E402
from flowlora.trainer_core.models.u1.layers import attend  # noqa: E402
from flowlora.trainer_core.models.u1.sampling import official_timesteps  # noqa: E402
from flowlora.trainer_core.models.u1.towers import GenerationTower, PrefixTower, image_positions, text_positions  # noqa: E402

from . import hardware, schedule, u1_tokenizer  # noqa: E402
from .content import BINDING_NOTE, CONFUSION_NOTE, SIZE_NOTE, accuracy, by_object_count_markdown, by_size_markdown, confusion_markdown, score_images  # noqa: E402
from .render import batch as render_batch  # noqa: E402
from .world import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, caption, scene  # noqa: E402

log = logging.getLogger("pretrain_u1")

VOCAB = 768
"""Model vocabulary: the tokenizer's ids (715) rounded up to a multiple of 64, as Qwen pads its table."""

OFFICIAL_BY_HEAD = {official.head_kind: official for official in (U1_8B_MOT, U15_8B_MOT)}
"""``--head`` -> the official config whose head it is: ``mlp`` U1 (shipped), ``conv_decoder`` U1.5."""
HEAD_KINDS = tuple(OFFICIAL_BY_HEAD)


def tiny_u1(vision_width: int = 64, token_px: int = 8, head: str = "mlp") -> U1Config:
    """The tiny U1: hidden 256, 4 layers per tower, 4 query / 2 KV heads of 64, SwiGLU 768,
    vision width ``vision_width``, ``token_px``-px generation tokens (``patch_size`` ``token_px / 2``,
    ``downsample_ratio`` 0.5 as the official 16 / 0.5); ``noise_scale_base_image_seq_len`` is the token count
    of a 64 x 64 image (64 at 8 px, official), so the world's images get noise scale 1 whatever the token size;
    every other field (noise scale law, t_eps, head) official. ``head="conv_decoder"`` builds U1.5's ConvDecoder
    head and takes U1.5's ``noise_scale_max_value`` with it (``U15_8B_MOT``'s two differences from U1, read from it)."""
    if head not in HEAD_KINDS:
        raise ValueError(f"head = {head!r}: not one of {', '.join(HEAD_KINDS)}")
    if token_px % 2 or token_px < 2:
        raise ValueError(f"token_px = {token_px}: the generation token is patch_size / downsample_ratio 0.5, so it must be an even number of pixels")
    return U1Config(
        llm=LLMConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=VOCAB),
        vision=VisionConfig(hidden_size=vision_width, patch_size=token_px // 2, downsample_ratio=0.5),
        noise_scale_base_image_seq_len=(64 // token_px) ** 2,
        use_pixel_head=OFFICIAL_BY_HEAD[head].use_pixel_head,
        noise_scale_max_value=OFFICIAL_BY_HEAD[head].noise_scale_max_value,
    )


TINY_U1 = tiny_u1()
"""The shipped tiny U1 (vision width 64), pretrained with ``--loss v --t-law logit_normal``.

``diagnose_u1.py`` on it: from a held-out render noised to t = 0.99 (where
returning the input scores x0-MSE 0.0001) it predicts with x0-MSE 0.0037, 78% of
it on the 5% of pixels at object edges; sampling from renders noised to t0 = 0,
0.5, 0.85 gives 70.1%, 81.4%, 85.3% content (shapes 44%, 51%, 59%).

What was tried on the same budget, as x0 loss and uniform t (62.2% on 200
held-out prompts): that model's floor was 0.0044 and it kept 59.3%, 71.2%, 77.4%
from the same t0 (shapes 24%, 31%, 44%). A patch embedder 3x wider
(``--vision-width 192``: U1's patch embedder rotates half its channels by 2-D
RoPE faster than a head without absolute positions can read back) lowered its
floor to 0.0034 (a 45-minute ``--bf16`` run of 4,163 steps) but drew no better
from noise: 61.5% against 62.2%. The ``v`` loss with logit-normal t barely
moved the floor (0.0044 -> 0.0037) yet gained 9 points: what it changed is the
trajectory, where shapes and binding are decided, more than the last steps. The
``v`` loss with uniform t, which gives the near-clean end the most weight, did
worse than either (60.2%, shapes 15%; ``--loss v --t-law uniform``, otherwise the
shipped command: 4,500 steps in 34.7 minutes).

Where its shapes fail: read as images, its one-step predictions from held-out
renders noised to t = 0.3, 0.5, 0.7, 0.85, 0.95 get 51%, 63%, 71%, 66%, 69% of
the shapes right (40 prompts; ``diagnose_u1.py``, ``x0_hat_shape``): at t = 0.95,
where the render is plain to see, it still redraws a template from the caption,
and its x0-MSE (0.0032) barely beats returning the input (0.0037). Sampled from
noise (the card's 200 prompts) it draws 76% of the shapes of a lone large object,
45% of a lone small one (radius 5.5 px, under 1.5 tokens across), and 37% / 30%
of large / small objects beside a second one (``content.by_size``): resolution
and binding, not reading the caption's shape word.

U1.5's ConvDecoder head (``--head conv_decoder``: 3 x 3 convolutions across
token borders, for the small shapes), otherwise the shipped recipe and the same
batches (4,500 steps, fp32, 68 minutes on a 2-core AVX2 CPU), did worse: x0-MSE
0.0077 against 0.0065 over steps 3,750-4,500, and 64.8% content on the card's
200 prompts (shapes 30%; lone small objects 24%) against 71.4%.

Half the samples (``--batch 16``, otherwise the shipped recipe, 4,500 steps, 42
minutes fp32) scored 59.3% (shapes 15%, x0-MSE 0.0111 against 0.0065 over steps
3,750-4,500): shapes come late and keep coming with data, so the budget in
samples, not the number of updates, is what holds them back.

One and a half times the samples (``--steps 6750 --decay-steps 6750``,
otherwise the shipped recipe; 102 minutes fp32 here, about 66 at the shipped
run's 0.59 s/step) scored 75.0% (shapes 51%, colours 91%, positions 83%;
x0-MSE 0.0050 against 0.0065 over each run's last 750 steps): 3.6 points for
half as many samples again, where doubling from batch 16 had given 12. Kept at
that pace (6 points per doubling), 85% would take about 21,000 steps, four to
five times the shipped run: out of reach of a 45-minute CPU budget at this
size. The three runs' figures and commands: ``models/u1_experiments.jsonl``."""

DEFAULT_STATE = REPO / ".cache" / "tinyworld-u1"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    clip: float = 1.0
    ema: float = 0.999
    p_uncond: float = 0.10
    t_eps: float = 0.05
    t_law: str = "uniform"
    loss: str = "x0"
    """train_u1's ``loss_type``: ``x0`` (MSE of x0) or ``v`` (MSE of velocities; :data:`LOSSES`)."""
    threads: int = 2
    bf16: bool = False
    """bfloat16 autocast for the forward and backward (weights, optimizer and EMA stay fp32), as train_u1 trains in bf16."""
    decay_steps: int = 0
    """The learning rate falls linearly from ``lr`` to ``decay_to`` x lr at this step (0: constant after warm-up)."""
    decay_to: float = 1.0

    def __post_init__(self):
        if self.t_law not in T_LAWS:
            raise ValueError(f"t_law = {self.t_law!r}: not one of {', '.join(T_LAWS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss = {self.loss!r}: not one of {', '.join(LOSSES)}")

    @property
    def loss_config(self) -> LossConfig:
        """The pack's loss of :attr:`loss`, sigma floored at ``t_eps`` as U1 floors ``1 - t``."""
        return LossConfig(LOSSES[self.loss], t_eps=self.t_eps)


T_LAWS = ("uniform", "logit_normal")
LOSSES = {"x0": {"x0_mse": 1.0}, "v": {"v_mse": 1.0}}
"""train_u1's ``loss_type`` -> the pack's loss terms."""


# ---------------------------------------------------------------- model and prefix


def init_towers(cfg: U1Config, seed: int) -> tuple[PrefixTower, GenerationTower]:
    """fp32 towers: torch's default init from a seeded generator (norms 1), token tables N(0, 0.02^2), the head's output layer zero."""
    torch.manual_seed(seed)
    prefix, gen = build_towers(cfg)
    for name, p in prefix.named_parameters():
        if "embed_tokens" in name or "lm_head" in name:
            torch.nn.init.normal_(p, std=0.02)
    head_out = output_layer(gen)
    torch.nn.init.zeros_(head_out.weight)
    torch.nn.init.zeros_(head_out.bias)
    return prefix, gen


def output_layer(gen: GenerationTower) -> torch.nn.Module:
    """The ``fm_head``'s last layer (U1's MLP head: its second Linear; U1.5's ConvDecoder: ``conv2``)."""
    head = gen.fm_modules["fm_head"]
    return head.conv2 if gen.cfg.use_pixel_head else head[2]


class Prefixes:
    """Token ids of U1's prefixes: the shared system part, each caption's rest, the unconditional prefix."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        full = prompts.tokenize(tokenizer, prompts.conditional_prefix("a"))
        self.system = full[: full.index(prompts.tokenize(tokenizer, "<|im_end|>")[0])]
        self.uncond = prompts.tokenize(tokenizer, prompts.UNCONDITIONAL_PREFIX)
        self.pad = prompts.tokenize(tokenizer, "<|endoftext|>")[0]
        self._cache: dict[str, list[int]] = {}
        longest = max((o for o in _all_phrases()), key=lambda p: len(prompts.tokenize(tokenizer, p)))
        self.max_rest = len(self.rest(f"{longest} and {longest} on a {max(BACKGROUNDS, key=len)} background"))

    def rest(self, text: str) -> list[int]:
        """Ids after the system part of ``conditional_prefix(text)`` (it starts at ``<|im_end|>``)."""
        if text not in self._cache:
            ids = prompts.tokenize(self.tokenizer, prompts.conditional_prefix(text))
            if ids[: len(self.system)] != self.system:
                raise ValueError(f"prefix of {text!r} does not start with the shared system ids")
            self._cache[text] = ids[len(self.system) :]
        return self._cache[text]


def _all_phrases():
    for size in SIZES:
        for colour in COLOURS:
            for shape in SHAPES:
                for position in POSITIONS:
                    yield f"a {size} {colour} {shape} at the {position}"


def rotate_t(k: torch.Tensor, delta: torch.Tensor, theta: float) -> torch.Tensor:
    """Move keys ``(B, KV, S, hd)`` by ``delta (B,)`` positions on U1's t axis (the first hd/2 dims).

    RoPE rotations compose, so a key built at position p becomes the key at
    p + delta, exactly as the pack's rotate-half RoPE would have built it.
    """
    half = k.shape[-1] // 2
    inv = theta ** (-torch.arange(0, half, 2, dtype=torch.float32) / half)
    ang = delta.float()[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)[:, None, None, :]
    kt = k[..., :half]
    x1, x2 = kt[..., : half // 2], kt[..., half // 2 :]
    rot = kt * ang.cos().to(k.dtype) + torch.cat([-x2, x1], dim=-1) * ang.sin().to(k.dtype)
    return torch.cat([rot, k[..., half:]], dim=-1)


def x0_prediction(prefix: PrefixTower, gen: GenerationTower, system: torch.Tensor, rest: torch.Tensor, real: torch.Tensor, cond: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Both towers in one static-shape pass over a padded batch: x0_hat ``(B, 3, H, W)``.

    ``system (1, S)`` the shared system ids; ``rest (B, R)`` each sample's ids
    after the system part, right-aligned (``real`` marks them; pads first);
    ``cond (B,)`` False for unconditional samples (their rest is the official
    unconditional prefix and the system part is hidden from them).

    Exact for every sample (checked against ``GenerationTower(PrefixTower.encode)``
    in :func:`check_training_forward`): pads are never attended to; the image's
    t position is ``S + R`` for all, and each sample's system keys are moved by
    its pad count (:func:`rotate_t`), so every query-key offset equals the
    unpadded one (RoPE depends on offsets only). One pass serves the whole
    batch: conditional and unconditional samples, every caption length.
    """
    m, gm = prefix.language_model.model, gen.language_model.model
    b, r = rest.shape
    s = system.shape[1]
    th, tw = gen.cfg.token_grid(*z.shape[-2:])
    n = th * tw
    delta = r - real.sum(1)
    key_ok = torch.cat([cond[:, None].expand(b, s), real], dim=1)  # (B, S + R)
    causal = torch.cat([torch.ones(r, s, dtype=torch.bool), torch.tril(torch.ones(r, r, dtype=torch.bool))], dim=1)
    mask_text = (key_ok[:, None, :] & causal[None]) | torch.cat([torch.zeros(r, s, dtype=torch.bool), torch.eye(r, dtype=torch.bool)], dim=1)[None]
    mask_text = mask_text[:, None]  # (B, 1, R, S + R); pads see themselves only
    mask_img = torch.cat([key_ok, torch.ones(b, n, dtype=torch.bool)], dim=1)[:, None, None, :]  # (B, 1, 1, S + R + N)
    xs, xr = m.embed_tokens(system), m.embed_tokens(rest)
    pos_s, pos_r = text_positions(s), text_positions(r, start=s)
    pos_i = image_positions(s + r, th, tw)
    h = gen.embed(z, t)
    theta = prefix.cfg.llm.rope_theta
    for und, g in zip(m.layers, gm.layers, strict=True):
        qs, ks, vs = und.qkv(xs, pos_s)
        qr, kr, vr = und.qkv(xr, pos_r)
        k = torch.cat([rotate_t(ks.expand(b, -1, -1, -1), delta, theta), kr], dim=2)
        v = torch.cat([vs.expand(b, -1, -1, -1), vr], dim=2)
        qi, ki, vi = g.qkv(h, pos_i)
        h = g.finish(h, attend(qi, torch.cat([k, ki], dim=2), torch.cat([v, vi], dim=2), mask=mask_img))
        if und is not m.layers[-1]:
            xs = und.finish(xs, attend(qs, ks, vs, causal=True))
            xr = und.finish(xr, attend(qr, k, v, mask=mask_text))
    return gen.fm_modules["fm_head"](gm.norm_mot_gen(h), th, tw)


# ---------------------------------------------------------------- data


@dataclass
class Batch:
    x0: torch.Tensor
    """(B, 3, 64, 64) in [-1, 1]."""
    rest: torch.Tensor
    """(B, R) ids, right-aligned."""
    real: torch.Tensor
    """(B, R) bool: not a pad."""
    cond: torch.Tensor
    """(B,) bool: False = the official unconditional prefix (condition dropout)."""
    captions: list[str]


def make_batch(indices: list[int], uncond: list[bool], prefixes: Prefixes) -> Batch:
    """Train-split scenes ``indices``; ``uncond[i]`` replaces sample i's prefix by the unconditional one."""
    images, captions = render_batch(indices, "train", trigger="")
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    r = prefixes.max_rest
    rest = torch.full((len(indices), r), prefixes.pad, dtype=torch.long)
    real = torch.zeros(len(indices), r, dtype=torch.bool)
    for i, (c, u) in enumerate(zip(captions, uncond, strict=True)):
        ids = prefixes.uncond if u else prefixes.rest(c)
        if len(ids) > r:
            raise ValueError(f"caption {c!r}: {len(ids)} prefix tokens > the batch width {r}")
        rest[i, r - len(ids) :] = torch.tensor(ids)
        real[i, r - len(ids) :] = True
    return Batch(x0, rest, real, ~torch.tensor(uncond), captions)


def step_batch(step: int, tc: TrainConfig, prefixes: Prefixes) -> Batch:
    """The batch of ``step``, a function of ``(seed, step)`` only."""
    rng = np.random.default_rng([tc.seed, 1, step])
    indices = [int(i) for i in rng.integers(0, 2**62, size=tc.batch)]
    uncond = [bool(u) for u in rng.random(tc.batch) < tc.p_uncond]
    return make_batch(indices, uncond, prefixes)


# ---------------------------------------------------------------- training


def noised(step: int, x0: torch.Tensor, gen: GenerationTower, tc: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(z_t, t, s_eff eps)`` with ``z_t = t x0 + (1 - t) s_eff eps`` (spec 5.3, 5.4).

    uniform: t = t_eps + (1 - t_eps) u; logit_normal: sigmoid(N(-0.8, 0.8^2)) clamped to [t_eps, 1 - t_eps].
    """
    g = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
    if tc.t_law == "uniform":
        t = tc.t_eps + (1.0 - tc.t_eps) * torch.rand(x0.shape[0], generator=g)
    else:
        t = torch.sigmoid(-0.8 + 0.8 * torch.randn(x0.shape[0], generator=g)).clamp(tc.t_eps, 1.0 - tc.t_eps)
    eps = torch.randn(x0.shape, generator=g)
    s_eff = gen.cfg.noise_scale_for_image(*x0.shape[-2:])
    tv = t.view(-1, 1, 1, 1)
    return tv * x0 + (1.0 - tv) * s_eff * eps, t, s_eff * eps


def train_step(step: int, prefix: PrefixTower, gen: GenerationTower, prefixes: Prefixes, tc: TrainConfig) -> dict:
    """One forward/backward over the step's batch; returns its log record (no optimizer update)."""
    bt = step_batch(step, tc, prefixes)
    z, t, eps = noised(step, bt.x0, gen, tc)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.bf16):
        x0_hat = x0_prediction(prefix, gen, torch.tensor([prefixes.system]), bt.rest, bt.real, bt.cond, z, t)
    out = tc.loss_config(bt.x0, eps, 1.0 - t, x0_hat)  # fp32, per-sample mean over pixels, then the batch mean
    out.loss.backward()
    return {"step": step, "loss": float(out.loss.detach()), "x0_mse": float(out.x0_mse.mean()), "v_mse": float(out.v_mse.mean()),
            "t_mean": float(t.mean()), "n_uncond": int((~bt.cond).sum())}


def optimizer(params: list, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW as train_u1 (betas 0.9 / 0.95) with ``tc``'s learning rate and weight decay; :func:`update` sets the rate per step."""
    return torch.optim.AdamW(params, lr=tc.lr, betas=(0.9, 0.95), weight_decay=tc.weight_decay)


def update(step: int, prefix: PrefixTower, gen: GenerationTower, prefixes: Prefixes, tc: TrainConfig, opt: torch.optim.Optimizer, params: list) -> dict:
    """One optimizer update: the step's learning rate, :func:`train_step`, gradient clipping, AdamW; its log record with ``grad_norm``."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, tc)
    opt.zero_grad(set_to_none=True)
    rec = train_step(step, prefix, gen, prefixes, tc)
    rec["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, tc.clip))
    opt.step()
    return rec


def lr_at(step: int, tc: TrainConfig) -> float:
    """:func:`schedule.lr_at` for a :class:`TrainConfig`: warm-up over ``tc.warmup`` steps, then constant, or linear to ``tc.decay_to`` x lr at ``tc.decay_steps``."""
    return schedule.lr_at(step, tc.lr, tc.warmup, end=tc.decay_steps, final=tc.decay_to)


# ---------------------------------------------------------------- sampling (own loop, spec 4.3)


@torch.no_grad()
def euler_cfg(gen: GenerationTower, z: torch.Tensor, grid: list[float], kv_cond, kv_uncond, cfg: float) -> torch.Tensor:
    """U1's Euler rule with CFG from ``z`` at ``grid[0]`` through ``grid`` (t ascending, 1 = clean), fp32.

    Velocity ``(x0_hat - z) / max(1 - t, t_eps)`` (spec 4.3), guided ``v_u + cfg (v_c - v_u)``;
    ``kv_cond`` is the batch's prefix KV (or one prefix for all), ``kv_uncond`` the unconditional one.
    """
    for a, b in itertools.pairwise(grid):
        t, d = torch.tensor([a]), max(1.0 - a, gen.cfg.t_eps)
        v_c = (gen(z, t, kv_cond).float() - z) / d
        v_u = (gen(z, t, kv_uncond).float() - z) / d
        z = z + (b - a) * (v_u + cfg * (v_c - v_u))
    return z


def to_uint8(z: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] -> uint8 ``(B, H, W, 3)``."""
    return ((z.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


@torch.no_grad()
def sample(prefix: PrefixTower, gen: GenerationTower, prefixes: Prefixes, captions: list[str], steps: int = 20, cfg: float = 4.0, shift: float = 3.0, seed: int = 0) -> torch.Tensor:
    """Official Euler loop with CFG in fp32 (:func:`euler_cfg`), captions of one prefix length per batch: uint8 images ``(B, 64, 64, 3)``."""
    noise = torch.randn(len(captions), 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    z = gen.cfg.noise_scale_for_image(64, 64) * noise
    tok = prefixes.tokenizer
    kv_u = prefix.encode(torch.tensor([prompts.tokenize(tok, prompts.UNCONDITIONAL_PREFIX)]))
    by_len: dict[int, list[int]] = {}
    for i, c in enumerate(captions):
        by_len.setdefault(len(prefixes.rest(c)), []).append(i)
    grid = [float(t) for t in official_timesteps(steps, shift)]
    for rows in by_len.values():
        kv_c = prefix.encode(torch.tensor([prompts.tokenize(tok, prompts.conditional_prefix(captions[r])) for r in rows]))
        z[rows] = euler_cfg(gen, z[rows], grid, kv_c, kv_u, cfg)
    return to_uint8(z)


def quick_accuracy(prefix, gen, prefixes, n: int = 20, steps: int = 20) -> float:
    scenes = [scene(i, "heldout") for i in range(n)]
    images = sample(prefix, gen, prefixes, [caption(s) for s in scenes], steps=steps)
    return accuracy(score_images(images.numpy(), scenes))


# ---------------------------------------------------------------- state, export


def export(out: Path, ema: dict[str, torch.Tensor], cfg: U1Config) -> None:
    """The EMA weights in bf16, official layout (2 shards), into ``out``."""
    save_sharded(out, {k: v.to(torch.bfloat16) for k, v in ema.items()}, cfg, num_shards=2)


def save_state(state_dir: Path, step: int, elapsed: float, prefix, gen, ema, opt, tc: TrainConfig, cfg: U1Config) -> None:
    tensors = {f"model.{k}": v for k, v in {**prefix.state_dict(), **gen.state_dict()}.items()}
    tensors |= {f"ema.{k}": v for k, v in ema.items()}
    names = [n for n, _ in _named_params(prefix, gen)]
    for i, name in enumerate(names):
        st = opt.state.get(opt.param_groups[0]["params"][i], {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"opt.{key}.{name}"] = st[key]
    files.save_safetensors(state_dir / "state.safetensors", {k: v.contiguous() for k, v in tensors.items()})
    files.write_json(state_dir / "state.json", {"step": step, "elapsed_s": elapsed, "opt_step": step, "train_config": asdict(tc), "model_config": cfg.to_dict()})


def load_state(state_dir: Path, prefix, gen, ema, opt) -> tuple[int, float]:
    from safetensors.torch import load_file

    meta = json.loads((state_dir / "state.json").read_text())
    tensors = load_file(str(state_dir / "state.safetensors"))
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    prefix.load_state_dict({k: model[k] for k in prefix.state_dict()})
    gen.load_state_dict({k: model[k] for k in gen.state_dict()})
    for k in ema:
        ema[k].copy_(tensors[f"ema.{k}"])
    step = int(meta["step"])
    for i, (name, p) in enumerate(_named_params(prefix, gen)):
        assert opt.param_groups[0]["params"][i] is p
        if f"opt.exp_avg.{name}" in tensors:
            opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": tensors[f"opt.exp_avg.{name}"], "exp_avg_sq": tensors[f"opt.exp_avg_sq.{name}"]}
    return step, float(meta["elapsed_s"])


def _named_params(prefix, gen):
    return [*prefix.named_parameters(), *gen.named_parameters()]


def plot_loss(log_path: Path, png: Path) -> None:
    """Loss (x0-MSE, moving average of 50 steps) against step, log scale, with PIL."""
    from PIL import Image, ImageDraw

    recs = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "x0_mse" in r]
    if len(recs) < 2:
        return
    steps = np.array([r["step"] for r in recs], float)
    loss = np.log10(np.array([r["x0_mse"] for r in recs], float))
    k = min(50, len(loss))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    w, h, m = 640, 360, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    lo, hi = float(loss.min()), float(loss.max())

    def xy(s, v):
        return m + (s - steps[0]) / max(steps[-1] - steps[0], 1) * (w - 2 * m), h - m - (v - lo) / max(hi - lo, 1e-9) * (h - 2 * m)

    d.line([xy(s, v) for s, v in zip(steps, loss, strict=True)], fill=(200, 200, 230))
    d.line([xy(s, v) for s, v in zip(steps[k - 1 :], smooth, strict=True)], fill=(20, 60, 200), width=2)
    d.rectangle([m, m, w - m, h - m], outline="black")
    for v in np.arange(math.floor(lo * 2) / 2, hi + 0.01, 0.5):
        if lo <= v <= hi:
            y = xy(steps[0], v)[1]
            d.text((4, y - 6), f"{10**v:.3g}", fill="black")
    d.text((m, 10), "tiny U1 pretraining: x0-MSE per step (light) and 50-step mean (blue), log scale", fill="black")
    d.text((m, h - m + 8), f"step {int(steps[0])}", fill="black")
    d.text((w - m - 70, h - m + 8), f"step {int(steps[-1])}", fill="black")
    with files.atomic_open(png) as f:
        img.save(f, format="PNG")


CARD_COMMANDS = """\
    # pretrain this checkpoint (resumes from --state when interrupted: rerun it without --fresh; --minutes caps the total training time).
    # --bf16 is for CPUs with AMX or AVX-512 BF16 (this run: 0.59 s/step); elsewhere autocast is emulated (20 s/step on an
    # AVX2 EPYC, where the script warns): drop --bf16 and --minutes there (fp32: 0.82 s/step, about 62 min; bench/RESULTS.md)
    .venv/bin/python scripts/tinyworld/pretrain_u1.py --out scripts/tinyworld/models/u1 --steps 4500 --decay-steps 4500 --decay-to 0.1 --threads 2 --bf16 --loss v --t-law logit_normal --minutes 45 --eval-every 12 --fresh
    # evaluate through ComfyUI (pack U1 loader, U1 Prompt Encode, stock KSampler euler/simple, pixel_space VAE)
    .venv/bin/python scripts/tinyworld/evaluate_u1.py scripts/tinyworld/models/u1 --prompts 200 --steps 50 --cfg 4 --json scripts/tinyworld/models/u1/metrics.json --grid scripts/tinyworld/models/u1/samples.png
    # where it loses detail: x0 error against t (edge share) and sampling from noised renders
    .venv/bin/python scripts/tinyworld/diagnose_u1.py scripts/tinyworld/models/u1
    # CI check on both hosts
    .venv/bin/python -m pytest tests/test_tinyworld_u1.py
    COMFYUI_PATH=$PWD/.comfyui/ComfyUI-0.33 .venv-0.33/bin/python -m pytest tests/test_tinyworld_u1.py
"""


def write_model_card(out: Path) -> None:
    """README.md of the checkpoint folder from config.json, training.json, train_log.jsonl and metrics.json (if evaluated)."""
    cfg = U1Config.from_json(out / "config.json")
    info = json.loads((out / "training.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None
    recs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["x0_mse"] for r in recs if "x0_mse" in r]
    quick = [r for r in recs if "quick_heldout_accuracy" in r]
    with torch.device("meta"):
        prefix, gen = build_towers(cfg)
    count = {name: sum(p.numel() for p in m.parameters()) for name, m in (("understanding tower (text encoder)", prefix), ("generation tower + fm_modules", gen))}
    sizes = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file() and f.name != "README.md"}
    llm, vis, tc = cfg.llm, cfg.vision, info["train_config"]
    lines = [
        "# Tiny SenseNova-U1 for the tiny world",
        "",
        "A SenseNova-U1 text-to-image model small enough to pretrain on 2 CPU cores, built from the pack's own U1 classes",
        "(`trainer_core/models/u1`), stored like the official checkpoint: `config.json`, `model.safetensors.index.json`, 2 bf16 shards with",
        "the official tensor names (both towers, `lm_head` and the understanding `vision_model` included), and its own tokenizer files.",
        "It loads with the pack's SenseNova-U1 Loader and samples with the stock KSampler in pixel space (decode with the `pixel_space` VAE).",
        "Demo material, not a useful image model: it draws the tiny world's coloured shapes (`scripts/tinyworld`).",
        "",
        "## Architecture",
        "",
        f"- Qwen3 towers (understanding and generation, same shapes): hidden {llm.hidden_size}, {llm.num_hidden_layers} layers each, "
        f"{llm.num_attention_heads} query / {llm.num_key_value_heads} KV heads of {llm.head_dim}, SwiGLU {llm.intermediate_size}, "
        f"RoPE theta {llm.rope_theta:g} (t) / {llm.rope_theta_hw:g} (h, w), vocab_size {llm.vocab_size}.",
        f"- Generation token: `vision_config.patch_size` {vis.patch_size} / `downsample_ratio` {vis.downsample_ratio} = {cfg.token_px} px "
        f"(official: 16 / 0.5 = 32), so a 64 x 64 image is {(64 // cfg.token_px) ** 2} tokens; vision width {vis.hidden_size}; "
        + (f"U1's MLP head ({llm.hidden_size} -> {llm.hidden_size} -> {cfg.token_px ** 2 * 3})." if not cfg.use_pixel_head else
         f"U1.5's ConvDecoder head (`use_pixel_head`: pixel shuffle, 3 x 3 convolutions {llm.hidden_size // 4} -> {llm.hidden_size // 4} and "
         f"{llm.hidden_size // 16} -> {3 * (cfg.token_px // 4) ** 2}, pixel shuffle) with U1.5's noise-scale max {cfg.noise_scale_max_value:g}."),
        f"- Noise scale as U1: s_eff = min({cfg.noise_scale:g} * sqrt(N / {cfg.noise_scale_base_image_seq_len}), {cfg.noise_scale_max_value:g}), "
        f"N = the model's own tokens: {cfg.noise_scale_for(64):g} at 64 x 64, {cfg.noise_scale_for(256):g} at 128 x 128. t_eps {cfg.t_eps}.",
        f"- Parameters: {sum(count.values()) / 1e6:.2f} M ("
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in count.items())
        + ").",
        "- Tokenizer: byte-level BPE in Qwen2 format (`vocab.json`, `merges.txt`, `tokenizer_config.json`) learned on the world's captions,",
        "  the style triggers and U1's official prompt templates (`scripts/tinyworld/u1_tokenizer.py`); "
        "`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<think>`, `</think>`, `<IMG_CONTEXT>`, `<img>`, `</img>` follow the learned ids.",
        "",
        "## Data and training",
        "",
        "- Data: `tinyworld.scene(i, \"train\")` rendered plain at 64 x 64 with its bare caption; a fresh batch of random indices every step",
        "  (a function of seed and step). Held-out content (`world.is_heldout`) never appears.",
        "- Prefix: U1's official conditional prefix (system message, chat template, empty think block, `<img>`) around the caption;",
        f"  {tc['p_uncond']:.0%} of samples use the official unconditional prefix (condition dropout, for CFG).",
        "- Objective as U1 / train_u1: z_t = t x0 + (1 - t) s_eff eps, "
        + (f"t uniform on [{tc['t_eps']}, 1)" if tc["t_law"] == "uniform" else f"t = sigmoid(N(-0.8, 0.8^2)) clamped to [{tc['t_eps']}, {1 - tc['t_eps']:g}]")
        + ", x0 prediction, "
        + ("x0-MSE in pixel space." if tc.get("loss", "x0") == "x0" else "velocity MSE (train_u1's `v` loss: x0-MSE / max(1 - t, t_eps)^2) in pixel space."),
        "- Both towers trained jointly from scratch: the understanding tower is the text encoder (prefix K/V with gradients,",
        "  one exact padded pass per step, checked against the pack's `GenerationTower(PrefixTower.encode(...))` at start).",
        f"- AdamW (0.9, 0.95, weight decay {tc['weight_decay']}), lr {tc['lr']:g} after {tc['warmup']} warm-up steps, "
        + (f"then linearly to {tc['decay_to']:g} x at step {tc['decay_steps']}" if tc.get("decay_steps") else "constant")
        + f"; clip {tc['clip']}; "
        f"batch {tc['batch']}; EMA {tc['ema']} (the exported weights); seed {tc['seed']}; "
        + ("bf16 autocast over fp32 weights" if tc.get("bf16") else "fp32 training") + ", bf16 export.",
        f"- This checkpoint: step {info['step']}, {info['train_minutes']} training minutes on "
        + (hardware.describe(info["cpu"]) if "cpu" in info else f"{info['threads']} CPU thread(s)")
        + (f"; x0-MSE {np.mean(losses[:20]):.4f} (first 20 steps) -> {np.mean(losses[-50:]):.4f} (last 50 steps)." if len(losses) >= 50 else "."),
        "",
        "![loss](loss.png)",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        attrs = ", ".join(f"{k} {v:.1%}" for k, v in metrics["per_attribute"].items())
        lines += [
            f"Content accuracy (shape, colour, position; `scripts/tinyworld/content.py`) on {metrics['prompts']} held-out prompts, "
            f"checkpoint step {metrics.get('checkpoint_step', '?')}, "
            f"ComfyUI sampling at {metrics['steps']} steps, cfg {metrics['cfg']}, shift {metrics['shift']}, weights {metrics['weight_dtype']}: "
            f"**{metrics['content_accuracy']:.1%}** (per attribute: {attrs}); {metrics['sampling_seconds']} s of sampling.",
            "",
        ]
        if "shape_confusion" in metrics:
            lines += [
                f"How the shapes are read. {CONFUSION_NOTE}",
                "",
                confusion_markdown(metrics["shape_confusion"]),
                "",
            ]
        if "by_object_count" in metrics:
            lines += [BINDING_NOTE, "", by_object_count_markdown(metrics["by_object_count"]), ""]
        if "by_size" in metrics:
            lines += [SIZE_NOTE, "", by_size_markdown(metrics["by_size"]), ""]
        lines += [
            "![samples](samples.png)" if (out / "samples.png").is_file() else "",
        ]
    else:
        lines += ["Not evaluated yet: run the evaluation command below."]
    if quick:
        lines += ["", "Quick held-out checks during training (20 prompts, 20 steps, cfg 4, fp32 EMA, own loop): "
                  + ", ".join(f"step {r['step']}: {r['quick_heldout_accuracy']:.0%}" for r in quick) + "."]
    lines += ["", "## Commands", "", CARD_COMMANDS, "## Files", ""]
    lines += [f"- `{name}`: {size / 2**20:.2f} MB" if size > 2**20 else f"- `{name}`: {size / 1024:.1f} kB" for name, size in sizes.items()]
    lines += [f"- total {sum(sizes.values()) / 2**20:.2f} MB", ""]
    with files.atomic_open(out / "README.md", "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "scripts" / "tinyworld" / "models" / "u1")
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE, help="resumable state folder (resumes when it holds a state)")
    ap.add_argument("--minutes", type=float, default=40.0, help="total training minutes over all resumes")
    ap.add_argument("--steps", type=int, default=0, help="stop at this step instead (0: time only)")
    ap.add_argument("--save-every", type=float, default=3.0, help="minutes between checkpoints")
    ap.add_argument("--eval-every", type=float, default=10.0, help="minutes between quick held-out evaluations (20 prompts, 20 steps); 0 = off")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing state and start at step 0")
    for f in ("seed", "batch", "lr", "warmup", "threads", "p_uncond", "ema", "decay_steps", "decay_to"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(getattr(TrainConfig, f)), default=getattr(TrainConfig, f))
    ap.add_argument("--t-law", choices=T_LAWS, default=TrainConfig.t_law)
    ap.add_argument("--loss", choices=list(LOSSES), default=TrainConfig.loss, help="train_u1's loss_type: x0 (default) or v")
    ap.add_argument("--vision-width", type=int, default=TINY_U1.vision.hidden_size, help="vision_config.hidden_size of the patch embedder (the shipped model: 64)")
    ap.add_argument("--token-px", type=int, default=TINY_U1.token_px, help="generation token size in pixels (the shipped model: 8, 64 tokens at 64 x 64; 4 gives 256)")
    ap.add_argument("--head", choices=HEAD_KINDS, default="mlp", help="fm_head: U1's MLP (the shipped model) or U1.5's ConvDecoder (3 x 3 convolutions across token borders)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (weights, optimizer and EMA stay fp32; faster on CPUs with AMX)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    tc = TrainConfig(seed=args.seed, batch=args.batch, lr=args.lr, warmup=args.warmup, threads=args.threads, p_uncond=args.p_uncond, ema=args.ema, t_law=args.t_law, loss=args.loss,
                     decay_steps=args.decay_steps, decay_to=args.decay_to, bf16=args.bf16)
    torch.set_num_threads(tc.threads)
    hardware.warn_if_bf16_emulated(tc.bf16, log)
    out, state_dir = args.out, args.state
    out.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)

    if args.fresh or not (out / "vocab.json").is_file():
        u1_tokenizer.train(out)
    tokenizer = prompts.load_tokenizer(out)
    if len(tokenizer) > VOCAB:
        raise ValueError(f"tokenizer in {out} has {len(tokenizer)} ids > model vocab_size {VOCAB}")
    prefixes = Prefixes(tokenizer)
    cfg = tiny_u1(args.vision_width, args.token_px, args.head)
    prefix, gen = init_towers(cfg, tc.seed)
    params = [p for _, p in _named_params(prefix, gen)]
    log.info("tiny U1: %.2f M parameters (%d tensors); system prefix %d tokens", sum(p.numel() for p in params) / 1e6, len(params), len(prefixes.system))
    opt = optimizer(params, tc)
    ema = {k: v.detach().clone() for k, v in {**prefix.state_dict(), **gen.state_dict()}.items()}
    step, elapsed = 0, 0.0
    log_path = out / "train_log.jsonl"
    if (state_dir / "state.json").is_file() and not args.fresh:
        saved = json.loads((state_dir / "state.json").read_text()).get("model_config")
        if saved != json.loads(json.dumps(cfg.to_dict())):
            raise ValueError(f"{state_dir / 'state.json'}: its model_config is not this run's (--vision-width {args.vision_width} --token-px {args.token_px} --head {args.head}); pass --fresh or the state's options")
        step, elapsed = load_state(state_dir, prefix, gen, ema, opt)
        log.info("resumed at step %d (%.1f min trained)", step, elapsed / 60)
        _truncate_log(log_path, step)
    elif log_path.exists():
        log_path.unlink()
    log.info("training forward == pack forward (max abs diff %.2e)", check_training_forward(prefix, gen, prefixes))

    budget = args.minutes * 60.0
    last_save = last_eval = time.monotonic()
    t0, base_elapsed = time.monotonic(), elapsed
    with open(log_path, "a", encoding="utf-8") as logf:
        while elapsed < budget and (args.steps <= 0 or step < args.steps):
            ts = time.monotonic()
            rec = update(step, prefix, gen, prefixes, tc, opt, params)
            with torch.no_grad():
                decay = min(tc.ema, (1 + step) / (10 + step))
                for k, v in {**prefix.state_dict(), **gen.state_dict()}.items():
                    ema[k].lerp_(v, 1 - decay)
            step += 1
            elapsed = base_elapsed + time.monotonic() - t0
            rec |= {"lr": lr_at(step - 1, tc), "step_s": round(time.monotonic() - ts, 3), "elapsed_s": round(elapsed, 1)}
            files.append_jsonl(logf, rec)
            if step % 20 == 0:
                log.info("step %d loss %.4f grad %.2f %.2f s/step %.1f min", step, rec["loss"], rec["grad_norm"], rec["step_s"], elapsed / 60)
            now = time.monotonic()
            if args.eval_every > 0 and now - last_eval > args.eval_every * 60:
                acc = _eval_ema(ema, prefixes, cfg)
                files.append_jsonl(logf, {"step": step, "quick_heldout_accuracy": acc, "elapsed_s": round(elapsed, 1)})
                log.info("step %d quick held-out accuracy (20 prompts, 20 steps, EMA): %.3f", step, acc)
                last_eval = time.monotonic()
                t0, base_elapsed = time.monotonic(), elapsed  # evaluation time is not training time
            if now - last_save > args.save_every * 60:
                logf.flush()
                _checkpoint(out, state_dir, step, elapsed, prefix, gen, ema, opt, tc, cfg, log_path)
                last_save = time.monotonic()
                t0, base_elapsed = time.monotonic(), elapsed
    _checkpoint(out, state_dir, step, elapsed, prefix, gen, ema, opt, tc, cfg, log_path)
    log.info("done: step %d, %.1f min", step, elapsed / 60)


def _checkpoint(out, state_dir, step, elapsed, prefix, gen, ema, opt, tc, cfg, log_path) -> None:
    save_state(state_dir, step, elapsed, prefix, gen, ema, opt, tc, cfg)
    export(out, ema, cfg)
    files.write_json(out / "training.json", {"step": step, "train_minutes": round(elapsed / 60, 2), "train_config": asdict(tc), "threads": torch.get_num_threads(), "cpu": hardware.cpu_description()})
    plot_loss(log_path, out / "loss.png")
    write_model_card(out)
    log.info("checkpoint: step %d -> %s (state %s)", step, out, state_dir)


def _eval_ema(ema, prefixes, cfg: U1Config) -> float:
    prefix, gen = build_towers(cfg)
    prefix.load_state_dict({k: ema[k] for k in prefix.state_dict()})
    gen.load_state_dict({k: ema[k] for k in gen.state_dict()})
    return quick_accuracy(prefix.eval(), gen.eval(), prefixes)


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the last checkpoint of an interrupted run)."""
    if not log_path.exists():
        return
    keep = [line for line in log_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    with files.atomic_open(log_path, "w") as f:
        f.write("".join(line + "\n" for line in keep))


def check_training_forward(prefix: PrefixTower, gen: GenerationTower, prefixes: Prefixes) -> float:
    """Max abs difference of :func:`x0_prediction` (padded batch) from the pack's own path.

    The pack's path is what ComfyUI runs: ``GenerationTower(z, t, PrefixTower.encode(ids))``
    per sample, unpadded. Checked on copies with a random head (the real one
    starts at zero) for captions of different lengths and one unconditional sample.
    """
    gen = copy.deepcopy(gen)
    torch.nn.init.normal_(output_layer(gen).weight, std=0.05)
    scenes = [scene(i) for i in range(6)]
    bt = make_batch(list(range(6)), [False, False, False, False, False, True], prefixes)
    z, t, _ = noised(0, bt.x0, gen, TrainConfig())
    with torch.no_grad():
        mine = x0_prediction(prefix, gen, torch.tensor([prefixes.system]), bt.rest, bt.real, bt.cond, z, t)
        worst = 0.0
        for i, sc in enumerate(scenes):
            text = prompts.conditional_prefix(caption(sc)) if bt.cond[i] else prompts.UNCONDITIONAL_PREFIX
            kv = prefix.encode(torch.tensor([prompts.tokenize(prefixes.tokenizer, text)]))
            ref = gen(z[i : i + 1], t[i : i + 1], kv)
            worst = max(worst, float((ref - mine[i : i + 1]).abs().max()))
    if worst > 1e-4:
        raise AssertionError(f"padded training forward differs from the pack's forward by {worst}")
    return worst


if __name__ == "__main__":
    main()
