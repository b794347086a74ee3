"""The served model: one loaded run + Recommender as an immutable snapshot, and the holder that swaps snapshots atomically."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import HqgnnError
from ..recommender import Recommender
from ..run import TrainedRun, load_run


class UnknownIdError(LookupError):
    """A user or item id that is not in the run; the message is safe to send to the client."""


def _shown(raw: Any) -> str:
    """The id as echoed in an error message: repr, cut short so a huge bogus id is not sent back whole."""
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class ModelSnapshot:
    """Everything one request needs, never mutated after construction.

    A request reads ``holder.snapshot`` once and uses only that object, so a reload that
    publishes a new snapshot mid-request cannot mix two runs in one answer.
    """

    run: TrainedRun
    recommender: Recommender
    run_dir: Path
    loaded_at: str
    # The run's ids as Python ints / strs: indexing a list is much cheaper than numpy ``.item()``
    # per returned slot, and it gives JSON ints for integer ids and strings otherwise.
    user_ids: list[Any] = field(repr=False)
    item_ids: list[Any] = field(repr=False)

    def user_index(self, raw: Any) -> int:
        try:
            return self.run.user_index(raw)
        except KeyError:
            raise UnknownIdError(f"unknown user {_shown(raw)}") from None

    def item_index(self, raw: Any) -> int:
        try:
            return self.run.item_index(raw)
        except KeyError:
            raise UnknownIdError(f"unknown item {_shown(raw)}") from None

    def recommend(self, users: Sequence[Any], k: int, exclude_seen: bool) -> list[dict[str, Any]]:
        """Top-k for each raw user id (raises UnknownIdError naming the first unknown one)."""
        idx = np.fromiter((self.user_index(u) for u in users), dtype=np.int64, count=len(users))
        k = min(k, self.run.n_items)  # the answer never holds more slots than there are items
        scores, items = self.recommender.recommend(idx, k, exclude_seen=exclude_seen)
        return [{"user": self.user_ids[u], "items": self._items(s, i)} for u, s, i in zip(idx.tolist(), scores, items)]

    def recommend_batch(self, users: Sequence[Any], k: int, exclude_seen: bool) -> dict[str, Any]:
        """``POST /recommend/batch``: the known users answered, the unknown ones marked, all in request order."""
        idx = np.empty(len(users), dtype=np.int64)
        unknown: list[Any] = []
        for r, u in enumerate(users):  # id lookups are dict hits; the scoring below is one vectorized call
            try:
                idx[r] = self.run.user_index(u)
            except KeyError:
                idx[r] = -1
                unknown.append(u)
        known = np.flatnonzero(idx >= 0)
        k = min(k, self.run.n_items)
        results: list[dict[str, Any]] = [
            {"user": u, "items": [], "error": f"unknown user {_shown(u)}"} for u in users
        ]
        if len(known):
            scores, items = self.recommender.recommend(idx[known], k, exclude_seen=exclude_seen)
            for r, u, s, i in zip(known.tolist(), idx[known].tolist(), scores, items):
                results[r] = {"user": self.user_ids[u], "items": self._items(s, i)}
        return {"results": results, "unknown_users": unknown}

    def similar(self, item: Any, k: int) -> dict[str, Any]:
        i = self.item_index(item)
        k = min(k, self.run.n_items)
        scores, items = self.recommender.similar_items(np.array([i], dtype=np.int64), k)
        return {"item": self.item_ids[i], "items": self._items(scores[0], items[0])}

    def _items(self, scores: np.ndarray, items: np.ndarray) -> list[dict[str, Any]]:
        # -1 marks padding (fewer than k unseen items); those slots are left out.
        ids = self.item_ids
        return [{"item": ids[i], "score": s} for s, i in zip(scores.tolist(), items.tolist()) if i >= 0]

    def metadata(self) -> dict[str, Any]:
        run = self.run
        return {
            "model": f"hqgnn-{run.bits}bit" if run.quantized else "lightgcn-float32",
            "quantized": run.quantized,
            "bits": run.bits,
            "dim": int(run.config.model.dim),
            "users": run.n_users,
            "items": run.n_items,
            "memory": run.metrics.get("memory", {}),
            "run_dir": str(self.run_dir),
            "loaded_at": self.loaded_at,
        }


def load_snapshot(run_dir: str | Path, device: str = "cpu") -> ModelSnapshot:
    """Load a run directory fully (tables, Recommender, id maps); raises HqgnnError etc. on a bad directory."""
    path = Path(run_dir).expanduser().resolve()
    run = load_run(path)
    if run.n_users == 0 or run.n_items == 0:
        raise HqgnnError(f"{path}: the run has no users or no items")
    # served items in the code index's storage order (asymmetric CPU runs): the id lists below absorb
    # the permutation, so the index holds no order array (Recommender docstring)
    rec = Recommender(run, device=device, renumber_items=True)
    run = rec.run
    # TrainedRun builds its id -> index maps lazily on first lookup, and that lazy build is not
    # safe when two threads do it at once (one can replace the cache the other is reading, which
    # would turn a known id into a spurious 404). Building both maps here, before the snapshot is
    # published to any request thread, means concurrent requests only ever read them.
    run.user_index(run.user_ids[0])
    run.item_index(run.item_ids[0])
    # One request of each kind now: kernels compile and lazy scorers build at load (or reload, in its
    # thread), not inside the first real request on the event loop, where /health would wait ~0.4 s.
    rec.recommend(np.zeros(1, dtype=np.int64), 1)
    rec.similar_items(np.zeros(1, dtype=np.int64), 1)
    return ModelSnapshot(
        run=run,
        recommender=rec,
        run_dir=path,
        loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        user_ids=run.user_ids.tolist(),
        item_ids=run.item_ids.tolist(),
    )


class ModelHolder:
    """Holds the current snapshot; ``reload`` builds the new one completely, then swaps one reference.

    Reading and rebinding an attribute are atomic in CPython, so requests never see a half-built
    model and never wait on a lock. The lock only serializes reloads against each other, so two
    concurrent reloads cannot hold three models in memory or finish in a surprising order.
    """

    def __init__(self, snapshot: ModelSnapshot, device: str) -> None:
        self.snapshot = snapshot
        self.device = device
        self._reload_lock = threading.Lock()

    def reload(self, run_dir: str | Path) -> ModelSnapshot:
        with self._reload_lock:
            new = load_snapshot(run_dir, self.device)  # may raise: the old snapshot stays in place
            self.snapshot = new  # the swap; in-flight requests keep their reference to the old one
            return new
