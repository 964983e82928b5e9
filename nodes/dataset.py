"""Dataset node: a folder of images + captions -> bucketed, encoded, cached samples.

The node wraps ComfyUI's VAE (``VAE.encode`` on ``(1, H, W, 3)`` images in
[0, 1]) and text encoder (``clip.tokenize`` + ``encode_from_tokens_scheduled``,
as CLIPTextEncode does) into :class:`trainer_core.data.prepare.Encoders`, hands
the folder to :func:`trainer_core.data.prepare.prepare`, then releases both
encoders through ComfyUI's model management so training starts with their
memory free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import comfy.model_management as model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..trainer_core.data import buckets as bk
from ..trainer_core.data.cache import fingerprint_tensors, make_key
from ..trainer_core.data.captions import DEFAULT_TEMPLATE, MISSING_CAPTION, REPEAT_FOLDER, CaptionConfig
from ..trainer_core.data.dataset import Dataset
from ..trainer_core.data.images import DEFAULT_PIXEL_LIMIT, MAX_PIXEL_LIMIT
from ..trainer_core.data.prepare import BAD_FILE_POLICIES, DatasetConfig, Encoders, prepare
from ..trainer_core.errors import ConfigError
from ..trainer_core.figures import bar_chart
from . import figures, paths
from .types import CATEGORY, PREFIX, check_inputs, validation_message

logger = logging.getLogger(__name__)

DatasetType = io.Custom("FLOWLORA_DATASET")
"""A :class:`trainer_core.data.dataset.Dataset` (encoded samples, conditionings, source paths)."""

U1TextEncoderType = io.Custom("FLOWLORA_U1_TEXT_ENCODER")
"""SenseNova-U1's understanding tower + tokenizer (``nodes.u1.model.U1TextEncoder``)."""

CACHE_FOLDER = ".flowlora_cache"
CONFIG_INPUTS = ("trigger", "template", "caption_dropout", "missing_caption", "default_caption", "bad_files", "background", "bucket_mode", "max_pixels", "bucket_step", "max_aspect", "bucket_list", "allow_upscale", "crop", "seed", "pixel_limit", "resize_filter")
OPTIONAL_DEFAULTS = {"pixel_limit": DEFAULT_PIXEL_LIMIT, "resize_filter": "auto"}
"""Optional widgets (appended after the first release, so old graphs keep their widget order) and their defaults."""


def parse_colour(text: str) -> tuple[int, int, int]:
    """``"#RRGGBB"``, ``"RRGGBB"`` or ``"r, g, b"`` (0-255) -> RGB tuple."""
    value = text.strip()
    try:
        if "," in value:
            parts = tuple(int(p) for p in value.split(","))
        else:
            hexa = value.lstrip("#")
            parts = tuple(int(hexa[i : i + 2], 16) for i in (0, 2, 4)) if len(hexa) == 6 else ()
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise ConfigError("background", text, "write a colour as #RRGGBB or r, g, b with values 0-255")
    return parts


def build_config(trigger: str, template: str, caption_dropout: float, missing_caption: str, default_caption: str, bad_files: str, background: str, bucket_mode: str, max_pixels: int, bucket_step: int, max_aspect: float, bucket_list: str, allow_upscale: bool, crop: str, seed: int, pixel_limit: int, resize_filter: str = "auto") -> DatasetConfig:
    """Node widgets -> :class:`DatasetConfig`; raises ConfigError naming the bad field."""
    captions = CaptionConfig(trigger, template, caption_dropout, missing_caption, default_caption)
    buckets = bk.BucketConfig(bucket_mode, max_pixels, bucket_step, max_aspect, bucket_list, allow_upscale, crop, seed, resize_filter)
    return DatasetConfig(captions, buckets, bad_files, parse_colour(background), pixel_limit)


def resolve_folder(folder: str) -> Path:
    """The real path of ``folder``: a relative name under ComfyUI's input folder; refused
    (ConfigError) outside ComfyUI's folders, see :mod:`.paths`."""
    return paths.confine("folder", folder)


def cache_folder(folder: Path, cache_dir: str) -> Path:
    """``cache_dir`` if given, else ``<folder>/.flowlora_cache``, else (read-only folder) ComfyUI's user folder.

    A relative ``cache_dir`` is under ComfyUI's input folder; every choice is
    confined to ComfyUI's folders (:mod:`.paths`).
    """
    if cache_dir.strip():
        return paths.confine("cache_dir", cache_dir)
    if os.access(folder, os.W_OK):
        return paths.confine("cache_dir", str(folder / CACHE_FOLDER))
    fallback = Path(folder_paths.get_user_directory()) / "flowlora" / "dataset_cache"
    logger.info("%s is read-only; caching encodings in %s", folder, fallback)
    return fallback


def vae_encoder(vae) -> tuple[Any, str]:
    """``VAE.encode`` and an identity: model class, dtype, sampled weights."""
    model = vae.first_stage_model
    identity = make_key({
        "kind": "vae",
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "dtype": str(getattr(vae, "vae_dtype", "")),
        "weights": fingerprint_tensors(model.state_dict().items()),
    })
    return vae.encode, identity


def clip_encoder(clip) -> tuple[Any, str]:
    """CLIPTextEncode's two calls, and an identity: classes, layer, options, weights, patches."""

    def encode(text: str):
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    model = clip.cond_stage_model
    patches = getattr(clip.patcher, "patches", {}) or {}
    identity = make_key({
        "kind": "text",
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "tokenizer": f"{type(clip.tokenizer).__module__}.{type(clip.tokenizer).__qualname__}",
        "layer_idx": getattr(clip, "layer_idx", None),
        "tokenizer_options": repr(sorted(getattr(clip, "tokenizer_options", {}).items())),
        "weights": fingerprint_tensors(model.state_dict().items()),
        "patches": {key: _describe_patch(value) for key, value in sorted(patches.items())},
    })
    return encode, identity


def text_encoder(clip, u1_text_encoder) -> tuple[Any, str, Any]:
    """``(encode, identity, patcher)`` of the one connected text encoder: a CLIP or SenseNova-U1's.

    U1's turns each prompt into the official prefix's KV (the empty prompt into
    the official unconditional prefix), see ``U1TextEncoder.dataset_encoder``.
    """
    if (clip is None) == (u1_text_encoder is None):
        raise ConfigError("clip", "both" if clip is not None else "none", "connect exactly one text encoder: clip, or u1_text_encoder for SenseNova-U1")
    if u1_text_encoder is not None:
        return (*u1_text_encoder.dataset_encoder(), u1_text_encoder.patcher)
    return (*clip_encoder(clip), clip.patcher)


def _describe_patch(value: Any) -> Any:
    """A JSON-able identity of one weight patch entry (strengths, sampled tensor values)."""
    if isinstance(value, torch.Tensor):
        return fingerprint_tensors([("t", value)])
    if isinstance(value, (list, tuple)):
        return [_describe_patch(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe_patch(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    weights = getattr(value, "weights", None)  # comfy.weight_adapter adapters keep their tensors here
    return [type(value).__qualname__, _describe_patch(weights) if weights is not None else None]


def release_encoders(*patchers) -> int:
    """Unload the ComfyUI models behind ``patchers`` (and their clones) and free the cache.

    Returns how many loaded models were unloaded.
    """
    unloaded = 0
    loaded = getattr(model_management, "current_loaded_models", None)
    if loaded is None:
        logger.info("this ComfyUI has no current_loaded_models; only emptying the cache")
    else:
        for i in range(len(loaded) - 1, -1, -1):
            model = loaded[i].model
            if model is not None and any(model is p or p.is_clone(model) for p in patchers):
                loaded[i].model_unload()
                loaded.pop(i)
                unloaded += 1
    model_management.soft_empty_cache()
    return unloaded


def histogram(dataset: Dataset):
    """IMAGE ``(1, H, W, 3)``: samples per bucket (repeats counted)."""
    counts = dataset.bucket_counts()
    notes = (
        f"{len(dataset)} images, {dataset.epoch_length} samples per epoch (repeats counted), {len(counts)} buckets",
        f"{len(dataset.skipped)} skipped; encoded {dataset.stats.get('image_encodes', 0)} images and {dataset.stats.get('text_encodes', 0)} prompts this run",
    )
    return figures.render(bar_chart([b.label for b in counts], list(counts.values()), title="Dataset: samples per bucket (W x H)", notes=notes))


def folder_signature(folder: Path) -> list:
    """Names, sizes and modification times of the files the dataset reads."""
    entries = []
    if not folder.is_dir():
        return ["missing", str(folder)]
    dirs = [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and REPEAT_FOLDER.match(p.name))]
    for d in dirs:
        for p in sorted(d.iterdir()):
            if p.is_file():
                st = p.stat()
                entries.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return entries


class DatasetNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}Dataset",
            display_name="Dataset (FlowLoRA)",
            category=CATEGORY,
            description="Reads a folder of images with same-stem .txt captions, sorts them into aspect buckets, encodes them once with the VAE and text encoder (cached on disk), and frees both encoders before training.",
            inputs=[
                io.String.Input("folder", default="", tooltip="Folder of png/jpg/jpeg/webp images with same-stem .txt captions: a folder name inside ComfyUI's input folder, or an absolute path inside ComfyUI's folders (input, output, models, temp, user; FLOWLORA_ALLOW_ANY_PATH=1 lifts this on a local single-user install). Subfolders named N_name (kohya) repeat their images N times."),
                io.Vae.Input("vae", tooltip="The VAE of the model to train (the pixel_space VAE for pixel models). Used once, then unloaded."),
                io.Clip.Input("clip", optional=True, tooltip="The text encoder of the model to train; prompts are encoded as CLIPTextEncode does. Used once, then unloaded. For SenseNova-U1 connect u1_text_encoder instead."),
                io.String.Input("trigger", default="", tooltip="Trigger word put into every prompt through the template. Empty: the template's {trigger} and its separator are dropped."),
                io.String.Input("template", default=DEFAULT_TEMPLATE, tooltip="Prompt template: {trigger}, {caption}, {think} (text after a ---think--- line in the caption) and {folder} (the name part of an N_name folder)."),
                io.Float.Input("caption_dropout", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Probability that a training sample uses the empty prompt instead of its caption (the empty prompt's encoding is cached too)."),
                io.Combo.Input("missing_caption", options=MISSING_CAPTION.names(), default="default", tooltip="Image without a .txt: default (use default_caption; empty = the empty prompt, the pack's default), folder_name (the N_name folder's name), skip the image (train_u1: its datasets.py L155-159 only pairs images that have a .txt; the U1 workflows use this), or fail the run."),
                io.String.Input("default_caption", default="", tooltip="Caption for images without a .txt under missing_caption = default; empty leaves the trigger alone."),
                io.Combo.Input("bad_files", options=list(BAD_FILE_POLICIES), default="skip", tooltip="Unreadable, truncated, empty, oversized or non-image files and non-UTF-8 captions: skip them with a warning naming the file, or fail the run."),
                io.String.Input("background", default="#FFFFFF", tooltip="Colour under transparent pixels: #RRGGBB or r, g, b."),
                io.Combo.Input("bucket_mode", options=list(bk.BUCKET_MODES), default="auto", tooltip="auto: buckets of about max_pixels for every aspect up to max_aspect. list: the sizes in bucket_list. sensenova_u1: U1's 11 official buckets (about 4 MP, step 32)."),
                io.Int.Input("max_pixels", default=1024 * 1024, min=64 * 64, max=4096 * 4096, step=1024, tooltip="auto buckets: pixels per bucket (1024x1024 = 1048576)."),
                io.Int.Input("bucket_step", default=16, min=1, max=256, tooltip="Bucket sides are multiples of this: Z-Image 16, SenseNova-U1 32, SD-style VAEs 8 or 64."),
                io.Float.Input("max_aspect", default=4.0, min=1.0, max=16.0, step=0.1, tooltip="auto buckets: widest aspect ratio either way (4 = from 1:4 to 4:1)."),
                io.String.Input("bucket_list", default="", multiline=True, tooltip="list mode: buckets as WIDTHxHEIGHT separated by commas or lines, e.g. 1024x1024, 1216x832, 832x1216."),
                io.Boolean.Input("allow_upscale", default=False, tooltip="Off (the pack's default): an image smaller than its bucket gets its own bucket at native size (sides floored to bucket_step) instead of being enlarged. On: it is enlarged to the bucket, as train_u1 does (its u1_preprocess.py L121-126 resizes every image onto an official ~4 MP bucket; the U1 workflows use this, so a 1024x1024 image trains at 2048x2048 with U1's noise scale for that size)."),
                io.Combo.Input("crop", options=bk.CROPS.names(), default="center", tooltip="After scaling to cover the bucket: center crop, seeded random crop (one fixed crop per image), or stretch to the bucket without cropping (U1's official preprocessing)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, tooltip="Seed of the random crops; training's shuffling uses the trainer's seed."),
                io.Boolean.Input("use_cache", default=True, tooltip="Store encodings on disk (safetensors keyed by image content, bucket, crop, encoder and settings), so the next run with the same data skips the encoders."),
                io.String.Input("cache_dir", default="", optional=True, tooltip="Where the cache lives, inside ComfyUI's folders like 'folder' (a relative name is under the input folder). Empty: a .flowlora_cache folder inside the dataset folder (or ComfyUI's user folder when that is read-only)."),
                io.Int.Input("pixel_limit", default=DEFAULT_PIXEL_LIMIT, min=1, max=MAX_PIXEL_LIMIT, optional=True, tooltip="Decompression-bomb limit: images with more pixels are rejected before decoding."),
                U1TextEncoderType.Input("u1_text_encoder", optional=True, tooltip="SenseNova-U1 only, instead of clip: each prompt's prefix KV is computed once (official system message and template; text after a ---think--- line in the template goes into the think block) and the empty prompt is the official unconditional prefix. Template {trigger}, {caption} = train_u1 without think labels; add a line ---think--- and {think} to use them."),
                io.Combo.Input("resize_filter", options=bk.RESIZE_FILTERS.names(), default="auto", optional=True, tooltip="Pillow filter that resizes images onto their bucket. auto (the pack's default): Lanczos when shrinking, bicubic when enlarging. bicubic: both ways, as train_u1 (its u1_preprocess.py L126 uses Pillow's default, bicubic; the U1 workflows use this). lanczos, bilinear: both ways."),
            ],
            outputs=[
                DatasetType.Output(display_name="dataset", tooltip="Encoded samples grouped by bucket, with their source paths; feed it to the trainer."),
                io.Image.Output(display_name="buckets", tooltip="Bar chart of samples per bucket."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        if isinstance(kw.get("folder"), str) and not kw["folder"].strip():
            return "folder = '': give the dataset folder, a name inside ComfyUI's input folder"
        for message in (check_inputs(cls, kw), paths.check("folder", kw.get("folder")), paths.check("cache_dir", kw.get("cache_dir"))):
            if message is not True:
                return message
        values = {k: kw[k] for k in CONFIG_INPUTS if k in kw}
        for name, default in OPTIONAL_DEFAULTS.items():
            values.setdefault(name, default)
        if len(values) < len(CONFIG_INPUTS):
            return True  # some widgets are linked; execute() validates
        return validation_message(build_config, **values)

    @classmethod
    def fingerprint_inputs(cls, folder: str, **kw) -> Any:
        try:
            return folder_signature(resolve_folder(folder))
        except ConfigError as e:  # refused path: execute() raises it; never list the folder
            return ["refused", str(e)]

    @classmethod
    def execute(cls, folder: str, vae, use_cache: bool, clip=None, cache_dir: str = "", pixel_limit: int = DEFAULT_PIXEL_LIMIT, u1_text_encoder=None, **kw) -> io.NodeOutput:
        config = build_config(pixel_limit=pixel_limit, **kw)
        encode_text, text_id, text_patcher = text_encoder(clip, u1_text_encoder)
        path = resolve_folder(folder)
        encode_image, image_id = vae_encoder(vae)
        bar = comfy.utils.ProgressBar(1)

        def progress(done: int, total: int) -> None:
            model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        try:
            cache = cache_folder(path, cache_dir) if use_cache else None
            dataset = prepare(path, config, Encoders(encode_image, encode_text, image_id, text_id), cache, progress, follow_links_out=paths.any_path_allowed())
        finally:
            release_encoders(vae.patcher, text_patcher)
        return io.NodeOutput(dataset, histogram(dataset))
