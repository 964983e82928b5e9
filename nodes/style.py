"""Style Distance node: how close an IMAGE batch looks to a set of reference images."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from comfy_api.latest import io

from ..trainer_core import style
from ..trainer_core.errors import ConfigError
from . import paths
from .types import CATEGORY, PREFIX, check_inputs

logger = logging.getLogger(__name__)


def build_reference(role: str, folder: str, images: torch.Tensor | None, config: style.StyleConfig, required: bool) -> style.StyleReference | None:
    """The reference of ``role`` ("reference" or "baseline") from its folder or its IMAGE input (exactly one, or neither when optional)."""
    folder = (folder or "").strip()
    if folder and images is not None:
        raise ConfigError(f"{role}_folder", folder, f"and {role}_images are both given; connect {role}_images or type a folder, not both")
    if images is not None:
        return style.StyleReference.from_images(images, config)
    if folder:
        return style.StyleReference.from_folder(paths.confine(f"{role}_folder", folder), config)
    if required:
        raise ConfigError(f"{role}_folder", folder, f"is empty and {role}_images is not connected; give reference images one way")
    return None


def measure(images: torch.Tensor, reference: style.StyleReference, baseline: style.StyleReference | None) -> tuple[float, float, str]:
    """``(mean distance, mean style score or NaN, summary)`` of an IMAGE batch."""
    distances = reference.distance(images)
    scores = style.style_score(images, baseline, reference) if baseline is not None else None
    text = style.summary(distances, reference, scores)
    text += "\nper image distance: " + style.per_image(distances)
    if scores is None:
        text += "\nno baseline connected: style_score is NaN (connect baseline images, e.g. the untrained model's samples, for a 0-to-1 score)"
    else:
        text += "\nper image score: " + style.per_image(scores, 3)
    mean_score = float(scores.mean()) if scores is not None else math.nan
    return float(distances.mean()), mean_score, text


class StyleDistance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}StyleDistance",
            display_name="Style Distance (FlowLoRA)",
            category=CATEGORY,
            is_output_node=True,
            description=(
                "Measures how close a batch of images looks to reference images: palette histogram plus texture statistics "
                "(gradient strength and orientation, fine detail, local contrast). With a baseline (e.g. the images before training) "
                "it also gives a style score: 0 = looks like the baseline, 1 = looks like the reference."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Images to measure, e.g. samples from the model with the trained LoRA."),
                io.String.Input("reference_folder", default="", optional=True, tooltip="Folder of reference images in the target style (png/jpg/jpeg/webp, subfolders included): a name inside ComfyUI's input folder or a path inside ComfyUI's folders. Leave empty when reference_images is connected."),
                io.Image.Input("reference_images", optional=True, tooltip="Reference images in the target style as an IMAGE batch, instead of reference_folder."),
                io.String.Input("baseline_folder", default="", optional=True, tooltip="Optional folder of baseline images (the look the model starts from); with a baseline the node also outputs the style score."),
                io.Image.Input("baseline_images", optional=True, tooltip="Optional baseline images as an IMAGE batch (e.g. the same prompts sampled without the LoRA), instead of baseline_folder."),
                io.Int.Input("size", default=64, min=8, max=1024, tooltip="Every image is resized to size x size before its statistics are taken. Use the training resolution for small images; 128-256 for real models (larger is slower)."),
            ],
            outputs=[
                io.Float.Output(display_name="distance", tooltip="Mean style distance of the images to the reference set (0 = identical statistics; smaller is closer)."),
                io.Float.Output(display_name="style_score", tooltip="Mean position from the baseline (0) to the reference (1) along the line between their mean statistics; NaN without a baseline."),
                io.String.Output(display_name="summary", tooltip="Distances and scores in words: mean, min, max and per image."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        for message in (check_inputs(cls, kw), paths.check("reference_folder", kw.get("reference_folder")), paths.check("baseline_folder", kw.get("baseline_folder"))):
            if message is not True:
                return message
        return True

    @classmethod
    def fingerprint_inputs(cls, reference_folder: str = "", baseline_folder: str = "", **kw) -> Any:
        """Re-run when files in a reference folder change (their names, sizes and times)."""
        out = []
        for field, folder in (("reference_folder", reference_folder), ("baseline_folder", baseline_folder)):
            if not (folder or "").strip():
                continue
            try:
                root = paths.confine(field, folder)
            except ConfigError as e:  # refused path: execute() raises it; never list the folder
                out.append(["refused", str(e)])
                continue
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
            out.append([str(root), *[(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]])
        return out

    @classmethod
    def execute(cls, images: torch.Tensor, reference_folder: str = "", reference_images: torch.Tensor | None = None, baseline_folder: str = "", baseline_images: torch.Tensor | None = None, size: int = 64) -> io.NodeOutput:
        config = style.StyleConfig(size=size)
        reference = build_reference("reference", reference_folder, reference_images, config, required=True)
        baseline = build_reference("baseline", baseline_folder, baseline_images, config, required=False)
        distance, score, text = measure(images, reference, baseline)
        logger.info("style distance %.4f, score %s over %d image(s)", distance, f"{score:.3f}" if baseline else "n/a", images.shape[0])
        metrics = {"distance": distance, "style_score": None if math.isnan(score) else score, "images": int(images.shape[0])}
        return io.NodeOutput(distance, score, text, ui={"text": [text], "flowlora_metrics": [metrics]})
