"""Errors about one input file: they name the file and say what to do."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A file the dataset cannot use.

    ``DataError(path, "is empty (0 bytes)", "re-export or delete it")`` reads
    ``/data/cat.png: is empty (0 bytes); re-export or delete it``.
    """

    def __init__(self, path: str | Path, problem: str, fix: str):
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}; {fix}")


class FatalDataError(DataError):
    """A :class:`DataError` the user asked to stop on (e.g. ``missing_caption = fail``);
    the bad-file policy ``skip`` never swallows it."""
