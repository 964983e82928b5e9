"""Adapter algorithms: plain LoRA (the engine's own maths) and DoRA, LoHa, LoKr, OFT on peft's.

Each algorithm says what one adapter trains on ``rows`` of a Linear
``y = W x + b`` (all rows, or a row slice of a fused projection), how that
changes the layer's output on the activation path, and how it is written in
the layout ComfyUI's ``comfy/weight_adapter`` loads (0.3.75 and 0.33 read the
same keys). ``s = alpha / rank``; ``x~`` is ``dropout(x)`` in training::

    lora  y += s B A x~                                        lora_A/lora_B/alpha (engine.py, keys.py)
    dora  y  = m / |W + s B A|_row * (W x + s B A x)  + b      + dora_scale (rows, 1)
    loha  y += s ((W1a W1b) * (W2a W2b)) x~                    hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, alpha
    lokr  y += s (w1 kron w2) x~                               lokr_w1 | lokr_w1_a/_b, lokr_w2 | lokr_w2_a/_b, alpha
    oft   y  = R^T (W x) + b,  R block-diagonal orthogonal     oft_blocks (n, size, size), no alpha

peft supplies, per algorithm: the config class that validates the settings
(``LoraConfig(use_dora=True)``, ``LoHaConfig``, ``LoKrConfig``, ``OFTConfig``),
and the layer code that creates, initialises and computes the adapter
(``DoraLinearLayer``; the LoHa and LoKr ``Linear`` layers' parameters and
``get_delta_weight``; ``OFTRotationModule``'s Cayley rotation). The peft
layers are built on a *shape stub* (an ``nn.Linear`` of the adapter's
``(rows, in)`` whose weight is a zero-stride tensor) and held outside the model
and outside :class:`~.engine.LoraAdapters`' module tree: the model is never
injected, and only the adapter parameters are trained, saved and resumed.

Activation path, per algorithm (numbers in bench/RESULTS.md):

- DoRA: peft's ``DoraLinearLayer.forward`` takes the frozen output ``W x`` and
  the layer's weight (read, never copied) and returns the change; it needs the
  row norm of ``W + s B A``, one ``(rows, in)`` temporary per forward (detached,
  as in the DoRA paper and peft).
- LoHa: the Hadamard product has rank up to ``rank^2``, so the change is
  peft's ``get_delta_weight`` (``rows x in``) applied to ``x~``: one extra
  full-size matmul per layer, the cost ComfyUI's own bypass mode warns about.
- LoKr: ``(w1 kron w2) x`` is applied without building the Kronecker product:
  ``x`` is viewed as ``(a_in, b_in)`` and ``w1 X w2^T`` computed, two small
  matmuls; tests check it equals peft's ``get_delta_weight`` applied to ``x``.
- OFT: the rotation acts on the output rows, ``R^T (y - b) + b`` blockwise
  (peft's ``OFTRotationModule`` rotates the last dimension of what it is given;
  here that is the output), because ComfyUI's OFT rotates weight rows
  (``W'_k = R_k^T W_k``); peft's own OFT rotates the input, which no ComfyUI
  key can express. Exact Cayley transform (no Neumann series), as ComfyUI uses.

File details that matter for "the stock loader reproduces training":

- DoRA: ComfyUI 0.3.75 and 0.33 (``weight_decompose``) divide a ``(rows, 1)``
  ``dora_scale`` by the row norm of the *original* weight plus float eps,
  where peft's DoRA divides the magnitude by the row norm of ``W + s B A``. The
  file therefore stores ``dora_scale = m (|W| + eps) / |W + s B A|``, computed
  from the weights the adapters were last attached to (or built on): loaded on
  those weights, ComfyUI reproduces the trained layer exactly.
- LoKr: ComfyUI scales by ``alpha / rank`` only when a factor is decomposed;
  with both factors full it uses 1, so ``s`` is folded into ``lokr_w1`` and no
  alpha is written.
- OFT: ComfyUI's ``Q = blocks - blocks^T`` and ``R = (I + Q)(I - Q)^-1``;
  peft's ``R = (I - S)(I + S)^-1`` for its skew matrix ``S``; so
  ``oft_blocks = -S / 2``. No alpha key: ComfyUI reads an OFT alpha as a norm
  constraint. At strength 1 the loaded weight equals training; ComfyUI applies
  an OFT strength twice (``strength * (strength R - strength I) W``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from .config import LoraConfig
    from .targets import Target

ADAPTER = "default"
"""peft's adapter name inside the stub layers."""


class Algorithm:
    """One adapter algorithm: validation, parameter count, creation of a target's adapter."""

    label = "LoRA"

    def validate(self, config: LoraConfig) -> None:
        """Raise :class:`ConfigError` naming the field when ``config`` cannot be trained (peft's config class)."""

    def numel(self, target: Target, config: LoraConfig) -> int:
        return config.rank * (target.in_features + target.out_features)

    def check_target(self, target: Target, config: LoraConfig) -> None:
        """Raise :class:`ConfigError` when ``target``'s shape does not fit the settings."""

    def create(self, target: Target, config: LoraConfig, weight: Tensor, *, dtype: torch.dtype, device) -> TargetAdapter:
        """A target's adapter, initialised from torch's global RNG (the engine seeds it); ``weight`` = the target's rows."""
        raise NotImplementedError(f"{self.label} factors are built by LoraAdapters itself")


class TargetAdapter:
    """The trainable state of one target and its maths.

    ``params``: ``kind -> Parameter`` (``kind`` is the ComfyUI key suffix, e.g.
    ``hada_w1_a``); the engine registers them and trains them.
    """

    params: dict[str, nn.Parameter]
    uses_input_dropout = True

    def change(self, x: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None, dropped: bool) -> Tensor:
        """What to add to ``y`` ``(..., rows)``, the layer's output on these rows (bias included).

        ``x`` ``(..., in)``: the layer's input, already dropped out when ``dropped``;
        ``weight`` ``(rows, in)`` and ``bias`` ``(rows,)``: the layer's, live.
        """
        raise NotImplementedError

    def export(self, weight: Tensor) -> dict[str, Tensor]:
        """``suffix -> tensor`` in ComfyUI's layout; ``weight`` ``(rows, in)`` = the weight trained on."""
        raise NotImplementedError


ALGORITHMS: Registry[Algorithm] = Registry("adapter algorithm")


def register(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    def add(cls: type[Algorithm]) -> type[Algorithm]:
        ALGORITHMS.register(name)(cls())
        return cls

    return add


@register("lora")
class _Lora(Algorithm):
    """The engine's own LoRA (engine.py): unchanged, no peft."""


def _peft_error(field: str, value: Any, error: Exception) -> ConfigError:
    return ConfigError(field, value, f"peft refuses it: {error}")


def _shape_stub(rows: int, in_features: int, dtype: torch.dtype, device) -> nn.Linear:
    """An ``nn.Linear(in_features, rows)`` whose weight takes no memory (zero stride), for peft's layer constructors.

    peft reads its shape, device and dtype (adapter parameters are moved to them), never its values.
    """
    stub = nn.Linear(in_features, rows, bias=False, device="meta")
    stub.weight = nn.Parameter(torch.zeros((), dtype=dtype, device=device).expand(rows, in_features), requires_grad=False)
    return stub


@contextlib.contextmanager
def _quiet_peft():
    """peft warns about settings we fixed on purpose (e.g. OFT block sizes we checked); keep the log clean."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# ------------------------------------------------------------------ DoRA


class _WeightRows:
    """What peft's DoRA reads of a base layer: ``weight``, ``bias`` and ``parameters()``."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        self.weight = weight
        self.bias = bias

    def parameters(self):
        return iter(())


def _linear_shell(weight: nn.Parameter) -> nn.Linear:
    """An ``nn.Linear`` without bias around ``weight`` (the same Parameter): peft's DoRA calls its factors as layers."""
    shell = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    shell.weight = weight
    return shell


@register("dora")
class _Dora(Algorithm):
    label = "DoRA"

    def validate(self, config: LoraConfig) -> None:
        from peft import LoraConfig as PeftLoraConfig

        try:
            PeftLoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, use_dora=True)
        except (ValueError, TypeError) as e:
            raise _peft_error("algorithm", config.algorithm, e) from None

    def numel(self, target: Target, config: LoraConfig) -> int:
        return config.rank * (target.in_features + target.out_features) + target.out_features


class DoraAdapter(TargetAdapter):
    """peft's ``DoraLinearLayer`` on the engine's ``A (rank, in)`` and ``B (rows, rank)``; ``dora_scale`` = magnitude ``(rows,)``."""

    def __init__(self, a: nn.Parameter, b: nn.Parameter, scale: float, weight: Tensor):
        from peft.tuners.lora.dora import DoraLinearLayer

        self.scale = scale
        self.lora_A, self.lora_B = _linear_shell(a), _linear_shell(b)
        self.layer = DoraLinearLayer(fan_in_fan_out=False)
        with torch.no_grad():
            self.layer.update_layer(base_layer=_WeightRows(weight.detach(), None), lora_A=a.detach(), lora_B=b.detach(), scaling=scale)
        self.params = {"dora_scale": self.layer.weight}

    def change(self, x, y, weight, bias, dropped):
        dtype = self.lora_A.weight.dtype
        base = None if dropped else y.to(dtype)  # peft recomputes W x~ when the input was dropped out
        extra = self.layer(x.to(dtype), lora_A=self.lora_A, lora_B=self.lora_B, scaling=self.scale,
                           base_layer=_WeightRows(weight, None if bias is None else bias.to(dtype)), base_result=base)
        return extra.to(y.dtype)

    @torch.no_grad()
    def export(self, weight: Tensor) -> dict[str, Tensor]:
        w = weight.detach().float()
        delta = self.lora_B.weight.detach().float() @ self.lora_A.weight.detach().float()
        merged_norm = torch.linalg.norm(w + self.scale * delta.to(w.device), dim=1)
        comfy_norm = torch.linalg.norm(w, dim=1) + torch.finfo(torch.float32).eps  # ComfyUI's weight_decompose divides by this
        magnitude = self.layer.weight.detach().float().to(w.device)
        return {"dora_scale": (magnitude * comfy_norm / merged_norm).unsqueeze(1)}


# ------------------------------------------------------------------ LoHa and LoKr (peft's LyCORIS layers)


class _Lycoris(Algorithm):
    """Shared by LoHa and LoKr: a peft ``Linear`` layer on a shape stub; ``y += change(x~)``."""

    config_class: str
    layer_path: str
    param_names: tuple[str, ...]

    def peft_config(self, config: LoraConfig):
        import importlib

        module = importlib.import_module(self.layer_path.rsplit(".", 1)[0])
        cls = getattr(importlib.import_module("peft"), self.config_class)
        try:
            return cls(r=config.rank, alpha=config.alpha, rank_dropout=0.0, module_dropout=0.0, init_weights=True), module
        except (ValueError, TypeError) as e:
            raise _peft_error("algorithm", config.algorithm, e) from None

    def validate(self, config: LoraConfig) -> None:
        self.peft_config(config)

    def create(self, target, config, weight, *, dtype, device):
        peft_config, module = self.peft_config(config)
        with _quiet_peft():
            layer = module.Linear(_shape_stub(target.out_features, target.in_features, dtype, device), ADAPTER, config=peft_config, r=config.rank, alpha=config.alpha)
        return self.adapter_class(layer, config)

    adapter_class: type


class _LycorisAdapter(TargetAdapter):
    def __init__(self, layer: nn.Module, config: LoraConfig):
        self.layer = layer
        self.scale = layer.scaling[ADAPTER]
        self.alpha = config.alpha
        self.params = {name: getattr(layer, name)[ADAPTER] for name in layer.adapter_layer_names if ADAPTER in getattr(layer, name)}


class LohaAdapter(_LycorisAdapter):
    """peft's LoHa: ``delta = s (W1a W1b) * (W2a W2b)`` ``(rows, in)``, built each forward (custom autograd)."""

    def change(self, x, y, weight, bias, dropped):
        delta = self.layer.get_delta_weight(ADAPTER)
        return F.linear(x.to(delta.dtype), delta).to(y.dtype)

    @torch.no_grad()
    def export(self, weight):
        out = {name: p.detach() for name, p in self.params.items()}
        out["alpha"] = torch.tensor(float(self.alpha), dtype=torch.float32)
        return out


@register("loha")
class _Loha(_Lycoris):
    label = "LoHa"
    config_class = "LoHaConfig"
    layer_path = "peft.tuners.loha.layer.Linear"
    adapter_class = LohaAdapter

    def numel(self, target, config):
        return 2 * config.rank * (target.in_features + target.out_features)


class LokrAdapter(_LycorisAdapter):
    """peft's LoKr: ``delta = s kron(w1, w2)``, w1 ``(a_out, a_in)``, w2 ``(b_out, b_in)``, applied as ``w1 X w2^T``."""

    def factors(self) -> tuple[Tensor, Tensor]:
        p = self.params
        w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
        w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"]
        return w1, w2

    def change(self, x, y, weight, bias, dropped):
        w1, w2 = self.factors()
        lead = x.shape[:-1]
        grid = x.to(w1.dtype).reshape(*lead, w1.shape[1], w2.shape[1])  # x[j * b_in + l] = X[j, l]
        out = torch.matmul(w1, grid @ w2.t())  # (..., a_out, b_out): y[i * b_out + k] = (w1 X w2^T)[i, k]
        return (out.reshape(*lead, w1.shape[0] * w2.shape[0]) * self.scale).to(y.dtype)

    @torch.no_grad()
    def export(self, weight):
        out = {name: p.detach() for name, p in self.params.items()}
        if "lokr_w1" in out and "lokr_w2" in out:  # ComfyUI scales full factors by 1: fold s into w1
            out["lokr_w1"] = out["lokr_w1"] * self.scale
        else:
            out["alpha"] = torch.tensor(float(self.alpha), dtype=torch.float32)
        return out


@register("lokr")
class _Lokr(_Lycoris):
    label = "LoKr"
    config_class = "LoKrConfig"
    layer_path = "peft.tuners.lokr.layer.Linear"
    adapter_class = LokrAdapter

    def numel(self, target, config):
        from peft.tuners.lokr.layer import factorization

        (a_out, b_out), (a_in, b_in) = factorization(target.out_features), factorization(target.in_features)
        r = config.rank
        w1 = a_out * a_in  # decompose_both is off in peft's default: w1 stays full
        w2 = b_out * b_in if r >= max(b_out, b_in) / 2 else r * (b_out + b_in)
        return w1 + w2


# ------------------------------------------------------------------ OFT


@register("oft")
class _Oft(Algorithm):
    label = "OFT"

    def peft_config(self, config: LoraConfig):
        from peft import OFTConfig

        try:
            return OFTConfig(r=0, oft_block_size=config.rank, module_dropout=config.dropout, coft=False, block_share=False, use_cayley_neumann=False, init_weights=True)
        except (ValueError, TypeError) as e:
            raise _peft_error("rank", config.rank, f"as OFT block size: {e}") from None

    def validate(self, config: LoraConfig) -> None:
        if config.rank < 2:
            raise ConfigError("rank", config.rank, "OFT uses rank as its block size: must be >= 2 and divide every target's output rows")
        self.peft_config(config)

    def numel(self, target, config):
        size = config.rank
        return target.out_features // size * size * (size - 1) // 2

    def check_target(self, target, config):
        if target.out_features % config.rank:
            raise ConfigError("rank", config.rank, f"OFT block size must divide the output rows of every target; {target.name} has {target.out_features} (try a divisor, e.g. {_divisor_near(target.out_features, config.rank)})")

    def create(self, target, config, weight, *, dtype, device):
        from peft.tuners.oft import layer as oft

        with _quiet_peft():  # the rotated features are the target's output rows: the stub's in_features
            layer = oft.Linear(_shape_stub(1, target.out_features, dtype, device), ADAPTER, config=self.peft_config(config), r=0)
        return OftAdapter(layer, config.dropout)


class OftAdapter(TargetAdapter):
    """peft's ``OFTRotationModule`` on the output rows; ``oft_R`` ``(blocks, size (size - 1) / 2)``."""

    uses_input_dropout = False  # OFT's dropout is peft's multiplicative block dropout on the rotation

    def __init__(self, layer: nn.Module, dropout: float):
        from peft.tuners.oft.layer import MultiplicativeDropoutLayer

        self.rotation = layer.oft_R[ADAPTER]
        self.dropout = MultiplicativeDropoutLayer(p=dropout)
        self.params = {"oft_R": self.rotation.weight}

    def rotations(self) -> Tensor:
        """``R`` ``(blocks, size, size)``: peft's exact Cayley transform of its skew-symmetric blocks."""
        rot = self.rotation
        return rot._cayley_batch(rot.weight, rot.block_size, use_cayley_neumann=False)

    def change(self, x, y, weight, bias, dropped):
        r = self.rotations()
        self.dropout.train(dropped)
        r = self.dropout(r)
        frozen = y if bias is None else y - bias
        blocks = frozen.to(r.dtype).reshape(*y.shape[:-1], r.shape[0], r.shape[1])
        rotated = torch.einsum("...rk,rkc->...rc", blocks, r).reshape(y.shape)  # as OFTRotationModule.forward
        return (rotated - frozen.to(r.dtype)).to(y.dtype)

    @torch.no_grad()
    def export(self, weight):
        rot = self.rotation
        skew = rot._pytorch_skew_symmetric(rot.weight.detach(), rot.block_size)
        return {"oft_blocks": -0.5 * skew}


def _divisor_near(n: int, k: int) -> int:
    return min((d for d in range(2, n + 1) if n % d == 0), key=lambda d: (abs(d - k), d))


def algorithm(name: str) -> Algorithm:
    return ALGORITHMS.get(name, "algorithm")


__all__ = ["ALGORITHMS", "Algorithm", "DoraAdapter", "LohaAdapter", "LokrAdapter", "OftAdapter", "TargetAdapter", "algorithm"]
