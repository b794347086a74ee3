"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The benchmark data lives next to the repository: <repo>/../shared/data/{gowalla,yelp2018}.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data_dir() -> Path:
    """The shared benchmark data folder; fails under CI (``CI=true``) when missing, else skips."""
    if not SHARED_DATA_DIR.is_dir():
        reason = f"shared benchmark data not found at {SHARED_DATA_DIR}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return SHARED_DATA_DIR
