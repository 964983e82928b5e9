"""Validation loss: a held-out set scored at a fixed grid of sigma with fixed noise.

Every evaluation scores each held-out sample ``i`` at each grid value
``sigma_j`` (a "band") with the same noise ``eps_ij``, so its numbers compare
across steps and across runs with the same validation settings::

    g = Generator().manual_seed(seed)                      # fresh at every evaluation
    for i, sample:  for j, sigma_j:
        eps_ij   = randn(x0_i.shape, g)                      # CPU float32, drawn in this order
        x_sigma  = noise_fn(x0_i, eps_ij, sigma_j)           # the model's own noising
        x0_hat   = denoiser(x_sigma, sigma_j, [cond_i])      # one sample per forward
        mse_ij   = mean((x0_hat - x0_i)^2)                   # the loop's logged x0_mse
    x0_mse[j] = mean over i of mse_ij

Convention as everywhere in the pack: sigma = 1 is pure noise,
``x_sigma = (1 - sigma) * x0 + sigma * eps``. Scoring runs under
``torch.no_grad``, with every module of the model and the adapters in eval
mode (LoRA dropout off; each module's own flag restored after), the run's
autocast dtype, and inside ``torch.random.fork_rng``: the noise comes from its
own generator and torch's global RNG is left as it was, so a run trains
exactly the same with or without validation.

Records go to ``<output_name>.val.jsonl`` beside the training log
(:data:`SUFFIX`), one per evaluated step: ``{"kind": "validation", "step",
"sigmas", "x0_mse" (per band), "mean", "samples", "seed"}``. A run starting or
resuming at step ``s`` drops records from ``s`` on (:func:`trim_records`) and
evaluates ``s`` again when due, so a resumed run's records equal a straight
run's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from . import files, previews
from .errors import ConfigError, require

log = logging.getLogger(__name__)

SUFFIX = ".val.jsonl"
"""Validation records of ``<stem>.safetensors`` are written to ``<stem>.val.jsonl``."""
LOG_SUFFIX = ".log.jsonl"
"""The training log's suffix (``nodes.training.LOG_SUFFIX``), to find the records beside a log."""
DEFAULT_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
KIND = "validation"


def parse_sigmas(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.1, 0.3, 0.5"`` (commas, spaces or newlines) -> ``(0.1, 0.3, 0.5)``; each in (0, 1], no repeats."""
    if isinstance(text, str):
        parts = [p for p in text.replace(",", " ").split() if p]
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise ConfigError("sigmas", text, "must be numbers separated by commas, e.g. '0.1, 0.3, 0.5, 0.7, 0.9'") from None
    else:
        values = tuple(float(v) for v in text)
    require(len(values) > 0, "sigmas", text, "must name at least one sigma, e.g. '0.1, 0.3, 0.5, 0.7, 0.9'")
    bad = [v for v in values if not (math.isfinite(v) and 0.0 < v <= 1.0)]
    require(not bad, "sigmas", text, f"{bad[0] if bad else ''} is outside (0, 1] (sigma = 1 is pure noise)")
    require(len(set(values)) == len(values), "sigmas", text, "lists a value twice")
    return values


@dataclass(frozen=True)
class ValidationConfig:
    """When and how the held-out set is scored.

    ``sigmas``: the grid of noise levels (bands); ``seed``: the fixed noise's
    seed; ``every_n_steps``: optimizer updates between evaluations; with 0,
    every ``every_percent`` of the run's updates (both 0: at the start and the
    end only). The start (step 0) and the last step are always evaluated.
    """

    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    seed: int = 0
    every_n_steps: int = 0
    every_percent: int = 10

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        object.__setattr__(self, "sigmas", parse_sigmas(self.sigmas))
        require(self.seed >= 0, "seed", self.seed, "must be >= 0")
        require(self.every_n_steps >= 0, "every_n_steps", self.every_n_steps, "must be >= 0 (0: every every_percent % of the run)")
        require(0 <= self.every_percent <= 100, "every_percent", self.every_percent, "must lie in [0, 100]")

    def interval(self, total: int) -> int:
        """Updates between evaluations of a run of ``total`` updates (0: none between the start and the end)."""
        return previews.interval(self.every_n_steps, self.every_percent, total)

    def due(self, step: int, total: int) -> bool:
        """Whether a run of ``total`` updates evaluates after update ``step`` (0: before the first).

        Unlike previews, a resumed run's first step is not evaluated unless due,
        so resumed and straight runs write the same records.
        """
        every = self.interval(total)
        return step == 0 or step == total or (every > 0 and step % every == 0)

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, **asdict(self), "sigmas": list(self.sigmas)}


@dataclass(frozen=True)
class HeldOut:
    """One held-out sample: ``latent`` ``(C, H, W)`` in the model's latent space (after
    ``process_latent_in``), its conditioning (opaque, for the denoiser), its source (errors)."""

    latent: Tensor
    cond: Any
    source: str


Denoiser = Callable[[Tensor, Tensor, list], Tensor]
"""``(x_sigma (B, C, H, W), sigma (B,), conds) -> x0 estimate (B, C, H, W)``, as the loop's."""
NoiseFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(x0, eps, sigma) -> (x_sigma, effective eps)``, as the loop's."""


@contextlib.contextmanager
def evaluating(modules: Sequence[nn.Module], device: torch.device) -> Iterator[None]:
    """No autograd, every module of ``modules`` in eval mode (flags restored after), torch's global RNG forked."""
    every = [m for root in modules for m in root.modules()]
    modes = [m.training for m in every]
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for m in every:
                m.training = False
            yield
    finally:
        for m, mode in zip(every, modes, strict=True):
            m.training = mode


def evaluate(denoiser: Denoiser, noise_fn: NoiseFn, samples: Sequence[HeldOut], config: ValidationConfig, device: torch.device,
             dtype: torch.dtype = torch.float32, modules: Sequence[nn.Module] = ()) -> list[float]:
    """Mean x0-MSE per band of ``config.sigmas`` over ``samples`` (the module docstring's procedure); ``(K,)`` floats.

    ``modules``: the model and adapters, set to eval mode while scoring; ``dtype``:
    autocast precision of the forward (the run's), the MSE itself in float32.
    """
    require(len(samples) > 0, "validation dataset", "empty", "needs at least one sample")
    g = torch.Generator().manual_seed(config.seed)
    totals = [0.0] * len(config.sigmas)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with evaluating(modules, device):
        for sample in samples:
            x0 = sample.latent.to(device, torch.float32)[None]
            for j, s in enumerate(config.sigmas):
                eps = torch.randn(x0.shape, generator=g, dtype=torch.float32).to(device)
                sigma = torch.full((1,), s, dtype=torch.float32, device=device)
                x_sigma, _ = noise_fn(x0, eps, sigma)
                with autocast:
                    x0_hat = denoiser(x_sigma, sigma, [sample.cond])
                totals[j] += float((x0_hat.float() - x0).square().mean())
    return [t / len(samples) for t in totals]


def record(step: int, config: ValidationConfig, x0_mse: Sequence[float], samples: int) -> dict:
    """One line of the records file (module docstring)."""
    return {"kind": KIND, "step": step, "sigmas": list(config.sigmas), "x0_mse": [float(v) for v in x0_mse],
            "mean": float(np.mean(x0_mse)), "samples": samples, "seed": config.seed}


def records_path(log_path: str | os.PathLike) -> str:
    """``<stem>.val.jsonl`` beside the training log ``<stem>.log.jsonl`` (any other log name: ``<log_path>.val.jsonl``)."""
    path = os.fspath(log_path)
    return (path[: -len(LOG_SUFFIX)] if path.endswith(LOG_SUFFIX) else path) + SUFFIX


def append_record(path: str | os.PathLike, entry: Mapping) -> None:
    """Append ``entry`` to the records file ``path`` (flushed line by line)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        files.append_jsonl(f, entry)


def read_records(path: str | os.PathLike) -> list[dict]:
    """The validation records of ``path`` ([] when there is none; a torn last line is skipped)."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if entry.get("kind") == KIND:
                out.append(entry)
    return out


def trim_records(path: str | os.PathLike, step: int) -> None:
    """Keep only the records before ``step`` (a run starting or resuming at ``step`` evaluates it again), atomically."""
    if not os.path.isfile(path):
        return
    kept = [r for r in read_records(path) if r.get("step", 0) < step]
    with files.atomic_open(path, "w") as f:
        for entry in kept:
            files.append_jsonl(f, entry)


@dataclass(frozen=True)
class ValidationSeries:
    """A run's validation records as arrays: ``steps`` ``(S,)``, ``sigmas`` ``(K,)``, ``x0_mse`` ``(S, K)``."""

    steps: np.ndarray
    sigmas: np.ndarray
    x0_mse: np.ndarray


def series(records: Sequence[Mapping]) -> ValidationSeries | None:
    """Records -> :class:`ValidationSeries` sorted by step (a repeated step keeps its last record); None for no records.

    Records of different sigma grids cannot share one chart: a ConfigError names both grids.
    """
    if not records:
        return None
    grid = list(records[0]["sigmas"])
    by_step: dict[int, list[float]] = {}
    for r in records:
        if list(r["sigmas"]) != grid:
            raise ConfigError("validation sigmas", r["sigmas"], f"differ from the first record's {grid} (step {r['step']}); one run keeps one grid")
        by_step[int(r["step"])] = [float(v) for v in r["x0_mse"]]
    steps = sorted(by_step)
    return ValidationSeries(np.asarray(steps, dtype=np.int64), np.asarray(grid, dtype=np.float64),
                            np.asarray([by_step[s] for s in steps], dtype=np.float64).reshape(len(steps), len(grid)))


class Validator:
    """Scores the held-out set on its schedule during one training call and appends the records.

    Hook :meth:`at_start` to the loop's ``on_start`` and :meth:`after_update` to
    its ``on_update`` (step of the record). ``total``: the run's last step.
    """

    def __init__(self, config: ValidationConfig, samples: Sequence[HeldOut], denoiser: Denoiser, noise_fn: NoiseFn, path: str,
                 total: int, device: torch.device, dtype: torch.dtype = torch.float32, modules: Sequence[nn.Module] = ()):
        self.config, self.samples, self.denoiser, self.noise_fn = config, list(samples), denoiser, noise_fn
        self.path, self.total, self.device, self.dtype, self.modules = path, total, device, dtype, list(modules)
        self.last: dict | None = None

    def at_start(self, step: int) -> None:
        """Drop records from ``step`` on (an earlier or killed run's), then score ``step`` if due."""
        trim_records(self.path, step)
        self.after_update(step)

    def after_update(self, step: int) -> None:
        if not self.config.due(step, self.total):
            return
        values = evaluate(self.denoiser, self.noise_fn, self.samples, self.config, self.device, self.dtype, self.modules)
        self.last = record(step, self.config, values, len(self.samples))
        append_record(self.path, self.last)
        log.info("FlowLoRA validation at step %d: x0-MSE %.5g (%s)", step, self.last["mean"],
                 ", ".join(f"sigma {s:g}: {v:.4g}" for s, v in zip(self.config.sigmas, values, strict=True)))
