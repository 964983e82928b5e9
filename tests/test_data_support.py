"""Generators of real image files for the dataset tests (and the benchmark).

Every file is written by Pillow (or, for the decompression bomb, a real PNG
whose header is patched and re-checksummed); nothing is mocked.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def noise(width: int, height: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """``(height, width, channels)`` uint8 noise from a seeded generator."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def save_rgb(path: Path, width: int, height: int, seed: int = 0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(width, height, seed)).save(path, **kw)
    return path


def save_halves(path: Path, width: int, height: int, left=(255, 0, 0), right=(0, 0, 255), **kw) -> Path:
    """An image whose left half is ``left`` and right half ``right`` (to see rotations)."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    a[:, : width // 2] = left
    a[:, width // 2 :] = right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, **kw)
    return path


def save_exif_rotated(path: Path, width: int, height: int, orientation: int) -> Path:
    """A JPEG stored ``width x height`` (left red, right blue) tagged with ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save_halves(path, width, height, exif=exif.tobytes(), quality=95)


def save_bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose IHDR claims ``width x height`` (CRC fixed): a decompression bomb header."""
    Image.new("L", (8, 8), 0).save(path)
    data = bytearray(path.read_bytes())
    # signature (8) | length (4) | b"IHDR" (4) | width (4) | height (4) | ... | crc
    data[16:24] = struct.pack(">II", width, height)
    ihdr = bytes(data[12:29])
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def counting_encoders(latent_channels: int = 4, factor: int = 8):
    """Real, deterministic pure-torch encoders that count their calls.

    Image: average-pool by ``factor`` and mix to ``latent_channels`` with fixed
    weights, ``(1, H, W, 3) -> (1, C, H/f, W/f)``. Text: a ComfyUI-shaped
    CONDITIONING ``[[cond (1, T, 8), {"pooled_output": (1, 8), "attention_mask": (1, T)}]]``
    derived from the prompt's bytes.
    """
    from flowlora.trainer_core.data.prepare import Encoders

    calls = {"image": 0, "text": 0}
    mix = torch.linspace(-1.0, 1.0, latent_channels * 3).reshape(latent_channels, 3)

    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        calls["image"] += 1
        assert pixels.ndim == 4 and pixels.shape[-1] == 3 and pixels.dtype == torch.float32
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), factor)
        return torch.einsum("cr,brhw->bchw", mix, x)

    def encode_text(prompt: str):
        calls["text"] += 1
        codes = torch.tensor(list(prompt.encode()) or [0], dtype=torch.float32)
        cond = (codes[:, None] / 255.0 + torch.arange(8.0)[None]).unsqueeze(0)
        return [[cond, {"pooled_output": cond.mean(1), "attention_mask": torch.ones(1, cond.shape[1], dtype=torch.int64)}]]

    return Encoders(encode_image, encode_text, f"test-image-{latent_channels}-{factor}", "test-text-8"), calls
