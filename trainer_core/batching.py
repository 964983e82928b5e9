"""Feed a prepared :class:`~trainer_core.data.dataset.Dataset` to the loop.

:class:`EpochBatches` walks the dataset epoch by epoch: each epoch is a plan
of within-bucket batches (``Dataset.batches``) drawn from the loop's data
generator, consumed one batch per micro-step. The plan and position are the
resumable state, so a resumed run sees exactly the batches a straight run
would.

Resuming on a changed dataset: the state also records how many samples the
plan was drawn for. If the dataset now has a different number of samples (or
the plan names an index it no longer has), the rest of the saved epoch is
dropped with a warning and the next batch starts a new epoch, planned from the
saved data generator as usual. This is deterministic (the same resume gives the
same run) but is not the straight run of either dataset; with an unchanged
sample count the saved plan is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from .data.dataset import Dataset
from .loop import Batch

log = logging.getLogger(__name__)


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
        return {"epoch": self.epoch, "position": self.position, "plan": [list(b) for b in self.plan], "samples": len(self.dataset.samples)}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` left off; on a changed dataset, start a new epoch (module docstring)."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.plan = [list(b) for b in state["plan"]]
        count = len(self.dataset.samples)
        saved = state.get("samples")
        out_of_range = any(i >= count for b in self.plan for i in b)
        if (saved is not None and int(saved) != count) or out_of_range:
            log.warning(
                "the dataset has %d samples, the saved state planned epoch %d for %s: the rest of that epoch is dropped and the next batch "
                "starts epoch %d (a new plan); the run goes on but differs from a straight run",
                count, self.epoch, saved if saved is not None else "more", self.epoch + 1,
            )
            self.plan, self.position = [], 0
