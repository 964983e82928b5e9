"""LoRA (and DoRA, LoHa, LoKr, OFT) on the activation path, attached by forward hooks, held outside the model.

For every target (see :mod:`.targets`) on a Linear layer ``y = W x + b``::

    y[..., rows] += (alpha / rank) * B @ A @ dropout(x)     A: (rank, in), B: (rows, rank)

``rows`` is all output features, or a row slice of a fused projection (Z-Image's
``to_q``/``to_k``/``to_v`` on ``attention.qkv``): the slice's delta lands only on
its own third of the output.

Why forward hooks and not peft's ``inject_adapter_in_model`` (numbers in bench/RESULTS.md):

- peft replaces each target Linear by a ``peft.tuners.lora.Linear`` that holds
  the original as ``base_layer``. The model's state-dict keys become
  ``layers.0.attention.qkv.base_layer.weight``, so ComfyUI's key-based weight
  patches (``diffusion_model.layers.0.attention.qkv.weight``, how ModelPatcher
  applies and removes every LoRA) no longer find their weight while peft is
  injected, and un-injecting must restore modules by hand anyway.
- peft's Linear adapts a whole layer; a row slice of a fused qkv (three
  adapters on one layer, the form ComfyUI's loader maps for Z-Image) is not
  one of its layer types.
- Speed: the maths is the same (``W x`` frozen, two thin matmuls for the
  adapter). Measured with ``bench/bench_lora_engine.py`` (CPU, 2 shared
  cores, 4 x Linear(1024), 2048 tokens, rank 16, fp32): hooks 1159 ms per
  forward+backward, peft 1376 ms (1.19x), weight wrapper ``(W + B A) x``
  1249 ms (1.08x), frozen floor without adapters 856 ms. Not yet measured on a GPU.

Checked on the tiny Z-Image: after ``inject_adapter_in_model`` the keys of
``layers.0.attention.qkv`` are ``base_layer.weight``, ``lora_A.default.weight``
and ``lora_B.default.weight``.

So :class:`LoraAdapters` is an ``nn.Module`` of its own (``A``/``B`` per
target and trainable copies of unfrozen tensors); :meth:`LoraAdapters.attached`
registers one forward hook per target layer and swaps unfrozen tensors in by
object (names unchanged), and on exit removes the hooks and puts back the very
same Parameter objects and ``requires_grad`` flags. The model's module tree and
state-dict keys never change, the hooks see whatever weights ComfyUI has
patched in (merged LoRAs or on-the-fly ``weight_function`` patches), and inside
the block every model parameter except the unfrozen copies has
``requires_grad = False``, so autograd never computes a frozen weight's gradient.

Other algorithms (``LoraConfig.algorithm``: DoRA, LoHa, LoKr, OFT; details in
:mod:`.algorithms`) use peft where it serves, its config classes and layer
mathematics, without its injection, for the reasons above: each target's peft
layer (``DoraLinearLayer``; LoHa's and LoKr's ``Linear`` built on a shape stub
of the target's rows, a zero-stride tensor; ``OFTRotationModule``) is held in a
plain dict outside both the model and this module, its parameters registered
here under ``adapter_params.<file key suffix>.<name>`` (DoRA keeps ``lora_A`` /
``lora_B`` and adds its magnitude as ``adapter_params.dora_scale``). The same
kind of forward hook (:class:`_AdapterHook`) adds each algorithm's change to
its rows of the output: DoRA reads the layer's weight for its norm, LoHa
applies its ``(rows, in)`` delta, LoKr applies the Kronecker product to the
activations without building it, OFT rotates the output rows (ComfyUI's OFT
rotates weight rows; peft's own OFT rotates the input). So row slices, the
key-based patches and the ``LoraAdapters`` interface (build, attached,
state_dict, load_state_dict, the exports in :mod:`.keys`) are the same for
every algorithm, and the trainer needs no change beyond the config.

Dropout uses torch's global RNG (``F.dropout``) so that gradient checkpointing,
which restores the global RNG state before recomputing, redraws the same mask;
the trainer saves and restores that state for resume.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .algorithms import DoraAdapter, TargetAdapter, algorithm
from .config import LoraConfig
from .targets import Target, TargetPlan, resolve

log = logging.getLogger(__name__)


def _key(name: str) -> str:
    """Module-safe key for a dotted name (``nn.ParameterDict`` keys cannot hold dots)."""
    return name.replace(".", "/")


class _Buffers(nn.Module):
    """A plain holder of named buffers (saved in the state dict, never trained)."""


class LoraAdapters(nn.Module):
    """Trainable LoRA factors and unfrozen tensors for one model, outside its module tree.

    Build with :meth:`build`; train inside :meth:`attached`; save the
    optimizer-facing state with ``state_dict()`` / ``load_state_dict()``
    (keys ``lora_A.<name>``, ``lora_B.<name>``, ``unfrozen.<param>``,
    ``unfrozen_base.<param>`` with dots in names written as ``/``).

    Attributes: ``config`` (:class:`LoraConfig`), ``plan`` (:class:`TargetPlan`),
    ``lora_A[k]`` ``(rank, in)``, ``lora_B[k]`` ``(out, rank)``,
    ``unfrozen[k]`` (the trained copy), ``unfrozen_base`` (its value at build time).
    """

    def __init__(self, plan: TargetPlan, config: LoraConfig, unfrozen_init: dict[str, Tensor], *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 weights: dict[str, Tensor] | None = None):
        super().__init__()
        self.config = config
        self.plan = plan
        self.scale = config.scale
        self.algorithm = algorithm(config.algorithm)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.adapter_params = nn.ModuleDict()  # other algorithms: kind (file key suffix) -> ParameterDict by target
        self._adapters: dict[str, TargetAdapter] = {}  # plain dict: peft layers stay out of this module tree
        self._weights: dict[str, Tensor] = dict(weights or {})  # module -> weight last built on / attached to (DoRA export)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        if config.algorithm != "lora":
            self._check_algorithm(plan, config)
        if config.algorithm in ("lora", "dora"):
            for t in plan.targets:
                a = _init_a(config.init, config.rank, t.in_features, gen)
                self.lora_A[_key(t.name)] = nn.Parameter(a.to(device=device, dtype=dtype))
                self.lora_B[_key(t.name)] = nn.Parameter(torch.zeros(t.out_features, config.rank, device=device, dtype=dtype))
                if config.algorithm == "dora":
                    rows = _rows(self._weight(t.module), t).to(device)
                    self._add(t, DoraAdapter(self.lora_A[_key(t.name)], self.lora_B[_key(t.name)], self.scale, rows))
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            with torch.random.fork_rng(devices=[]):  # peft initialises from torch's global RNG: seed it from ours
                torch.manual_seed(seed)
                for t in plan.targets:
                    self._add(t, self.algorithm.create(t, config, None, dtype=dtype, device=device))
        self.unfrozen = nn.ParameterDict()
        self.unfrozen_base = _Buffers()
        for name in plan.unfrozen:
            value = unfrozen_init[name].detach()
            self.unfrozen[_key(name)] = nn.Parameter(value.clone())
            self.unfrozen_base.register_buffer(_key(name), value.clone())
        self._attached: list[nn.Module] = []  # a list, so nn.Module does not register the model as a submodule

    @classmethod
    def build(cls, model: nn.Module, config: LoraConfig, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> LoraAdapters:
        """Resolve ``config`` on ``model`` (read only) and create the adapters.

        ``generator`` (CPU) draws the ``A`` init; ``device`` defaults to the
        device of the model's first parameter; LoRA factors are ``dtype``
        (unfrozen copies keep the model tensor's dtype).
        """
        plan = resolve(model, config)
        params = dict(model.named_parameters())
        if device is None:
            device = next(iter(params.values())).device if params else "cpu"
        modules = dict(model.named_modules())
        weights = {name: modules[name].weight for name in plan.modules}
        return cls(plan, config, {n: params[n] for n in plan.unfrozen}, generator=generator, dtype=dtype, device=device, weights=weights)

    def _check_algorithm(self, plan: TargetPlan, config: LoraConfig) -> None:
        for t in plan.targets:
            self.algorithm.check_target(t, config)
            if f"{t.module}.weight" in plan.unfrozen:
                raise ConfigError("unfreeze", f"{t.module}.weight", f"with algorithm {config.algorithm!r} a weight that carries an adapter ({t.name}) cannot also be unfrozen; leave it out of unfreeze, or use algorithm 'lora'")

    def _add(self, target: Target, adapter: TargetAdapter) -> None:
        self._adapters[_key(target.name)] = adapter
        for kind, param in adapter.params.items():
            if kind not in self.adapter_params:
                self.adapter_params[kind] = nn.ParameterDict()
            self.adapter_params[kind][_key(target.name)] = param

    def _weight(self, module: str) -> Tensor:
        if module not in self._weights:
            raise ConfigError("model", module, f"{self.config.algorithm} needs the weight of this layer: build the adapters with LoraAdapters.build(model, ...)")
        return self._weights[module]

    # ------------------------------------------------------------ parameters

    def lora_parameters(self) -> list[nn.Parameter]:
        """All adapter parameters: ``A`` and ``B`` factors, and the other algorithms' (DoRA magnitudes, LoHa/LoKr factors, OFT blocks)."""
        return [*self.lora_A.values(), *self.lora_B.values(), *self.adapter_params.parameters()]

    def adapter_tensors(self) -> Iterator[tuple[Target, dict[str, Tensor]]]:
        """``(target, {file key suffix: tensor})`` per adapter of an algorithm other than plain LoRA,
        in ComfyUI's layout (:mod:`.algorithms`); DoRA gives its ``dora_scale`` only (its factors are :meth:`lora_pairs`)."""
        for t in self.plan.targets:
            yield t, self._adapters[_key(t.name)].export(_rows(self._weight(t.module), t))

    def unfrozen_parameters(self) -> list[nn.Parameter]:
        """Trainable copies of the unfrozen model tensors (often given their own lr)."""
        return list(self.unfrozen.values())

    def lora_pairs(self) -> Iterator[tuple[Target, Tensor, Tensor]]:
        """``(target, A (rank, in), B (out, rank))`` per adapter, detached (LoRA and DoRA; none for other algorithms)."""
        if self.config.algorithm not in ("lora", "dora"):
            return
        for t in self.plan.targets:
            yield t, self.lora_A[_key(t.name)].detach(), self.lora_B[_key(t.name)].detach()

    def unfrozen_diffs(self) -> Iterator[tuple[str, Tensor]]:
        """``(parameter name, trained - value at build)`` per unfrozen tensor, float32."""
        for name in self.plan.unfrozen:
            k = _key(name)
            yield name, self.unfrozen[k].detach().float() - getattr(self.unfrozen_base, k).float()

    # ------------------------------------------------------------ attach

    @property
    def is_attached(self) -> bool:
        return bool(self._attached)

    @contextlib.contextmanager
    def attached(self, model: nn.Module):
        """Train ``model`` with these adapters for the duration of the block.

        Inside: forward hooks on every target layer, unfrozen tensors replaced
        by this object's copies (same names; re-based first if the model's
        value changed since build, see :meth:`_rebase`), every other model parameter with
        ``requires_grad = False``. On exit (also on error): hooks removed, the
        original Parameter objects and ``requires_grad`` flags restored.
        Do not let ComfyUI load, unload or re-patch the model inside the block;
        unfrozen tensors need the model fully loaded (ComfyUI's lowvram casting
        copies weights per forward, which would cut their gradient).
        """
        if self._attached:
            raise RuntimeError("these LoRA adapters are already attached to a model")
        modules = dict(model.named_modules())
        self._check(modules)
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
        handles = []
        try:
            for p, _ in grad_flags:
                p.requires_grad_(False)
            for name in self.plan.unfrozen:
                owner_name, _, leaf = name.rpartition(".")
                owner = modules[owner_name]
                original = owner._parameters[leaf]
                copy = self.unfrozen[_key(name)]
                if copy.shape != original.shape or copy.device != original.device:
                    raise ConfigError("unfreeze", name, f"model tensor is {tuple(original.shape)} on {original.device}, the trained copy {tuple(copy.shape)} on {copy.device}")
                self._rebase(name, original)
                owner._parameters[leaf] = copy
                swapped.append((owner, leaf, original))
            by_module: dict[str, list[Target]] = {}
            for t in self.plan.targets:
                by_module.setdefault(t.module, []).append(t)
            hook_class = _LoraHook if self.config.algorithm == "lora" else _AdapterHook
            for module_name, targets in by_module.items():
                self._weights[module_name] = modules[module_name].weight
                hook = hook_class(self, targets, modules[module_name].out_features)
                handles.append(modules[module_name].register_forward_hook(hook, with_kwargs=True))
            self._attached.append(model)
            log.debug("attached %d adapters on %d modules", len(self.plan.targets), len(handles))
            yield self
        finally:
            for h in handles:
                h.remove()
            for owner, leaf, original in reversed(swapped):
                owner._parameters[leaf] = original
            for p, flag in grad_flags:
                p.requires_grad_(flag)
            self._attached.clear()

    @torch.no_grad()
    def _rebase(self, name: str, current: Tensor) -> None:
        """Keep the trained change, on top of the model's current value of ``name``.

        When the model tensor differs from the value the copy started from (an
        upstream LoRA patched in or out since :meth:`build`, or a resume on a
        re-patched model), shift the copy by the same amount, so training
        always sees ComfyUI's current patches plus what was learned.
        """
        k = _key(name)
        base = getattr(self.unfrozen_base, k)
        current = current.detach()
        if torch.equal(base, current):
            return
        self.unfrozen[k].add_((current - base).to(self.unfrozen[k].dtype))
        base.copy_(current)
        log.info("unfrozen %s: model value changed since build, trained copy re-based on it", name)

    def _check(self, modules: dict[str, nn.Module]) -> None:
        for t in self.plan.targets:
            m = modules.get(t.module)
            if not isinstance(m, nn.Linear) or m.in_features != t.in_features:
                raise ConfigError("model", t.module, f"is not the Linear({t.in_features}, ...) these adapters were built for; build them on this model")


class _LoraHook:
    """Forward hook of one Linear: adds the deltas of its adapters to the output.

    Several adapters on one layer (row slices) share one ``A`` matmul: their
    ``A`` factors are stacked to ``(n * rank, in)``, and their ``B`` factors are
    placed block-diagonally in one ``(out, n * rank)`` matrix (zeros on rows no
    adapter covers), so the whole update is one fused ``addmm``::

        y = addmm(W x, h, B_full^T),   h = (alpha / rank) * A_stack dropout(x)

    The small ``B_full`` is rebuilt each call from the ``B`` parameters, so
    gradients reach each ``B``; no ``(tokens, out)`` temporary is written.
    """

    def __init__(self, owner: LoraAdapters, targets: list[Target], out_features: int):
        self.owner = owner
        self.targets = sorted(targets, key=lambda t: t.rows[0] if t.rows else 0)
        self.keys = [_key(t.name) for t in self.targets]
        self.out_features = out_features
        self.rank = owner.config.rank

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        x = args[0] if args else kwargs["input"]
        owner = self.owner
        p = owner.config.dropout
        if p > 0.0 and owner.training:
            x = F.dropout(x, p, training=True)
        a_list = [owner.lora_A[k] for k in self.keys]
        a = a_list[0] if len(a_list) == 1 else torch.cat(a_list, 0)
        h = F.linear(x, a.to(x.dtype)) * owner.scale  # (..., n * rank)
        b = self._b_full().to(output.dtype)  # (out, n * rank)
        flat = torch.addmm(output.reshape(-1, output.shape[-1]), h.reshape(-1, h.shape[-1]).to(output.dtype), b.t())
        return flat.view(output.shape)

    def _b_full(self) -> Tensor:
        """``(out, n * rank)``: each adapter's ``B`` on its rows and its ``rank`` columns."""
        bs = [self.owner.lora_B[k] for k in self.keys]
        if self.targets[0].rows is None:
            return bs[0]
        n, r = len(bs), self.rank
        blocks, pos = [], 0
        for i, (t, b) in enumerate(zip(self.targets, bs, strict=True)):
            start, size = t.rows
            if start > pos:
                blocks.append(b.new_zeros(start - pos, n * r))
            blocks.append(torch.cat([b.new_zeros(size, i * r), b, b.new_zeros(size, (n - 1 - i) * r)], dim=1))
            pos = start + size
        if pos < self.out_features:
            blocks.append(bs[0].new_zeros(self.out_features - pos, n * r))
        return torch.cat(blocks, dim=0)


class _AdapterHook:
    """Forward hook of one Linear for the algorithms of :mod:`.algorithms` (DoRA, LoHa, LoKr, OFT).

    Each adapter changes its rows of the output (all rows, or a row slice of a
    fused projection); the rows no adapter covers pass through. The input is
    dropped out once for the adapters whose dropout is on the input.
    """

    def __init__(self, owner: LoraAdapters, targets: list[Target], out_features: int):
        self.owner = owner
        self.targets = sorted(targets, key=lambda t: t.rows[0] if t.rows else 0)
        self.keys = [_key(t.name) for t in self.targets]
        self.out_features = out_features

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        x = args[0] if args else kwargs["input"]
        owner = self.owner
        p = owner.config.dropout
        dropped = p > 0.0 and owner.training
        x_dropped = F.dropout(x, p, training=True) if dropped else x
        weight, bias = module.weight, module.bias
        pieces, pos = [], 0
        for t, k in zip(self.targets, self.keys, strict=True):
            start, size = t.rows or (0, self.out_features)
            if start > pos:
                pieces.append(output[..., pos:start])
            adapter = owner._adapters[k]
            y = output[..., start:start + size]
            b = None if bias is None else bias[start:start + size]
            pieces.append(y + adapter.change(x_dropped if adapter.uses_input_dropout else x, y, weight[start:start + size], b, dropped))
            pos = start + size
        if pos < self.out_features:
            pieces.append(output[..., pos:])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def _rows(weight: Tensor, target: Target) -> Tensor:
    """The target's rows of its layer's weight ``(rows, in)`` (a view)."""
    return weight if target.rows is None else weight[target.rows[0]:target.rows[0] + target.rows[1]]


def _init_a(init: str, rank: int, in_features: int, gen: torch.Generator) -> Tensor:
    """``A`` (rank, in) in float32 on the CPU from ``gen``; see :data:`.config.INITS`."""
    return _INITS[init](rank, in_features, gen)


def _kaiming_uniform(rank: int, in_features: int, gen: torch.Generator) -> Tensor:
    # kaiming_uniform_(a=sqrt(5)) as nn.Linear does: bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rank, in_features, generator=gen) * 2.0 - 1.0) * bound


def _gaussian(rank: int, in_features: int, gen: torch.Generator) -> Tensor:
    return torch.randn(rank, in_features, generator=gen) / rank


_INITS = {"default": _kaiming_uniform, "gaussian": _gaussian}
