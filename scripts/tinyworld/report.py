"""Measure the tiny world's figures: render speed, content accuracy on ground truth, style-score separation.

Run from the repo root (about 20 s on one core)::

    .venv/bin/python scripts/tinyworld/report.py [--heldout 500]

Style references: the plain look is ``scene(i, "train")`` for i < 48 rendered
plain; each style is its committed set ``style_sets/<style>/train``. Scores
are measured on held-out scenes (never in either reference).
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1]
REPO = SCRIPTS.parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
if "flowlora" not in sys.modules:  # the pack's trainer_core without running the pack's ComfyUI entry point
    package = types.ModuleType("flowlora")
    package.__path__ = [str(REPO)]
    sys.modules["flowlora"] = package

import numpy as np  # noqa: E402
from flowlora.trainer_core.style import StyleReference, style_score  # noqa: E402

import tinyworld as tw  # noqa: E402
from tinyworld import content  # noqa: E402


def render_speed(style: str, count: int = 1000) -> float:
    """Images per second of ``scene(i)`` + ``render`` on one core."""
    start = time.perf_counter()
    for i in range(count):
        tw.render(tw.scene(i), style)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heldout", type=int, default=500, help="held-out scenes per measurement")
    args = parser.parse_args(argv)
    scenes = [tw.scene(i, "heldout") for i in range(args.heldout)]
    plain_ref = StyleReference.from_images(tw.to_comfy(tw.batch(range(48), "train", "plain")[0]))
    plain_held = tw.to_comfy(np.stack([tw.render(s, "plain") for s in scenes]))
    for style in tw.STYLES:
        images = np.stack([tw.render(s, style) for s in scenes])
        scores = content.score_images(images, scenes)
        per = ", ".join(f"{k} {100 * v:.2f}%" for k, v in content.attribute_accuracy(scores).items())
        print(f"{style:7s} render {render_speed(style):6.0f} img/s | content accuracy {100 * content.accuracy(scores):.2f}% on {len(scenes)} held-out scenes ({per})")
        if style in tw.TRIGGERS:
            ref = StyleReference.from_folder(SCRIPTS / "tinyworld" / "style_sets" / style / "train")
            styled, unstyled = style_score(tw.to_comfy(images), plain_ref, ref), style_score(plain_held, plain_ref, ref)
            print(
                f"        style score: {style} min {float(styled.min()):.3f} mean {float(styled.mean()):.3f} | plain max {float(unstyled.max()):.3f} "
                f"mean {float(unstyled.mean()):.3f} | margin {float(styled.min() - unstyled.max()):.3f}; "
                f"distance to set: {style} max {float(ref.distance(tw.to_comfy(images)).max()):.3f}, plain min {float(ref.distance(plain_held).min()):.3f}"
            )


if __name__ == "__main__":
    main()
