"""The numbers behind the training plots (U1 ablation report, Figures 1-5).

Input is a run's log records (:mod:`.logs`: one dict per micro-batch). Output
is per optimizer step: ``x0_mse``, active ``loss`` and ``v_mse`` (each the
mean over every sample of the step), their trailing moving average, all
sampled ``t`` (= 1 - sigma, 1 = clean) and cumulative cond / unconditional
routing counts. Pure numpy; :mod:`.figures` turns them into chart data and
``nodes/figures.py`` draws them with matplotlib.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dropout import ROUTES
from .errors import ConfigError, require

METRICS = ("x0_mse", "loss", "v_mse")
"""Per-step scalars of a log record, in the report's figure order."""

UNCOND_ROUTES = tuple(r for r in ROUTES if r != "cond")
"""Routes that train on the unconditional prompt (drop_text, drop_both)."""


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` points, ``(S,) -> (S,)`` float64.

    Point ``i`` averages ``values[max(0, i - window + 1) : i + 1]``: the first
    ``window - 1`` points average what exists so far instead of being dropped
    or padded. Non-finite values are left out of every mean they fall in; a
    point whose whole window is non-finite is NaN.
    """
    require(int(window) >= 1, "window", window, "must be >= 1")
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - int(window), 0)
    n = counts[end] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


@dataclass(frozen=True)
class StepSeries:
    """A run's log reduced to one value per optimizer step.

    ``steps`` is ``(S,)`` int64, ascending. ``metrics[name]`` is ``(S,)``
    float64: the sample-weighted mean of the step's micro-batch values (= the
    mean over every sample of the step). ``t`` is ``(N,)`` float64, every
    sampled t of the run. ``routes[name]`` is ``(S,)`` int64: samples routed
    to ``name`` at each step (not cumulative).
    """

    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    t: np.ndarray
    routes: dict[str, np.ndarray]

    def smoothed(self, name: str, window: int) -> np.ndarray:
        """``(S,)`` trailing moving average of metric ``name`` over ``window`` steps."""
        return moving_average(self.metrics[name], window)

    def cumulative_routes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(cond, uncond)``, each ``(S,)`` int64: samples routed so far, up to each step."""
        uncond = sum((self.routes[r] for r in UNCOND_ROUTES), np.zeros(len(self.steps), dtype=np.int64))
        return np.cumsum(self.routes["cond"]), np.cumsum(uncond)


def _field(record: Mapping[str, Any], name: str, index: int) -> Any:
    if name not in record:
        raise ConfigError(f"record {index}", sorted(record), f"has no {name!r}; is this a FlowLoRA training log?")
    return record[name]


def aggregate_steps(records: Iterable[Mapping[str, Any]]) -> StepSeries:
    """Per micro-batch log records -> :class:`StepSeries` (one entry per step).

    A micro-batch of ``b`` samples (``len(record["t"])``) counts ``b`` times in
    its step's means, so steps whose micro-batches differ in size average
    over samples. Records need not be sorted.
    """
    sums: dict[int, np.ndarray] = {}
    weights: dict[int, int] = {}
    routes: dict[int, np.ndarray] = {}
    t: list[float] = []
    for i, record in enumerate(records):
        step = int(_field(record, "step", i))
        ts = [float(v) for v in _field(record, "t", i)]
        route = list(_field(record, "route", i))
        b = len(ts)
        require(b > 0 and len(route) == b, f"record {i} route", route, f"needs one route per sample ({b} t values)")
        row = np.array([float(_field(record, m, i)) for m in METRICS], dtype=np.float64) * b
        sums[step] = sums.get(step, 0.0) + row
        weights[step] = weights.get(step, 0) + b
        counts = routes.setdefault(step, np.zeros(len(ROUTES), dtype=np.int64))
        for r in route:
            if r not in ROUTES:
                raise ConfigError(f"record {i} route", r, f"unknown route; valid: {', '.join(ROUTES)}")
            counts[ROUTES.index(r)] += 1
        t.extend(ts)
    require(bool(sums), "log", "no records", "the run logged no micro-batch yet")
    steps = np.array(sorted(sums), dtype=np.int64)
    table = np.stack([sums[s] / weights[s] for s in steps.tolist()])
    route_table = np.stack([routes[s] for s in steps.tolist()])
    return StepSeries(
        steps=steps,
        metrics={m: table[:, j] for j, m in enumerate(METRICS)},
        t=np.array(t, dtype=np.float64),
        routes={r: route_table[:, j] for j, r in enumerate(ROUTES)},
    )


def histogram_shares(t: np.ndarray, bins: int = 50, value_range: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Share of ``t`` (``(N,)``) per bin: ``(shares (bins,), edges (bins + 1,))``.

    Shares sum to 1 over values inside ``value_range`` (runs of different
    lengths compare); an empty input gives all zeros.
    """
    require(int(bins) >= 1, "bins", bins, "must be >= 1")
    counts, edges = np.histogram(np.asarray(t, dtype=np.float64), bins=int(bins), range=value_range)
    total = counts.sum()
    return (counts / total if total else counts.astype(np.float64)), edges


def robust_range(arrays: Iterable[np.ndarray], upper_percentile: float = 99.5) -> tuple[float, float]:
    """A y range for curves with rare spikes: ``(low, high)`` over all finite values.

    ``high`` is the ``upper_percentile`` of each array, maxed over arrays, so
    a few spikes (v-MSE as t -> 1) do not squash every curve flat; ``low`` is
    the true minimum. A flat or empty input gets a unit-wide range.
    """
    lows, highs = [], []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size:
            lows.append(float(a.min()))
            highs.append(float(np.percentile(a, upper_percentile)))
    if not lows:
        return 0.0, 1.0
    low, high = min(lows), max(highs)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return low - 0.5, high + 0.5
    return low, high
