"""Put the tiny world's committed models and style sets where a ComfyUI base directory looks for them.

    install(base)  # base/models/diffusion_models/tinyworld_zimage_{turbo,base}.safetensors,
                   # base/models/text_encoders/flowlora_demo_qwen3.safetensors,
                   # base/models/sensenova_u1/tinyworld_u1/ (config, shards, tokenizer),
                   # base/input/tinyworld_<style>/ (the style set's captioned training images)

Files are hard-linked where the file system allows (copied otherwise), so a
ComfyUI base directory costs no space; an existing file is kept only when its
bytes are the source's (retrained weights have the same size as the old ones,
so a size check would keep a stale model). The text encoder is written from its seed (``make_demo_model``): its real
Qwen vocabulary makes it 10 MB, too large to commit beside the models.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
STYLE_SETS = HERE / "style_sets"

ZIMAGE_FILES = {"turbo": "tinyworld_zimage_turbo.safetensors", "base": "tinyworld_zimage_base.safetensors"}
"""Names in ``models/diffusion_models`` (the workflows pick these) of ``models/zimage_{turbo,base}.safetensors``."""
TEXT_ENCODER = "flowlora_demo_qwen3.safetensors"
"""The tiny Qwen3 every tiny Z-Image was trained with (seed 1 of ``make_demo_model.text_encoder_state``)."""
U1_FOLDER = "tinyworld_u1"
"""Folder name under ``models/sensenova_u1`` of the tiny U1 checkpoint (``models/u1``)."""
U1_CHECKPOINT = f"sensenova_u1/{U1_FOLDER}"
"""What the SenseNova-U1 Loader lists it as."""
STYLE_FOLDER = "tinyworld_{style}"
"""Folder name under ``input`` of a style set's training images."""


def _place(src: Path, dst: Path) -> Path:
    """``src`` at ``dst`` (hard link, else copy), atomically; an identical ``dst`` is left alone."""
    if dst.is_file() and (os.path.samefile(src, dst) or filecmp.cmp(src, dst, shallow=False)):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return dst


def install(base: Path, styles: tuple[str, ...] = ("ink", "mosaic"), u1: bool = True) -> dict[str, Path]:
    """Models and style sets under ComfyUI base directory ``base``; returns what went where."""
    import make_demo_model

    base = Path(base)
    out: dict[str, Path] = {}
    for kind, name in ZIMAGE_FILES.items():
        out[f"zimage_{kind}"] = _place(MODELS / f"zimage_{kind}.safetensors", base / "models" / "diffusion_models" / name)
    encoder = base / "models" / "text_encoders" / TEXT_ENCODER
    if not encoder.is_file():
        make_demo_model.import_comfy()
        make_demo_model.save(encoder, make_demo_model.text_encoder_state(1))
    out["text_encoder"] = encoder
    if u1:
        folder = base / "models" / "sensenova_u1" / U1_FOLDER
        for src in sorted((MODELS / "u1").iterdir()):
            if src.is_file() and src.suffix in (".json", ".safetensors", ".txt"):
                _place(src, folder / src.name)
        out["u1"] = folder
    for style in styles:
        folder = base / "input" / STYLE_FOLDER.format(style=style)
        for src in sorted((STYLE_SETS / style / "train").iterdir()):
            _place(src, folder / src.name)
        out[f"style_{style}"] = folder
    return out
