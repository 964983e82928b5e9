"""Errors that name the bad field and value, so a user knows what to change."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """An impossible setting: names the field, the value and what is allowed.

    Example: ``ConfigError("std", -1.0, "must be > 0")`` reads
    ``std = -1.0: must be > 0``.
    """

    def __init__(self, field: str, value: Any, problem: str):
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field} = {value!r}: {problem}")


def require(condition: bool, field: str, value: Any, problem: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, problem)
