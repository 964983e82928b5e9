"""Gradient checkpointing of a model's transformer blocks, switched on for a block of code.

The blocks are the entries of the model's largest ``nn.ModuleList`` (by
parameter count): ``layers`` for Z-Image/Lumina, ``double_blocks`` for Flux...
Each block's forward is replaced, on the instance, by a non-reentrant
``torch.utils.checkpoint`` call to the original, and restored on exit, so the
shared model is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import functools
import logging

from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The entries of the ModuleList holding the most parameters (empty if none)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        return []
    biggest = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
    return list(biggest)


@contextlib.contextmanager
def checkpointed(model: nn.Module, enabled: bool = True):
    """Recompute each transformer block's activations in the backward pass."""
    blocks = transformer_blocks(model) if enabled else []
    patched = []
    try:
        for block in blocks:
            if "forward" in block.__dict__:
                continue  # already wrapped by someone else; leave it alone
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
            patched.append(block)
        if enabled:
            log.info("gradient checkpointing on %d blocks", len(patched))
        yield len(patched)
    finally:
        for block in patched:
            del block.forward

