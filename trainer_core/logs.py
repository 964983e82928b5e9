"""Training logs: one JSON object per micro-batch, next to the LoRA file.

Each record holds ``step`` (optimizer update, 1-based), ``micro``, ``loss``
(active loss, batch mean), ``x0_mse``, ``v_mse``, per-sample ``sigma``, ``t``
(= 1 - sigma), ``route`` (cond / drop_text / drop_both), ``sample_loss``,
``sources``, and the update's ``lr`` and ``grad_norm``. Validation loss is
kept in a file of its own beside it (:mod:`.validation`), so readers of this
log see training records only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingLog:
    """What the trainer node hands to plot nodes: where a run's log and LoRA are."""

    label: str
    log_path: str
    lora_path: str
    steps: int
    stopped: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    validation_path: str = ""
    """The run's validation records (``<stem>.val.jsonl``, :mod:`.validation`); empty: none."""

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.log_path)

    def validation_records(self) -> list[dict[str, Any]]:
        """The run's validation records ([] without a Validation node or before its first evaluation)."""
        from . import validation

        return validation.read_records(self.validation_path) if self.validation_path else []


def read_records(path: str) -> list[dict[str, Any]]:
    """All complete records of a log (a torn last line from a killed run is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records
