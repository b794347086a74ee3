"""hqgnn.progress and what training and evaluation print without a terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hqgnn.progress import Heartbeat, epochs_eta, format_eta


def test_format_eta():
    assert [format_eta(s) for s in (0, 42.4, 425, 7380)] == ["0s", "42s", "7m05s", "2h03m"]
    assert epochs_eta(2, 10, 60.0) == "4m00s"  # 8 epochs left at 30 s
    assert epochs_eta(2, 10, 60.0, max_seconds=100.0) == "40s"  # the time budget ends first


def test_heartbeat_logs_only_when_due_with_eta_and_lazy_fields(caplog):
    log = logging.getLogger("hqgnn.test")
    calls = []

    def loss():
        calls.append(1)
        return 0.5

    with caplog.at_level(logging.INFO, logger="hqgnn.test"):
        quiet = Heartbeat("work", 10, log, every=3600.0, always=True)
        assert not quiet.tick(1, loss=loss) and not calls  # not due: the field is never computed
        beat = Heartbeat("work", 10, log, every=0.0, always=True, start=0.0)
        assert beat.tick(5, loss=loss) and calls == [1]
    line = caplog.records[-1].getMessage()
    assert line.startswith("work: 5/10 (50%), loss 0.5000,") and "ETA" in line


@pytest.mark.parametrize("every", ["0"])
def test_training_without_a_terminal_logs_progress_lines_with_eta(tmp_path: Path, every: str):
    """stderr is a pipe here, as in CI or nohup: plain unwrapped lines, epochs with the ETA, and with the
    heartbeat at 0 s a line per batch and per evaluation batch."""
    env = {**os.environ, "HQGNN_PROGRESS_SECONDS": every, "COLUMNS": "40"}
    args = [sys.executable, "-m", "hqgnn", "train", "--out", str(tmp_path / "r"), "--epochs", "3", "--eval-every", "2",
            "--dim", "8", "--device", "cpu", "--set", "data.synthetic_users=300", "--set", "data.synthetic_items=200",
            "--set", "train.batch_size=256"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    epoch_lines = [ln for ln in lines if "epoch 2/3: loss" in ln]
    assert epoch_lines and "val recall@20" in epoch_lines[0] and "ETA" in epoch_lines[0]  # one line, not wrapped
    assert any("epoch 1 batches:" in ln and "ETA" in ln and "loss" in ln for ln in lines)
    assert any(ln.split(" ", 2)[-1].startswith("epochs: 1/3") for ln in lines)  # an epoch without evaluation
    assert any("evaluation users:" in ln and "(100%)" in ln for ln in lines)  # validation and test users
