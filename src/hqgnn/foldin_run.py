"""Fold-in in the user's own ids: new users / items appended to a run, anonymous sessions, the grown run saved."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch

from .errors import HqgnnError
from .foldin import DEFAULT_METHOD, OTHER, FoldIn, encode_rows, encoding_stats_record

__all__ = ["FoldInError", "fold_in_pairs", "fold_in_side", "recommend_sessions", "save_grown", "session_rows"]


class FoldInError(HqgnnError):
    """Fold-in input that cannot be used; ``kind`` is ``"unknown"`` (ids of the other side the run does
    not know: HTTP 404), ``"duplicate"`` (new ids the run already has: 409) or ``"invalid"`` (422)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _shown(ids: list[Any]) -> str:
    text = ", ".join(repr(v)[:40] for v in ids[:5])
    return text + (f" ... ({len(ids)} in all)" if len(ids) > 5 else "")


def _as_kind(raw: Any, known: np.ndarray, what: str) -> np.ndarray:
    """Raw ids as an array of the run's id kind (int64 or unicode), or a FoldInError."""
    arr = np.asarray(raw).reshape(-1)
    if known.dtype.kind == "U":
        return arr.astype(str)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    try:  # integer ids given as strings ("12"), as the HTTP API and CSV files may carry them
        return np.array([int(v) for v in arr.tolist()], dtype=np.int64) if len(arr) else arr.astype(np.int64)
    except (TypeError, ValueError):
        raise FoldInError(f"{what} ids must be integers, like the run's", "invalid") from None


def new_rows(run: Any, side: str, node_raw: Any, other_raw: Any) -> tuple[np.ndarray, sp.csr_matrix]:
    """New ``side`` ids (first-appearance order) and their (B, n_other) interaction matrix from
    ``(node, other)`` raw-id pairs. Refused: no pairs, node ids the run has (duplicate), other-side
    ids it lacks (unknown), each error naming the ids."""
    import pandas as pd

    ids = {"user": run.user_ids, "item": run.item_ids}
    nodes, others = _as_kind(node_raw, ids[side], side), _as_kind(other_raw, ids[OTHER[side]], OTHER[side])
    if len(nodes) != len(others):
        raise FoldInError(
            f"{side} and {OTHER[side]} columns differ in length ({len(nodes)} vs {len(others)})", "invalid"
        )
    if not len(nodes):
        raise FoldInError(f"no interactions: every new {side} needs at least one", "invalid")
    dup = np.unique(nodes[run.rows(side, nodes) >= 0])
    if len(dup):
        raise FoldInError(f"{side}s already in the run: {_shown(dup.tolist())}", "duplicate")
    cols = run.rows(OTHER[side], others)
    if (cols < 0).any():
        missing = pd.unique(others[cols < 0]).tolist()
        raise FoldInError(f"unknown {OTHER[side]}s: {_shown(missing)}", "unknown")
    codes, uniques = pd.factorize(nodes)
    r = sp.csr_matrix((np.ones(len(codes), np.float32), (codes, cols)), shape=(len(uniques), len(ids[OTHER[side]])))
    r.sum_duplicates()
    r.data[:] = 1.0
    r.sort_indices()
    return np.asarray(uniques, dtype=ids[side].dtype), r


def grow(
    run: Any, side: str, new_ids: np.ndarray, r: sp.csr_matrix, rows: dict[str, torch.Tensor], note: dict[str, Any]
) -> Any:
    """A new :class:`TrainedRun` with ``rows`` appended to ``side``'s tables, ``new_ids`` to its ids and
    ``r`` (B, n_other) to the seen graph; ``run`` is not changed."""
    from .run import TrainedRun

    n = run.n_users if side == "user" else run.n_items
    tables = dict(run.tables)
    for key, table in run.tables.items():
        if key.startswith(f"{side}_") and table.ndim and table.shape[0] == n:
            if key not in rows:
                raise HqgnnError(f"fold-in: no rows computed for table {key}")  # a format this code does not know
            tables[key] = torch.cat([table, rows[key].to(table.dtype)])
    seen = run.seen.tocsr()
    seen = sp.vstack([seen, r]).tocsr() if side == "user" else sp.hstack([seen, r.T]).tocsr()
    seen.sort_indices()
    user_ids = np.concatenate([run.user_ids, new_ids]) if side == "user" else run.user_ids
    item_ids = np.concatenate([run.item_ids, new_ids]) if side == "item" else run.item_ids
    metrics = copy.deepcopy(run.metrics)
    metrics.setdefault("fold_in", []).append({**note, f"{side}s": len(new_ids)})
    if run.quantized:  # later fold-ins encode against the trained tables' stats, not the grown ones'
        metrics.setdefault("fold_in_encoding", encoding_stats_record(run))
    return TrainedRun(run.path, run.config, metrics, tables, user_ids, item_ids, seen, manifest=None)


def fold_in_side(
    run: Any, side: str, node_raw: Any, other_raw: Any, method: str = DEFAULT_METHOD, foldin: FoldIn | None = None
) -> Any:
    """``run`` grown by the new ``side`` nodes of the ``(node, other)`` raw-id pairs (see :func:`new_rows`)."""
    new_ids, r = new_rows(run, side, node_raw, other_raw)
    fi = foldin if foldin is not None else FoldIn(run, method)
    rows = encode_rows(run, side, fi.vectors(side, r))
    return grow(run, side, new_ids, r, rows, {"method": fi.method})


def fold_in_pairs(run: Any, user_raw: Any, item_raw: Any, method: str = DEFAULT_METHOD) -> tuple[Any, dict[str, int]]:
    """Fold in every id of ``(user, item)`` pairs that the run lacks (``hqgnn fold-in``): new items first,
    from their pairs with known users, then new users from their pairs with known or just-added items.
    Pairs of a known user and a known item are not used (counted): fold-in adds nodes, it does not
    update trained ones. A new item whose users are all new cannot be folded in (refused, named)."""
    users, items = _as_kind(user_raw, run.user_ids, "user"), _as_kind(item_raw, run.item_ids, "item")
    if len(users) != len(items):
        raise FoldInError("user and item columns differ in length", "invalid")
    if not len(users):
        raise FoldInError("no interactions", "invalid")
    ku, ki = run.rows("user", users) >= 0, run.rows("item", items) >= 0
    summary = {"known_pairs_ignored": int((ku & ki).sum()), "users": 0, "items": 0}
    if (~ki).any():
        orphans = np.setdiff1d(items[~ki], items[~ki & ku])
        if len(orphans):
            raise FoldInError(f"new items with no known user to fold in from: {_shown(orphans.tolist())}", "invalid")
        run = fold_in_side(run, "item", items[~ki & ku], users[~ki & ku], method)
        summary["items"] = int(np.unique(items[~ki]).size)
    if (~ku).any():
        run = fold_in_side(run, "user", users[~ku], items[~ku], method)
        summary["users"] = int(np.unique(users[~ku]).size)
    return run, summary


def save_grown(run: Any, out_dir: str | Path) -> None:
    """Write a grown run to ``out_dir`` atomically (:func:`hqgnn.run.save_run`: staging folder, manifest
    last, one rename). Its model.safetensors is the source run's file, hard-linked (or copied across file
    systems): the trained weights are the encoder of the original nodes, unchanged (``--init-from`` refuses
    them for the grown sizes), and were verified when the source run was loaded. A source with no
    model file (a run saved before they were written) gives an empty one, as loading it does."""
    from .run import MODEL, save_run

    src = Path(run.path) / MODEL
    link = src if src.exists() else None
    save_run(
        out_dir,
        run.config,
        run.metrics,
        None if link else {},
        run.tables,
        run.user_ids,
        run.item_ids,
        run.seen,
        carry=False,
        model_from=link,
    )


def session_rows(run: Any, sessions: list[list[Any]]) -> sp.csr_matrix:
    """The (S, n_items) item matrix of anonymous sessions (lists of raw item ids; unknown ones refused)."""
    import pandas as pd

    if not sessions or any(len(s) == 0 for s in sessions):
        raise FoldInError("every session needs at least one item", "invalid")
    items = _as_kind([i for s in sessions for i in s], run.item_ids, "item")
    rows = np.repeat(np.arange(len(sessions)), [len(s) for s in sessions])
    cols = run.rows("item", items)
    if (cols < 0).any():
        raise FoldInError(f"unknown items: {_shown(pd.unique(items[cols < 0]).tolist())}", "unknown")
    r = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(sessions), run.n_items))
    r.sum_duplicates()
    r.data[:] = 1.0
    r.sort_indices()
    return r


def recommend_sessions(
    recommender: Any, foldin: FoldIn, r: sp.csr_matrix, k: int, exclude_seen: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, item rows of ``recommender.run``) for anonymous sessions ``r`` (S, n_items): each
    session folded in as a user, encoded in the run's format and searched by the recommender's own
    ranker (the exact path of :meth:`Recommender.recommend`); a session's items are excluded unless
    ``exclude_seen=False``. ``foldin`` must be built on ``recommender.run``."""
    run = recommender.run
    rows = encode_rows(run, "user", foldin.vectors("user", r))
    ranker = recommender.ranker.with_user_rows(rows, run.tables.get("user_scale"))
    return cast(
        tuple[np.ndarray, np.ndarray], ranker.search(np.arange(r.shape[0]), k, exclude=r if exclude_seen else None)
    )
