"""benchmarks/foldin.py at tiny scale: the whole protocol (trainings, fold-in, selection) and the timing mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import foldin as bench


@pytest.mark.slow
def test_tiny_quality_protocol_writes_one_json(tmp_path: Path) -> None:
    out = tmp_path / "fi.json"
    bench.main(["--tiny", "--work", str(tmp_path / "w"), "--out", str(out)])
    res = json.loads(out.read_text())["results"]
    for key in ("synthetic/float", "synthetic/1bit"):
        for side in ("user", "item"):
            row = res[key][side]
            assert row["chosen_on_validation"] in row["methods"]
            assert row["full_retrain"]["recall@20"] > row["popularity"]["recall@20"]


def test_tiny_timing_mode(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    bench.main(["--timing", "--tiny", "--reps", "5", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"float/propagate", "float/lstsq", "1bit/propagate", "1bit/lstsq"}
