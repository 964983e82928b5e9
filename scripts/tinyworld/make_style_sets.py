"""Write the tiny world's style sets: captioned training images and held-out prompts.

For each style ("ink", "mosaic") this writes, under ``--out`` (default: the
``style_sets`` folder beside this file)::

    <style>/train/0000.png  0000.txt   "a large red star at the top left on a ..."
    ...                                 (scene(i, "train") for i < --count, the Dataset node's format)
    <style>/heldout_prompts.json        ["a small ...", ...]: caption(scene(i, "heldout"))
                                        for i < --heldout; these scenes never occur in a training split
    <style>/style.json                  {"style": "ink", "trigger": "inkstyle", ...}

Captions are the bare grammar; each set's trigger word is in ``style.json``
and goes into the prompts through the Dataset node's ``trigger`` input (the
kohya convention), so one folder trains with or without it. The tiny-world
demo and ablation train without: the frozen text encoder is random and the
tiny base never read the word, and a leading trigger costs it two thirds of
its content accuracy before any training (62% -> 22% on 64 held-out prompts;
as a suffix, 45-49%), which a 48-image LoRA does not win back.

Deterministic: the same command writes the same pixels and text. Run from the repo root::

    .venv/bin/python scripts/tinyworld/make_style_sets.py [--out DIR] [--count 48] [--heldout 50]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

if __package__ in (None, ""):  # run as a file: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tinyworld.render import render
    from tinyworld.styles import TRIGGERS
    from tinyworld.world import caption, scene
else:
    from .render import render
    from .styles import TRIGGERS
    from .world import caption, scene

DEFAULT_OUT = Path(__file__).resolve().parent / "style_sets"
DEFAULT_COUNT = 48
DEFAULT_HELDOUT = 50


def heldout_prompts(style: str, count: int = DEFAULT_HELDOUT) -> list[str]:
    """Prompt ``i`` is ``caption(scene(i, "heldout"))`` (the same scenes for every style)."""
    return [caption(scene(i, "heldout")) for i in range(count)]


def write_style_set(folder: Path, style: str, count: int = DEFAULT_COUNT, heldout: int = DEFAULT_HELDOUT) -> list[Path]:
    """Write one style's ``train/`` images + captions, ``heldout_prompts.json`` and ``style.json``; returns the image paths."""
    train = folder / "train"
    train.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        s = scene(i, "train")
        path = train / f"{i:04d}.png"
        Image.fromarray(render(s, style)).save(path)
        path.with_suffix(".txt").write_text(caption(s) + "\n", encoding="utf-8")
        paths.append(path)
    (folder / "heldout_prompts.json").write_text(json.dumps(heldout_prompts(style, heldout), indent=1) + "\n", encoding="utf-8")
    card = {"style": style, "trigger": TRIGGERS[style], "images": count, "heldout_prompts": heldout,
            "usage": "captions are bare; set the Dataset node's trigger input to this word to train with it"}
    (folder / "style.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder that gets one subfolder per style")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="training images per style")
    parser.add_argument("--heldout", type=int, default=DEFAULT_HELDOUT, help="held-out prompts per style")
    args = parser.parse_args(argv)
    for style in TRIGGERS:
        paths = write_style_set(args.out / style, style, args.count, args.heldout)
        print(f"{style}: {len(paths)} images in {paths[0].parent}, {args.heldout} held-out prompts")


if __name__ == "__main__":
    main()
