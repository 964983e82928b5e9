"""Per-architecture LoRA target presets, as data in a registry.

A :class:`Preset` says which adapters to train, by patterns over *adapter
names*. An adapter name is a module name of the diffusion model (ComfyUI's
naming, e.g. ``layers.0.attention.out``), except where the preset splits a
fused projection into row blocks (:class:`Split`): Z-Image's
``layers.N.attention.qkv`` (out = 3 * dim) becomes three adapters named
``layers.N.attention.to_q``, ``.to_k`` and ``.to_v``, each on its own third of
the rows. Those are the diffusers names that ComfyUI's LoRA loader maps onto
row slices of ``qkv`` for Lumina2/Z-Image (``comfy.utils.z_image_to_diffusers``),
so the exported keys load in stock ComfyUI.

``diffusers_names`` rewrites adapter names for the ``diffusers`` key style of
the exported file (e.g. ``attention.out`` -> ``attention.to_out.0``).

Adding an architecture is adding entries here; no code branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.u1 import presets as _u1
from ..registry import Registry

PRESETS: Registry[Preset] = Registry("LoRA preset")


@dataclass(frozen=True)
class Split:
    """A fused projection trained as separate adapters on equal row blocks.

    ``module`` is a pattern over module names (glob or ``re:``); ``parts`` name
    the blocks in row order and replace the module's last name component:
    ``layers.0.attention.qkv`` with parts ``(to_q, to_k, to_v)`` gives
    ``layers.0.attention.to_q`` = rows ``[0, dim)``, ``to_k`` = ``[dim, 2 dim)``,
    ``to_v`` = ``[2 dim, 3 dim)``.
    """

    module: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Preset:
    """Targets of one preset: adapter names matching ``include`` and not ``exclude``.

    Only ``Linear`` layers (any ``torch.nn.Linear`` subclass, e.g. ComfyUI's
    ``ops.*.Linear``) become adapters.
    """

    description: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    splits: tuple[Split, ...] = ()
    diffusers_names: tuple[tuple[str, str], ...] = ()
    """``(regex, replacement)`` pairs applied with ``re.sub`` to adapter names for key_style ``diffusers``."""


# ------------------------------------------------------------------ Z-Image

_ZIMAGE_SPLITS = (Split("*.attention.qkv", ("to_q", "to_k", "to_v")),)
_ZIMAGE_DIFFUSERS = ((r"\.attention\.out$", ".attention.to_out.0"),)
_ZIMAGE_ATTN = ("layers.*.attention.to_q", "layers.*.attention.to_k", "layers.*.attention.to_v", "layers.*.attention.out")

PRESETS.register("zimage_attn")(
    Preset(
        description="Z-Image: to_q, to_k, to_v (row slices of the fused qkv) and attention.out of the main layers. "
        "Refiners, adaLN, embedders and final layer are not trained.",
        include=_ZIMAGE_ATTN,
        splits=_ZIMAGE_SPLITS,
        diffusers_names=_ZIMAGE_DIFFUSERS,
    )
)

PRESETS.register("zimage_attn_ffn")(
    Preset(
        description="Z-Image: zimage_attn plus the SwiGLU feed-forward w1, w2, w3 of the main layers.",
        include=(*_ZIMAGE_ATTN, "layers.*.feed_forward.w1", "layers.*.feed_forward.w2", "layers.*.feed_forward.w3"),
        splits=_ZIMAGE_SPLITS,
        diffusers_names=_ZIMAGE_DIFFUSERS,
    )
)

# ------------------------------------------------------------------ SenseNova-U1
# Module names of the U1 MODEL's diffusion_model (the generation tower) are the
# official ones, e.g. ``language_model.model.layers.0.self_attn.q_proj_mot_gen``
# and ``fm_modules.fm_head.0``; targets come from train_u1's groups (models/u1/presets.py).

PRESETS.register("u1_default")(
    Preset(
        description="SenseNova-U1 (train_u1 'default'): generation-tower attention q/k/v/o, MLP gate/up/down and the fm_head Linears (296 adapters on the 8B).",
        include=_u1.include_patterns(("attn", "mlp", "fm_head")),
    )
)

PRESETS.register("u1_attn_mlp_no_head")(
    Preset(
        description="SenseNova-U1 (train_u1 'attn_mlp_no_head', its default.yaml): generation-tower attention q/k/v/o and MLP gate/up/down (294 adapters on the 8B).",
        include=_u1.include_patterns(("attn", "mlp")),
    )
)

PRESETS.register("u1_attn_only")(
    Preset(
        description="SenseNova-U1 (train_u1 'attn_only'): generation-tower attention q/k/v/o (168 adapters on the 8B).",
        include=_u1.include_patterns(("attn",)),
    )
)

# ------------------------------------------------------------------ any model

PRESETS.register("all_linear")(
    Preset(
        description="Every Linear layer of the diffusion model, fused projections as one adapter each.",
        include=("*",),
    )
)

PRESETS.register("custom")(
    Preset(
        description="Nothing by default: only the include patterns of the LoRA config (module names, no splits).",
        include=(),
    )
)
