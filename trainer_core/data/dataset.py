"""The prepared dataset the trainer consumes, and batches drawn within one bucket.

A :class:`Dataset` holds encoded samples only (latents and conditioning), so
training never touches the VAE or text encoder. Each :class:`Sample` keeps the
image's source path, so an error during training can name the image.

Batches (:meth:`Dataset.batches`, then :meth:`Dataset.collate`) never mix
buckets, so latents stack to ``(B, C, h, w)``. Every random draw comes from the
``torch.Generator`` passed in: same seed, same batches, same dropout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import require
from .buckets import Bucket


@dataclass(frozen=True)
class Sample:
    """One image, encoded.

    ``latent``: the VAE output for this image without the batch dimension,
    float32 on the CPU, e.g. ``(C, h, w)`` = ``(16, H/8, W/8)`` for Flux/Z-Image,
    ``(3, H, W)`` for the pixel-space VAE. It is the raw ``VAE.encode`` result
    (ComfyUI's LATENT ``samples``): the model's latent format (scale/shift) is
    not applied. ``conditioning`` indexes :attr:`Dataset.conditionings`.
    ``repeats`` is how often the image counts per epoch (kohya ``N_name``).
    """

    source: Path
    bucket: Bucket
    latent: Tensor
    prompt: str
    conditioning: int
    think: str | None = None
    repeats: int = 1
    original_size: tuple[int, int] = (0, 0)
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    """``(left, top, resized_w, resized_h)``: where the bucket was cut from the resized image."""


@dataclass(frozen=True)
class Batch:
    """Samples of one bucket, ready for a training step.

    ``latents``: ``(B, C, h, w)`` float32 (CPU). ``conditionings``: one per
    sample, the encoder's result (for ComfyUI a CONDITIONING,
    ``[[cond (1, T, D), {...}]]``), the empty-prompt one where ``dropped``.
    ``dropped``: ``(B,)`` bool, caption dropout. ``indices`` index
    :attr:`Dataset.samples`; ``sources`` are their image paths.
    """

    latents: Tensor
    conditionings: tuple[Any, ...]
    dropped: Tensor
    indices: tuple[int, ...]
    sources: tuple[Path, ...]
    prompts: tuple[str, ...]
    bucket: Bucket


@dataclass(frozen=True)
class Dataset:
    """Encoded samples plus what the trainer needs around them.

    ``conditionings`` holds each distinct prompt's encoding once;
    ``empty_conditioning`` is the empty prompt's (caption dropout here, and the
    trainer's condition dropout). ``skipped`` lists ``(path, reason)`` of files
    left out. ``settings`` is JSON-ready (for LoRA metadata). ``stats`` counts
    encoder calls and cache hits of the preparation that built it.
    """

    samples: tuple[Sample, ...]
    conditionings: tuple[Any, ...]
    empty_conditioning: Any
    caption_dropout: float = 0.0
    skipped: tuple[tuple[str, str], ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        require(len(self.samples) > 0, "dataset", "empty", "needs at least one sample")
        require(0.0 <= self.caption_dropout <= 1.0, "caption_dropout", self.caption_dropout, "must lie in [0, 1]")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch_length(self) -> int:
        """Samples per epoch, repeats counted."""
        return sum(s.repeats for s in self.samples)

    def bucket_counts(self, with_repeats: bool = True) -> dict[Bucket, int]:
        """Samples per bucket (repeats counted unless ``with_repeats`` is False), by aspect."""
        counts: dict[Bucket, int] = {}
        for s in self.samples:
            counts[s.bucket] = counts.get(s.bucket, 0) + (s.repeats if with_repeats else 1)
        return dict(sorted(counts.items(), key=lambda kv: (kv[0].aspect, kv[0].width)))

    def batches(self, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = False) -> list[list[int]]:
        """One epoch as lists of sample indices, each list within one bucket.

        Every sample appears ``repeats`` times. With ``shuffle`` the indices are
        permuted within each bucket and then the batches are permuted, all from
        ``generator``; without, the order is sample order. ``drop_last`` drops
        each bucket's incomplete last batch.
        """
        require(batch_size >= 1, "batch_size", batch_size, "must be >= 1")
        groups: dict[Bucket, list[int]] = {}
        for i, s in enumerate(self.samples):
            groups.setdefault(s.bucket, []).extend([i] * s.repeats)
        batches: list[list[int]] = []
        for bucket in sorted(groups, key=lambda b: (b.aspect, b.width)):
            members = groups[bucket]
            if shuffle:
                members = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                if len(chunk) == batch_size or not drop_last:
                    batches.append(chunk)
        if shuffle:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def iterate(self, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = False) -> Iterator[Batch]:
        """Endless stream of collated batches, epoch after epoch, from one generator."""
        while True:
            epoch = self.batches(batch_size, generator, shuffle, drop_last)
            require(len(epoch) > 0, "batch_size", batch_size, f"drop_last leaves no batch: no bucket holds {batch_size} samples")
            for indices in epoch:
                yield self.collate(indices, generator)

    def collate(self, indices: list[int], generator: torch.Generator) -> Batch:
        """Stack one bucket's samples; draw caption dropout (``B`` uniforms, always)."""
        samples = [self.samples[i] for i in indices]
        buckets = {s.bucket for s in samples}
        require(len(buckets) == 1, "batch", sorted(b.label for b in buckets), "mixes buckets; draw batches with Dataset.batches")
        dropped = torch.rand(len(samples), generator=generator, dtype=torch.float64) < self.caption_dropout
        conds = tuple(self.empty_conditioning if d else self.conditionings[s.conditioning] for s, d in zip(samples, dropped.tolist(), strict=True))
        return Batch(
            latents=torch.stack([s.latent for s in samples]),
            conditionings=conds,
            dropped=dropped,
            indices=tuple(indices),
            sources=tuple(s.source for s in samples),
            prompts=tuple("" if d else s.prompt for s, d in zip(samples, dropped.tolist(), strict=True)),
            bucket=samples[0].bucket,
        )
