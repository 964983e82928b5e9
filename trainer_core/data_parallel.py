"""Data-parallel training over torch.distributed (DDP semantics): the rule every rank follows.

The batch rule. ``batch_size`` per rank ``b`` and ``W`` ranks make a global batch of
``B = W * b``. Every rank draws each micro-batch exactly as one process training with
batch ``B`` would: the data plan, condition-dropout routes, timesteps and noise of the
whole global batch come from the same four seeded streams (:mod:`.loop`), so all ranks
advance their streams identically and the resumable state of rank 0 is the state of the
run. Rank ``r`` then trains rows ``[floor(r * n / W), floor((r + 1) * n / W))`` of the
``n`` rows drawn (contiguous blocks: ``b`` rows each for a full batch; a short last batch
of a bucket gives some ranks fewer rows, possibly none). Drawing the whole global batch
costs a ``(B, C, H, W)`` noise tensor per rank, small next to a forward pass.

Gradients. Each rank scales its rows' mean loss by ``n_r * W / n`` and the gradients are
summed with ``torch.distributed.all_reduce`` and divided by ``W``, once per optimizer update
(after gradient accumulation): the result is the gradient of the global batch's mean loss,
as one process with batch ``B`` computes it, up to float rounding. Clipping, the optimizer
and the schedule then run on identical gradients on every rank, so every rank holds the
same trainable tensors (broadcast from rank 0 at the start, checked at the end).

Files. Only rank 0 (:attr:`DataParallel.writes_files`) writes the LoRA, the log, the
resumable state and periodic copies; the log's per-sample values are gathered from all
ranks, so its records equal a single process's. Every rank reads a resumable state at
resume (a file system all ranks see, or a copy on each node). LoRA dropout (torch's global
RNG) draws per rank: with LoRA dropout > 0 a data-parallel run is reproducible but not
equal to the single-process run.

Only torch.distributed's own collectives are used (``all_reduce``, ``broadcast``,
``barrier``); the process group is set up by the host (the headless runner under
``torchrun``). This module never imports ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: ``rank`` of ``world_size``."""

    rank: int
    world_size: int

    @classmethod
    def from_environment(cls) -> DataParallel | None:
        """The initialised default process group with more than one rank, else ``None``."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def writes_files(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` rows (module docstring)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def loss_weight(self, n: int) -> float:
        """Factor on this rank's mean loss so that the averaged gradient is the global batch's mean."""
        part = self.rows(n)
        return (part.stop - part.start) * self.world_size / n

    def gather_rows(self, local: Tensor, n: int) -> Tensor:
        """``(k, n)`` from every rank's ``(k, n_r)`` block of its rows (exact: each entry is summed with zeros)."""
        full = torch.zeros(local.shape[0], n, dtype=local.dtype, device=local.device)
        full[:, self.rows(n)] = local
        dist.all_reduce(full)
        return full

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of every parameter's gradient over the ranks, in one all_reduce. A rank that trained no
        rows contributes zeros; a parameter no rank has a gradient for keeps ``None``."""
        if not params:
            return
        device = params[0].device
        have = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float32) for p in params])
        dist.all_reduce(have)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, used in zip(params, have.tolist(), strict=True):
            count = p.numel()
            if used:
                p.grad = flat[offset : offset + count].view_as(p).to(p.dtype).clone()
            offset += count

    def broadcast(self, tensors: list[Tensor]) -> None:
        """Rank 0's values into every rank's ``tensors`` (in place)."""
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def max_difference(self, tensors: list[Tensor]) -> float:
        """Largest absolute difference of any rank's ``tensors`` from rank 0's (0.0 when all agree)."""
        worst = torch.zeros((), dtype=torch.float64, device=tensors[0].device if tensors else "cpu")
        with torch.no_grad():
            for t in tensors:
                reference = t.detach().clone()
                dist.broadcast(reference, src=0)
                worst = torch.maximum(worst, (t.detach() - reference).abs().max().to(torch.float64))
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        return float(worst)

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """True on every rank when ``flag`` is True on any rank (e.g. a stop request)."""
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        dist.barrier()

    def rank_seed(self, seed: int, step: int) -> int:
        """Seed of torch's global RNG (LoRA dropout) on ranks other than 0, from the run's seed and step."""
        return (seed + 10_007 * 5 + 1_000_003 * self.rank + 7_919 * step) % (2**63 - 1)
