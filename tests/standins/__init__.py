"""Stand-in model files and test-only graph edits for the end-to-end workflow tests.

The shipped workflows name real model files (Z-Image Turbo, Qwen3-4B, the Flux
VAE, the SenseNova-U1 8B checkpoint). :func:`prepare_base` writes tiny files
under exactly those names into a ComfyUI base directory and links in the
demo/test custom node package ``scripts/flowlora_tiny``, which registers the
tiny Z-Image width with ComfyUI's model detection (so the stock UNETLoader
loads it) and provides the tiny text-encoder loader.

What is substituted, and why (see :func:`adapt_for_test`):

- ``CLIPLoader`` -> ``FlowLoRATinyTextEncoderLoader``: ComfyUI 0.3.75 builds
  the Z-Image text encoder (Qwen3-4B) at its real size whatever the file, and
  the stock loader passes no size option, so no tiny file can load through it.
  The stand-in calls the same ``comfy.sd.load_clip`` with ComfyUI's
  ``qwen3_4b_model_config`` option; detection, classes and tokenizer are ComfyUI's.
- Sizes and lengths: sampling latents 64 x 64 pixels, U1 training 3 steps
  instead of 6000, U1 sampling 6 steps instead of 50 (the U1 demo's before /
  after samples excepted, see :func:`adapt_for_test`), training previews at
  0, 50 and 100% of the run (not every 10%: previews are tested on their own in
  ``test_training_preview.py`` and ``test_server_previews.py``), U1 datasets with
  ``allow_upscale`` off (the 64 x 64 stand-in images train at 64 x 64 in U1's
  nearest official bucket shape instead of being stretched to its 4 MP:
  4,096 tokens a step made the U1 graphs most of the suite's time), so the
  suite stays small on 2 CPU cores. The AC-RF and demo training lengths are kept (10 epochs over
  4 images; 40 steps).

The diffusion model (stock UNETLoader), the VAE (stock VAELoader; the real
Flux/Z-Image VAE architecture with random weights, since the stock loader
builds that architecture whatever the file) and U1 (the pack's loader) are
not substituted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import build_workflows as specs  # noqa: E402
import make_demo_model  # noqa: E402

TEST_IMAGE = 64
U1_TRAIN_STEPS = 3
U1_SAMPLE_STEPS = 6
PREVIEW_PERCENT = 50
"""Training previews at the start, halfway and at the end (the shipped graphs: every 10%, eleven previews)."""


def link_tiny_package(base: Path) -> None:
    link = base / "custom_nodes" / "flowlora_tiny"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(SCRIPTS / "flowlora_tiny", target_is_directory=True)


def prepare_base(base: Path) -> None:
    """Tiny stand-ins under every model and dataset name the shipped workflows use."""
    from tiny_u1 import write_tiny_checkpoint

    link_tiny_package(base)
    models = base / "models"
    demo = make_demo_model.write_models(models, make_demo_model.DEMO_FILES["unet"], make_demo_model.DEMO_FILES["text_encoder"], make_demo_model.DEMO_FILES["vae"])
    for kind, name in (("unet", specs.ZIMAGE_FILES["unet"]), ("text_encoder", specs.ZIMAGE_FILES["clip"]), ("vae", specs.ZIMAGE_FILES["vae"])):
        target = demo[kind].parent / name
        if not target.exists():
            os.link(demo[kind], target)  # same bytes, the name the workflow expects
    u1 = models / specs.U1_CHECKPOINT
    if not (u1 / "config.json").is_file():
        write_tiny_checkpoint(u1)
    from tinyworld import assets  # the committed tiny-world models and style sets: real files, not stand-ins

    assets.install(base)
    make_demo_model.write_dataset(base / "input" / make_demo_model.DEMO_DATASET, size=TEST_IMAGE)
    make_demo_model.write_dataset(base / "input" / specs.ACRF_DATASET, size=TEST_IMAGE)
    make_demo_model.write_dataset(base / "input" / specs.U1_DATASET, size=TEST_IMAGE)


def adapt_for_test(prompt: dict, full_sampling: bool = False) -> dict:
    """The converted prompt with the stand-in text encoder loader and test sizes (module docstring).

    ``full_sampling``: the KSamplers keep their shipped step counts (a tiny-world demo, whose before / after metrics
    are checked against the demo's own figures); training previews are shortened all the same.
    """
    out = {}
    for node_id, node in prompt.items():
        node = {**node, "inputs": dict(node["inputs"])}
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CLIPLoader":
            node["class_type"] = "FlowLoRATinyTextEncoderLoader"
            inputs.pop("device", None)
        elif kind in ("EmptySD3LatentImage", "EmptyChromaRadianceLatentImage"):
            inputs.update(width=TEST_IMAGE, height=TEST_IMAGE)
        elif kind == "FlowLoRALoraTrainer" and inputs.get("steps") == 6000:
            inputs.update(steps=U1_TRAIN_STEPS, save_every=2)
        elif kind == "KSampler" and inputs.get("steps") == 50 and not full_sampling:
            inputs.update(steps=U1_SAMPLE_STEPS)
        elif kind == "FlowLoRATrainingPreview":
            inputs.update(width=TEST_IMAGE, height=TEST_IMAGE, every_percent=PREVIEW_PERCENT)
            if inputs.get("steps") == 50:
                inputs.update(steps=U1_SAMPLE_STEPS)
        elif kind == "FlowLoRAImageGrid":
            inputs.update(cell_size=96)
        elif kind == "FlowLoRADataset" and inputs.get("bucket_mode") == "sensenova_u1":
            inputs.update(allow_upscale=False)  # the 64 x 64 stand-in images train at 64 x 64, not stretched to 4 MP
        out[node_id] = node
    return out
