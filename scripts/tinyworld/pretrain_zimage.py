"""Pretrain the tiny-world Z-Image (pixel space) by flow matching; resumable, on CPU.

    .venv/bin/python scripts/tinyworld/pretrain_zimage.py --max-steps 2662 --minutes 600   # stage 1 of the committed base
    .venv/bin/python scripts/tinyworld/pretrain_zimage.py --minutes 20    # a stopped run continues where it stopped

The committed base took three stages, each continuing the previous export with
``--init`` (its model card, ``models/zimage_base.md``, lists the commands).
Each call continues the run in ``--run`` (default ``.cache/tinyworld/zimage_base``)
for ``--minutes`` of wall time or until ``--max-steps`` in total, saves a
resumable state every ``--save-minutes`` and at the end, and exports the EMA
weights (fp16) to ``scripts/tinyworld/models/zimage_base.safetensors`` with
their loss curve. Same seed and step count, same weights: every random draw
comes from a generator seeded by (seed, step) or (seed, scene index).

Model: ComfyUI's own ``NextDiT`` (``comfy.supported_models.ZImage`` through the
demo package's ``TinyPixelZImage``): width 288, 4 heads of 72, 3 layers plus one
noise and one context refiner, 8 x 8 patches on 64 x 64 RGB (64 image tokens,
captions padded to 32 tokens), caption features from the tiny Qwen3 text
encoder (``make_demo_model.text_encoder_state``, width 32, random and frozen,
rebuilt from its seed) through ComfyUI's own encode path.

Objective (DESIGN.md section 2): x_sigma = (1 - sigma) x0 + sigma eps with x0
the render in [-1, 1] (ComfyUI's pixel_space convention), velocity target
v = eps - x0, read from ComfyUI's denoised output as (x_sigma - x0_pred) / sigma;
sigma drawn from ``--sigma-law`` (logit-normal(0, 1) by default, or uniform)
then shifted by ``--train-shift`` (3 by default, Z-Image's); 10% of captions
dropped to the empty prompt so classifier-free guidance works. The model
samples at Z-Image's shift 3 (:data:`SHIFT`, the model class's) whatever the
training law.

The law matters more than the step count here. Shift 3 puts 39% of the draws
above sigma 0.8, where layout and colour are chosen, but 7% below 0.4 (0.7%
below 0.2), where a shape is finished: the base after stages 1 and 2 (8,068
steps) placed objects right (position 96%) but drew blobs (shape 24%), and
even from held-out renders noised only to sigma 0.4 it kept the shape in 74%
of objects (``diagnose_denoising.py``). Unshifted logit-normal(0, 1) from
scratch went the other way: after 2,400 steps its layouts were fragments (18%
content accuracy, 48 prompts). Stage 3 trains the whole range: uniform sigma
(20% above 0.8, 40% below 0.4), the law of rectified flow and of U1. It lifted
sampled content accuracy from 61% to 67% (shape 24% to 33%, 200 prompts), but
from sigma 0.4 the shape is kept in 76% of objects (was 74%) and from 0.2 in
92% (was 89%): starving the low-noise end was not the main limit. What is, is
open; the tiny U1, trained on a uniform law from the start with its own text
tower, shows the same weakness (shape 17% at 2,000 steps, 24% at 3,200), which points at
what the two share: 8-px tokens and shape being the smallest part of the loss.

Batches hold captions of one token length (per-length queues), because
ComfyUI's NextDiT pads every caption to 32 tokens with its own learned token
and attends to that padding: a batch padded any other way would not be what
the graph computes at sampling time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODELS = HERE / "models"
CACHE = REPO / ".cache" / "tinyworld"
for _p in (str(REPO / "scripts"), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from flowlora_tiny import TINY_PIXEL_ZIMAGE_EXTRA, TINY_PIXEL_ZIMAGE_WIDTH, TINY_TEXT_ENCODER  # noqa: E402

import tinyworld as tw  # noqa: E402
from tinyworld import hardware  # noqa: E402
from tinyworld.schedule import lr_at  # noqa: E402

log = logging.getLogger("pretrain_zimage")

N_LAYERS = 3
UNET_CONFIG = {"image_model": "lumina2", "dim": TINY_PIXEL_ZIMAGE_WIDTH, "n_layers": N_LAYERS, "cap_feat_dim": TINY_TEXT_ENCODER["hidden_size"], "qk_norm": True, **TINY_PIXEL_ZIMAGE_EXTRA}
"""What ComfyUI's detection plus ``TinyPixelZImage.unet_extra_config`` give for the exported weights."""
TEXT_ENCODER_SEED = 1
"""Seed of the tiny Qwen3 (the same file ``make_demo_model.py`` writes for the demo)."""
TEXT_ENCODER_FILE = "flowlora_demo_qwen3.safetensors"
PAD_TOKEN = 151643
"""Qwen's pad token (ComfyUI's ``Qwen3Tokenizer`` pad; the encoder masks it)."""
SHIFT = 3.0
"""Z-Image's sampling shift (the model class's ``model_sampling``): the Turbo's grid and every sample use it."""
TRAIN_SHIFT = 3.0
"""Default shift of the pretraining sigma law (stages 1 and 2; stage 3 trains at 1 with a uniform law: module docstring)."""
IMAGE = 64


# ---------------------------------------------------------------- ComfyUI, text encoder, model

def import_comfy() -> Path:
    """ComfyUI (``COMFYUI_PATH`` or ``.comfyui/ComfyUI``) importable, CPU mode; the tiny Z-Images registered."""
    import make_demo_model

    root = make_demo_model.import_comfy()
    import flowlora_tiny

    flowlora_tiny.register_tiny_zimage()
    return root


def text_encoder_path(folder: Path = CACHE) -> Path:
    """The tiny Qwen3 text encoder file, written from its seed on first use (not committed: its real vocabulary is 10 MB)."""
    import make_demo_model

    path = folder / TEXT_ENCODER_FILE
    if not path.is_file():
        make_demo_model.save(path, make_demo_model.text_encoder_state(TEXT_ENCODER_SEED))
    return path


def load_text_encoder(path: Path | None = None):
    """ComfyUI CLIP object, built by the demo package's Tiny Text Encoder Loader code (both hosts)."""
    import flowlora_tiny

    return flowlora_tiny.load_tiny_text_encoder(path or text_encoder_path())


class CaptionEncoder:
    """Caption -> ComfyUI conditioning tensor ``(T, 32)``, batched.

    ``clip.encode_from_tokens`` encodes one prompt per call (50 ms here); the
    encoder is causal, so a batch right-padded with the (masked) pad token gives
    each caption's own features bit for bit. :meth:`check` asserts that against
    ComfyUI's one-prompt path.
    """

    def __init__(self, clip):
        self.clip = clip
        self._lengths: dict[str, int] = {}

    def tokens(self, caption: str) -> list[int]:
        return [int(t) for t, _ in self.clip.tokenize(caption)["qwen3_4b"][0]]

    def length(self, caption: str) -> int:
        if caption not in self._lengths:
            self._lengths[caption] = len(self.tokens(caption))
        return self._lengths[caption]

    def encode(self, captions: list[str]):
        """``(B, T, 32)`` float32 for captions of one token length T (ValueError otherwise)."""
        import torch

        tokens = [self.tokens(c) for c in captions]
        if len({len(t) for t in tokens}) != 1:
            raise ValueError(f"captions of {sorted({len(t) for t in tokens})} tokens: encode one length at a time")
        import comfy.model_management

        comfy.model_management.load_model_gpu(self.clip.patcher)
        with torch.no_grad():
            return self.clip.cond_stage_model.qwen3_4b(tokens)[0].float().cpu()

    def encode_any(self, captions: list[str]):
        """List of ``(T_i, 32)`` for captions of any lengths (right-padded batch, sliced)."""
        import torch

        tokens = [self.tokens(c) for c in captions]
        width = max(len(t) for t in tokens)
        import comfy.model_management

        comfy.model_management.load_model_gpu(self.clip.patcher)
        with torch.no_grad():
            out = self.clip.cond_stage_model.qwen3_4b([t + [PAD_TOKEN] * (width - len(t)) for t in tokens])[0].float().cpu()
        return [out[i, :len(t)] for i, t in enumerate(tokens)]

    def check(self, captions: list[str]) -> None:
        """Assert the batched features equal ComfyUI's one-prompt ``encode_from_tokens`` (what CLIPTextEncode gives)."""
        for caption, mine in zip(captions, self.encode_any(captions), strict=True):
            ref = self.clip.encode_from_tokens(self.clip.tokenize(caption), return_dict=True)["cond"][0].float()
            if ref.shape != mine.shape or not bool((ref - mine).abs().max() <= 1e-5):
                raise AssertionError(f"batched caption features differ from ComfyUI's encode path for {caption!r}")


def model_class():
    import flowlora_tiny

    return flowlora_tiny.tiny_pixel_zimage_class()


def build_model(state: dict | None = None, seed: int = 0):
    """``model_base.Lumina2`` (ComfyUI's Z-Image) of :data:`UNET_CONFIG`, fp32 CPU: ``state`` loaded, else seeded init."""
    import torch

    model = model_class()(dict(UNET_CONFIG)).get_model({})
    model.diffusion_model.to(torch.float32)
    if state is not None:
        missing, unexpected = model.diffusion_model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not fit the tiny Z-Image: missing {missing[:5]}, unexpected {unexpected[:5]}")
    else:
        init_weights_(model.diffusion_model, seed)
    return model


def init_weights_(module, seed: int) -> None:
    """Seeded init (ComfyUI's layers skip it): matrices U(+-1/sqrt(fan_in)), biases 0, norms 1, pad tokens 0.02 N,
    adaLN modulations and the final projection 0 (adaLN-Zero, Peebles & Xie 2023: every block starts as the identity)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "adaLN_modulation" in name or name.startswith("final_layer.linear"):
                p.zero_()
            elif p.ndim >= 2:
                bound = 1.0 / math.sqrt(p[0].numel())
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif "norm" in name:
                p.fill_(1.0)
            elif "pad_token" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                p.zero_()


def denoise(model, x, sigma, context):
    """ComfyUI's denoised x0 ``(B, 3, 64, 64)`` for ``x`` at ``sigma`` ``(B,)``, context ``(B, T, 32)``: ``BaseModel.apply_model``."""
    return model.apply_model(x, sigma, c_crossattn=context, num_tokens=context.shape[1])


def velocity(model, x, sigma, context):
    """Velocity ``eps - x0`` the model predicts, read from ComfyUI's denoised output: ``(x - x0_pred) / sigma``."""
    x0 = denoise(model, x, sigma, context)
    return (x - x0) / sigma.view(-1, 1, 1, 1)


# ---------------------------------------------------------------- data

def to_pixels(images: np.ndarray):
    """uint8 ``(B, 64, 64, 3)`` -> float32 ``(B, 3, 64, 64)`` in [-1, 1] (ComfyUI's pixel_space VAE encode)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@dataclass
class SceneStream:
    """Training scenes in batches of one caption token length; state is plain ints (resumable).

    Scene ``i`` is ``tinyworld.scene(i, "train")``; it is dropped to the empty
    prompt when ``default_rng([seed, 1, i]).random() < p_drop``. Scenes go to
    the queue of their caption's token length in index order; the first queue
    to reach ``batch`` is emitted.
    """

    batch: int
    seed: int
    p_drop: float = 0.1
    next_index: int = 0
    queues: dict[str, list[int]] = field(default_factory=dict)
    """token length (as str, for JSON) -> pending codes ``2 * index + dropped``."""

    def next(self, encoder: CaptionEncoder) -> tuple[np.ndarray, list[str], list[int]]:
        """``(images uint8 (B, 64, 64, 3), captions, codes)``."""
        while True:
            i = self.next_index
            self.next_index += 1
            dropped = np.random.default_rng([self.seed, 1, i]).random() < self.p_drop
            text = "" if dropped else tw.caption(tw.scene(i, "train"))
            queue = self.queues.setdefault(str(encoder.length(text)), [])
            queue.append(2 * i + int(dropped))
            if len(queue) >= self.batch:
                codes = list(queue)
                queue.clear()
                scenes = [tw.scene(c // 2, "train") for c in codes]
                images = np.stack([tw.render(s) for s in scenes])
                return images, ["" if c % 2 else tw.caption(s) for c, s in zip(codes, scenes, strict=True)], codes

    def state(self) -> dict:
        return {"next_index": self.next_index, "queues": {k: list(v) for k, v in self.queues.items() if v}}

    def load(self, state: dict) -> None:
        self.next_index = int(state["next_index"])
        self.queues = {k: [int(c) for c in v] for k, v in state["queues"].items()}


def _logit_normal(batch: int, gen, mean: float, std: float):
    import torch

    return torch.sigmoid(mean + std * torch.randn(batch, generator=gen))


def _uniform(batch: int, gen, mean: float, std: float):
    import torch

    return torch.rand(batch, generator=gen)


SIGMA_LAWS = {"logit_normal": _logit_normal, "uniform": _uniform}
"""Pretraining sigma law before the shift: name -> ``(batch, generator, mean, std) -> u (B,)`` in (0, 1)."""


def sample_sigma(batch: int, gen, shift: float = SHIFT, mean: float = 0.0, std: float = 1.0, law: str = "logit_normal"):
    """``(B,)`` sigma = shift(u) clamped to [1e-3, 1], u from :data:`SIGMA_LAWS`; shift s: s u / (1 + (s - 1) u)."""
    if law not in SIGMA_LAWS:
        raise ValueError(f"sigma law {law!r}: not one of {', '.join(SIGMA_LAWS)}")
    s = SIGMA_LAWS[law](batch, gen, mean, std)
    s = shift * s / (1 + (shift - 1) * s)
    return s.clamp(1e-3, 1.0)


def step_generator(seed: int, step: int, stream: int = 0):
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + stream * 7919 + step) % (2**63))


# ---------------------------------------------------------------- training state, loop, export

def training_flag(on: bool) -> bool | None:
    """Set ComfyUI's ``model_management.in_training`` where it exists (fused kernels without backward otherwise); returns the old value."""
    import comfy.model_management

    if not hasattr(comfy.model_management, "in_training"):
        return None
    previous = comfy.model_management.in_training
    comfy.model_management.in_training = on
    return previous


@dataclass
class Run:
    """A resumable run: trainable model, EMA copy, AdamW, data stream and counters."""

    folder: Path
    model: object
    ema: dict
    optimizer: object
    stream: SceneStream
    step: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    STATE = "state.safetensors"
    LOG = "log.jsonl"

    def save(self) -> Path:
        import torch

        from trainer_core.files import save_safetensors

        tensors = {f"model.{k}": v for k, v in self.model.diffusion_model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        opt = self.optimizer.state_dict()
        index = {}
        for pid, st in opt["state"].items():
            for key, value in st.items():
                tensors[f"opt.{pid}.{key}"] = value if hasattr(value, "shape") else torch.tensor(float(value))
                index.setdefault(str(pid), []).append(key)
        meta = {"step": self.step, "seconds": self.seconds, "stream": self.stream.state(), "opt_groups": opt["param_groups"], "opt_keys": index, **self.meta}
        path = self.folder / self.STATE
        save_safetensors(path, tensors, {"flowlora_tinyworld": json.dumps(meta)})
        return path

    def load(self) -> bool:
        """Resume from ``folder/state.safetensors`` when present; True when resumed."""
        from safetensors import safe_open

        path = self.folder / self.STATE
        if not path.is_file():
            return False
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["flowlora_tinyworld"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        self.model.diffusion_model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        state = {int(pid): {key: (tensors[f"opt.{pid}.{key}"] if key != "step" else tensors[f"opt.{pid}.{key}"].clone()) for key in keys} for pid, keys in meta["opt_keys"].items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["opt_groups"]})
        self.stream.load(meta["stream"])
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        self.meta = {k: v for k, v in meta.items() if k not in ("step", "seconds", "stream", "opt_groups", "opt_keys")}
        return True


def ema_decay(step: int, target: float) -> float:
    """Warm-up EMA: min(target, (1 + step) / (10 + step))."""
    return min(target, (1 + step) / (10 + step))


def train(run: Run, loss_fn: Callable, args, on_save: Callable | None = None) -> None:
    """Optimizer steps until ``args.minutes`` of wall time (this call) or ``args.max_steps`` (in total).

    ``loss_fn(run, step) -> (loss tensor, record dict)``; AdamW with linear
    warm-up, gradient clipping at 1, EMA of the weights after every step, a
    JSON line per step, a resumable state every ``args.save_minutes``.
    """
    import torch

    params = [p for p in run.model.diffusion_model.parameters() if p.requires_grad]
    started = time.monotonic()
    last_save = started
    previous_flag = training_flag(True)
    run.folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(run.folder / Run.LOG, "a", encoding="utf-8") as logf:
            last = min(args.max_steps, getattr(args, "stop_at", None) or args.max_steps)
            while run.step < last and time.monotonic() - started < 60 * args.minutes:
                t0 = time.monotonic()
                start = int(run.meta.get("init", {}).get("step", 0))
                lr = lr_at(run.step, args.lr, args.warmup, start, args.max_steps if args.decay_to < 1 else 0, args.decay_to)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                run.optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                    loss, record = loss_fn(run, run.step)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                run.optimizer.step()
                decay = ema_decay(run.step, args.ema)
                with torch.no_grad():
                    for name, p in run.model.diffusion_model.named_parameters():
                        run.ema[name].mul_(decay).add_(p.detach(), alpha=1 - decay)
                run.step += 1
                dt = time.monotonic() - t0
                run.seconds += dt
                record = {"step": run.step, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm), "seconds": round(run.seconds, 2), "step_s": round(dt, 3), **record}
                logf.write(json.dumps(record) + "\n")
                logf.flush()
                if run.step % 25 == 0:
                    log.info("step %d loss %.4f (%.2f s/step, %.1f min in total)", run.step, record["loss"], dt, run.seconds / 60)
                if time.monotonic() - last_save > 60 * args.save_minutes:
                    run.save()
                    last_save = time.monotonic()
                    if on_save is not None:
                        on_save(run)
    finally:
        if previous_flag is not None:
            training_flag(previous_flag)
    run.save()


def new_run(folder: Path, args, state: dict | None = None) -> Run:
    """Model (``state`` or seeded init), EMA (= model), AdamW, data stream; resumed from ``folder`` when it holds a state."""
    import torch

    model = build_model(state, seed=args.seed)
    model.train()
    model.diffusion_model.requires_grad_(True)  # ComfyUI 0.33 builds its layers with requires_grad=False
    params = list(model.diffusion_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay, eps=1e-8)
    ema = {k: v.detach().clone() for k, v in model.diffusion_model.named_parameters()}
    run = Run(folder, model, ema, optimizer, SceneStream(args.batch, args.seed, args.p_drop))
    if state is not None and getattr(args, "init", None):
        # continue the exported run's counters; its scenes were indices below about 1.1 x step x batch
        from safetensors import safe_open

        with safe_open(str(args.init), "pt") as f:
            done = json.loads((f.metadata() or {}).get("flowlora_tinyworld", "{}"))
        run.step, run.seconds = int(done.get("step", 0)), float(done.get("train_seconds", 0.0))
        run.stream.next_index = args.start_index if args.start_index is not None else 2 * run.step * int(done.get("batch", args.batch))
        run.meta = {"init": {"weights": str(args.init), "step": run.step, "first_scene": run.stream.next_index, "note": "optimizer state and EMA restarted here"}}
        log.info("continuing %s from step %d, scenes from index %d", args.init, run.step, run.stream.next_index)
    if run.load():
        log.info("resumed %s at step %d (%.1f min trained)", folder, run.step, run.seconds / 60)
    return run


def export(run: Run, path: Path, extra: dict) -> Path:
    """EMA weights as fp16 ``diffusion_model`` keys (what UNETLoader reads), run facts in the metadata."""
    import torch

    from trainer_core.files import save_safetensors

    weights = dict(run.model.diffusion_model.state_dict())
    weights.update(run.ema)
    meta = {"step": run.step, "train_seconds": round(run.seconds, 1), "config": UNET_CONFIG, **extra}
    save_safetensors(path, {k: v.to(torch.float16) for k, v in weights.items()}, {"flowlora_tinyworld": json.dumps(meta)})
    return path


def ema_model(run: Run):
    """A fresh fp32 model holding the run's EMA weights (for evaluation)."""
    weights = dict(run.model.diffusion_model.state_dict())
    weights.update(run.ema)
    model = build_model(weights)
    model.eval()
    return model


def plot_loss(log_path: Path, png: Path, title: str, key: str = "loss", window: int = 0) -> Path:
    """Loss per step (grey) and its trailing mean over ``window`` steps (blue; 0: a twentieth of the run), log scale, as a PNG (PIL only)."""
    from PIL import Image, ImageDraw

    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = np.array([r["step"] for r in records], float)
    values = np.log10(np.maximum([r[key] for r in records], 1e-6))
    window = window or max(5, len(values) // 20)
    smooth = np.array([values[max(0, i - window + 1):i + 1].mean() for i in range(len(values))])
    w, h, left, bottom, top, right = 640, 360, 60, 40, 30, 20
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = float(np.floor(values.min() * 2) / 2), float(np.ceil(values.max() * 2) / 2)
    hi = hi if hi > lo else lo + 0.5
    x_of = lambda s: left + (s - steps.min()) / max(1.0, steps.max() - steps.min()) * (w - left - right)  # noqa: E731
    y_of = lambda v: top + (hi - v) / (hi - lo) * (h - top - bottom)  # noqa: E731
    for tick in np.arange(lo, hi + 1e-9, 0.5):
        draw.line([(left, y_of(tick)), (w - right, y_of(tick))], fill=(230, 230, 230))
        draw.text((5, y_of(tick) - 6), f"{10 ** tick:.3g}", fill="black")
    for frac in np.linspace(0, 1, 5):
        s = steps.min() + frac * (steps.max() - steps.min())
        draw.text((x_of(s) - 10, h - bottom + 8), f"{int(s)}", fill="black")
    draw.line([(x_of(s), y_of(v)) for s, v in zip(steps, values, strict=True)], fill=(190, 190, 190))
    draw.line([(x_of(s), y_of(v)) for s, v in zip(steps, smooth, strict=True)], fill=(30, 90, 200), width=2)
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    draw.text((left, 8), f"{title}: {key} per step (grey), mean of {window} (blue); log scale", fill="black")
    draw.text((w // 2 - 20, h - 18), "step", fill="black")
    png.parent.mkdir(parents=True, exist_ok=True)
    img.save(png)
    return png


# ---------------------------------------------------------------- the pretraining objective

def flow_loss(run: Run, step: int, encoder: CaptionEncoder, args) -> tuple:
    """v-MSE of one batch (captions of one length): x_sigma = (1 - sigma) x0 + sigma eps, v* = eps - x0."""
    import torch

    images, captions, _ = run.stream.next(encoder)
    x0 = to_pixels(images)
    context = encoder.encode(captions)
    gen = step_generator(args.seed, step)
    eps = torch.randn(x0.shape, generator=gen)
    sigma = sample_sigma(x0.shape[0], gen, args.train_shift, args.sigma_mean, args.sigma_std, args.sigma_law)
    s = sigma.view(-1, 1, 1, 1)
    x = (1 - s) * x0 + s * eps
    v = velocity(run.model, x, sigma, context)
    loss = (v.float() - (eps - x0)).square().mean()
    return loss, {"tokens": int(context.shape[1]), "sigma_mean": round(float(sigma.mean()), 4)}


def objective(args) -> str:
    """The pretraining objective in words, from the arguments (the model card's line)."""
    law = "uniform(0, 1)" if args.sigma_law == "uniform" else f"logit-normal({args.sigma_mean:g}, {args.sigma_std:g})"
    law = law if args.train_shift == 1.0 else f"shift{args.train_shift:g}({law})"
    return f"flow matching, v-MSE, sigma = {law}, {100 * args.p_drop:g}% empty prompt"


def arguments(argv=None, description: str = __doc__.split("\n\n")[0]):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run", type=Path, default=CACHE / "zimage_base", help="run folder: resumable state.safetensors and log.jsonl (continued when present)")
    parser.add_argument("--out", type=Path, default=MODELS / "zimage_base.safetensors", help="exported EMA weights (fp16); its loss curve is written beside it")
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-time budget of this call")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="stop at this total step count")
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--decay-to", type=float, default=1.0, help="learning rate falls linearly to this share of --lr at --max-steps (1: constant)")
    parser.add_argument("--stop-at", type=int, help="stop at this total step (before --max-steps, which still sets the lr decay): reproduces a run that its time budget stopped")
    parser.add_argument("--p-drop", type=float, default=0.1, help="share of captions dropped to the empty prompt (classifier-free guidance)")
    parser.add_argument("--train-shift", "--shift", dest="train_shift", type=float, default=TRAIN_SHIFT,
                        help="shift of the pretraining sigma law, sigma = shift(u) with u from --sigma-law; sampling keeps the model's shift 3")
    parser.add_argument("--sigma-law", choices=sorted(SIGMA_LAWS), default="logit_normal", help="pretraining sigma law before the shift: logit-normal(--sigma-mean, --sigma-std) or uniform on [0, 1]")
    parser.add_argument("--sigma-mean", type=float, default=0.0)
    parser.add_argument("--sigma-std", type=float, default=1.0)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (slower than fp32 on most CPUs; measure)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--init", type=Path, help="start a new run (no state in --run yet) from these exported weights, with a fresh optimizer and data stream position --start-index; ignored when the run folder holds a state")
    parser.add_argument("--start-index", type=int, default=None, help="with --init: first training scene index (default 2 x step x batch of the weights' metadata: past every scene they have seen)")
    return parser


def init_state(args) -> dict | None:
    """Weights of ``--init`` when the run folder holds no state yet (a continued run whose optimizer state was not kept), else None."""
    if not getattr(args, "init", None) or (args.run / Run.STATE).is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(args.init))


def setup(args) -> CaptionEncoder:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    hardware.warn_if_bf16_emulated(args.bf16, log)
    import_comfy()
    encoder = CaptionEncoder(load_text_encoder())
    encoder.check(["", tw.caption(tw.scene(0)), tw.caption(tw.scene(1))])
    return encoder


def main(argv=None) -> None:
    args = arguments().parse_args(argv)
    encoder = setup(args)
    run = new_run(args.run, args, init_state(args))
    run.meta = {"kind": "base", "args": {k: str(v) for k, v in vars(args).items()}, **run.meta}
    train(run, lambda r, step: flow_loss(r, step, encoder, args), args)
    log.info("stopped at step %d (%.1f min trained)", run.step, run.seconds / 60)
    if not args.no_export:
        export(run, args.out, {"kind": "base", "seed": args.seed, "batch": args.batch, "objective": objective(args),
                               **({"continued": {**run.meta["init"], "lr": args.lr, "decay_to": args.decay_to, "decay_end": args.max_steps}} if "init" in run.meta else {})})
        plot_loss(args.run / Run.LOG, args.out.with_name(args.out.stem + "_loss.png"), "tiny Z-Image base")
        log.info("exported %s (%.1f MB)", args.out, os.path.getsize(args.out) / 1e6)


if __name__ == "__main__":
    main()
