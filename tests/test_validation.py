"""The generic value checks behind RunConfig.validate: types, ranges, choices and name hints."""

import math

import pytest

from hqgnn.errors import HqgnnError
from hqgnn.validation import NON_NEGATIVE, POSITIVE, Range, check_rule, check_type, hint


def test_range_bounds_open_and_closed():
    assert Range(0, 1).check(0) is None and Range(0, 1).check(1) is None
    assert Range(0, 1, hi_open=True).check(1) == "must be in [0, 1)"
    assert POSITIVE.check(0) == "must be > 0" and POSITIVE.check(1e-9) is None
    assert NON_NEGATIVE.check(-1) == "must be >= 0" and NON_NEGATIVE.check(math.inf) is None


def test_check_type_converts_only_what_is_lossless():
    assert check_type("k", float, 3) == 3.0 and isinstance(check_type("k", float, 3), float)
    assert check_type("k", list[int], (1, 2)) == [1, 2]
    for hint_, bad in [(int, True), (int, 2.5), (bool, 1), (str, 3), (list[int], [1, "x"])]:
        with pytest.raises(HqgnnError, match="^k"):
            check_type("k", hint_, bad)


def test_check_rule_choices_ranges_callables_and_lists():
    check_rule("a", ("x", "y"), "y")
    with pytest.raises(HqgnnError, match=r"a must be one of x, yy, got 'yyz'; did you mean 'yy'\?"):
        check_rule("a", ("x", "yy"), "yyz")
    with pytest.raises(HqgnnError, match=r"b must be in \[1, 3\], got 4"):
        check_rule("b", (1, 3), [1, 4])  # a list: every element
    with pytest.raises(HqgnnError, match="c odd, got 2"):
        check_rule("c", lambda v: "odd" if v % 2 == 0 else None, 2)


def test_hint_names_the_closest_or_lists_all():
    assert hint("lrr", ["lr", "reg"]) == " (did you mean 'lr'?)"
    assert hint("zzz", ["lr", "reg"], "section") == " (known sections: lr, reg)"
