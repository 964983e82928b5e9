"""A tiny procedural world for demos: 64 x 64 scenes of coloured shapes, their captions and metrics.

Demo tooling, not the pack's runtime. Everything is deterministic from an integer index.

- :mod:`.world`: scene specs (:class:`Scene`), the caption grammar, the train / held-out split.
- :mod:`.shapes`: signed distance fields of the shapes.
- :mod:`.styles`: the looks ("plain", "ink", "mosaic").
- :mod:`.render`: scene -> uint8 image, index batches -> (images, captions), ComfyUI IMAGE.
- :mod:`.content`: analytic content accuracy (shape, colour, position of each object).
- :mod:`.make_style_sets`: writes the captioned style sets and their held-out prompts.
- :mod:`.schedule`: the pretraining learning-rate schedule (warm-up, linear decay).
- :mod:`.report`: measures render speed, content accuracy on ground truth and style-score separation.
"""

from .content import ATTRIBUTES, ObjectScore, accuracy, score_image, score_images
from .render import batch, render, to_comfy
from .styles import STYLES, TRIGGERS
from .world import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    caption,
    content_key,
    is_heldout,
    parse_caption,
    scene,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "STYLES",
    "TRIGGERS",
    "ObjectScore",
    "Scene",
    "SceneObject",
    "accuracy",
    "batch",
    "caption",
    "content_key",
    "is_heldout",
    "parse_caption",
    "render",
    "scene",
    "score_image",
    "score_images",
    "to_comfy",
]
