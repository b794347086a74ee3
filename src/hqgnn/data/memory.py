"""In-memory interactions (pandas DataFrame, scipy user x item matrix, (users, items) arrays) as InteractionData."""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from ..errors import HqgnnError
from .dataset import InteractionData
from .logs import dedupe, encode_ids
from .split import _empty_pairs, holdout_validation, split_leave_last

log = logging.getLogger("hqgnn.data")

__all__ = ["Interactions", "interactions_from", "in_memory_dataset", "pairs_in"]


class Interactions:
    """Raw-id (user, item) pairs and an optional sortable time per pair, as the user gave them."""

    def __init__(self, users: np.ndarray, items: np.ndarray, times: np.ndarray | None = None,
                 n_users: int | None = None, n_items: int | None = None) -> None:
        self.users, self.items, self.times = users, items, times
        # a user x item matrix also defines its empty rows / columns (cold users and items)
        self.n_users, self.n_items = n_users, n_items

    def __len__(self) -> int:
        return len(self.users)


def _id_array(values: Any, what: str) -> np.ndarray:
    """A 1-D int64 or unicode array of raw ids (never objects, so run directories save without pickle)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise HqgnnError(f"{what} ids must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise HqgnnError(f"{what} ids must be integers or strings, got booleans")
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and len(arr) and arr.max() > np.iinfo(np.int64).max:
            return arr.astype(str)
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise HqgnnError(f"missing {what} id at position {int(np.argmax(np.isnan(arr)))}")
        if np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2**53):
            return arr.astype(np.int64)
        raise HqgnnError(f"{what} ids must be integers or strings, got non-integral floats")
    if arr.dtype.kind == "O":
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in arr.tolist()], dtype=bool)
        if missing.any():
            raise HqgnnError(f"missing {what} id at position {int(np.argmax(missing))}")
        kinds = {type(v) for v in arr.tolist()}
        if kinds and all(issubclass(k, (int, np.integer)) and not issubclass(k, bool) for k in kinds):
            return arr.astype(np.int64)
    return arr.astype(str)


def interactions_from(
    data: Any, user_col: str | None = None, item_col: str | None = None, time_col: str | None = None
) -> Interactions:
    """Read a DataFrame (``user_col`` / ``item_col`` / optional ``time_col``, default "user" / "item"),
    a scipy sparse user x item matrix (row / column numbers are the ids; every stored entry is an
    interaction, whatever its value) or a ``(user_ids, item_ids)`` pair of equal-length arrays."""
    if sp.issparse(data):
        m = sp.coo_matrix(data)
        return Interactions(m.row.astype(np.int64), m.col.astype(np.int64), None, m.shape[0], m.shape[1])
    if isinstance(data, tuple) and len(data) in (2, 3):
        users, items = _id_array(data[0], "user"), _id_array(data[1], "item")
        times = np.asarray(data[2]) if len(data) == 3 else None
        if len(users) != len(items) or (times is not None and len(times) != len(users)):
            raise HqgnnError(f"(user_ids, item_ids) must have equal lengths, got {len(users)} and {len(items)}")
        return Interactions(users, items, times)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        cols = [user_col or "user", item_col or "item"] + ([time_col] if time_col else [])
        for col in cols:
            if col not in data.columns:
                shown = ", ".join(repr(str(c)) for c in data.columns)
                raise HqgnnError(f"DataFrame has no column {col!r} (columns: {shown}); pass user_col= / item_col=")
        times = None
        if time_col:
            t = data[time_col]
            if t.isna().any():
                raise HqgnnError(f"missing timestamp in column {time_col!r} at row {int(np.argmax(t.isna().to_numpy()))}")
            times = (pd.to_datetime(t, utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64)
                     if not pd.api.types.is_numeric_dtype(t.dtype) else t.to_numpy())
        return Interactions(_id_array(data[cols[0]].to_numpy(), "user"), _id_array(data[cols[1]].to_numpy(), "item"),
                            times)
    raise HqgnnError(
        f"cannot read interactions from a {type(data).__name__}: pass a pandas DataFrame, a scipy sparse "
        "user x item matrix, a (user_ids, item_ids) tuple, a file or directory path, or a dataset name"
    )


def _encode(raw: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is not None:  # matrix input: ids are 0..n-1, empty rows / columns included
        return np.arange(n, dtype=np.int64), raw.astype(np.int64)
    return encode_ids(raw)


def _concat_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (a.dtype.kind == "U") != (b.dtype.kind == "U"):
        raise HqgnnError("training and validation ids must be of one kind (both integers or both strings)")
    return np.concatenate([a, b])


def pairs_in(inter: Interactions, user_ids: np.ndarray, item_ids: np.ndarray, what: str) -> np.ndarray:
    """(n, 2) row indices of ``inter`` in an existing id space; pairs with an unknown user or item are
    dropped and counted in a warning on ``hqgnn.data`` (a model cannot score ids it never saw)."""
    import pandas as pd

    u = pd.Index(user_ids).get_indexer(inter.users)
    i = pd.Index(item_ids).get_indexer(inter.items)
    ok = (u >= 0) & (i >= 0)
    if not ok.all():
        log.warning("%s: %d of %d pairs dropped (%d with an unknown user, %d with an unknown item)", what,
                    int((~ok).sum()), len(ok), int((u < 0).sum()), int((i < 0).sum()))
    pairs = np.column_stack([u[ok], i[ok]]).astype(np.int64).reshape(-1, 2)
    keep = dedupe(pairs[:, 0], pairs[:, 1], None) if len(pairs) else np.empty(0, np.int64)
    return cast(np.ndarray, pairs[keep])


def pairs_matrix(inter: Interactions, user_ids: np.ndarray, item_ids: np.ndarray, what: str = "test") -> sp.csr_matrix:
    """:func:`pairs_in` as a (users x items) CSR matrix of ones in that id space, rows sorted (e.g. held-out
    test interactions of a fitted model, as ``HQGNN.evaluate`` and ``hqgnn evaluate --data`` read them)."""
    pairs = pairs_in(inter, user_ids, item_ids, what)
    m = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                      shape=(len(user_ids), len(item_ids)))
    m.sort_indices()
    return m


def in_memory_dataset(
    train: Interactions, validation: Interactions | None = None, val_ratio: float = 0.1, seed: int = 2020,
    name: str = "in-memory",
) -> tuple[InteractionData, dict[str, int]]:
    """All of ``train`` as training data (no test split: evaluate on your own held-out data), ids
    sorted and contiguous, duplicate (user, item) pairs removed (the earliest time kept).

    Validation (model selection, early stopping): ``validation`` mapped into the training ids, or
    else carved out of ``train`` per user: each user's latest pair when ``train`` has times (users
    with >= 2 pairs), a seeded ``val_ratio`` holdout otherwise; ``val_ratio = 0`` carves none.
    Returns the data and counts (``rows``, ``duplicates_removed``).
    """
    if len(train) == 0:
        raise HqgnnError("no interactions to train on")
    if validation is not None and train.n_users is None:
        # the id space is that of train + validation: an item seen only in validation is a (cold) item
        both_u, both_i = _concat_ids(train.users, validation.users), _concat_ids(train.items, validation.items)
        user_ids, item_ids = encode_ids(both_u)[0], encode_ids(both_i)[0]
        users, items = np.searchsorted(user_ids, train.users), np.searchsorted(item_ids, train.items)
    else:
        user_ids, users = _encode(train.users, train.n_users)
        item_ids, items = _encode(train.items, train.n_items)
    keep = dedupe(users, items, train.times)
    pairs = np.column_stack([users[keep], items[keep]]).astype(np.int64)
    notes = {"rows": len(train), "duplicates_removed": int(len(train) - len(keep))}
    if validation is not None:
        val = pairs_in(validation, user_ids, item_ids, "validation")
        if len(val):  # a pair in both: it is validation, not train
            n = len(item_ids)
            pairs = pairs[~np.isin(pairs[:, 0] * n + pairs[:, 1], val[:, 0] * n + val[:, 1])]
    elif val_ratio > 0 and train.times is not None:
        pairs, val = split_leave_last(pairs, np.asarray(train.times)[keep])
    elif val_ratio > 0:
        pairs, val = holdout_validation(pairs, val_ratio, seed)
    else:
        val = _empty_pairs()
    data = InteractionData(name=name, n_users=len(user_ids), n_items=len(item_ids), train=pairs, val=val,
                           test=_empty_pairs(), user_ids=user_ids, item_ids=item_ids)
    return data, notes
