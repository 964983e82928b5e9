"""What the LoRA trains: algorithm, targets, rank, alpha, dropout, init and unfrozen parameters.

One frozen dataclass, validated on construction, saved as JSON (with a schema
version) in the LoRA file's metadata and read back tolerantly.

Schema 1 is every config before ``algorithm`` existed; a config with the
default ``algorithm = "lora"`` is still written as schema 1 without the field,
so LoRA files, resumable states and workflows of plain LoRA runs are the same
as before. Any other algorithm writes schema 2, which an older FlowLoRA refuses
instead of reading it as a plain LoRA.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError, require
from . import patterns

INITS = ("default", "gaussian")
"""``default``: A ~ kaiming-uniform(a=sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)), B = 0.
``gaussian``: A ~ N(0, 1/rank^2), B = 0. Both leave the model's output unchanged at step 0."""


@dataclass(frozen=True)
class LoraConfig:
    """LoRA settings; targets = preset's patterns + ``include`` - ``exclude``.

    ``preset`` names an entry of :data:`.presets.PRESETS` (e.g. ``zimage_attn``).
    ``include``/``exclude``/``unfreeze`` are glob or ``re:`` patterns
    (:mod:`.patterns`): include/exclude over adapter names (module names, or
    the split names such as ``layers.0.attention.to_q`` that a preset defines
    for fused projections), unfreeze over parameter names
    (``layers.0.attention_norm1.weight``), which are then trained in full.

    Each ``lora`` adapter adds ``(alpha / rank) * B @ A @ dropout(x)`` to its
    layer's output; ``algorithm`` picks another adapter form (:mod:`.algorithms`:
    ``dora``, ``loha``, ``lokr``, ``oft``), validated by peft's config class.
    """

    preset: str = "zimage_attn"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    init: str = "default"
    unfreeze: tuple[str, ...] = ()
    algorithm: str = "lora"

    SCHEMA: ClassVar[int] = 2

    def __post_init__(self):
        from .presets import PRESETS  # data module; imported late to keep this file standalone

        for name in ("include", "exclude", "unfreeze"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(p.strip() for p in value.replace(",", "\n").splitlines() if p.strip())
            object.__setattr__(self, name, tuple(value))
            for p in getattr(self, name):
                patterns.compile_pattern(p, name)
        PRESETS.get(self.preset, "preset")
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1, "rank", self.rank, "must be an integer >= 1")
        require(isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0, "alpha", self.alpha, "must be a finite number > 0")
        require(isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must lie in [0, 1)")
        require(self.init in INITS, "init", self.init, f"must be one of {', '.join(INITS)}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))
        from .algorithms import ALGORITHMS  # peft is imported only for the algorithms that use it

        ALGORITHMS.get(self.algorithm, "algorithm").validate(self)

    @property
    def scale(self) -> float:
        """``alpha / rank``, the factor on ``B @ A``."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; plain LoRA omits ``algorithm`` and stays schema 1 (module docstring)."""
        values = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if self.algorithm == "lora":
            del values["algorithm"]
            return {"schema": 1, **values}
        return {"schema": self.SCHEMA, **values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, a newer schema is refused."""
        schema = int(data.get("schema", cls.SCHEMA))
        if schema > cls.SCHEMA:
            raise ConfigError("schema", schema, f"LoRA config from a newer FlowLoRA (this one reads up to {cls.SCHEMA}); update the pack")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**values)

    def describe(self) -> str:
        """One line for logs, e.g. ``zimage_attn r16 a16 +include[1] unfreeze[2]`` (``zimage_attn lokr r16 a16`` for other algorithms)."""
        parts = [self.preset, *([self.algorithm] if self.algorithm != "lora" else []), f"r{self.rank}", f"a{self.alpha:g}"]
        if self.dropout:
            parts.append(f"dropout{self.dropout:g}")
        if self.init != "default":
            parts.append(f"init={self.init}")
        for name in ("include", "exclude", "unfreeze"):
            if getattr(self, name):
                parts.append(f"{name}[{len(getattr(self, name))}]")
        return " ".join(parts)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
