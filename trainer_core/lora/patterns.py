"""Name patterns over module and parameter names: globs, or regexes after ``re:``.

A pattern matches a whole name (``layers.0.attention.qkv``):

- glob (default): ``fnmatch`` syntax, where ``*`` also crosses dots, so
  ``layers.*.attention.out`` matches every main block's output projection;
- ``re:<regex>``: ``re.fullmatch``, e.g. ``re:layers\\.(1[0-9])\\.feed_forward\\.w[13]``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable

from ..errors import ConfigError

REGEX_PREFIX = "re:"


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str, field: str = "pattern") -> re.Pattern:
    """The compiled full-match regex of a glob or ``re:`` pattern; a bad one raises ConfigError."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(field, pattern, "a pattern must be a non-empty string (glob, or a regex after 're:')")
    pattern = pattern.strip()
    source = pattern[len(REGEX_PREFIX):] if pattern.startswith(REGEX_PREFIX) else fnmatch.translate(pattern)
    try:
        return re.compile(source)
    except re.error as e:
        raise ConfigError(field, pattern, f"not a valid regular expression: {e}") from None


def matches(name: str, patterns: Iterable[str], field: str = "pattern") -> bool:
    """True when any of ``patterns`` matches the whole ``name``."""
    return any(compile_pattern(p, field).fullmatch(name) is not None for p in patterns)


def literal_hint(pattern: str) -> str:
    """The pattern with its wildcard syntax removed, for "close name" suggestions."""
    text = pattern[len(REGEX_PREFIX):] if pattern.startswith(REGEX_PREFIX) else pattern
    return re.sub(r"[\\^$*+?()\[\]{}|]", "", text).replace("..", ".")
