"""Scene specs of the tiny world, their captions, and the train / held-out split.

A scene is one or two coloured shapes on a plain background, 64 x 64 pixels.
Every scene comes from an integer index through its own seeded
``numpy.random.Generator`` (no global random state), so the world is infinite
and reproducible: ``scene(i)`` is the same on every machine and every call.

Caption grammar (``caption`` writes it, ``parse_caption`` reads it back)::

    caption := [trigger ", "] object [" and " object] " on a " background " background"
    object  := article " " size " " colour " " shape " at the " position
    article := "a"                      (every size word starts with a consonant)

    e.g. "a large red star at the top left on a pale blue background"
         "a small green ring at the bottom right and a large blue cross at the center on a dark grey background"

Held-out split (a rule on content, not on indices, because the same content can
come from many indices): a scene is held out iff the first 8 bytes of the
SHA-256 of its :func:`content_key` (background plus its objects in sorted
order, so "A and B" and "B and A" are one scene), read as a big-endian integer,
are divisible by :data:`HELDOUT_MODULUS`. ``scene(i, "train")`` only ever
returns non-held-out scenes and ``scene(i, "heldout")`` only held-out ones, so
no held-out prompt (nor its mirror order) can appear in training.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

SIZE = 64
"""Image side in pixels."""

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (40, 165, 60),
    "cyan": (20, 180, 170),
    "blue": (30, 100, 225),
    "purple": (145, 40, 175),
    "pink": (240, 105, 185),
}
"""Object colour name -> sRGB: saturated, pairwise > 40 apart in CIELAB (``content.lab``) and > 43 from every background."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "pale blue": (200, 222, 245),
    "pale yellow": (245, 238, 200),
    "pale grey": (218, 218, 218),
    "dark grey": (48, 48, 52),
}
"""Background name -> sRGB: pale or dark, far from every object colour."""

POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
"""3 x 3 grid, row-major: position k sits in row k // 3, column k % 3."""

SIZES: dict[str, float] = {"small": 5.5, "large": 9.0}
"""Size name -> object radius R in pixels (the shape spans about 2R; a grid cell is 64/3 = 21.3)."""

TWO_OBJECT_PROB = 0.5
"""Probability that a scene has two objects (in two different cells)."""

HELDOUT_MODULUS = 8
"""One content key in 8 (12.5%) is held out."""

SPLITS = ("train", "heldout", "any")

_SPLIT_STREAM = {"train": 0, "heldout": 1, "any": 2}
"""Seed stream of each split: ``scene(i, "train")`` and ``scene(i, "heldout")`` are unrelated draws."""

WORLD_SEED = 20240612
"""Root seed of the world; every index seeds ``default_rng([WORLD_SEED, stream, index])``."""


@dataclass(frozen=True)
class SceneObject:
    """One shape: names from :data:`SHAPES`, :data:`COLOURS`, :data:`POSITIONS`, :data:`SIZES`."""

    shape: str
    colour: str
    position: str
    size: str

    def __post_init__(self):
        for field, value, names in (("shape", self.shape, SHAPES), ("colour", self.colour, COLOURS), ("position", self.position, POSITIONS), ("size", self.size, SIZES)):
            if value not in names:
                raise ValueError(f"{field} = {value!r}: not one of {', '.join(names)}")

    @property
    def centre(self) -> tuple[float, float]:
        """``(x, y)`` in pixels (x right, y down; pixel i covers [i, i + 1))."""
        k = POSITIONS.index(self.position)
        cell = SIZE / 3
        return (k % 3 + 0.5) * cell, (k // 3 + 0.5) * cell

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} at the {self.position}"


@dataclass(frozen=True)
class Scene:
    """One or two objects (in caption and drawing order, in distinct cells) on a background."""

    objects: tuple[SceneObject, ...]
    background: str

    def __post_init__(self):
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"objects: {len(self.objects)} given, a scene has 1 or 2")
        if len({o.position for o in self.objects}) != len(self.objects):
            raise ValueError(f"objects: two at the same position {self.objects[0].position!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background = {self.background!r}: not one of {', '.join(BACKGROUNDS)}")


def content_key(scene: Scene) -> str:
    """Order-free description of what the scene shows (equal keys render identical images)."""
    return " | ".join([scene.background, *sorted(o.phrase() for o in scene.objects)])


def is_heldout(scene: Scene) -> bool:
    """The held-out rule of the module docstring."""
    digest = hashlib.sha256(content_key(scene).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_MODULUS == 0


def _draw(rng: np.random.Generator) -> Scene:
    count = 2 if rng.random() < TWO_OBJECT_PROB else 1
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    objects = tuple(
        SceneObject(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            position=POSITIONS[int(cell)],
            size=list(SIZES)[rng.integers(len(SIZES))],
        )
        for cell in cells
    )
    return Scene(objects, list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))])


def scene(index: int, split: str = "train") -> Scene:
    """The scene of ``index`` (any integer >= 0) in ``split`` ("train", "heldout" or "any").

    Draws from ``default_rng([WORLD_SEED, stream(split), index])`` until the scene
    falls in the split (rejection; about 1.1 draws for train, 8 for heldout).
    """
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split = {split!r}: not one of {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError(f"index = {index}: must be >= 0")
    rng = np.random.default_rng([WORLD_SEED, _SPLIT_STREAM[split], int(index)])
    while True:
        s = _draw(rng)
        if split == "any" or is_heldout(s) == (split == "heldout"):
            return s


def caption(scene: Scene, trigger: str | None = None) -> str:
    """The grammar's caption; with a trigger word: ``"<trigger>, <caption>"``."""
    text = " and ".join(o.phrase() for o in scene.objects) + f" on a {scene.background} background"
    return f"{trigger.strip()}, {text}" if trigger and trigger.strip() else text


def _alternatives(names) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_OBJECT = rf"a ({_alternatives(SIZES)}) ({_alternatives(COLOURS)}) ({_alternatives(SHAPES)}) at the ({_alternatives(POSITIONS)})"
_CAPTION = re.compile(rf"^(?:(.+?),\s*)?{_OBJECT}(?: and {_OBJECT})? on a ({_alternatives(BACKGROUNDS)}) background$")


def parse_caption(text: str) -> Scene:
    """Inverse of :func:`caption` (a leading ``"<trigger>, "`` is ignored); ValueError names text that is not in the grammar."""
    match = _CAPTION.match(" ".join(text.strip().lower().split()))
    if match is None:
        raise ValueError(f"caption {text!r} is not in the tiny-world grammar, e.g. {caption(scene(0))!r}")
    groups = match.groups()
    objects = [SceneObject(shape=g[2], colour=g[1], position=g[3], size=g[0]) for g in (groups[1:5], groups[5:9]) if g[0] is not None]
    return Scene(tuple(objects), groups[9])
