"""Generic checks of config values: types from dataclass annotations, numeric ranges and choices."""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any

from .errors import HqgnnError


@dataclass(frozen=True)
class Range:
    """A numeric rule: lo <= v <= hi (``lo_open`` / ``hi_open``: strict). A plain (lo, hi) tuple in RULES is closed."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def check(self, v: float) -> str | None:
        low_ok = v > self.lo if self.lo_open else v >= self.lo
        high_ok = v < self.hi if self.hi_open else v <= self.hi
        if low_ok and high_ok:
            return None
        if self.hi == math.inf:
            return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"must be in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


FLOAT32_MAX = 3.4028234663852886e38
POSITIVE = Range(0, math.inf, lo_open=True)
NON_NEGATIVE = Range(0, math.inf)


def hint(name: str, known: typing.Iterable[str], what: str = "setting") -> str:
    """' (did you mean X?)' for the closest known name, else the list of known names."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known {what}s: {', '.join(known)})"


def check_type(key: str, hint: Any, value: Any) -> Any:
    """``value`` as the annotated type (int -> float, tuple -> list), or a one-line HqgnnError."""
    import numbers

    def bad() -> HqgnnError:
        return HqgnnError(f"{key}: expected {getattr(hint, '__name__', None) or str(hint)}, got {value!r}")

    origin = typing.get_origin(hint)
    if origin is list:
        (elem,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [check_type(f"{key}[{i}]", elem, v) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise bad()
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise bad()
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float ("cannot be converted ... without overflow")
                number = math.inf
            # no setting means anything at inf / NaN (lr=inf "trained" to -inf scores), and values are used in
            # float32 tensors, where anything beyond FLOAT32_MAX overflows inside torch
            if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
                raise HqgnnError(f"{key}: must be a finite number (|x| <= {FLOAT32_MAX:.3g}), got {value!r}")
            return number
        raise bad()
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad()
    return value  # an annotation this table does not know: left to the field's own rule


def check_rule(key: str, rule: Any, value: Any) -> None:
    """Raise a one-line HqgnnError unless ``value`` (each element of a list) satisfies ``rule``.

    ``rule``: choices (a tuple of str), a :class:`Range`, a closed (lo, hi) tuple, or a callable
    returning an error message or None.
    """
    for v in value if isinstance(value, list) else [value]:
        if isinstance(rule, tuple) and rule and all(isinstance(c, str) for c in rule):
            if v not in rule:
                close = difflib.get_close_matches(str(v), rule, n=1)
                extra = f"; did you mean {close[0]!r}?" if close else ""
                raise HqgnnError(f"{key} must be one of {', '.join(rule)}, got {v!r}{extra}")
            continue
        if isinstance(rule, tuple):
            rule = Range(*rule)
        problem = rule.check(v) if isinstance(rule, Range) else rule(v)
        if problem:
            raise HqgnnError(f"{key} {problem}, got {v!r}")
