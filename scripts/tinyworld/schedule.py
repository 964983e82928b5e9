"""The learning-rate schedule both tiny-world pretraining scripts use."""

from __future__ import annotations


def lr_at(step: int, lr: float, warmup: int, start: int = 0, end: int = 0, final: float = 1.0) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup`` steps counted from ``start``, times a linear
    decay from 1 at ``start`` to ``final`` at ``end`` (held at ``final`` after
    it); no decay when ``end <= start``. ``start`` lets a later training stage
    begin its own warm-up and decay at the step where the previous stage stopped.
    """
    ramp = min(1.0, (step - start + 1) / max(1, warmup))
    decay = 1.0 if end <= start else 1.0 - (1.0 - final) * min(1.0, max(0, step - start) / (end - start))
    return lr * ramp * decay
