"""Feed a prepared :class:`~trainer_core.data.dataset.Dataset` to the loop.

:class:`EpochBatches` walks the dataset epoch by epoch: each epoch is a plan
of within-bucket batches (``Dataset.batches``) drawn from the loop's data
generator, consumed one batch per micro-step. The plan and position are the
resumable state, so a resumed run sees exactly the batches a straight run
would.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .data.dataset import Dataset
from .loop import Batch


class EpochBatches:
    """A :class:`~trainer_core.loop.BatchSource` over a dataset.

    ``latent_transform`` maps stacked raw latents ``(B, C, h, w)`` to the
    model's latent space (ComfyUI: ``model.process_latent_in``).
    The loop's ``batch_size`` must equal the one given here.
    """

    def __init__(self, dataset: Dataset, batch_size: int, latent_transform: Callable[[Tensor], Tensor] = lambda x: x):
        self.dataset = dataset
        self.batch_size = batch_size
        self.latent_transform = latent_transform
        self.epoch = 0
        self.position = 0
        self.plan: list[list[int]] = []

    def steps_per_epoch(self) -> int:
        """Micro-batches in one epoch (partial last batches of a bucket count)."""
        return len(self.dataset.batches(self.batch_size, torch.Generator().manual_seed(0)))

    def next_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        if batch_size != self.batch_size:
            raise ValueError(f"batch_size {batch_size} differs from the {self.batch_size} these batches were planned for")
        if self.position >= len(self.plan):
            self.plan = self.dataset.batches(self.batch_size, generator)
            self.position = 0
            self.epoch += 1
        indices = self.plan[self.position]
        self.position += 1
        batch = self.dataset.collate(indices, generator)
        return Batch(self.latent_transform(batch.latents), list(batch.conditionings), [str(s) for s in batch.sources])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "plan": [list(b) for b in self.plan]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.plan = [list(b) for b in state["plan"]]
