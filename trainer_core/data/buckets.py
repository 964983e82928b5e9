"""Aspect buckets and the deterministic resize + crop that puts an image in one.

Sizes are ``(width, height)`` in pixels throughout (the U1 spec lists its
buckets as (H, W); :data:`PRESETS` stores them as (W, H)).

Assignment (:func:`plan`), for an image of ``W x H``:

1. the bucket whose aspect is nearest in log space,
   ``argmin |log(W/H) - log(bw/bh)|`` (ties: larger area, then smaller width);
2. scale ``s = max(bw/W, bh/H)`` so the image covers the bucket;
3. if ``s > 1`` and upscaling is not allowed, the image gets its own bucket at
   native scale instead: ``a = min(1, sqrt(bucket area / (W*H)))``,
   ``(step*floor(a*W/step), step*floor(a*H/step))`` (kohya's "no upscale");
4. resize to ``(max(bw, round(W*s)), max(bh, round(H*s)))`` and crop the
   bucket out of it (centred, or at a seeded random offset), or stretch
   straight to the bucket (``crop = "stretch"``, U1's official preprocessing),
   with the Pillow filter that ``resize_filter`` names (:data:`RESIZE_FILTERS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, require
from ..registry import Registry


class Bucket(NamedTuple):
    """A training resolution, ``width x height`` pixels."""

    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Preset:
    """A fixed bucket list and the step its sizes (and derived buckets) must keep."""

    buckets: tuple[Bucket, ...]
    step: int


PRESETS: Registry[Preset] = Registry("bucket preset")
PRESETS.register("sensenova_u1")(
    Preset(
        tuple(Bucket(w, h) for h, w in ((2048, 2048), (1536, 2720), (2720, 1536), (1664, 2496), (2496, 1664), (1760, 2368), (2368, 1760), (1440, 2880), (2880, 1440), (1152, 3456), (3456, 1152))),
        32,
    )
)
"""U1's ``OFFICIAL_BUCKETS_HW`` (spec 4.6 / 5.2), as (W, H); all about 4 MP, multiples of 32."""

CROPS: Registry[Callable] = Registry("crop mode")
"""``(resized_w, resized_h, bucket, generator) -> (left, top)`` of the crop box."""


@CROPS.register("center")
def _center(rw: int, rh: int, bucket: Bucket, generator: torch.Generator) -> tuple[int, int]:
    return (rw - bucket.width) // 2, (rh - bucket.height) // 2


@CROPS.register("random")
def _random(rw: int, rh: int, bucket: Bucket, generator: torch.Generator) -> tuple[int, int]:
    left = int(torch.randint(0, rw - bucket.width + 1, (1,), generator=generator))
    top = int(torch.randint(0, rh - bucket.height + 1, (1,), generator=generator))
    return left, top


@CROPS.register("stretch")
def _stretch(rw: int, rh: int, bucket: Bucket, generator: torch.Generator) -> tuple[int, int]:
    return 0, 0  # the resize already lands on the bucket (see plan)


RESIZE_FILTERS: Registry[Callable[[bool], Image.Resampling]] = Registry("resize filter")
"""``shrinking -> Pillow filter`` for :func:`apply`; ``auto`` is the pack's default."""


@RESIZE_FILTERS.register("auto")
def _auto_filter(shrinking: bool) -> Image.Resampling:
    """Lanczos when shrinking (sharpest downsampling), bicubic when enlarging (no Lanczos ringing)."""
    return Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC


@RESIZE_FILTERS.register("bicubic")
def _bicubic_filter(shrinking: bool) -> Image.Resampling:
    """Bicubic both ways: train_u1 (Yidhar/sensenova-u1-lora-trainer @555d1c0,
    ``train_u1/data/u1_preprocess.py`` L126) calls ``img.resize(size)`` with
    Pillow's default filter, which is bicubic for RGB since Pillow 7."""
    return Image.Resampling.BICUBIC


@RESIZE_FILTERS.register("lanczos")
def _lanczos_filter(shrinking: bool) -> Image.Resampling:
    """Lanczos both ways."""
    return Image.Resampling.LANCZOS


@RESIZE_FILTERS.register("bilinear")
def _bilinear_filter(shrinking: bool) -> Image.Resampling:
    """Bilinear both ways (Pillow's antialiased bilinear when shrinking)."""
    return Image.Resampling.BILINEAR


def auto_buckets(max_pixels: int, step: int, max_aspect: float = 4.0) -> tuple[Bucket, ...]:
    """Buckets of about ``max_pixels`` each, sides multiples of ``step``, sorted by aspect.

    For every width ``w = step*k`` the height is the largest multiple of step
    with ``w*h <= max_pixels``; each pair is also added mirrored, and pairs with
    an aspect beyond ``max_aspect`` (either way) are dropped.
    """
    require(step >= 1, "bucket_step", step, "must be >= 1")
    require(max_pixels >= step * step, "max_pixels", max_pixels, f"must be at least step^2 = {step * step}")
    require(max_aspect >= 1.0, "max_aspect", max_aspect, "must be >= 1")
    found = set()
    width = step
    while width * step <= max_pixels:
        height = (max_pixels // width) // step * step
        if height >= step and max(width / height, height / width) <= max_aspect + 1e-9:
            found.add(Bucket(width, height))
            found.add(Bucket(height, width))
        width += step
    return tuple(sorted(found, key=lambda b: (b.aspect, b.width)))


def parse_buckets(text: str) -> tuple[Bucket, ...]:
    """``"1024x1024, 1216x832"`` (also ``*``, ``×``, newlines, ``;``) -> Buckets, as written (W x H)."""
    buckets = []
    for item in re.split(r"[,;\n]+", text):
        item = item.strip()
        if not item:
            continue
        match = re.fullmatch(r"(\d+)\s*[x*×X]\s*(\d+)", item)
        if match is None:
            raise ConfigError("bucket_list", item, "write each bucket as WIDTHxHEIGHT, e.g. 1024x1024, separated by commas")
        buckets.append(Bucket(int(match.group(1)), int(match.group(2))))
    return tuple(dict.fromkeys(buckets))


BUCKET_MODES = ("auto", "list", *PRESETS.names())


@dataclass(frozen=True)
class BucketConfig:
    """Which buckets exist and how images are fitted into them.

    ``mode``: ``auto`` (equal-area buckets from ``max_pixels``, ``step``,
    ``max_aspect``), ``list`` (``bucket_list`` text) or a :data:`PRESETS` name.
    ``step`` is the side multiple (Z-Image 16, U1 32); ``crop`` a
    :data:`CROPS` name; ``seed`` drives ``random`` crops; ``resize_filter`` a
    :data:`RESIZE_FILTERS` name.
    """

    mode: str = "auto"
    max_pixels: int = 1024 * 1024
    step: int = 16
    max_aspect: float = 4.0
    bucket_list: str = ""
    allow_upscale: bool = False
    crop: str = "center"
    seed: int = 0
    resize_filter: str = "auto"

    def __post_init__(self):
        RESIZE_FILTERS.get(self.resize_filter, "resize_filter")
        require(self.mode in BUCKET_MODES, "bucket_mode", self.mode, f"must be one of {', '.join(BUCKET_MODES)}")
        require(int(self.step) == self.step and self.step >= 1, "bucket_step", self.step, "must be an integer >= 1")
        CROPS.get(self.crop, "crop")
        if self.mode in PRESETS:
            need = PRESETS.get(self.mode).step
            require(self.step % need == 0, "bucket_step", self.step, f"preset {self.mode} needs a multiple of {need}")
        bad = [b.label for b in self.buckets() if b.width % self.step or b.height % self.step or min(b) < 1]
        if bad:
            raise ConfigError("bucket_list", ", ".join(bad), f"every side must be a positive multiple of bucket_step = {self.step}")

    def buckets(self) -> tuple[Bucket, ...]:
        """The bucket table, sorted by aspect (width/height)."""
        if self.mode == "auto":
            return auto_buckets(self.max_pixels, self.step, self.max_aspect)
        if self.mode == "list":
            buckets = parse_buckets(self.bucket_list)
            if not buckets:
                raise ConfigError("bucket_list", self.bucket_list, "is empty; list buckets as WIDTHxHEIGHT, e.g. 1024x1024, 1216x832")
            return tuple(sorted(buckets, key=lambda b: (b.aspect, b.width)))
        return tuple(sorted(PRESETS.get(self.mode).buckets, key=lambda b: (b.aspect, b.width)))


class Plan(NamedTuple):
    """How one image becomes one bucket: resize to ``resize`` (w, h), crop ``bucket`` at ``(left, top)``."""

    bucket: Bucket
    resize: tuple[int, int]
    left: int
    top: int


def nearest(width: int, height: int, buckets: tuple[Bucket, ...]) -> Bucket:
    """The bucket nearest in log aspect; ties go to the larger area, then the smaller width."""
    target = math.log(width / height)
    return min(buckets, key=lambda b: (round(abs(math.log(b.aspect) - target), 12), -b.area, b.width))


def plan(width: int, height: int, config: BucketConfig, buckets: tuple[Bucket, ...], crop_seed: int = 0) -> Plan:
    """The deterministic resize + crop of a ``width x height`` image (module docstring).

    ``crop_seed`` seeds the ``random`` crop (callers derive it from the config
    seed and the image's content, so each image keeps its crop across runs).
    Raises ConfigError when the image is smaller than one ``step`` and may not
    be upscaled.
    """
    bucket = nearest(width, height, buckets)
    scale = max(bucket.width / width, bucket.height / height)
    if scale > 1.0 and not config.allow_upscale:
        a = min(1.0, math.sqrt(bucket.area / (width * height)))
        bucket = Bucket(math.floor(a * width + 1e-9) // config.step * config.step, math.floor(a * height + 1e-9) // config.step * config.step)
        if min(bucket) < config.step:
            raise ConfigError("image size", f"{width}x{height}", f"is below one bucket step ({config.step} px) on a side; enable allow_upscale or remove the image")
        scale = max(bucket.width / width, bucket.height / height)
    if config.crop == "stretch":
        return Plan(bucket, (bucket.width, bucket.height), 0, 0)
    rw = max(bucket.width, round(width * scale))
    rh = max(bucket.height, round(height * scale))
    generator = torch.Generator().manual_seed(crop_seed)
    left, top = CROPS.get(config.crop)(rw, rh, bucket, generator)
    return Plan(bucket, (rw, rh), left, top)


def apply(image: Image.Image, plan: Plan, resize_filter: str = "auto") -> Image.Image:
    """Resize ``image`` (RGB) to ``plan.resize`` and crop ``plan.bucket`` out of it.

    ``resize_filter`` names a :data:`RESIZE_FILTERS` entry (``auto``: Lanczos
    when shrinking, bicubic when enlarging); the same input always gives the
    same pixels.
    """
    if image.size != plan.resize:
        shrinking = plan.resize[0] * plan.resize[1] <= image.size[0] * image.size[1]
        image = image.resize(plan.resize, RESIZE_FILTERS.get(resize_filter, "resize_filter")(shrinking))
    box = (plan.left, plan.top, plan.left + plan.bucket.width, plan.top + plan.bucket.height)
    return image if box == (0, 0, *image.size) else image.crop(box)


def to_pixels(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> ``(1, H, W, 3)`` float32 in [0, 1] (ComfyUI's IMAGE layout)."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
