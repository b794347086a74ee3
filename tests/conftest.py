"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the benchmark harnesses live outside the package (benchmarks/); their own tests import them from there
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.append(str(BENCHMARKS_DIR))

# The benchmark data ({gowalla,yelp2018}/{train,test}.txt): $HQGNN_TEST_DATA if set, else the folder
# next to the repository, <repo>/../shared/data.
DEFAULT_SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_location() -> Path:
    """Where the tests look for the shared benchmark data (``HQGNN_TEST_DATA``, default ``../shared/data``)."""
    env = os.environ.get("HQGNN_TEST_DATA", "").strip()
    return Path(env).expanduser().resolve() if env else DEFAULT_SHARED_DATA_DIR


@pytest.fixture
def shared_data_dir() -> Path:
    """The shared benchmark data folder; fails under CI (``CI=true``) when missing, else skips."""
    location = shared_data_location()
    if not location.is_dir():
        source = "HQGNN_TEST_DATA" if os.environ.get("HQGNN_TEST_DATA", "").strip() else "default location"
        reason = f"shared benchmark data not found at {location} ({source}; set HQGNN_TEST_DATA=DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return location


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only when asked for (``-m slow`` or HQGNN_SLOW_TESTS=1): the README's plain
    ``python -m pytest -q`` (CI) stays within its time budget."""
    if os.environ.get("HQGNN_SLOW_TESTS", "").strip() == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or HQGNN_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
