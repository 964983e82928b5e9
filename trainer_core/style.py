"""Style statistics: how close a batch of images is to a reference set's look.

Pure maths (torch), no ComfyUI. Images follow ComfyUI's IMAGE convention:
float ``(B, H, W, C)`` in [0, 1], C = 3 (C = 4 drops alpha, C = 1 is grey).

**Features.** Each image is resized to ``size x size`` (bilinear, antialiased)
and mapped to one vector, the concatenation of five weighted groups:

- ``palette``: coarse RGB histogram, ``bins^3`` cells (4^3 = 64);
- ``gradients``: histogram of luminance gradient magnitude over
  :data:`GRADIENT_EDGES` (flat, soft, edge, hard-edge pixels);
- ``orientation``: gradient energy (magnitude^2) in 4 orientation bins
  (0, 45, 90, 135 degrees, modulo 180);
- ``high_frequency``: share of the luminance variance that a 3 x 3 box blur
  removes, in [0, 1];
- ``contrast``: mean local standard deviation of luminance in 5 x 5 windows, x 2
  (about [0, 1]).

Histograms enter as square roots of their shares (Hellinger embedding) divided
by sqrt(2), so every group's distance lies in [0, 1] before its weight. The
**style distance** between two feature vectors is their Euclidean distance.

**Reference.** :class:`StyleReference` holds the mean feature vector of a set
of reference images; ``reference.distance(images)`` is each image's distance to
that mean.

**Style score** (:func:`style_score`). Given a baseline reference ``P`` (e.g.
images in the plain look) and a target reference ``S`` (the style set), an
image's score is the position of its features ``f`` along the segment from
P's mean ``p`` to S's mean ``s``:

    score(f) = <f - p, s - p> / |s - p|^2

0 at the baseline's mean, 1 at the style set's mean, linear in ``f`` (so the
score of a batch's mean features is the mean of the images' scores); images
beyond either end score below 0 or above 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.errors import DataError
from .data.images import IMAGE_EXTENSIONS, load_rgb
from .errors import ConfigError, require

GROUPS = ("palette", "gradients", "orientation", "high_frequency", "contrast")
GRADIENT_EDGES = (0.01, 0.03, 0.06, 0.12, 0.25)
"""Inner edges of the gradient-magnitude histogram (luminance units per pixel at the working size): 6 bins."""
ORIENTATIONS = 4
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class StyleConfig:
    """Working size, palette resolution and group weights of the style features."""

    size: int = 64
    palette_bins: int = 4
    palette: float = 1.0
    gradients: float = 1.0
    orientation: float = 1.0
    high_frequency: float = 1.0
    contrast: float = 1.0

    def __post_init__(self):
        require(isinstance(self.size, int) and 8 <= self.size <= 4096, "size", self.size, "must be an integer in [8, 4096]")
        require(isinstance(self.palette_bins, int) and 2 <= self.palette_bins <= 16, "palette_bins", self.palette_bins, "must be an integer in [2, 16]")
        for group in GROUPS:
            value = getattr(self, group)
            require(math.isfinite(value) and value >= 0, group, value, "weight must be finite and >= 0")
        require(any(getattr(self, g) > 0 for g in GROUPS), "weights", {g: getattr(self, g) for g in GROUPS}, "at least one group needs a weight > 0")

    def group_sizes(self) -> dict[str, int]:
        """Length of each group in the feature vector, in order."""
        return {"palette": self.palette_bins**3, "gradients": len(GRADIENT_EDGES) + 1, "orientation": ORIENTATIONS, "high_frequency": 1, "contrast": 1}


def as_images(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``(B, H, W, C)`` or one ``(H, W, C)`` -> float64 ``(B, 3, H, W)`` in [0, 1]; ConfigError for other shapes."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise ConfigError("images", tuple(images.shape), "must be a non-empty IMAGE batch (B, H, W, 3)")
    x = images.detach().to("cpu", torch.float64)[..., :3]
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    return x.clamp(0.0, 1.0).permute(0, 3, 1, 2)


def _sqrt_shares(counts: torch.Tensor) -> torch.Tensor:
    total = counts.sum(dim=1, keepdim=True)
    shares = torch.where(total > 0, counts / total.clamp_min(1e-12), torch.full_like(counts, 1.0 / counts.shape[1]))
    return shares.sqrt() / math.sqrt(2.0)


def features(images: torch.Tensor, config: StyleConfig = StyleConfig()) -> torch.Tensor:
    """Style feature vectors float64 ``(B, D)`` of an IMAGE batch ``(B, H, W, C)`` in [0, 1]; D = sum of ``config.group_sizes()``."""
    x = as_images(images)
    b, s = x.shape[0], config.size
    if x.shape[-2:] != (s, s):
        x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False).clamp(0.0, 1.0)
    n = config.palette_bins
    cells = (x * n).long().clamp(0, n - 1)
    index = (cells[:, 0] * n + cells[:, 1]) * n + cells[:, 2]
    palette = torch.zeros(b, n**3, dtype=torch.float64).scatter_add_(1, index.reshape(b, -1), torch.ones(b, s * s, dtype=torch.float64))

    luma = torch.einsum("bchw,c->bhw", x, torch.tensor(LUMA, dtype=torch.float64))
    gx = (luma[:, 1:-1, 2:] - luma[:, 1:-1, :-2]) / 2
    gy = (luma[:, 2:, 1:-1] - luma[:, :-2, 1:-1]) / 2
    magnitude = torch.hypot(gx, gy).reshape(b, -1)
    bins = torch.bucketize(magnitude, torch.tensor(GRADIENT_EDGES, dtype=torch.float64))
    gradients = torch.zeros(b, len(GRADIENT_EDGES) + 1, dtype=torch.float64).scatter_add_(1, bins, torch.ones_like(magnitude))
    angle = torch.remainder(torch.atan2(gy, gx).reshape(b, -1), math.pi)
    sector = (torch.floor(angle / (math.pi / ORIENTATIONS) + 0.5).long()) % ORIENTATIONS
    orientation = torch.zeros(b, ORIENTATIONS, dtype=torch.float64).scatter_add_(1, sector, magnitude**2)

    lum = luma[:, None]
    blurred = F.avg_pool2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    variance = ((lum - lum.mean(dim=(2, 3), keepdim=True)) ** 2).sum(dim=(1, 2, 3))
    high = ((lum - blurred) ** 2).sum(dim=(1, 2, 3)) / variance.clamp_min(1e-12)
    high = torch.where(variance > 1e-12, high.clamp(0.0, 1.0), torch.zeros_like(high))
    padded = F.pad(lum, (2, 2, 2, 2), mode="replicate")
    mean, mean_sq = F.avg_pool2d(padded, 5, stride=1), F.avg_pool2d(padded**2, 5, stride=1)
    contrast = 2 * (mean_sq - mean**2).clamp_min(0).sqrt().mean(dim=(1, 2, 3))

    parts = {
        "palette": _sqrt_shares(palette),
        "gradients": _sqrt_shares(gradients),
        "orientation": _sqrt_shares(orientation),
        "high_frequency": high[:, None],
        "contrast": contrast[:, None],
    }
    return torch.cat([getattr(config, g) * parts[g] for g in GROUPS], dim=1)


def features_of(images: Iterable[torch.Tensor] | torch.Tensor, config: StyleConfig = StyleConfig()) -> torch.Tensor:
    """:func:`features` of an IMAGE batch, or of images of different sizes (each ``(H, W, C)`` or ``(1, H, W, C)``) one by one."""
    if isinstance(images, torch.Tensor):
        return features(images, config)
    rows = [features(image, config) for image in images]
    if not rows:
        raise ConfigError("images", "none", "give at least one image")
    return torch.cat(rows)


@dataclass(frozen=True)
class StyleReference:
    """Mean style features of a reference set.

    ``mean`` float64 ``(D,)``; ``spread``: RMS distance of the references to
    their mean (how varied the set is, in distance units); ``count`` images.
    """

    mean: torch.Tensor
    spread: float
    count: int
    config: StyleConfig

    @classmethod
    def from_features(cls, feats: torch.Tensor, config: StyleConfig) -> StyleReference:
        mean = feats.mean(dim=0)
        spread = float(((feats - mean) ** 2).sum(dim=1).mean().sqrt())
        return cls(mean, spread, int(feats.shape[0]), config)

    @classmethod
    def from_images(cls, images: Iterable[torch.Tensor] | torch.Tensor, config: StyleConfig = StyleConfig()) -> StyleReference:
        """From an IMAGE batch ``(B, H, W, C)`` or an iterable of images of any sizes."""
        return cls.from_features(features_of(images, config), config)

    @classmethod
    def from_folder(cls, folder: str | Path, config: StyleConfig = StyleConfig()) -> StyleReference:
        """From every image in ``folder`` and its subfolders (see :func:`folder_images`)."""
        return cls.from_images(folder_images(folder), config)

    def distance(self, images: torch.Tensor) -> torch.Tensor:
        """Style distance ``(B,)`` of each image of an IMAGE batch to the reference mean."""
        return torch.linalg.vector_norm(features(images, self.config) - self.mean, dim=1)

    def describe(self) -> dict:
        return {"count": self.count, "spread": self.spread, "config": asdict(self.config)}


def style_score(images: torch.Tensor, baseline: StyleReference, target: StyleReference) -> torch.Tensor:
    """Score ``(B,)`` of each image: 0 at ``baseline``'s mean, 1 at ``target``'s (module docstring)."""
    if baseline.config != target.config:
        raise ConfigError("baseline", asdict(baseline.config), f"was built with other feature settings than the target ({asdict(target.config)}); build both with one StyleConfig")
    axis = target.mean - baseline.mean
    length = float(axis @ axis)
    if length <= 1e-18:
        raise ConfigError("target", "same features as the baseline", "the two reference sets look identical to the style features, so no score axis exists")
    return (features(images, target.config) - baseline.mean) @ axis / length


def folder_images(folder: str | Path) -> list[torch.Tensor]:
    """Every png/jpg/jpeg/webp below ``folder`` (hidden files and folders skipped), sorted by path, as ``(1, H, W, 3)`` float in [0, 1].

    Raises :class:`~trainer_core.data.errors.DataError` naming the folder when
    it is missing or holds no image, or naming a file that cannot be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(root, "is not a folder", "give a folder of reference images")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise DataError(root, f"holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images", "put the reference images in this folder")
    return [torch.from_numpy(np.asarray(load_rgb(p), dtype=np.float32) / 255.0)[None] for p in paths]


def summary(distances: torch.Tensor, reference: StyleReference, scores: torch.Tensor | None = None) -> str:
    """One paragraph for people: batch size, distance mean / min / max, and scores when given."""
    d = distances.double()
    lines = [
        f"{d.numel()} image(s) vs {reference.count} reference image(s) (spread {reference.spread:.4f}):",
        f"style distance mean {float(d.mean()):.4f}, min {float(d.min()):.4f}, max {float(d.max()):.4f}",
    ]
    if scores is not None:
        s = scores.double()
        lines.append(f"style score (0 = baseline, 1 = reference) mean {float(s.mean()):.3f}, min {float(s.min()):.3f}, max {float(s.max()):.3f}")
    return "\n".join(lines)


def per_image(values: Sequence[float] | torch.Tensor, digits: int = 4) -> str:
    """Values as one comma-separated line (per-image listing in summaries)."""
    return ", ".join(f"{float(v):.{digits}f}" for v in values)
