"""Where a tiny-world Z-Image loses content: sample from held-out renders noised to sigma s0.

    .venv/bin/python scripts/tinyworld/diagnose_denoising.py scripts/tinyworld/models/zimage_base.safetensors

For each start level s0 the clean render x0 of a held-out scene is noised to
x = (1 - s0) x0 + s0 eps and integrated to sigma 0 with guided Euler steps on
the part of ComfyUI's 50-step "simple" grid (shift 3) below s0; the content
accuracy of the result says how much of the scene the model keeps or repairs
from that level down. s0 = 1 is ordinary sampling. A model that loses shapes
even from s0 = 0.2 (the render plainly visible) has not learnt the low-noise
end of the trajectory: the law its pretraining drew sigma from starved it.

Prints one JSON line per s0 (accuracy and per attribute).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import pretrain_zimage as pz  # noqa: E402

tw = pz.tw


def denoise_from(model, x0, eps, s0: float, sigmas, context, empty, cfg: float):
    """Guided Euler from ``(1 - s0) x0 + s0 eps`` over ``s0`` then the grid's sigmas below it: ``(B, 3, 64, 64)`` in [-1, 1]."""
    import torch

    grid = [s0, *[float(s) for s in sigmas if float(s) < s0 - 1e-6]]
    x = (1 - s0) * x0 + s0 * eps
    with torch.no_grad():
        for a, b in itertools.pairwise(grid):
            sigma = torch.full((x.shape[0],), a)
            v_c = pz.velocity(model, x, sigma, context)
            v_u = pz.velocity(model, x, sigma, empty.expand(x.shape[0], -1, -1))
            x = x + (b - a) * (v_u + cfg * (v_c - v_u))
    return x.clamp(-1, 1)


def diagnose(model_path: Path, prompts: int = 96, levels=(1.0, 0.8, 0.6, 0.4, 0.2), steps: int = 50, cfg: float = 3.0, seed: int = 0) -> list[dict]:
    import comfy.samplers
    import evaluate_zimage
    import numpy as np
    import torch

    encoder = pz.CaptionEncoder(pz.load_text_encoder())
    model = evaluate_zimage.load_unet(model_path).model  # the stock UNETLoader's model (any host's key set)
    model.eval()
    sigmas = comfy.samplers.calculate_sigmas(model.model_sampling, "simple", steps).float()
    scenes = [tw.scene(i, "heldout") for i in range(prompts)]
    captions = [tw.caption(s) for s in scenes]
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(captions):
        groups.setdefault(encoder.length(c), []).append(i)
    empty = encoder.encode([""])
    results = []
    for s0 in levels:
        images = [None] * prompts
        for length, members in sorted(groups.items()):
            x0 = pz.to_pixels(np.stack([tw.render(scenes[i]) for i in members]))
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + length))
            x = denoise_from(model, x0, eps, s0, sigmas, encoder.encode([captions[i] for i in members]), empty, cfg)
            for i, image in zip(members, x, strict=True):
                images[i] = ((image + 1) / 2).permute(1, 2, 0)
        scores = tw.score_images(torch.stack(images), scenes)
        results.append({"model": Path(model_path).name, "s0": s0, "prompts": prompts, "cfg": cfg, "accuracy": tw.accuracy(scores),
                        **{f"{k}_accuracy": v for k, v in tw.content.attribute_accuracy(scores).items()}})
        print(json.dumps(results[-1]), flush=True)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a tiny-world Z-Image .safetensors")
    parser.add_argument("--prompts", type=int, default=96, help="the first N held-out prompts")
    parser.add_argument("--levels", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.4, 0.2], help="start noise levels s0")
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args(argv)
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    pz.import_comfy()
    diagnose(args.model, args.prompts, tuple(args.levels), cfg=args.cfg)


if __name__ == "__main__":
    main()
