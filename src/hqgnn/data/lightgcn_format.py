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


PARSE_CHUNK = 1 << 24  # bytes per parsing slice: the byte masks of one slice, not of the file, are in memory


def parse_file(path: str | os.PathLike[str]) -> ParsedFile:
    """Parse one LightGCN file, vectorized over bytes (no per-token Python loop).

    Accepted: non-negative decimal ids separated by spaces (tabs and ``\\r`` are tolerated as
    separators too), ``\\n`` line ends; blank lines carry no data and are skipped. Raises
    :class:`DataError` naming the file and 1-based line for a missing or empty file, a
    non-integer token, a negative id, a repeated user line, or an item repeated within a line.

    Parsed in slices of :data:`PARSE_CHUNK` bytes cut after a newline, so peak memory is the file's
    bytes plus the answer (~24 B per pair) plus one slice's work, whatever the file size.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "expected a file, found a directory") from None
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    start, lines_before = 0, 0
    while start < len(raw):
        cut = raw.find(b"\n", min(start + PARSE_CHUNK, len(raw)) - 1)
        end = len(raw) if cut < 0 else cut + 1
        part, n_newlines = _parse_slice(path, raw, start, end, lines_before)
        parts.append(part)
        start, lines_before = end, lines_before + n_newlines
    if not any(len(p[0]) for p in parts):
        raise DataError(path, "empty file (no ids)")
    users, user_lines, pair_users, items, pair_lines = (np.concatenate([p[k] for p in parts]) for k in range(5))
    del parts
    pairs = np.empty((len(items), 2), dtype=np.int64)
    pairs[:, 0], pairs[:, 1] = pair_users, items
    del pair_users, items
    _check_repeated_users(path, users, user_lines)
    _check_repeated_items(path, pairs, pair_lines)
    return ParsedFile(path, users, user_lines, pairs, pair_lines)


def _parse_slice(path: Path, raw: bytes, lo: int, hi: int, lines_before: int
                 ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], int]:
    """Bytes ``raw[lo:hi]`` (whole lines): (users, user_lines, pair users, items, pair_lines) and its newlines."""
    chunk = raw[lo:hi]
    buf = np.frombuffer(chunk, dtype=np.uint8)
    is_digit = (buf >= 48) & (buf <= 57)
    is_nl = buf == 10
    bad = ~(is_digit | is_nl | (buf == 32) | (buf == 9) | (buf == 13))
    if bad.any():
        pos = int(np.argmax(bad))
        _raise_bad_token(path, chunk, buf, is_digit | bad, pos, lines_before)
    del bad
    starts = np.flatnonzero(is_digit & ~np.r_[False, is_digit[:-1]])
    ends = np.flatnonzero(is_digit & ~np.r_[is_digit[1:], False]) + 1
    del is_digit
    newlines = np.flatnonzero(is_nl)
    del is_nl
    line_idx = np.searchsorted(newlines, starts) + lines_before  # newlines before each token = 0-based line
    empty = np.zeros(0, dtype=np.int64)
    if not len(starts):
        return (empty, empty, empty, empty, empty), len(newlines)
    lengths = ends - starts
    if lengths.max() > _MAX_DIGITS:
        k = int(np.argmax(lengths > _MAX_DIGITS))
        token = chunk[starts[k] : ends[k]].decode()
        raise DataError(path, f"id {token} is too large (more than {_MAX_DIGITS} digits)", int(line_idx[k]) + 1)
    del lengths, ends

    # The bytes are now only digits and whitespace, so numpy's C text parser reads every token;
    # the byte-level token boundaries above give the line structure.
    values = _parse_ints(chunk)
    if len(values) != len(starts):  # cannot happen after the byte check; guard against parser quirks
        raise DataError(path, f"parsed {len(values)} ids but found {len(starts)} tokens")

    is_first = np.r_[True, line_idx[1:] != line_idx[:-1]]
    users = values[is_first]
    owner = np.cumsum(is_first) - 1
    item_mask = ~is_first
    return (users, line_idx[is_first] + 1, users[owner[item_mask]], values[item_mask],
            line_idx[item_mask] + 1), len(newlines)


def _parse_ints(raw: bytes) -> np.ndarray:
    """All whitespace-separated integers of ``raw`` (already checked to hold only digits and whitespace)."""
    if hasattr(np, "fromstring"):  # C text parser: ~30 ms for gowalla's 840k ids
        return np.fromstring(raw, dtype=np.int64, sep=" ")
    return np.array(raw.split()).astype(np.int64)  # fallback should numpy ever drop fromstring


def _raise_bad_token(path: Path, raw: bytes, buf: np.ndarray, in_token: np.ndarray, pos: int,
                     lines_before: int = 0) -> None:
    """Report the whole token around the first bad byte (e.g. ``-3`` or ``12a``), with its line."""
    start = pos
    while start > 0 and in_token[start - 1]:
        start -= 1
    end = pos
    while end < len(buf) and in_token[end]:
        end += 1
    token = raw[start:end].decode("utf-8", errors="replace")
    line = _line_of(buf, pos) + lines_before
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
    train_f.pair_lines = np.zeros(0, np.int64)  # errors below name test.txt lines only: 8 B per pair freed
    if len(train) == 0:
        raise DataError(train_f.path, "no interactions (every line has a user id only)")

    # Dense ids (the published splits: 0..n-1) keep the identity map, cold ids included. Sparse ids (one
    # huge id, hashed ids) are renumbered to their sorted distinct values: memory follows the number of
    # distinct ids, never the largest one (a single id 10**15 would otherwise ask for a 10**15-row table).
    user_ids = _id_map(np.concatenate([train_f.users, test_f.users]))
    item_ids = _id_map(np.concatenate([train[:, 1], test[:, 1]]))
    train, test = _renumber(train, user_ids, item_ids), _renumber(test, user_ids, item_ids)
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
        present = np.zeros(top, dtype=bool)  # top <= 2 x tokens here: a flag per id, no sort / hash of ids
        present[ids] = True
        distinct = int(np.count_nonzero(present))
        if top <= 2 * distinct + 1024:
            return np.arange(top, dtype=np.int64)
    return np.unique(ids).astype(np.int64)


def _is_identity(id_map: np.ndarray) -> bool:
    return not len(id_map) or int(id_map[-1]) == len(id_map) - 1


def _renumber(pairs: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """``pairs`` in row numbers; the same array (no copy: 16 B per pair at 100M pairs) when both maps are identities."""
    if _is_identity(user_ids) and _is_identity(item_ids):
        return pairs
    return np.column_stack([_rows(user_ids, pairs[:, 0]), _rows(item_ids, pairs[:, 1])]).reshape(-1, 2)


def _rows(id_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row numbers of ``ids`` in ``id_map`` (sorted, holding every id)."""
    if len(id_map) and int(id_map[-1]) == len(id_map) - 1:  # identity map
        return ids.astype(np.int64)
    return np.searchsorted(id_map, ids).astype(np.int64)


def format_lines(pairs: np.ndarray, n_users: int) -> str:
    """LightGCN text for ``pairs``: one line per user 0..n_users-1 (a user without items gets its id alone)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(pairs[:, 0], kind="stable")  # keep each user's item order
    return encode_lines(pairs[order], 0, n_users).decode("ascii")


_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)


def encode_lines(pairs: np.ndarray, u0: int, u1: int) -> bytes:
    """LightGCN bytes for users ``u0 .. u1-1`` (one line each) from ``pairs`` sorted by user, ids >= 0.

    Vectorized over digits (at most 19 numpy passes), never a Python loop over users or pairs: the
    writer of the scale ladder's 100M-interaction files, and of :func:`format_lines`.
    """
    users, items = pairs[:, 0], pairs[:, 1]
    n_lines = u1 - u0
    if n_lines <= 0:
        return b""
    # token k: a line's user id, then its items; the line's last token ends with "\n", the others with " "
    per_line = np.bincount(users - u0, minlength=n_lines)
    line_start = np.cumsum(per_line + 1) - (per_line + 1)  # token index of each user id
    values = np.empty(len(items) + n_lines, dtype=np.int64)
    is_user = np.zeros(len(values), dtype=bool)
    is_user[line_start] = True
    values[line_start] = np.arange(u0, u1, dtype=np.int64)
    values[~is_user] = items  # items follow their user's id, in the given order
    ndig = 1 + np.searchsorted(_POW10, values, side="right")
    end = np.cumsum(ndig + 1)  # one past each token's separator
    buf = np.full(int(end[-1]) if len(end) else 0, ord(" "), dtype=np.uint8)
    buf[end[np.r_[line_start[1:] - 1, len(values) - 1]] - 1] = ord("\n")
    rest = values.copy()
    for d in range(int(ndig.max())):  # d-th digit from the right
        live = ndig > d
        buf[end[live] - 2 - d] = (rest[live] % 10 + 48).astype(np.uint8)
        rest //= 10
    return buf.tobytes()


def write_lightgcn_dir(path: str | os.PathLike[str], train: np.ndarray, test: np.ndarray, n_users: int) -> None:
    """Write ``train.txt`` and ``test.txt`` (atomically), one line for every user as upstream does."""
    path = Path(path)
    write_text(path / "train.txt", format_lines(train, n_users))
    write_text(path / "test.txt", format_lines(test, n_users))
