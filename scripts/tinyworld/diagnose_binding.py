"""Why a tiny-world Z-Image mixes up two objects' colours: the caption features, then the samples.

    .venv/bin/python scripts/tinyworld/diagnose_binding.py scripts/tinyworld/models/zimage_turbo.safetensors --steps 8 --cfg 1

1. **Caption features.** The frozen tiny Qwen3 is causal and random: each token's feature mixes the tokens before
   it. A linear probe (multinomial logistic regression, fit on two thirds of the two-object training captions,
   scored on the rest) reads each object's colour from the feature of its colour word and from the feature of the
   last word of its position phrase ("... at the top *left*"), the token where colour and position could meet.
   Colour words are read perfectly; a position word carries its own object's colour only if the encoder bound it.
2. **Samples.** Colour (and every attribute) accuracy of held-out prompts sampled by ComfyUI's own code
   (``evaluate_zimage.generate``), for one-object scenes and for the first and second object of two-object scenes.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import evaluate_zimage as ez  # noqa: E402
import pretrain_zimage as pz  # noqa: E402

tw = pz.tw

TEMPLATE_HEAD = 3
"""Tokens of the chat template before the caption (``<|im_start|>user\\n``); each caption word is one token after them."""


def caption_features(clip, scenes: list) -> tuple[list, list]:
    """``(colour word features, position word features)``, each a list per object index (0, 1) of ``(feature (32,), colour)``.

    Only two-object captions whose words are one token each (all of the grammar's words are, in the tiny encoder's
    tokenizer) and whose conditioning has one row per token.
    """
    colour_rows: list[list] = [[], []]
    position_rows: list[list] = [[], []]
    for s in scenes:
        text = tw.caption(s)
        tokens = next(iter(clip.tokenize(text).values()))[0]
        cond = ez.encode(clip, [text])[0][0][0][0]
        if len(s.objects) != 2 or cond.shape[0] != len(tokens) or len(tokens) != TEMPLATE_HEAD + len(text.split()) + 5:
            continue
        start = 0
        for k, o in enumerate(s.objects):
            words = 6 + len(o.position.split())  # "a <size> <colour> <shape> at the <position words>"
            colour_rows[k].append((cond[TEMPLATE_HEAD + start + 2].numpy(), o.colour))
            position_rows[k].append((cond[TEMPLATE_HEAD + start + words - 1].numpy(), o.colour))
            start += words + 1  # and "and"
    return colour_rows, position_rows


def probe_accuracy(rows: list, steps: int = 500, seed: int = 0) -> float:
    """Held-out accuracy of a linear colour probe on ``rows`` (``(feature, colour)``): fit on the first two thirds."""
    import numpy as np
    import torch

    names = list(tw.COLOURS)
    x = torch.tensor(np.stack([r[0] for r in rows]), dtype=torch.float32)
    y = torch.tensor([names.index(r[1]) for r in rows])
    n = len(rows) * 2 // 3
    mean, std = x[:n].mean(0), x[:n].std(0) + 1e-6
    x = torch.cat([(x - mean) / std, torch.ones(len(x), 1)], 1)
    torch.manual_seed(seed)
    weight = torch.zeros(x.shape[1], len(names), requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[:n] @ weight, y[:n]) + 1e-3 * weight.square().sum()
        loss.backward()
        optimizer.step()
    return float(((x[n:] @ weight).argmax(1) == y[n:]).float().mean())


def by_caption_order(scores) -> dict[str, dict[str, float]]:
    """Per attribute accuracy of one-object images and of the 1st and 2nd object of two-object images."""
    groups = {"alone": [img[0] for img in scores if len(img) == 1],
              "first of two": [img[0] for img in scores if len(img) == 2],
              "second of two": [img[1] for img in scores if len(img) == 2]}
    return {name: tw.content.attribute_accuracy([[o] for o in objs]) for name, objs in groups.items() if objs}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a tiny-world Z-Image .safetensors")
    parser.add_argument("--captions", type=int, default=1500, help="training scenes whose two-object captions the probe uses")
    parser.add_argument("--prompts", type=int, default=200, help="held-out prompts sampled")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pz.import_comfy()
    clip = pz.load_text_encoder()
    colour_rows, position_rows = caption_features(clip, [tw.scene(i, "train") for i in range(args.captions)])
    for k in (0, 1):
        print(json.dumps({"probe": f"object {k + 1} of two", "captions": len(colour_rows[k]),
                          "colour_from_colour_word": round(probe_accuracy(colour_rows[k]), 3),
                          "colour_from_position_word": round(probe_accuracy(position_rows[k]), 3)}))
    texts = ez.heldout_prompts(args.prompts)
    images = ez.generate(ez.load_unet(args.model), clip, texts, args.steps, args.cfg, args.seed)
    scores = tw.score_images(images, [tw.parse_caption(t) for t in texts])
    for name, accuracy in by_caption_order(scores).items():
        print(json.dumps({"samples": name, "model": args.model.name, "steps": args.steps, "cfg": args.cfg, **{a: round(v, 3) for a, v in accuracy.items()}}))


if __name__ == "__main__":
    main()
