"""Reading and writing LightGCN-format directories (train.txt / test.txt, one ``user item item ...`` line per user)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import write_text
from .dataset import InteractionData

_MAX_DIGITS = 18  # 10**18 < 2**63: any id with at most 18 digits fits in int64


@dataclass
class ParsedFile:
    """One parsed LightGCN file: the user of every non-blank line, and all (user, item) pairs."""

    path: Path
    users: np.ndarray  # user id of each non-blank line, in file order
    user_lines: np.ndarray  # 1-based line number of each entry of ``users``
    pairs: np.ndarray  # (n, 2) int64 (user, item), in file order
    pair_lines: np.ndarray  # 1-based line number of each pair


def _line_of(buf: np.ndarray, pos: int) -> int:
    return int(np.count_nonzero(buf[:pos] == 10)) + 1


def parse_file(path: str | os.PathLike[str]) -> ParsedFile:
    """Parse one LightGCN file, vectorized over bytes (no per-token Python loop).

    Accepted: non-negative decimal ids separated by spaces (tabs and ``\\r`` are tolerated as
    separators too), ``\\n`` line ends; blank lines carry no data and are skipped. Raises
    :class:`DataError` naming the file and 1-based line for a missing or empty file, a
    non-integer token, a negative id, a repeated user line, or an item repeated within a line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "expected a file, found a directory") from None
    buf = np.frombuffer(raw, dtype=np.uint8)
    is_digit = (buf >= 48) & (buf <= 57)
    is_nl = buf == 10
    is_sep = (buf == 32) | (buf == 9) | (buf == 13)
    bad = ~(is_digit | is_nl | is_sep)
    if bad.any():
        pos = int(np.argmax(bad))
        _raise_bad_token(path, raw, buf, is_digit | bad, pos)
    if not is_digit.any():
        raise DataError(path, "empty file (no ids)")

    prev_digit = np.r_[False, is_digit[:-1]]
    next_digit = np.r_[is_digit[1:], False]
    starts = np.flatnonzero(is_digit & ~prev_digit)
    ends = np.flatnonzero(is_digit & ~next_digit) + 1
    lengths = ends - starts
    line_idx = np.searchsorted(np.flatnonzero(is_nl), starts)  # newlines before each token = 0-based line
    if lengths.max() > _MAX_DIGITS:
        k = int(np.argmax(lengths > _MAX_DIGITS))
        token = raw[starts[k] : ends[k]].decode()
        raise DataError(path, f"id {token} is too large (more than {_MAX_DIGITS} digits)", int(line_idx[k]) + 1)

    # The bytes are now only digits and whitespace, so numpy's C text parser reads every token;
    # the byte-level token boundaries above give the line structure.
    values = _parse_ints(raw)
    if len(values) != len(starts):  # cannot happen after the byte check; guard against parser quirks
        raise DataError(path, f"parsed {len(values)} ids but found {len(starts)} tokens")

    is_first = np.r_[True, line_idx[1:] != line_idx[:-1]]
    users = values[is_first]
    user_lines = line_idx[is_first] + 1
    owner = np.cumsum(is_first) - 1
    item_mask = ~is_first
    pairs = np.column_stack([users[owner[item_mask]], values[item_mask]]).astype(np.int64).reshape(-1, 2)
    pair_lines = line_idx[item_mask] + 1

    _check_repeated_users(path, users, user_lines)
    _check_repeated_items(path, pairs, pair_lines)
    return ParsedFile(path, users, user_lines, pairs, pair_lines)


def _parse_ints(raw: bytes) -> np.ndarray:
    """All whitespace-separated integers of ``raw`` (already checked to hold only digits and whitespace)."""
    if hasattr(np, "fromstring"):  # C text parser: ~30 ms for gowalla's 840k ids
        return np.fromstring(raw, dtype=np.int64, sep=" ")
    return np.array(raw.split()).astype(np.int64)  # fallback should numpy ever drop fromstring


def _raise_bad_token(path: Path, raw: bytes, buf: np.ndarray, in_token: np.ndarray, pos: int) -> None:
    """Report the whole token around the first bad byte (e.g. ``-3`` or ``12a``), with its line."""
    start = pos
    while start > 0 and in_token[start - 1]:
        start -= 1
    end = pos
    while end < len(buf) and in_token[end]:
        end += 1
    token = raw[start:end].decode("utf-8", errors="replace")
    line = _line_of(buf, pos)
    if re.fullmatch(r"-\d+", token):
        raise DataError(path, f"negative id {token}", line)
    raise DataError(path, f"non-integer token {token!r}", line)


def _check_repeated_users(path: Path, users: np.ndarray, user_lines: np.ndarray) -> None:
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    dup = np.flatnonzero(sorted_users[1:] == sorted_users[:-1])
    if dup.size:
        later = order[dup + 1]  # stable sort: the later line of each equal pair
        k = int(later.min())
        user = int(users[k])
        first = int(user_lines[np.argmax(users == user)])
        raise DataError(path, f"user {user} has a second line (first on line {first})", int(user_lines[k]))


def _check_repeated_items(path: Path, pairs: np.ndarray, pair_lines: np.ndarray) -> None:
    if len(pairs) < 2:
        return
    # Users are unique per line (checked before), so a repeated item within a line is a repeated
    # (user, item) key. Fast path: one int64 sort; locate the culprit only when there is one.
    width = int(pairs[:, 1].max()) + 1
    if int(pairs[:, 0].max()) < (2**62) // width:
        keys = np.sort(pairs[:, 0] * width + pairs[:, 1])
        if not (keys[1:] == keys[:-1]).any():
            return
    order = np.lexsort((pairs[:, 1], pair_lines))
    lines, items = pair_lines[order], pairs[order, 1]
    dup = np.flatnonzero((lines[1:] == lines[:-1]) & (items[1:] == items[:-1]))
    if dup.size:
        k = int(order[dup[np.argmin(lines[dup])] + 1])
        raise DataError(path, f"item {int(pairs[k, 1])} is repeated within the line", int(pair_lines[k]))


def load_lightgcn_dir(path: str | os.PathLike[str], name: str | None = None) -> InteractionData:
    """Load a LightGCN directory (``train.txt`` + ``test.txt``) with identity id maps and an empty val.

    ``n_users`` = max user id + 1 and ``n_items`` = max item id + 1 over both files when the ids are
    dense (at most about twice the distinct ids): ids that never occur are kept as cold users/items (the
    ids are the dataset's own). Sparse ids are renumbered to their distinct values (``user_ids`` /
    ``item_ids`` map rows back), so memory is proportional to the distinct ids, never to the largest. Besides the per-file
    errors of :func:`parse_file`, the directory is rejected (``DataError`` naming ``test.txt`` and
    the line) when a test user has no train items, a test item never occurs in train, or a test
    pair is also a train pair: such files are inconsistent, and nothing is dropped silently.
    The validation split is carved later by :func:`hqgnn.data.load_dataset`.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "not a directory (expected train.txt and test.txt inside)")
    train_f = parse_file(path / "train.txt")
    test_f = parse_file(path / "test.txt")
    train, test = train_f.pairs, test_f.pairs
    if len(train) == 0:
        raise DataError(train_f.path, "no interactions (every line has a user id only)")

    # Dense ids (the published splits: 0..n-1) keep the identity map, cold ids included. Sparse ids (one
    # huge id, hashed ids) are renumbered to their sorted distinct values: memory follows the number of
    # distinct ids, never the largest one (a single id 10**15 would otherwise ask for a 10**15-row table).
    user_ids = _id_map(np.concatenate([train_f.users, test_f.users]))
    item_ids = _id_map(np.concatenate([train[:, 1], test[:, 1]]))
    train = np.column_stack([_rows(user_ids, train[:, 0]), _rows(item_ids, train[:, 1])]).reshape(-1, 2)
    test = np.column_stack([_rows(user_ids, test[:, 0]), _rows(item_ids, test[:, 1])]).reshape(-1, 2)
    n_users, n_items = len(user_ids), len(item_ids)

    user_in_train = np.zeros(n_users, dtype=bool)
    user_in_train[train[:, 0]] = True
    bad = ~user_in_train[test[:, 0]]
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(test_f.path, f"user {user_ids[test[k, 0]]} has test items but no train items",
                        int(test_f.pair_lines[k]))

    item_in_train = np.zeros(n_items, dtype=bool)
    item_in_train[train[:, 1]] = True
    bad = ~item_in_train[test[:, 1]]
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(test_f.path, f"item {item_ids[test[k, 1]]} never occurs in train.txt", int(test_f.pair_lines[k]))

    # Sorted train keys + searchsorted: much faster than np.isin on ~1M keys.
    train_keys = np.sort(train[:, 0] * n_items + train[:, 1])
    test_keys = test[:, 0] * n_items + test[:, 1]
    at = np.minimum(np.searchsorted(train_keys, test_keys), len(train_keys) - 1)
    bad = train_keys[at] == test_keys
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(
            test_f.path, f"pair (user {user_ids[test[k, 0]]}, item {item_ids[test[k, 1]]}) is also in train.txt",
            int(test_f.pair_lines[k])
        )

    return InteractionData(
        name=name or path.name,
        n_users=n_users,
        n_items=n_items,
        train=train,
        val=np.empty((0, 2), dtype=np.int64),
        test=test,
        user_ids=user_ids,
        item_ids=item_ids,
    )


def _id_map(ids: np.ndarray) -> np.ndarray:
    """Row -> id: ``arange(max + 1)`` when that is at most twice the distinct ids (dense), else the distinct ids."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    top = int(ids.max()) + 1
    if top <= 2 * len(ids) + 1024:  # cheap bound first: at most ~2x the tokens, never a huge table
        distinct = len(np.unique(ids))
        if top <= 2 * distinct + 1024:
            return np.arange(top, dtype=np.int64)
    return np.unique(ids).astype(np.int64)


def _rows(id_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row numbers of ``ids`` in ``id_map`` (sorted, holding every id)."""
    if len(id_map) and int(id_map[-1]) == len(id_map) - 1:  # identity map
        return ids.astype(np.int64)
    return np.searchsorted(id_map, ids).astype(np.int64)


def format_lines(pairs: np.ndarray, n_users: int) -> str:
    """LightGCN text for ``pairs``: one line per user 0..n_users-1 (a user without items gets its id alone)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(pairs[:, 0], kind="stable")  # keep each user's item order
    users, items = pairs[order, 0], pairs[order, 1]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    items_txt = items.astype(str)
    lines = [" ".join([str(u), *items_txt[bounds[u] : bounds[u + 1]]]) for u in range(n_users)]
    return "\n".join(lines) + "\n"


def write_lightgcn_dir(path: str | os.PathLike[str], train: np.ndarray, test: np.ndarray, n_users: int) -> None:
    """Write ``train.txt`` and ``test.txt`` (atomically), one line for every user as upstream does."""
    path = Path(path)
    write_text(path / "train.txt", format_lines(train, n_users))
    write_text(path / "test.txt", format_lines(test, n_users))
