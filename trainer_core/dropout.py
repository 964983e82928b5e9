"""Condition dropout: route each sample to its caption or to the empty prompt.

U1 report section 2.3 / spec 5.7: one ``u ~ U[0, 1)`` per sample;
``u < p_text`` drops the text ("drop_text"), ``u < p_text + p_both`` drops text
and image condition ("drop_both"), otherwise the caption is kept ("cond"). In
pure text-to-image both dropped routes use the same unconditional prefix, so
with p_text = p_both = 0.1 about 20% of samples train unconditionally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .errors import require

ROUTES = ("cond", "drop_text", "drop_both")
COND, DROP_TEXT, DROP_BOTH = range(3)


@dataclass(frozen=True)
class ConditionDropout:
    """Probabilities of the two dropped routes; ``p_text + p_both <= 1``."""

    p_text: float = 0.0
    p_both: float = 0.0

    SCHEMA: ClassVar[int] = 1

    def __post_init__(self):
        for name in ("p_text", "p_both"):
            value = getattr(self, name)
            require(math.isfinite(value) and 0.0 <= value <= 1.0, name, value, "must lie in [0, 1]")
        require(self.p_text + self.p_both <= 1.0, "p_text + p_both", self.p_text + self.p_both, "must be <= 1")

    @property
    def enabled(self) -> bool:
        return self.p_text + self.p_both > 0.0

    def routes(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Route per sample, ``(B,)`` int64 indexing :data:`ROUTES`.

        Always draws B uniforms, so enabling dropout does not shift other streams
        that share the generator between runs with different p.
        """
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        routes = torch.full((batch_size,), COND, dtype=torch.int64)
        routes[u < self.p_text + self.p_both] = DROP_BOTH
        routes[u < self.p_text] = DROP_TEXT
        return routes

    @staticmethod
    def unconditional(routes: Tensor) -> Tensor:
        """``(B,)`` bool: which samples use the unconditional prompt."""
        return routes != COND

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, "p_text": self.p_text, "p_both": self.p_both}
