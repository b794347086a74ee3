"""Progress for long loops: a tqdm bar on a terminal, a log line at least every 30 s everywhere else."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

__all__ = ["HEARTBEAT_SECONDS", "Heartbeat", "epochs_eta", "format_eta", "heartbeat_seconds"]

# without a terminal (CI, nohup, a notebook's subprocess) a bar is invisible: a log line at least this often
# (HQGNN_PROGRESS_SECONDS overrides it)
HEARTBEAT_SECONDS = 30.0


def heartbeat_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("HQGNN_PROGRESS_SECONDS", HEARTBEAT_SECONDS)))
    except ValueError:
        return HEARTBEAT_SECONDS


def format_eta(seconds: float) -> str:
    """``42s``, ``7m05s`` or ``2h03m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def epochs_eta(epochs_done: int, epochs: int, elapsed: float, max_seconds: float = 0.0) -> str:
    """Time left of a training run: the remaining epochs at the mean epoch time so far (``elapsed`` counts
    a resumed run's earlier epochs too), capped by a time budget ``max_seconds`` (0: none)."""
    left = (epochs - epochs_done) * elapsed / max(1, epochs_done)
    if max_seconds > 0:
        left = min(left, max(0.0, max_seconds - elapsed))
    return format_eta(left)


class Heartbeat:
    """Logs ``what: done/total (pct), <fields>, ETA ...`` when ``every`` seconds have passed since the last
    line (and never on a terminal where a tqdm bar already shows the same, unless ``always``).

    ``tick(done, **fields)`` is cheap (one clock read) so it can be called per batch; a field may be a
    callable, evaluated only when a line is written (e.g. a loss that needs a device sync).
    """

    def __init__(self, what: str, total: int, logger: logging.Logger, every: float | None = None,
                 always: bool = False, start: float | None = None) -> None:
        self.what, self.total, self.log = what, max(1, int(total)), logger
        self.every = heartbeat_seconds() if every is None else float(every)
        self.enabled = always or not _stderr_is_terminal()
        self.t0 = time.perf_counter() if start is None else start
        self.last = self.t0

    def tick(self, done: int, **fields: Any) -> bool:
        """Log a line if one is due; returns whether it logged."""
        if not self.enabled:
            return False
        now = time.perf_counter()
        if now - self.last < self.every:
            return False
        self.last = now
        elapsed = now - self.t0
        eta = elapsed / max(done, 1) * max(self.total - done, 0)
        values = {k: v() if callable(v) else v for k, v in fields.items()}  # computed only when a line is due
        extra = "".join(f", {k} {v:.4f}" if isinstance(v, float) else f", {k} {v}" for k, v in values.items())
        self.log.info("%s: %d/%d (%.0f%%)%s, %s elapsed, ETA %s", self.what, done, self.total,
                      100.0 * done / self.total, extra, format_eta(elapsed), format_eta(eta))
        return True


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
