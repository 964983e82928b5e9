"""Analytic content accuracy: are the caption's shapes, colours and positions in the image?

No learned judge. For one image ``(64, 64, 3)`` (uint8, or float in [0, 1]) and the
:class:`~tinyworld.world.Scene` it should show:

1. Colours go to CIELAB (D65). The background colour is the median of the
   2-pixel border; a pixel is foreground when it is more than
   :data:`FOREGROUND_DELTA_E` from it (grain, paper and mortar joints are not).
2. Foreground pixels form 8-connected components; components under
   :data:`MIN_AREA` pixels are noise. The scene's N objects are matched to the N
   largest components, in the assignment that gets the most attributes right.
3. Per component:
   - colour: the median Lab of its most chromatic third (so ink lines, mortar
     and antialiased edges do not count), named by the nearest entry of
     :data:`world.COLOURS` in Lab;
   - position: the cell of the 3 x 3 grid that holds its centroid;
   - shape: the nearest prototype in (box fill, solidity, hole share, flip
     symmetry), where box fill = area / bounding-box area, solidity = area /
     convex-hull area, hole share = enclosed background / filled area (a
     ring's hole) and flip symmetry = IoU with the upside-down mask; the
     prototypes are those features of each shape's own clean plain render at
     each size (:func:`prototypes`);
   - size: "large" when the bounding box's long side is at least :data:`LARGE_EXTENT` pixels.

An object whose component is missing gets every attribute wrong. Content
accuracy (:func:`accuracy`) is the share of correct (object, attribute) pairs
over :data:`ATTRIBUTES` (shape, colour, position); size is scored but left out
by default.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .world import COLOURS, POSITIONS, SHAPES, SIZE, SIZES, Scene, SceneObject

ATTRIBUTES = ("shape", "colour", "position")
"""Attributes :func:`accuracy` counts by default."""

FOREGROUND_DELTA_E = 28.0
"""CIELAB distance from the background above which a (smoothed) pixel seeds an object."""
SMOOTH_SIGMA = 0.6
"""Gaussian (pixels) on the background-distance map: tolerates pixel noise in samples."""
HALF_CONTRAST = 0.5
EIGHT = np.ones((3, 3), bool)
MIN_AREA = 8
BORDER = 2
LARGE_EXTENT = 14
FEATURE_WEIGHTS = (1.0, 1.0, 2.0, 1.0)
"""Weights of (box fill, solidity, hole share, flip symmetry) in the prototype distance."""
VIVID_SHARE = 1 / 3
"""Share of a component's pixels, the most chromatic, whose median Lab names its colour."""


def lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``(..., 3)`` in [0, 1] -> CIELAB ``(..., 3)`` (D65 white, L in [0, 100])."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_NAMES = list(COLOURS)
_NAMED_LAB = lab(np.array([COLOURS[n] for n in _NAMES]) / 255.0)


def name_colour(lab_colour: np.ndarray) -> str:
    """Nearest :data:`world.COLOURS` name to a Lab colour (3,)."""
    return _NAMES[int(np.argmin(np.linalg.norm(_NAMED_LAB - lab_colour, axis=-1)))]


def position_of(x: float, y: float) -> str:
    """Grid cell name of a point in pixels (x right, y down)."""
    cell = SIZE / 3
    col, row = (min(max(int(v // cell), 0), 2) for v in (x, y))
    return POSITIONS[3 * row + col]


def hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the pixel squares of a boolean mask (pixel units)."""
    rows = np.flatnonzero(mask.any(axis=1))
    left = np.array([np.flatnonzero(mask[r])[0] for r in rows])
    right = np.array([np.flatnonzero(mask[r])[-1] + 1 for r in rows])
    points = np.concatenate([np.stack([left, rows], 1), np.stack([left, rows + 1], 1), np.stack([right, rows], 1), np.stack([right, rows + 1], 1)])
    points = np.unique(points, axis=0)  # sorted by x then y
    if len(points) < 3:
        return 0.0

    def half(pts):
        chain: list = []
        for p in pts:
            while len(chain) >= 2 and (chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1]) - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0]) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    hull = np.array(half(points)[:-1] + half(points[::-1])[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass(frozen=True)
class Detection:
    """One foreground component: its measurements and the attribute names they read as."""

    area: int
    centroid: tuple[float, float]
    """(x, y) in pixels."""
    features: tuple[float, float, float, float]
    """(box fill, solidity, hole share, flip symmetry): :func:`shape_features`."""
    shape: str
    colour: str
    position: str
    size: str

    def attribute(self, name: str) -> str:
        return getattr(self, name)


def shape_features(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(box fill, solidity, hole share, flip symmetry) of one component's boolean mask ``(H, W)``.

    Flip symmetry is the IoU of the mask's bounding box with its upside-down
    copy: 1 for circle, square, ring and cross; low for the apex-up triangle
    and star.
    """
    area = float(mask.sum())
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    filled = float(ndimage.binary_fill_holes(crop).sum())
    flipped = crop[::-1]
    symmetry = float((crop & flipped).sum() / (crop | flipped).sum())
    return area / crop.size, area / max(hull_area(crop), area), (filled - area) / filled, symmetry


def classify_shape(features: tuple[float, float, float, float]) -> str:
    """Nearest prototype (any size) in :data:`FEATURE_WEIGHTS`-weighted :func:`shape_features`."""
    scale = np.array(FEATURE_WEIGHTS)
    best = min(prototypes().items(), key=lambda item: float(np.linalg.norm((np.array(item[1]) - features) * scale)))
    return best[0][0]


PROTOTYPE_BLURS = (0.0, 1.0)
"""Gaussian blurs (sigma, pixels) of the renders the shape prototypes are measured on (sharp, and soft as samples often are)."""
PROTOTYPE_POSITIONS = ("top left", "center", "bottom right")
"""Cells whose centres sit at the three sub-pixel phases of the grid (x.67, x.0, x.33)."""


@functools.cache
def prototypes() -> dict[tuple[str, str, float, str], tuple[float, float, float, float]]:
    """``(shape, size, blur, position) -> shape_features`` of the shape's plain render on a pale background, blurred by ``blur``."""
    from .render import render  # local import: render does not need this module, and prototypes are only built on first use

    out = {}
    for shape, size, blur, position in itertools.product(SHAPES, SIZES, PROTOTYPE_BLURS, PROTOTYPE_POSITIONS):
        image = render(Scene((SceneObject(shape, "blue", position, size),), "pale grey")) / 255.0
        if blur:
            image = ndimage.gaussian_filter(image, (blur, blur, 0))
        (mask,) = segment(lab(image), 1)
        out[shape, size, blur, position] = shape_features(mask)
    return out


def segment(lab_image: np.ndarray, count: int) -> list[np.ndarray]:
    """Boolean masks ``(H, W)`` of the ``count`` largest objects of a Lab image (fewer if fewer are found), largest first.

    Seeds: 8-connected components (>= :data:`MIN_AREA` px) where the background
    distance, smoothed by a Gaussian of :data:`SMOOTH_SIGMA`, exceeds
    :data:`FOREGROUND_DELTA_E`. Each seed's mask is then its half-contrast
    contour: pixels within 2 px of the seed (and not in another seed) whose
    smoothed distance exceeds :data:`HALF_CONTRAST` x the seed's unsmoothed
    90th-percentile distance, largest connected piece. The half-contrast contour stays put
    when a sample is blurred, where a fixed threshold would grow the shape.
    """
    border = np.concatenate([lab_image[:BORDER].reshape(-1, 3), lab_image[-BORDER:].reshape(-1, 3), lab_image[:, :BORDER].reshape(-1, 3), lab_image[:, -BORDER:].reshape(-1, 3)])
    distance = np.linalg.norm(lab_image - np.median(border, axis=0), axis=-1)
    smooth = ndimage.gaussian_filter(distance, SMOOTH_SIGMA)
    labels, n = ndimage.label(smooth > FOREGROUND_DELTA_E, structure=EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    seeds = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= MIN_AREA][:count]
    masks = []
    for k in seeds:
        seed = labels == k
        region = ndimage.binary_dilation(seed, EIGHT, iterations=2) & ((labels == 0) | seed)
        refined = region & (smooth > HALF_CONTRAST * np.percentile(distance[seed], 90))
        pieces, m = ndimage.label(refined, structure=EIGHT)
        if m == 0:
            masks.append(seed)
            continue
        masks.append(pieces == 1 + int(np.argmax(np.bincount(pieces.ravel(), minlength=m + 1)[1:])))
    return masks


def _as_float(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image shape {image.shape}: expected (H, W, 3)")
    return image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


def detect(image, count: int) -> list[Detection]:
    """The ``count`` largest objects of one image ``(H, W, 3)`` (fewer if fewer are found), largest first."""
    lab_image = lab(np.clip(_as_float(image), 0.0, 1.0))
    out = []
    for mask in segment(lab_image, count):
        ys, xs = np.nonzero(mask)
        pixels = lab_image[mask]
        chroma = np.hypot(pixels[:, 1], pixels[:, 2])
        vivid = pixels[chroma >= np.quantile(chroma, 1 - VIVID_SHARE)]
        features = shape_features(mask)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
        out.append(Detection(
            area=int(mask.sum()), centroid=(cx, cy), features=features, shape=classify_shape(features),
            colour=name_colour(np.median(vivid, axis=0)), position=position_of(cx, cy), size="large" if extent >= LARGE_EXTENT else "small",
        ))
    return out


SCORED = ("shape", "colour", "position", "size")


@dataclass(frozen=True)
class ObjectScore:
    """One expected object, the detection matched to it (None: nothing found) and which attributes agree."""

    expected: SceneObject
    detected: Detection | None
    correct: dict[str, bool] = field(default_factory=dict)


def _match(obj: SceneObject, det: Detection | None) -> dict[str, bool]:
    return {a: det is not None and det.attribute(a) == getattr(obj, a) for a in SCORED}


def score_image(image, scene: Scene) -> list[ObjectScore]:
    """Score each of ``scene``'s objects in ``image`` ``(H, W, 3)``; the best one-to-one matching of objects to detections."""
    found = detect(image, len(scene.objects))
    found += [None] * (len(scene.objects) - len(found))
    best = max(
        itertools.permutations(found),
        key=lambda dets: sum(sum(_match(o, d)[a] for a in ATTRIBUTES) for o, d in zip(scene.objects, dets, strict=True)),
    )
    return [ObjectScore(o, d, _match(o, d)) for o, d in zip(scene.objects, best, strict=True)]


def score_images(images, scenes: list[Scene]) -> list[list[ObjectScore]]:
    """:func:`score_image` over a batch: ``images`` (B, H, W, 3) uint8 or float in [0, 1] (numpy or a torch IMAGE)."""
    images = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes: give one scene (prompt) per image")
    return [score_image(image, s) for image, s in zip(images, scenes, strict=True)]


def accuracy(scores: list[list[ObjectScore]], attributes: tuple[str, ...] = ATTRIBUTES) -> float:
    """Share of correct (object, attribute) pairs over all images' objects."""
    flags = [o.correct[a] for image in scores for o in image for a in attributes]
    return float(np.mean(flags)) if flags else float("nan")


def attribute_accuracy(scores: list[list[ObjectScore]]) -> dict[str, float]:
    """Accuracy of each scored attribute alone (shape, colour, position, size)."""
    return {a: accuracy(scores, (a,)) for a in SCORED}


def by_object_count(scores: list[list[ObjectScore]]) -> dict[str, dict[str, float]]:
    """:func:`attribute_accuracy` of the one-object and of the two-object images apart (keys ``"1"`` and ``"2"``).

    Separates drawing from binding: a model that draws one object's colour right but, given two, paints one's
    colour on the other (attribute binding) is right far more often on one-object images.
    """
    groups: dict[str, list[list[ObjectScore]]] = {}
    for image in scores:
        groups.setdefault(str(len(image)), []).append(image)
    return {count: attribute_accuracy(groups[count]) for count in sorted(groups)}


def _attribute_table(header: str, rows: dict[str, dict[str, float]]) -> str:
    """Markdown: first column ``header`` (the row labels), then one percentage column per :data:`SCORED` attribute."""
    lines = [f"| {header} | " + " | ".join(SCORED) + " |", "|---" * (len(SCORED) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{100 * row[a]:.1f}%" for a in SCORED) + " |" for label, row in rows.items()]
    return "\n".join(lines)


def by_object_count_markdown(table: dict[str, dict[str, float]]) -> str:
    """A :func:`by_object_count` table as Markdown: one row per object count, one column per attribute."""
    return _attribute_table("objects in the scene", table)


BINDING_NOTE = (
    "Per attribute, images of one object against images of two. An attribute right alone but wrong beside a second "
    "object is a binding failure (the model mixes up which colour, shape or size the caption gives which object), "
    "not a failure to draw it."
)
"""How to read a :func:`by_object_count_markdown` table (the model cards print it above the table)."""


def by_size(scores: list[list[ObjectScore]]) -> dict[str, dict[str, float]]:
    """:func:`attribute_accuracy` per object, grouped by the number of objects in its scene and the size its caption asks
    for (keys ``"1 large"``, ``"1 small"``, ``"2 large"``, ``"2 small"``; only those present).

    Separates drawing small from drawing large: a shape right at the large size but wrong at the small one is a
    failure of resolution, not of reading the caption.
    """
    groups: dict[str, list[list[ObjectScore]]] = {}
    for image in scores:
        for o in image:
            groups.setdefault(f"{len(image)} {o.expected.size}", []).append([o])
    return {key: attribute_accuracy(groups[key]) for key in sorted(groups)}


def by_size_markdown(table: dict[str, dict[str, float]]) -> str:
    """A :func:`by_size` table as Markdown: one row per (object count, size asked for), one column per attribute."""
    return _attribute_table("objects in the scene, size asked for", {key.replace(" ", ", ", 1): row for key, row in table.items()})


SIZE_NOTE = (
    "Per attribute, objects by the size their caption asks for (object radius: "
    + ", ".join(f"{name} {radius:g} px" for name, radius in SIZES.items())
    + "; generation tokens are 8 px). A shape right when large but wrong when small is a failure of resolution, "
    "not of reading the caption."
)
"""How to read a :func:`by_size_markdown` table (the model cards print it above the table)."""


MISSING = "missing"
"""What :func:`confusion` counts an object as when no component was matched to it."""


def confusion(scores: list[list[ObjectScore]], attribute: str = "shape") -> dict[str, dict[str, int]]:
    """``{expected: {read as: count}}`` of one attribute over all images' objects (:data:`MISSING`: nothing detected).

    Shows *how* an attribute fails: a model that draws ragged blobs for every shape
    is read mostly as "star" (low solidity), which a bare accuracy does not reveal.
    """
    table: dict[str, dict[str, int]] = {}
    for image in scores:
        for o in image:
            found = o.detected.attribute(attribute) if o.detected else MISSING
            row = table.setdefault(getattr(o.expected, attribute), {})
            row[found] = row.get(found, 0) + 1
    return table


CONFUSION_NOTE = (
    "Rows are the shape the prompt asked for, columns what `tinyworld.content` reads the drawn object as. A ragged blob "
    "has a low solidity, so it reads as a star whatever was asked for: a high count in the star column is a blob count, "
    "not skill at stars."
)
"""How to read a :func:`confusion_markdown` table of shapes (the model cards print it above the table)."""


def confusion_markdown(table: dict[str, dict[str, int]], names: tuple[str, ...] = SHAPES) -> str:
    """A :func:`confusion` table as Markdown: one row per expected value, one column per reading (then :data:`MISSING`)."""
    columns = [*names, MISSING]
    lines = ["| asked for → read as | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        row = table.get(name, {})
        lines.append(f"| {name} | " + " | ".join(str(row.get(c, 0)) for c in columns) + " |")
    return "\n".join(lines)
