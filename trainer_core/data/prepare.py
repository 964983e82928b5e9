"""Folder -> :class:`~.dataset.Dataset`, calling the encoders only on cache misses.

For each image: read its caption, probe its header, hash its bytes and plan
its bucket (all without decoding pixels); then load the latent from the cache,
or decode, resize, crop and encode it and store the result. Then encode each
distinct prompt, and the empty prompt, the same way. A second run over the
same files with the same encoders and settings therefore makes zero encoder
calls.

Encoders are plain callables (the ComfyUI node wraps ``VAE.encode`` and
``CLIP.tokenize`` + ``encode_from_tokens_scheduled``); their identity strings
are part of every cache key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from ..errors import ConfigError, require
from . import buckets as bk
from .cache import TensorCache, file_digest, make_key, pack, unpack
from .captions import CaptionConfig, SourceImage, outside_folder, scan_folder
from .dataset import Dataset, Sample
from .errors import DataError, FatalDataError
from .images import DEFAULT_PIXEL_LIMIT, MAX_PIXEL_LIMIT, load_rgb, probe

logger = logging.getLogger(__name__)

BAD_FILE_POLICIES = ("skip", "fail")
PIXEL_PIPELINE = "rgb8-lanczos-down-bicubic-up-v1"
"""Names the decode/resize code in cache keys; change it when that code changes."""


def pixel_pipeline(resize_filter: str) -> str:
    """The cache-key name of the decode/resize code: :data:`PIXEL_PIPELINE` for the
    default ``auto`` filter (so existing caches stay valid), else one per filter."""
    return PIXEL_PIPELINE if resize_filter == "auto" else f"rgb8-{resize_filter}-v1"


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that decides which samples exist and what they contain.

    ``on_bad_file``: ``skip`` (warn and leave the file out) or ``fail``.
    ``background``: RGB 0-255 under transparent pixels. ``pixel_limit``: the
    decompression-bomb limit in pixels.
    """

    captions: CaptionConfig = field(default_factory=CaptionConfig)
    buckets: bk.BucketConfig = field(default_factory=bk.BucketConfig)
    on_bad_file: str = "skip"
    background: tuple[int, int, int] = (255, 255, 255)
    pixel_limit: int = DEFAULT_PIXEL_LIMIT

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        require(self.on_bad_file in BAD_FILE_POLICIES, "on_bad_file", self.on_bad_file, f"must be one of {', '.join(BAD_FILE_POLICIES)}")
        require(len(self.background) == 3 and all(0 <= int(c) <= 255 for c in self.background), "background", self.background, "must be three values in 0-255")
        require(1 <= self.pixel_limit <= MAX_PIXEL_LIMIT, "pixel_limit", self.pixel_limit, f"must lie in [1, {MAX_PIXEL_LIMIT}] (Pillow refuses larger images)")

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, **dataclasses.asdict(self), "background": list(self.background)}


@dataclass(frozen=True)
class Encoders:
    """The two encoders as callables, with identities for the cache keys.

    ``encode_image``: ``(1, H, W, 3)`` float32 RGB in [0, 1] -> ``(1, ...)``
    latent (ComfyUI's ``VAE.encode`` contract). ``encode_text``: prompt ->
    any result :func:`.cache.pack` can store (ComfyUI: a CONDITIONING).
    ``image_id`` / ``text_id`` must change whenever the encoder's output would.
    """

    encode_image: Callable[[Tensor], Tensor]
    encode_text: Callable[[str], Any]
    image_id: str
    text_id: str


def prepare(folder: str | Path, config: DatasetConfig, encoders: Encoders, cache_dir: str | Path | None = None, progress: Callable[[int, int], None] | None = None, follow_links_out: bool = False) -> Dataset:
    """Scan ``folder``, encode what the cache at ``cache_dir`` lacks, return the Dataset.

    ``cache_dir = None`` disables the disk cache. ``progress(done, total)`` is
    called after each image and each prompt (it may raise to cancel).
    An image or caption whose real path leaves ``folder`` (a symbolic link
    out of it, or a repeat folder linked from elsewhere) is a bad file unless
    ``follow_links_out``. Raises :class:`DataError` for a missing or empty
    folder, for the first bad file under ``on_bad_file = fail``, and when no
    image is usable.
    """
    folder = Path(folder)
    sources = scan_folder(folder)
    cache = TensorCache(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.remove_stale_temps()
    table = config.buckets.buckets()
    stats = {"images": len(sources), "image_encodes": 0, "text_encodes": 0}
    total = 2 * len(sources) + 1  # images, then at most one prompt per image plus the empty one
    done = 0

    planned: list[tuple[Any, Tensor, tuple[str, str | None], bk.Plan, tuple[int, int]]] = []
    skipped: list[tuple[str, str]] = []
    for source in sources:
        try:
            if not follow_links_out:
                _refuse_links_out(source, folder)
            item = _prepare_image(source, config, table, encoders, cache, stats)
            if item is None:
                skipped.append((str(source.path), "no caption file (missing_caption = skip)"))
            else:
                planned.append((source, *item))
        except FatalDataError:
            raise
        except DataError as e:
            if config.on_bad_file == "fail":
                raise
            logger.warning("skipped %s", e)
            skipped.append((str(source.path), f"{e.problem}; {e.fix}"))
        done += 1
        if progress is not None:
            progress(done, total)
    if not planned:
        first = f" First: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(folder, f"has no usable image ({len(skipped)} skipped).{first}", "fix or remove the files named in the log")

    prompts: dict[str, int] = {}
    for source, _, (caption, think), _, _ in planned:
        prompts.setdefault(config.captions.render(caption, think, source.folder_name), len(prompts))
    conditionings = []
    for prompt in [*prompts, ""]:
        conditionings.append(_encode_text(prompt, encoders, cache, stats))
        done += 1
        if progress is not None:
            progress(min(done, total), total)
    empty = conditionings.pop()

    samples = []
    for source, latent, (caption, think), plan, size in planned:
        prompt = config.captions.render(caption, think, source.folder_name)
        samples.append(Sample(source.path, plan.bucket, latent, prompt, prompts[prompt], think, source.repeats, size, (plan.left, plan.top, *plan.resize)))
    if cache is not None:
        stats.update(cache_hits=cache.hits, cache_misses=cache.misses, cache_rebuilt=cache.rebuilt)
    stats["skipped"] = len(skipped)
    logger.info("dataset %s: %d images (%d skipped), %d image and %d text encodes", folder, len(samples), len(skipped), stats["image_encodes"], stats["text_encodes"])
    settings = {**config.to_dict(), "folder": str(folder), "image_encoder": encoders.image_id, "text_encoder": encoders.text_id}
    return Dataset(tuple(samples), tuple(conditionings), empty, config.captions.dropout, tuple(skipped), settings, stats)


def _refuse_links_out(source: SourceImage, folder: Path) -> None:
    """:class:`DataError` when the image or its caption resolves outside ``folder``."""
    for path in (source.path, source.caption_path):
        real = None if path is None else outside_folder(path, folder)
        if real is not None:
            raise DataError(path, f"is a link to {real}, outside the dataset folder {folder}", "copy the file into the folder (links out of it are refused; FLOWLORA_ALLOW_ANY_PATH=1 allows them on a local single-user install)")


def _prepare_image(source, config: DatasetConfig, table, encoders: Encoders, cache: TensorCache | None, stats: dict):
    """``(latent (C, ...), (caption, think), plan, (w, h))`` or None when the caption policy skips it."""
    info = probe(source.path, config.pixel_limit)  # a broken image is reported as such, caption or not
    caption = config.captions.caption_for(source)
    if caption is None:
        return None
    digest = file_digest(source.path)
    crop_seed = (config.buckets.seed * 1_000_003 + int(digest[:15], 16)) % 2**63
    try:
        plan = bk.plan(info.width, info.height, config.buckets, table, crop_seed)
    except ConfigError as e:
        raise DataError(source.path, f"is {e.value} pixels, {e.problem}", "enable allow_upscale or remove the image") from None
    key = make_key({
        "kind": "latent",
        "image": digest,
        "plan": [plan.bucket.width, plan.bucket.height, *plan.resize, plan.left, plan.top],
        "background": list(config.background),
        "pixels": pixel_pipeline(config.buckets.resize_filter),
        "encoder": encoders.image_id,
    })
    latent = None
    if cache is not None:
        stored = cache.load("latents", key)
        latent = None if stored is None else stored.get("latent")
    if latent is None:
        image = bk.apply(load_rgb(source.path, config.background, config.pixel_limit), plan, config.buckets.resize_filter)
        out = encoders.encode_image(bk.to_pixels(image))
        stats["image_encodes"] += 1
        if out.shape[0] != 1:
            raise RuntimeError(f"{source.path}: the image encoder returned a batch of {out.shape[0]} for one image")
        latent = out[0].detach().float().cpu().contiguous()
        if cache is not None:
            cache.save("latents", key, {"latent": latent})
    return latent, caption, plan, (info.width, info.height)


def _encode_text(prompt: str, encoders: Encoders, cache: TensorCache | None, stats: dict) -> Any:
    key = make_key({"kind": "text", "prompt": prompt, "encoder": encoders.text_id})
    if cache is not None:
        stored = cache.load_with_structure("text", key)
        if stored is not None and stored[1]:
            return unpack(*stored)
    result = encoders.encode_text(prompt)
    stats["text_encodes"] += 1
    if cache is not None:
        try:
            tensors, structure = pack(result)
        except TypeError as e:
            logger.warning("text encoding of %r is not cached: %s", prompt[:60], e)
        else:
            cache.save("text", key, tensors, structure)
    return result
