"""Per-user train/test/validation splits (random holdout, leave-last) and post-split item clean-up."""

from __future__ import annotations

import logging
from typing import cast

import numpy as np

from ..errors import HqgnnError

log = logging.getLogger("hqgnn.data")

# Separate random streams so the test split and the validation split never reuse the same draws.
_TEST_STREAM = 1
_VAL_STREAM = 2


def _empty_pairs() -> np.ndarray:
    return np.empty((0, 2), dtype=np.int64)


def _check_ratio(ratio: float, what: str) -> None:
    if not 0.0 <= ratio < 1.0:
        raise HqgnnError(f"{what} must be in [0, 1), got {ratio}")


def holdout_counts(counts: np.ndarray, ratio: float, min_per_user: int = 0) -> np.ndarray:
    """How many of a user's ``k`` interactions are held out: max(round-half-up(ratio * k), min_per_user),
    capped at k - 1.

    So every user keeps at least one interaction on the training side, and a user with a single
    interaction keeps it there.
    """
    counts = np.asarray(counts, dtype=np.int64)
    cut = np.maximum(np.floor(ratio * counts + 0.5).astype(np.int64), min_per_user)
    return cast(np.ndarray, np.clip(np.minimum(cut, counts - 1), 0, None))


def per_user_holdout_mask(users: np.ndarray, ratio: float, rng: np.random.Generator,
                          min_per_user: int = 0) -> np.ndarray:
    """Boolean mask of the rows held out, chosen uniformly at random within each user.

    Vectorized: shuffle the rows, stable-sort them by user (so each user's rows are in random
    order), rank rows within their user and hold out the rows whose rank is below the user's cut
    (see :func:`holdout_counts`).
    """
    users = np.asarray(users, dtype=np.int64)
    n = len(users)
    mask = np.zeros(n, dtype=bool)
    if n == 0 or ratio <= 0:
        return mask
    perm = rng.permutation(n)
    order = perm[np.argsort(users[perm], kind="stable")]  # stable int sort = radix sort, much faster than lexsort
    sorted_users = users[order]
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[sorted_users]
    mask[order] = rank < holdout_counts(counts, ratio, min_per_user)[sorted_users]
    return mask


def split_random(pairs: np.ndarray, test_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user random holdout: each user sends round(test_ratio * k) of its k pairs to test (capped at k - 1).

    Seeded and deterministic for a given input order. Users with a single interaction keep it in train.
    Returns ``(train, test)``, each keeping the input's row order.
    """
    _check_ratio(test_ratio, "test_ratio")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    rng = np.random.default_rng([seed, _TEST_STREAM])
    held = per_user_holdout_mask(pairs[:, 0], test_ratio, rng)
    return pairs[~held], pairs[held]


def split_leave_last(pairs: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's latest interaction (by ``times``) goes to test; the rest stay in train.

    Ties on the latest timestamp go to the row that comes last in the input. Users with a single
    interaction keep it in train (a user needs some history to be evaluated).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n = len(pairs)
    if n == 0:
        return pairs, _empty_pairs()
    users = pairs[:, 0]
    by_time = np.argsort(np.asarray(times), kind="stable")  # equal times keep row order
    order = by_time[np.argsort(users[by_time], kind="stable")]
    sorted_users = users[order]
    is_last = np.r_[sorted_users[1:] != sorted_users[:-1], True]
    counts = np.bincount(users)
    held_rows = order[is_last & (counts[sorted_users] >= 2)]
    held = np.zeros(n, dtype=bool)
    held[held_rows] = True
    return pairs[~held], pairs[held]


def holdout_validation(train: np.ndarray, ratio: float, seed: int,
                       min_per_user: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Carve a per-user validation set out of ``train``; returns ``(train, val)``.

    A user with k train pairs puts max(round-half-up(ratio * k), min_per_user) of them in validation,
    capped at k - 1, so every user keeps at least one train pair. With ``min_per_user = 0`` users with
    fewer than about 1 / (2 * ratio) pairs get no validation pair, so validation over-represents
    active users; ``min_per_user = 1`` gives every user with >= 2 pairs one (validation then covers
    the test split's users). Seeded (its own random stream, independent of the test split) and
    vectorized. ``ratio == 0`` gives an empty ``(0, 2)`` validation array.
    """
    _check_ratio(ratio, "val_ratio")
    train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    if ratio == 0 or len(train) == 0:
        return train, _empty_pairs()
    rng = np.random.default_rng([seed, _VAL_STREAM])
    held = per_user_holdout_mask(train[:, 0], ratio, rng, min_per_user)
    return train[~held], train[held]


def drop_items_without_train(
    train: np.ndarray, test: np.ndarray, item_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Remove items that have no train interaction after a split, and re-index the rest.

    Protocol decision for generated splits (logs, synthetic data): a test pair whose item never
    occurs in train can never be learned, so it is dropped and counted; the item itself is removed
    from the catalogue and the remaining items are re-indexed contiguously (``item_ids`` is
    subset to match, so raw ids are preserved). Returns
    ``(train, test, item_ids, n_test_pairs_dropped, n_items_dropped)``.
    """
    n_items = len(item_ids)
    in_train = np.zeros(n_items, dtype=bool)
    in_train[train[:, 1]] = True
    if in_train.all():
        return train, test, item_ids, 0, 0
    keep_test = in_train[test[:, 1]]
    new_index = np.cumsum(in_train) - 1
    train = np.column_stack([train[:, 0], new_index[train[:, 1]]])
    test = test[keep_test]
    test = np.column_stack([test[:, 0], new_index[test[:, 1]]]).astype(np.int64).reshape(-1, 2)
    return train, test, item_ids[in_train], int((~keep_test).sum()), int(n_items - in_train.sum())
