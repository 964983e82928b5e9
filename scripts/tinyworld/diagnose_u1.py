"""Where a tiny-world U1 loses detail: its x0 error against t, and sampling from lightly noised renders.

    .venv/bin/python scripts/tinyworld/diagnose_u1.py scripts/tinyworld/models/u1

Two measurements on held-out scenes (``world.scene(i, "heldout")``), own
fp32 loop (the pretraining script's, U1's Euler rule with the clamped velocity):

- **x0 floor**: x0-MSE of one prediction from ``z_t = t x0 + (1 - t) s_eff eps``
  at several t (1 = clean), beside the MSE of returning ``z_t`` itself. At t
  near 1 the input is almost the answer; a model whose error stays flat there
  cannot copy what it sees (it redraws from the caption instead).
- **one-step shapes**: the same predictions scored as images (shape accuracy
  of ``x0_hat`` per t). A model that refines what it sees draws the render's
  shape back as t nears 1; one that redraws the caption's template scores about
  the same at every t.
- **from t0**: content accuracy of images integrated to t = 1 from the noised
  render at t0, with CFG, on the part of the 50-step grid (shift 3) above t0;
  t0 = 0 is ordinary sampling. Shapes lost even from t0 = 0.85, where the
  render is plainly visible, are lost by the last denoising steps.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import pretrain_u1  # noqa: E402  (also registers the pack as ``flowlora``)
from flowlora.trainer_core.models.u1 import prompts  # noqa: E402
from flowlora.trainer_core.models.u1.checkpoint import load_towers  # noqa: E402
from flowlora.trainer_core.models.u1.sampling import official_timesteps  # noqa: E402

from tinyworld.content import accuracy, attribute_accuracy, score_images  # noqa: E402
from tinyworld.render import render  # noqa: E402
from tinyworld.world import caption, scene  # noqa: E402


def _round(d: dict) -> dict:
    return {k: round(v, 4) for k, v in d.items()}


def edge_mask(x0: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels whose 3 x 3 neighbourhood holds both background and object.

    The background is the top-left pixel's colour (a plain render's background is flat).
    """
    obj = ((x0 - x0[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.05).float()
    return (F.max_pool2d(obj, 3, 1, 1) > 0)[:, 0] & (F.max_pool2d(1 - obj, 3, 1, 1) > 0)[:, 0]


@torch.no_grad()
def x0_floor(gen, kvs, x0: torch.Tensor, eps: torch.Tensor, ts: list[float], scenes: list | None = None) -> list[dict]:
    """Per t: x0-MSE of the model's prediction (``model``) and of ``z_t`` itself (``input``),
    and the share of the model's squared error on :func:`edge_mask` pixels (``edge_share``; ``edge_pixels`` their share);
    with ``scenes`` (one per image) also the shape accuracy of the predictions read as images (``x0_hat_shape``)."""
    s = gen.cfg.noise_scale_for_image(*x0.shape[-2:])
    edges = edge_mask(x0)
    rows = []
    for t in ts:
        z = t * x0 + (1 - t) * s * eps
        pred = torch.cat([gen(z[i : i + 1], torch.tensor([t]), kvs[i]).float() for i in range(len(kvs))])
        err = (pred - x0).pow(2).mean(1)
        rows.append({"t": t, "model": float(err.mean()), "input": float((z - x0).pow(2).mean()),
                     "edge_share": float(err[edges].sum() / err.sum()), "edge_pixels": float(edges.float().mean())})
        if scenes is not None:
            rows[-1]["x0_hat_shape"] = attribute_accuracy(score_images(pretrain_u1.to_uint8(pred).numpy(), scenes))["shape"]
    return rows


@torch.no_grad()
def from_t0(gen, kvs, kv_uncond, x0: torch.Tensor, eps: torch.Tensor, t0: float, cfg: float, steps: int = 50, shift: float = 3.0) -> np.ndarray:
    """uint8 ``(B, 64, 64, 3)``: :func:`pretrain_u1.euler_cfg` from the render noised to ``t0`` up to t = 1."""
    s = gen.cfg.noise_scale_for_image(*x0.shape[-2:])
    grid = [t0, *[float(t) for t in official_timesteps(steps, shift) if float(t) > t0 + 1e-6]]
    z = t0 * x0 + (1 - t0) * s * eps
    out = torch.cat([pretrain_u1.euler_cfg(gen, z[i : i + 1], grid, kv, kv_uncond, cfg) for i, kv in enumerate(kvs)])
    return pretrain_u1.to_uint8(out).numpy()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="checkpoint folder (config.json, index, shards, tokenizer)")
    ap.add_argument("--prompts", type=int, default=24, help="held-out scenes for the x0 floor")
    ap.add_argument("--sample-prompts", type=int, default=40, help="held-out scenes for the from-t0 accuracies")
    ap.add_argument("--t", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.85, 0.95, 0.99])
    ap.add_argument("--t0", type=float, nargs="+", default=[0.0, 0.5, 0.85])
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    _, prefix, gen = load_towers(args.model, dtype=torch.float32)
    prefix.eval(), gen.eval()
    tok = prompts.load_tokenizer(args.model)
    n = max(args.prompts, args.sample_prompts)
    scenes = [scene(i, "heldout") for i in range(n)]
    x0 = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kvs = [prefix.encode(torch.tensor([prompts.tokenize(tok, prompts.conditional_prefix(caption(s)))])) for s in scenes]
        kv_uncond = prefix.encode(torch.tensor([prompts.tokenize(tok, prompts.UNCONDITIONAL_PREFIX)]))
    k = args.prompts
    for row in x0_floor(gen, kvs[:k], x0[:k], eps[:k], args.t, scenes[:k]):
        print(json.dumps({"x0_floor": _round(row), "prompts": k}))
    k = args.sample_prompts
    for t0 in args.t0:
        images = from_t0(gen, kvs[:k], kv_uncond, x0[:k], eps[:k], t0, args.cfg)
        scores = score_images(images, scenes[:k])
        print(json.dumps({"t0": t0, "accuracy": round(accuracy(scores), 4), "per_attribute": _round(attribute_accuracy(scores)), "prompts": k, "cfg": args.cfg}))


if __name__ == "__main__":
    main()
