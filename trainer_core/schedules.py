"""Learning-rate schedules: the factor that multiplies each group's base lr.

``step`` counts optimizer updates already made (0 before the first update), so
update ``k`` (0-based) runs at ``base_lr * lr_factor(k, total_steps, config)``.
With gradient accumulation ``total_steps`` is the number of updates, not of
micro-batches (see :func:`trainer_core.optim.update_count`).

The factor is a pure function of integers and the config, in two parts::

    step <  warmup:  step / warmup                       (linear from 0)
    step >= warmup:  m + (1 - m) * decay(s, D, config)   m = min_lr_ratio,
                                                         s = step - warmup,
                                                         D = total_steps - warmup

``decay`` comes from :data:`SCHEDULES` and runs from 1 at ``s = 0`` to its end
value at ``s = D``; past ``D`` it stays at the end value. ``min_lr_ratio`` is
the floor: AC-RF's cosine with eta_max = 1e-4, eta_min = 1e-6 is ratio 0.01.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from .errors import require
from .registry import Registry

DecayFn = Callable[[int, int, Any], float]

SCHEDULES: Registry[DecayFn] = Registry("lr schedule")


@SCHEDULES.register("constant")
def constant(s: int, d: int, config: Any) -> float:
    """1 throughout (after warmup)."""
    return 1.0


@SCHEDULES.register("linear")
def linear(s: int, d: int, config: Any) -> float:
    """Straight line from 1 to 0 (to ``min_lr_ratio`` after the floor) at ``s = D``."""
    return 1.0 - min(s, d) / d


@SCHEDULES.register("cosine")
def cosine(s: int, d: int, config: Any) -> float:
    """Half a cosine wave from 1 to 0: ``(1 + cos(pi * s / D)) / 2``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(s, d) / d))


@SCHEDULES.register("cosine_with_restarts")
def cosine_with_restarts(s: int, d: int, config: Any) -> float:
    """``num_cycles`` half-cosine waves, each restarting at 1 (hard restarts).

    Cycle ``c`` covers ``s`` in ``[c * D / n, (c + 1) * D / n)``; the position
    inside a cycle is computed in integers (``(n * s) mod D``), so a restart
    lands exactly on its boundary step. At and past ``s = D`` the decay is 0.
    """
    if s >= d:
        return 0.0
    n = int(config.num_cycles)
    return 0.5 * (1.0 + math.cos(math.pi * ((n * s) % d) / d))


def lr_factor(step: int, total_steps: int, config: Any) -> float:
    """Multiplier of the base lr for update ``step`` (0-based) of ``total_steps``.

    ``config`` supplies ``schedule``, ``warmup_steps``, ``num_cycles`` and
    ``min_lr_ratio`` (an :class:`~trainer_core.optim.OptimizerConfig`). Pure and
    deterministic: the same arguments always give the same float.
    """
    warmup = int(config.warmup_steps)
    if step < warmup:
        return step / warmup
    decay = SCHEDULES.get(config.schedule, "schedule")
    m = float(config.min_lr_ratio)
    return m + (1.0 - m) * decay(step - warmup, max(1, total_steps - warmup), config)


def check_total_steps(total_steps: int, config: Any) -> None:
    """Raise ConfigError unless ``total_steps`` fits the warmup of ``config``."""
    require(int(total_steps) == total_steps and total_steps >= 1, "total_steps", total_steps, "must be an integer >= 1 (optimizer updates)")
    require(
        config.warmup_steps < total_steps,
        "warmup_steps",
        config.warmup_steps,
        f"must be below the number of optimizer updates ({total_steps}); lower warmup_steps or train longer",
    )


def build_scheduler(config: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` whose factor is :func:`lr_factor`.

    Call ``scheduler.step()`` once after each ``optimizer.step()``. Its
    ``state_dict()`` is plain JSON-compatible data (the factor is a
    ``functools.partial`` with no state of its own); to resume, build the
    optimizer and scheduler afresh, then load the optimizer's state and then
    the scheduler's.
    """
    check_total_steps(total_steps, config)
    factor = functools.partial(lr_factor, total_steps=int(total_steps), config=config)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
