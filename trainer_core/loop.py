"""The training step loop: pure PyTorch, driven by parts the host hands in.

One optimizer update ("step") takes ``grad_accumulation`` micro-batches. For
each micro-batch::

    batch  = data.next_batch(B, gen["data"])               # x0 (B, C, H, W), conds, sources
    routes = dropout.routes(B, gen["dropout"])              # cond / drop_text / drop_both
    sigma  = timesteps.sample(B, gen["timesteps"], seq_len) # (B,), sigma = 1 is noise
    eps    = randn(x0.shape, gen["noise"])                  # drawn on the CPU: same on every device
    x_sigma, eps = noise_fn(x0, eps, sigma)                 # eps as the model's noising scaled it
    x0_hat = denoiser(x_sigma, sigma, conds)
    loss(x0, eps, sigma, x0_hat).loss * window_scale -> backward

then gradients are clipped, the optimizer and lr schedule step. Every random
draw comes from one of four seeded generators, whose states are saved with the
optimizer, schedule, trainable tensors and data position, so a run stopped
after N steps and resumed for M equals N + M steps straight.

Data parallel (``task.parallel``, :mod:`.data_parallel`): every rank draws the whole
global micro-batch as above, trains its own rows of it, and the gradients are averaged
over the ranks before clipping; rank 0 writes the files.

The host (the ComfyUI node) supplies the denoiser, the data, the trainable
parameters and a ``save_lora`` callback; the loop writes the JSONL log and the
resumable state itself.

Nothing lost (what is saved when a run ends early):

- **Stop / cancel.** Between two update boundaries the trainable tensors,
  optimizer and schedule are untouched, and the random streams and data
  position of the last boundary are kept (``window_start``). So whatever is
  raised while the micro-batches run or inside the host's ``on_start`` /
  ``on_update`` / ``should_stop`` callbacks (ComfyUI's cancel raises its interrupt exception
  from every ComfyUI layer's forward and from the progress-bar hook), the loop
  saves the last completed step with reason ``"stopped"`` and re-raises the
  exception unchanged, so the host still sees its own cancel. The loop need
  not know the host's exception type. Nothing is saved when no step completed
  since the start or the resume (the files on disk already hold that state).
  ``should_stop()`` returning True saves the same way and returns ``stopped``.
- **Non-finite values.** Before each optimizer update, once the step's loss and
  gradient norm are known to be finite, the loop keeps a copy of the whole
  boundary state (``last_good``: trainable tensors, optimizer moments, schedule,
  random streams, data position): weights that have just produced a finite
  loss and gradient. A non-finite loss or gradient norm, or non-finite
  trainable tensors right after ``optimizer.step()``, rolls back to that copy
  and saves it (reason ``"non-finite"``), never the weights that failed. Memory:
  one extra copy of the trainable tensors and the optimizer state, on the
  device that holds them (AdamW in fp32: 3x the LoRA's fp32 size; e.g. a
  40 M-parameter LoRA costs 480 MB more); time: one device copy per step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from . import checkpoint, files, flow, logs
from .data_parallel import DataParallel
from .dropout import COND, ROUTES, ConditionDropout
from .errors import require
from .losses import LossConfig
from .optim import OptimizerConfig, build_optimizer, clip_gradients
from .schedules import build_scheduler
from .timesteps import TimestepConfig

log = logging.getLogger(__name__)

GENERATORS = ("data", "dropout", "timesteps", "noise")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Batch:
    """One micro-batch from a :class:`BatchSource`.

    ``latents``: ``(B, C, H, W)`` clean x0 in the model's latent space;
    ``conds``: per-sample conditioning, opaque to the loop (the denoiser reads it);
    ``sources``: per-sample file path or label, used in errors and the log.
    """

    latents: Tensor
    conds: list[Any]
    sources: list[str]


@dataclass(frozen=True)
class SaveReport:
    """One save: ``reason`` is ``"periodic"``, ``"finished"``, ``"stopped"`` or ``"non-finite"``;
    ``step`` the completed updates the files hold."""

    reason: str
    step: int
    lora_path: str
    state_path: str


class BatchSource(Protocol):
    """Training data: batches of samples that share a shape (one bucket)."""

    def next_batch(self, batch_size: int, generator: torch.Generator) -> Batch: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Denoiser(Protocol):
    """``(x_sigma (B, C, H, W), sigma (B,), conds) -> x0 estimate (B, C, H, W)``."""

    def __call__(self, x_sigma: Tensor, sigma: Tensor, conds: list[Any]) -> Tensor: ...


class Trainable(Protocol):
    """The parameters being trained (LoRA adapters and unfrozen tensors)."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the loop itself. ``steps`` counts optimizer updates."""

    steps: int = 100
    batch_size: int = 1
    seed: int = 0
    save_every: int = 0
    dtype: str = "fp32"
    dropout: ConditionDropout = field(default_factory=ConditionDropout)

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(self.save_every >= 0, "save_every", self.save_every, "must be >= 0 (0: save at the end only)")
        require(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {', '.join(DTYPES)}")

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, "steps": self.steps, "batch_size": self.batch_size, "seed": self.seed,
                "save_every": self.save_every, "dtype": self.dtype, "dropout": self.dropout.to_dict()}


@dataclass
class TrainTask:
    """Everything one run needs. ``uncond`` is the conditioning of dropped samples."""

    denoiser: Denoiser
    data: BatchSource
    trainable: Trainable
    timesteps: TimestepConfig
    loss: LossConfig
    optimizer: OptimizerConfig
    config: TrainConfig
    save_lora: Callable[[int], str]
    log_path: str
    state_path: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    uncond: Any = None
    noise_fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] = lambda x0, eps, sigma: (flow.add_noise(x0, eps, sigma), eps)
    """``(x0, eps, sigma) -> (x_sigma, effective eps)``, so that
    ``x_sigma = (1 - sigma) * x0 + sigma * eps_eff`` (a model may scale its noise, as U1 does)."""
    seq_len_fn: Callable[[torch.Size], int] = lambda shape: (shape[-2] // 2) * (shape[-1] // 2)
    on_start: Callable[[int], None] = lambda step: None
    """Called once before the first update of this call with the step it starts at (0, or the
    step it resumed at), e.g. for a preview of the starting weights; may raise (nothing is saved then)."""
    on_update: Callable[[dict], None] = lambda record: None
    """Called after every update with the step's last log record; may raise to cancel
    (the last completed step is saved first, see the module docstring)."""
    should_stop: Callable[[], bool] = lambda: False
    on_save: Callable[[SaveReport], None] = lambda report: None
    """Called after every save (periodic, finished, stopped, non-finite), e.g. to tell the user where."""
    resume: bool = False
    settings: dict = field(default_factory=dict)
    """JSON-ready settings of the run, saved with the state. On resume, a
    different ``settings["lora"]`` (other tensors) is an error; other
    differences (a new lr, more steps) are allowed and logged."""
    parallel: DataParallel | None = None
    """Data-parallel rank (:mod:`.data_parallel`): ``config.batch_size`` is then the global batch,
    this rank trains its rows of it, gradients are averaged and only rank 0 writes files."""


@dataclass(frozen=True)
class TrainResult:
    steps: int
    stopped: bool
    lora_path: str
    last: dict


class NonFiniteLossError(RuntimeError):
    """A NaN/inf loss, gradient or updated weight; the last good LoRA and state are saved first."""


def make_generators(seed: int) -> dict[str, torch.Generator]:
    """One CPU generator per random stream, so changing one setting never shifts another."""
    return {name: torch.Generator().manual_seed(seed + 10_007 * i) for i, name in enumerate(GENERATORS)}


class _Run:
    """State of one call to :func:`train` (kept out of module globals)."""

    def __init__(self, task: TrainTask):
        self.task = task
        cfg = task.config
        if cfg.dropout.enabled and task.uncond is None:
            raise ValueError("condition dropout is on but no unconditional (empty-prompt) conditioning was given")
        self.params = task.trainable.parameters()
        if not self.params:
            raise ValueError("nothing to train: the LoRA config matched no parameters")
        self.optimizer = build_optimizer(task.optimizer, self.params)
        self.scheduler = build_scheduler(task.optimizer, self.optimizer, cfg.steps)
        self.generators = make_generators(cfg.seed)
        self.parallel = task.parallel
        self.writes = self.parallel is None or self.parallel.writes_files
        self.step = 0
        self.start_step = 0  # the step this call started or resumed at
        self.window_start = self.random_state()
        self.last_good: dict | None = None  # copy of the last verified boundary (module docstring)

    # -- state ---------------------------------------------------------------

    def random_state(self) -> dict:
        """Generator states, torch's global RNG (LoRA dropout) and the data position:
        cheap, taken at every update boundary."""
        state = {
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "global_rng": torch.get_rng_state(),
            "data": self.task.data.state_dict(),
        }
        if self.task.device.type == "cuda":  # LoRA dropout on a GPU draws from its own RNG
            state["cuda_rng"] = torch.cuda.get_rng_state(self.task.device)
        return state

    def capture(self) -> dict:
        """Everything needed to continue from the last update boundary.

        Trainable tensors, optimizer and schedule only change at a boundary, so
        they are read live; the random streams come from the boundary snapshot
        (a failing micro-batch has advanced them).
        """
        return {
            "step": self.step,
            "trainable": self.task.trainable.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.window_start,
        }

    def restore(self, state: dict) -> None:
        self.step = int(state["step"])
        self.task.trainable.load_state_dict(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        torch.set_rng_state(state["global_rng"])
        if "cuda_rng" in state and self.task.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.task.device)
        self.task.data.load_state_dict(state["data"])
        self.window_start = self.random_state()

    def snapshot(self) -> dict:
        """A detached copy of :meth:`capture` (tensors cloned on their device)."""
        return _clone(self.capture())

    def weights_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p.detach()).all() for p in self.params]).all())

    def save(self, reason: str, error: str | None = None) -> str:
        """Write the LoRA of the last boundary and the resumable state beside it.

        Data parallel: rank 0 writes; after a save every rank reaches (all but ``"stopped"``, which a
        single rank may reach alone), all ranks wait for it, so that each can read the files."""
        if not self.writes:
            if reason != "stopped":
                self.parallel.barrier()
            return ""
        lora_path = self.task.save_lora(self.step)
        info = {"step": self.step, "reason": reason, "config": self.task.config.to_dict(), "settings": self.task.settings, "lora": lora_path}
        if error is not None:
            info["error"] = error
        checkpoint.save_state(self.task.state_path, self.capture(), info)
        log.info("saved %s and %s at step %d (%s)", lora_path, self.task.state_path, self.step, reason)
        self.task.on_save(SaveReport(reason, self.step, lora_path, self.task.state_path))
        if self.parallel is not None and reason != "stopped":
            self.parallel.barrier()
        return lora_path

    def save_progress(self, reason: str, error: str | None = None) -> str | None:
        """:meth:`save` unless no step completed since the start or resume (then ``None``)."""
        if self.step == self.start_step:
            log.warning("no step completed since step %d; nothing new to save (%s)", self.step, reason)
            return None
        return self.save(reason, error)

    @contextlib.contextmanager
    def saving_on_stop(self):
        """Anything raised inside (a host's cancel, Ctrl-C, an error in a callback) finds
        the last update boundary intact: save it as ``"stopped"``, then re-raise unchanged."""
        try:
            yield
        except NonFiniteLossError:
            raise  # already saved what was good
        except BaseException as exc:
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("training stopped during step %d by %s: %s", self.step + 1, type(exc).__name__, exc)
            self.save_progress("stopped", f"{type(exc).__name__}: {exc}")
            raise

    # -- one micro-batch -----------------------------------------------------

    def micro_batch(self, scale: float) -> dict:
        task, cfg, gens = self.task, self.task.config, self.generators
        batch = task.data.next_batch(cfg.batch_size, gens["data"])
        b = batch.latents.shape[0]
        routes = cfg.dropout.routes(b, gens["dropout"])
        conds = [c if r == COND else task.uncond for c, r in zip(batch.conds, routes.tolist(), strict=True)]
        sigma = task.timesteps.sample(b, gens["timesteps"], task.seq_len_fn(batch.latents.shape))
        eps = torch.randn(batch.latents.shape, generator=gens["noise"], dtype=torch.float32)
        if self.parallel is not None:
            return self.parallel_micro_batch(scale, batch, routes, conds, sigma, eps)

        x0 = batch.latents.to(task.device, torch.float32)
        eps = eps.to(task.device)
        sigma_t = sigma.to(task.device, torch.float32)
        out = self.forward(x0, eps, sigma_t, conds)

        stats = torch.stack([out.per_sample, out.x0_mse, out.v_mse, out.sigma]).cpu().tolist()
        self.check_finite(stats, batch.sources)
        (out.loss * scale).backward()
        return self.record(stats, routes, batch.sources)

    def forward(self, x0: Tensor, eps: Tensor, sigma_t: Tensor, conds: list[Any]):
        task = self.task
        x_sigma, eps = task.noise_fn(x0, eps, sigma_t)
        dtype = DTYPES[task.config.dtype]
        autocast = torch.autocast(task.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with autocast:
            x0_pred = task.denoiser(x_sigma, sigma_t, conds)
        return task.loss(x0, eps, sigma_t, x0_pred)

    def parallel_micro_batch(self, scale: float, batch: Batch, routes: Tensor, conds: list[Any], sigma: Tensor, eps: Tensor) -> dict:
        """This rank's rows of the global micro-batch (:mod:`.data_parallel`); the record holds every rank's samples."""
        task, parallel = self.task, self.parallel
        b = batch.latents.shape[0]
        rows = parallel.rows(b)
        local = torch.zeros(4, 0, device=task.device)
        out = None
        if rows.stop > rows.start:
            out = self.forward(batch.latents[rows].to(task.device, torch.float32), eps[rows].to(task.device), sigma[rows].to(task.device, torch.float32), conds[rows])
            local = torch.stack([out.per_sample, out.x0_mse, out.v_mse, out.sigma]).detach().to(torch.float32)
        stats = parallel.gather_rows(local, b).cpu().tolist()
        self.check_finite(stats, batch.sources)  # every rank sees the same values: all fail together
        if out is not None:
            (out.loss * (scale * parallel.loss_weight(b))).backward()
        return self.record(stats, routes, batch.sources)

    def check_finite(self, stats: list[list[float]], sources: list[str]) -> None:
        if not all(math.isfinite(v) for v in stats[0]):
            bad = next(i for i, v in enumerate(stats[0]) if not math.isfinite(v))
            self.fail(f"non-finite loss at step {self.step + 1} for sample {sources[bad]!r} (sigma {stats[3][bad]:.4f})")

    @staticmethod
    def record(stats: list[list[float]], routes: Tensor, sources: list[str]) -> dict:
        b = len(stats[0])
        return {
            "loss": float(sum(stats[0]) / b),
            "x0_mse": float(sum(stats[1]) / b),
            "v_mse": float(sum(stats[2]) / b),
            "sigma": stats[3],
            "t": [1.0 - s for s in stats[3]],
            "route": [ROUTES[r] for r in routes.tolist()],
            "sample_loss": stats[0],
            "sources": list(sources),
        }

    def fail(self, message: str) -> None:
        """Roll back to the last verified boundary, save it, raise :class:`NonFiniteLossError`."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.last_good is not None:
            self.restore(self.last_good)
        path = self.save_progress("non-finite")
        kept = (f"saved the last good LoRA (step {self.step}, the last weights with a finite loss and gradient) to {path} "
                f"and its resumable state to {self.task.state_path}") if path else f"no good step since step {self.step}, nothing new saved"
        raise NonFiniteLossError(f"{message}; {kept}. Lower the learning rate or check that sample.")

    # -- the loop ------------------------------------------------------------

    def resume_from(self, path: str) -> None:
        """Load the state at ``path``; a state that cannot continue this run raises naming the file."""
        state, info = checkpoint.load_state(path)
        check_resumable(info.get("settings", {}), self.task.settings, path)
        bad = checkpoint.non_finite_tensors(state)
        if bad:
            raise checkpoint.StateFileError(
                f"cannot resume from {path}: {len(bad)} tensor(s) hold NaN or inf ({', '.join(bad[:5])}); it was saved by a run "
                "that diverged. Delete it and train without resume (with a lower learning rate)"
            )
        try:
            self.restore(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise checkpoint.StateFileError(f"cannot resume from {path}: it does not fit this run ({type(e).__name__}: {e}); train without resume or restore the settings it was saved with") from e
        self.start_step = self.step
        log.info("resumed %s at step %d", path, self.step)

    def run(self) -> TrainResult:
        task = self.task
        if task.resume and os.path.exists(task.state_path):
            self.resume_from(task.state_path)
        elif task.resume:
            log.warning("resume asked but %s does not exist; starting from step 0", task.state_path)
        elif os.path.exists(task.state_path) and self.writes:
            os.remove(task.state_path)  # a fresh run replaces an older one: a later resume must not continue that
            log.info("removed the older resumable state %s (new run without resume)", task.state_path)
        if self.parallel is not None:
            self.start_parallel()
        with self.saving_on_stop():
            task.on_start(self.step)
        if not self.writes:
            return self.run_steps(os.devnull)
        os.makedirs(os.path.dirname(os.path.abspath(task.log_path)), exist_ok=True)
        if self.step > 0 and os.path.exists(task.log_path):
            # drop records a killed run wrote after its last saved state
            kept = [r for r in logs.read_records(task.log_path) if r.get("step", 0) <= self.step]
            with files.atomic_open(task.log_path, "w") as f:
                for record in kept:
                    files.append_jsonl(f, record)
        return self.run_steps(task.log_path)

    def run_steps(self, log_path: str) -> TrainResult:
        task, cfg, opt = self.task, self.task.config, self.task.optimizer
        last: dict = {}
        with open(log_path, "a" if self.step > 0 else "w", encoding="utf-8") as log_file:
            while self.step < cfg.steps:
                with self.saving_on_stop():
                    records = [self.micro_batch(1.0 / opt.grad_accumulation) for _ in range(opt.grad_accumulation)]
                    if self.parallel is not None:
                        self.parallel.average_gradients(self.params)
                    grad_norm = clip_gradients(self.params, opt.max_grad_norm)
                samples = [s for r in records for s in r["sources"]]
                if not math.isfinite(grad_norm):
                    self.fail(f"non-finite gradient norm at step {self.step + 1} (samples {samples})")
                self.last_good = self.snapshot()  # these weights just gave a finite loss and gradient
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                if not self.weights_finite():
                    self.fail(f"non-finite LoRA weights after the update of step {self.step} (samples {samples}, lr {lr:.3g})")
                for micro, record in enumerate(records):
                    last = {"step": self.step, "micro": micro, "lr": lr, "grad_norm": grad_norm, **record}
                    files.append_jsonl(log_file, last)
                self.window_start = self.random_state()
                with self.saving_on_stop():
                    task.on_update(last)
                    stop = self.step < cfg.steps and task.should_stop()
                    if self.parallel is not None and self.step < cfg.steps:
                        stop = self.parallel.any(stop, task.device)  # one rank's stop request stops all at this boundary
                if stop:
                    return TrainResult(self.step, True, self.save("stopped"), last)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save("periodic")
        result = TrainResult(self.step, False, self.save("finished"), last)
        if self.parallel is not None:
            self.check_parallel()
        return result

    def start_parallel(self) -> None:
        """Every rank starts from rank 0's trainable tensors; ranks other than 0 seed LoRA dropout apart."""
        parallel = self.parallel
        parallel.broadcast(self.params)
        if parallel.rank > 0:
            torch.manual_seed(parallel.rank_seed(self.task.config.seed, self.step))
        log.info("data parallel: rank %d of %d, global batch %d (%d per rank)", parallel.rank, parallel.world_size,
                 self.task.config.batch_size, self.task.config.batch_size // parallel.world_size)

    def check_parallel(self) -> None:
        """Every rank must hold rank 0's trainable tensors at the end (they get identical updates)."""
        diff = self.parallel.max_difference([p.detach() for p in self.params])
        if diff != 0.0:
            raise RuntimeError(f"data parallel: ranks disagree on the trained tensors (max difference {diff:.3g}); please report this")
        log.info("data parallel: all %d ranks hold identical trainable tensors", self.parallel.world_size)


def _clone(tree: Any) -> Any:
    """Copy of a tree of dicts, lists, tuples and tensors (tensors cloned, other leaves shared)."""
    if isinstance(tree, Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(v) for v in tree)
    return tree


def check_resumable(saved: dict, current: dict, path: str) -> None:
    """Refuse to resume into different LoRA tensors; log other changed settings."""
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if "lora" in changed:
        raise ValueError(
            f"cannot resume {path}: it was trained with LoRA settings {saved.get('lora')}, now {current.get('lora')}; "
            "restore those settings or choose a new output_name"
        )
    if changed:
        log.warning("resuming %s with changed settings: %s", path, ", ".join(changed))


def train(task: TrainTask) -> TrainResult:
    """Run (or resume) the loop; see the module docstring for the step.

    torch's global RNG (used by LoRA dropout) is seeded from the run's seed
    inside ``torch.random.fork_rng``, so the host's RNG is left as it was.
    """
    devices = [task.device.index or 0] if task.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(task.config.seed + 10_007 * len(GENERATORS))
        return _Run(task).run()
