"""FlowLoRA tiny stand-ins: a demo- and test-only ComfyUI custom node package.

Not part of the pack (the pack's nodes live in ``nodes/``); ``make demo`` and the
end-to-end tests link this folder into their own ComfyUI's ``custom_nodes``.
It lets stock ComfyUI load the tiny Z-Image files that
``scripts/make_demo_model.py`` writes, through ComfyUI's own extension points:

- **Diffusion model**: ComfyUI's detection reads a Z-Image's width from
  ``cap_embedder.1.weight`` and fills in heads and rotary axes only at the real
  width 3840. :class:`TinyZImage`, a ``comfy.supported_models.ZImage`` whose
  ``unet_extra_config`` gives those values for width 256, is added to
  ``comfy.supported_models.models`` (the list detection walks), so the stock
  **Load Diffusion Model** (UNETLoader) loads the tiny checkpoint as a real
  Z-Image. It matches width 256 only; no real model has that width.
- **Tiny-world Z-Image** (pixel space): :class:`TinyPixelZImage`, matched at
  width 288, builds the same ``NextDiT`` on 3-channel RGB in [-1, 1] with
  8 x 8 patches (64 tokens for a 64 x 64 image) and ComfyUI's identity
  pixel latent format (``ChromaRadiance``), so the stock UNETLoader,
  EmptyChromaRadianceLatentImage, KSampler and VAELoader "pixel_space" sample
  the pretrained tiny-world models in ``scripts/tinyworld/models``.
- **Text encoder**: ComfyUI detects Qwen3-4B by key names and builds it at its
  real size (36 layers, width 2560); the stock CLIPLoader offers no size
  option. :class:`TinyTextEncoderLoader` builds the CLIP that
  ``comfy.sd.load_clip`` builds for Qwen3-4B with type lumina2, with ComfyUI's
  ``qwen3_4b_model_config`` model option (the hook ComfyUI's text encoders
  read their size from): the Z-Image text encoder class and the Qwen tokenizer
  are ComfyUI's (:func:`load_tiny_text_encoder`; 0.33's family detection
  does not recognise the tiny width, so it is not asked).
- **VAE**: none needed; the demo VAE has the real Flux/Z-Image architecture
  with random weights and loads through the stock VAELoader.
- **Content Accuracy** node: scores an IMAGE batch against its tiny-world
  prompts with ``scripts/tinyworld``'s analytic content metric.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import ClassVar

log = logging.getLogger(__name__)

TINY_ZIMAGE_WIDTH = 256
TINY_ZIMAGE_EXTRA = {
    "n_heads": 4,
    "n_kv_heads": 4,
    "axes_dims": [16, 24, 24],
    "axes_lens": [256, 64, 64],
    "rope_theta": 256.0,
    "ffn_dim_multiplier": 8.0 / 3.0,
    "z_image_modulation": True,
    "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
    "n_refiner_layers": 1,
}
"""What ComfyUI's detection fills in for Z-Image at width 3840, here for width 256 (DESIGN.md §4)."""

TINY_TEXT_ENCODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,  # ComfyUI reads layer -2; needs more than 2
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
}
"""Qwen3 text encoder size (ComfyUI's ``Qwen3_4BConfig`` fields); width 32 = the tiny Z-Image's cap_feat_dim.

The real vocabulary (151,936) stays so the bundled Qwen tokenizer's ids fit;
ComfyUI fixes head_dim at 128.
"""


TINY_PIXEL_ZIMAGE_WIDTH = 288
TINY_PIXEL_ZIMAGE_EXTRA = {
    "patch_size": 8,
    "in_channels": 3,
    "n_heads": 4,
    "n_kv_heads": 4,
    "axes_dims": [24, 24, 24],
    "axes_lens": [256, 64, 64],
    "rope_theta": 256.0,
    "ffn_dim_multiplier": 0.89,
    "z_image_modulation": True,
    "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
    "n_refiner_layers": 1,
}
"""The tiny-world pixel-space Z-Image (scripts/tinyworld/pretrain_zimage.py): width 288 = 4 heads x 72 = sum(axes_dims).

ComfyUI's detection reads width, layer count and caption width from the
weights and assumes patch 2 and 16 channels; these values replace that (as
``unet_extra_config`` does for every model). Patch 8 on 64 x 64 RGB: 64
image tokens of 8 x 8 x 3 = 192 values; FFN hidden 256 (ComfyUI rounds
int(0.89 x 288) up to a multiple of 256; Z-Image itself uses 8/3).
"""


def load_tiny_text_encoder(path, embedding_directory=None, disable_dynamic: bool = False):
    """The tiny Qwen3 at ``path`` as a ComfyUI CLIP: Z-Image's tokenizer and text encoder classes, :data:`TINY_TEXT_ENCODER` size.

    ``comfy.sd.load_clip`` picks the text-encoder family from the weights'
    width; 0.3.75 reads any Qwen3 as Qwen3-4B, 0.33 only width 2560 (it reads
    width 32 as a Llama and fails). So the ClipTarget that load_clip builds for
    Qwen3-4B with type lumina2 is built here directly, on both hosts; the
    weights go in as load_clip gives them (0.33: to the constructor, 0.3.75:
    ``load_sd``), and on hosts that re-create models the patcher learns how
    (``cached_patcher_init``).
    """
    import inspect

    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.z_image
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(path), safe_load=True)
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.z_image.ZImageTokenizer, comfy.text_encoders.z_image.te())
    kwargs = {"embedding_directory": embedding_directory, "parameters": comfy.utils.calculate_parameters(sd), "model_options": {"qwen3_4b_model_config": dict(TINY_TEXT_ENCODER)}}
    init = inspect.signature(comfy.sd.CLIP.__init__).parameters
    if "state_dict" in init:
        clip = comfy.sd.CLIP(target, state_dict=[sd], **kwargs, **({"disable_dynamic": disable_dynamic} if "disable_dynamic" in init else {}))
    else:
        clip = comfy.sd.CLIP(target, **kwargs)
        missing, _ = clip.load_sd(sd)
        if missing:
            raise ValueError(f"{path}: not the tiny text encoder (missing {missing[:3]}); write it with scripts/make_demo_model.py")
    if hasattr(clip.patcher, "cached_patcher_init"):
        clip.patcher.cached_patcher_init = (_tiny_text_encoder_patcher, (str(path), embedding_directory))
    return clip


def _tiny_text_encoder_patcher(path, embedding_directory=None, disable_dynamic: bool = False):
    return load_tiny_text_encoder(path, embedding_directory, disable_dynamic).patcher


def tiny_pixel_zimage_class():
    """A ``comfy.supported_models.ZImage`` subclass that detection matches at width 288: RGB pixel space, identity latent format."""
    import comfy.latent_formats
    import comfy.supported_models

    class TinyPixelZImage(comfy.supported_models.ZImage):
        unet_config: ClassVar[dict] = {"image_model": "lumina2", "dim": TINY_PIXEL_ZIMAGE_WIDTH}
        unet_extra_config: ClassVar[dict] = dict(TINY_PIXEL_ZIMAGE_EXTRA)
        latent_format = comfy.latent_formats.ChromaRadiance

    return TinyPixelZImage


def tiny_zimage_class():
    """A ``comfy.supported_models.ZImage`` subclass that detection matches at width 256."""
    import comfy.supported_models

    class TinyZImage(comfy.supported_models.ZImage):
        unet_config: ClassVar[dict] = {"image_model": "lumina2", "dim": TINY_ZIMAGE_WIDTH}
        unet_extra_config: ClassVar[dict] = dict(TINY_ZIMAGE_EXTRA)

    return TinyZImage


def register_tiny_zimage() -> bool:
    """Put :class:`TinyZImage` and :class:`TinyPixelZImage` first in ComfyUI's model list (once); True when added."""
    import comfy.supported_models

    added = False
    for make in (tiny_pixel_zimage_class, tiny_zimage_class):
        cls = make()
        if any(getattr(m, "__name__", "") == cls.__name__ for m in comfy.supported_models.models):
            continue
        comfy.supported_models.models.insert(0, cls)
        added = True
    if added:
        log.info("FlowLoRA tiny stand-ins: UNETLoader now recognises width-%d (latent) and width-%d (pixel-space) Z-Image checkpoints", TINY_ZIMAGE_WIDTH, TINY_PIXEL_ZIMAGE_WIDTH)
    return added


def load_tinyworld():
    """The ``tinyworld`` package beside this one in ``scripts/`` (this folder is symlinked into ComfyUI's custom_nodes)."""
    scripts = str(Path(__file__).resolve().parents[1])
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import tinyworld

    return tinyworld


def content_accuracy(images, prompts: str) -> tuple[float, str]:
    """``(accuracy, summary)`` of an IMAGE batch ``(B, H, W, 3)`` in [0, 1] against B tiny-world prompts, one per line.

    Blank lines are skipped; a leading ``"<trigger>, "`` on a prompt is ignored.
    Accuracy is the share of correct (object, attribute) pairs over shape,
    colour and position (``tinyworld.content``).
    """
    tw = load_tinyworld()
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if len(lines) != images.shape[0]:
        raise ValueError(f"prompts: {len(lines)} non-empty line(s) for {images.shape[0]} image(s); give one tiny-world prompt per image, in batch order")
    scenes = []
    for number, line in enumerate(lines, 1):
        try:
            scenes.append(tw.parse_caption(line))
        except ValueError as e:
            raise ValueError(f"prompts line {number}: {e}") from None
    scores = tw.content.score_images(images, scenes)
    accuracy = tw.accuracy(scores)
    per_attribute = tw.content.attribute_accuracy(scores)
    per_image = [tw.accuracy([image]) for image in scores]
    text = "\n".join([
        f"content accuracy {100 * accuracy:.1f}% over {len(scenes)} image(s), {sum(len(s.objects) for s in scenes)} object(s) (shape, colour, position)",
        "per attribute: " + ", ".join(f"{name} {100 * value:.1f}%" for name, value in per_attribute.items()) + " (size is not in the accuracy)",
        "per image: " + ", ".join(f"{100 * v:.0f}%" for v in per_image),
    ])
    return accuracy, text


_NODE_NAMES = ("TinyTextEncoderLoader", "ContentAccuracy", "TinyExtension", "comfy_entrypoint")


@functools.cache
def _nodes() -> dict:
    """The package's nodes and entry point, defined on first use (needs ComfyUI's ``comfy_api`` importable)."""
    from comfy_api.latest import ComfyExtension, io

    class TinyTextEncoderLoader(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            import folder_paths

            return io.Schema(
                node_id="FlowLoRATinyTextEncoderLoader",
                display_name="Tiny Text Encoder Loader (FlowLoRA demo)",
                category="FlowLoRA/demo",
                description="Demo and tests only: loads the tiny Qwen3 text encoder written by scripts/make_demo_model.py with ComfyUI's own CLIP loading (the stock Load CLIP builds Qwen3-4B at its real size). Use the stock Load CLIP for real models.",
                inputs=[
                    io.Combo.Input("clip_name", options=folder_paths.get_filename_list("text_encoders"), tooltip="Tiny text encoder file in models/text_encoders."),
                    io.Combo.Input("type", options=["lumina2"], default="lumina2", tooltip="lumina2: the Z-Image text encoder, as in the stock Load CLIP."),
                ],
                outputs=[io.Clip.Output(display_name="CLIP")],
            )

        @classmethod
        def execute(cls, clip_name: str, type: str) -> io.NodeOutput:
            import folder_paths

            path = folder_paths.get_full_path_or_raise("text_encoders", clip_name)
            return io.NodeOutput(load_tiny_text_encoder(path, folder_paths.get_folder_paths("embeddings")))

    class ContentAccuracy(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="FlowLoRATinyContentAccuracy",
                display_name="Content Accuracy (FlowLoRA demo)",
                category="FlowLoRA/demo",
                is_output_node=True,
                description="Demo only: checks that each image shows its tiny-world prompt's shapes, colours and positions (analytic: colour masks, connected components, shape moments; no learned judge).",
                inputs=[
                    io.Image.Input("images", tooltip="Samples from a tiny-world model, one per prompt, in the prompts' order."),
                    io.String.Input("prompts", multiline=True, default="", tooltip="The prompts the images were sampled from, one per line, e.g. 'inkstyle, a large red star at the top left on a pale blue background'. A leading trigger word and comma is ignored."),
                ],
                outputs=[
                    io.Float.Output(display_name="accuracy", tooltip="Share of correct (object, attribute) pairs over shape, colour and position, in [0, 1]."),
                    io.String.Output(display_name="summary", tooltip="Accuracy per attribute and per image, in words."),
                ],
            )

        @classmethod
        def execute(cls, images, prompts: str) -> io.NodeOutput:
            accuracy, text = content_accuracy(images, prompts)
            metrics = {"content_accuracy": accuracy, "images": int(images.shape[0])}
            return io.NodeOutput(accuracy, text, ui={"text": [text], "flowlora_metrics": [metrics]})

    class TinyExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            # ComfyUI 0.3.75 calls get_node_list once at start-up and never on_load
            register_tiny_zimage()
            return [TinyTextEncoderLoader, ContentAccuracy]

    async def comfy_entrypoint() -> ComfyExtension:
        return TinyExtension()

    return {name: value for name, value in locals().items() if name in _NODE_NAMES}


def __getattr__(name: str):
    """PEP 562: the nodes exist as soon as ComfyUI's API can be imported, even when this module was
    first imported without it (``make_demo_model`` and the tests read its constants before ComfyUI loads)."""
    if name in _NODE_NAMES:
        try:
            return _nodes()[name]
        except ImportError as e:
            raise AttributeError(f"{name} needs ComfyUI (comfy_api) on sys.path") from e
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
