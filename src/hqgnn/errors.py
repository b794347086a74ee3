"""User-facing errors: one clear line, no traceback, non-zero exit."""

from __future__ import annotations

import numbers
from typing import Any


class HqgnnError(Exception):
    """A mistake in the user's input or arguments (bad file, bad flag), shown as one line by the CLI."""


class DataError(HqgnnError):
    """Malformed or inconsistent input data; the message names the file and, where known, the line."""

    def __init__(self, path: object, problem: str, line: int | None = None) -> None:
        where = f"{path}" if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class UsageError(HqgnnError):
    """A command-line argument that cannot be used as given (a --set value of the wrong type, an unknown
    field): exit status 2, as for an unknown option or a missing argument."""

    exit_code = 2


def check_k(k: Any, n_items: int | None = None) -> int:
    """A user's ``k`` as an int >= 1 (one :class:`HqgnnError` otherwise; numpy integers count, bools do not),
    clamped to ``n_items`` when given: memory is bounded by the answer, never by ``k``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise HqgnnError(f"k must be an integer >= 1, got {k!r}")
    return int(k) if n_items is None else min(int(k), n_items)
