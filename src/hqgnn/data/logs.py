"""Interaction logs (CSV / TSV / Parquet): reading, raw-id encoding, de-duplication, k-core filter and splitting."""

from __future__ import annotations

import csv
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..config import DataConfig
from ..errors import DataError, HqgnnError
from .dataset import InteractionData
from .split import drop_items_without_train, split_leave_last, split_random

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("hqgnn.data")

LOG_FORMATS = ("csv", "tsv", "parquet")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_CANONICAL_INT = re.compile(r"-?(0|[1-9]\d{0,17})")  # at most 18 digits: always fits in int64


def log_format(path: str | os.PathLike[str], fmt: str = "auto") -> str:
    """The log format of ``path``: ``fmt`` unless "auto", else from the extension.

    Extensions: .csv, .tsv, .parquet / .pq, optionally followed by a compression suffix (.gz ...).
    """
    if fmt != "auto":
        if fmt not in LOG_FORMATS:
            raise HqgnnError(f"{path}: format {fmt!r} is not an interaction-log format ({', '.join(LOG_FORMATS)})")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise HqgnnError(
        f"{path}: cannot tell the format from the extension (use .csv, .tsv, .parquet or .pq, or set data.format)"
    )


@dataclass
class RawLog:
    """A log as read: per-column id maps and, per row, contiguous indices and an optional time key.

    ``user_ids[users[r]]`` is row r's raw user id (likewise items); ids are sorted.
    """

    user_ids: np.ndarray
    users: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray
    times: np.ndarray | None
    blank_lines: int = 0  # CSV / TSV lines with no field set (skipped, counted)
    ignored_columns: tuple[str, ...] = ()  # columns of the file the loader does not use (e.g. a rating)


class _Where:
    """Turns a 0-based row into the location a user can find: a CSV line (header = line 1) or a Parquet row."""

    def __init__(self, path: Path, fmt: str, rows: np.ndarray | None = None) -> None:
        self.path, self.fmt = path, fmt
        self.rows = rows  # position -> row of the file, once blank lines are dropped

    def error(self, row: int, problem: str) -> DataError:
        if self.rows is not None:
            row = int(self.rows[row])
        if self.fmt == "parquet":
            return DataError(self.path, f"row {row} (0-based): {problem}")
        return DataError(self.path, problem, line=row + 2)


def read_log(path: str | os.PathLike[str], cfg: DataConfig, fmt: str = "auto") -> RawLog:
    """Read the user, item (and optional time) columns of a CSV / TSV / Parquet log and index the ids.

    Raw ids keep their values: if every id of a column is a canonical integer (no leading zeros,
    at most 18 digits) the array is int64, else a unicode ``<U`` array (never object dtype, so it
    saves without pickle). CSV line numbers in errors assume one record per line (header = line 1).
    Timestamps: numeric columns are used as numbers; other columns are parsed as dates.
    """
    path = Path(path)
    fmt = log_format(path, fmt)
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    wanted = [cfg.user_col, cfg.item_col] + ([cfg.time_col] if cfg.time_col else [])
    n_blank, rows = 0, None
    if fmt == "parquet":
        df, columns = _read_parquet(path, wanted)
    else:
        sep = cfg.sep or ("\t" if fmt == "tsv" else ",")
        df, columns = _read_csv(path, wanted, sep, cfg)
        # Blank lines (a trailing newline, an empty line mid-file) read as rows with every field
        # missing: skip and count them; a row with some fields set still fails on what it lacks.
        blank = df.isna().all(axis=1).to_numpy() if len(df) else np.zeros(0, bool)
        if blank.any():
            n_blank = int(blank.sum())
            rows = np.flatnonzero(~blank)
            df = df[~blank]
    if len(df) == 0:
        raise DataError(path, "no interactions (the file has a header but no rows)")

    where = _Where(path, fmt, rows)
    user_ids, users = _encode_column(df[cfg.user_col], where, "user")
    item_ids, items = _encode_column(df[cfg.item_col], where, "item")
    times = _times(df[cfg.time_col], where) if cfg.time_col else None
    ignored = tuple(c for c in columns if c not in wanted)
    return RawLog(user_ids, users, item_ids, items, times, n_blank, ignored)


def _missing_columns(path: Path, present: list[str], wanted: list[str]) -> None:
    for col in wanted:
        if col not in present:
            shown = ", ".join(repr(c) for c in present)
            raise DataError(path, f"no column {col!r} (columns present: {shown}; name the columns with "
                                  "--set data.user_col=... / data.item_col=... / data.time_col=...)")


def _read_csv(path: Path, wanted: list[str], sep: str, cfg: DataConfig) -> tuple["pd.DataFrame", list[str]]:
    import pandas as pd

    engine = "python" if len(sep) > 1 else "c"  # multi-char / regex separators need the python engine
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, engine=engine)
    except pd.errors.EmptyDataError:
        raise DataError(path, "empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"cannot read the header ({_one_line(exc)})") from None
    _missing_columns(path, [str(c) for c in header.columns], wanted)
    try:
        # Ids as text (their exact spelling); blank lines kept so row index + 2 is the line number.
        # No usecols and index_col=False: with usecols pandas ignores rows with extra fields, and
        # without index_col=False a first row with one extra field silently becomes an index.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(
                path,
                sep=sep,
                engine=engine,
                index_col=False,
                dtype={cfg.user_col: str, cfg.item_col: str},
                skip_blank_lines=False,
            )
    except pd.errors.ParserError as exc:
        msg = _one_line(exc)
        m = re.search(r"line (\d+)", msg)
        raise DataError(path, f"malformed row ({msg})", int(m.group(1)) if m else None) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"cannot read ({_one_line(exc)})") from None
    for w in caught:
        if "Length of header" in str(w.message):  # pandas dropped the extra fields of some row
            line = _first_bad_row(path, sep, len(header.columns))
            raise DataError(path, f"malformed row (expected {len(header.columns)} fields)", line)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    # blank-line detection looks at every column: a line is blank only if no field at all is set
    return df, [str(c) for c in header.columns]


def _first_bad_row(path: Path, sep: str, n_fields: int) -> int | None:
    """Line of the first row whose field count differs from the header (error path only: a slow scan is fine)."""
    if path.suffix.lower() in _COMPRESSION or len(sep) > 1:
        return None
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=sep)
            for row in reader:
                if row and len(row) != n_fields:
                    return reader.line_num
    except (OSError, csv.Error):
        return None
    return None


def _read_parquet(path: Path, wanted: list[str]) -> tuple["pd.DataFrame", list[str]]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        _missing_columns(path, names, wanted)
        return pq.read_table(path, columns=wanted).to_pandas(), list(names)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(path, f"not a readable Parquet file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _encode_column(col: "pd.Series", where: _Where, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, index)`` for an id column: sorted distinct raw ids (int64 or ``<U``) and each row's index."""
    import pandas as pd

    null = col.isna().to_numpy()
    if null.any():
        raise where.error(int(np.argmax(null)), f"missing {what} id")
    if pd.api.types.is_integer_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        try:
            return encode_ids(col.to_numpy(dtype=np.int64))
        except (OverflowError, ValueError, TypeError):  # uint64 above int64's range: keep as text
            pass
    elif pd.api.types.is_float_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64)
        if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
            return encode_ids(values.astype(np.int64))
    # Text: factorize the column first, then convert only the distinct ids (far cheaper than
    # turning a million pandas strings into a numpy array).
    codes, uniques = pd.factorize(col.astype(str), sort=True)
    ids = np.asarray(uniques).astype(str)
    codes = codes.astype(np.int64)
    if pd.Series(ids).str.fullmatch(_CANONICAL_INT).all():
        as_int = ids.astype(np.int64)
        order = np.argsort(as_int)  # text order != numeric order: re-sort and remap
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return as_int[order], rank[codes]
    return ids, codes


def _times(col: "pd.Series", where: _Where) -> np.ndarray:
    """A sortable key per row: the numbers of a numeric column, int64 nanoseconds (UTC) for dates."""
    import pandas as pd

    null = col.isna().to_numpy()
    if null.any():
        raise where.error(int(np.argmax(null)), "missing timestamp")
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return cast(np.ndarray, pd.to_datetime(col, utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64))
    if pd.api.types.is_integer_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return cast(np.ndarray, col.to_numpy(dtype=np.int64))  # exact, even for nanosecond epochs
    if pd.api.types.is_float_dtype(col.dtype):
        return cast(np.ndarray, col.to_numpy(dtype=np.float64))
    text = col.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    ok = numbers.notna().to_numpy()
    if 2 * ok.sum() >= len(ok):  # mostly numbers: a numeric column with a few bad cells
        if not ok.all():
            row = int(np.argmax(~ok))
            raise where.error(row, f"unparsable timestamp {text.iloc[row]!r}")
        return cast(np.ndarray, numbers.to_numpy(dtype=np.float64))
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise where.error(row, f"unparsable timestamp {text.iloc[row]!r}")
    return cast(np.ndarray, parsed.to_numpy(dtype="datetime64[ns]").view(np.int64))


def encode_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, index)``: the sorted distinct raw ids and each row's contiguous index (``ids[index] == raw``)."""
    import pandas as pd

    # pandas' hash factorize is several times faster than np.unique on strings.
    codes, uniques = pd.factorize(raw, sort=True)
    uniques = np.asarray(uniques)
    if uniques.dtype == object:
        uniques = uniques.astype(str)
    return uniques, codes.astype(np.int64)


def dedupe(users: np.ndarray, items: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Row indices to keep so each (user, item) occurs once: the earliest timestamp, else the first row.

    Returned in the original row order.
    """
    if len(users) == 0:
        return np.empty(0, dtype=np.int64)
    # Two stable sorts (time, then the combined (user, item) key) instead of a slow multi-key lexsort.
    key = users * (int(items.max()) + 1) + items  # contiguous indices: no overflow in practice
    order = np.argsort(times, kind="stable") if times is not None else np.arange(len(users))
    order = order[np.argsort(key[order], kind="stable")]
    key = key[order]
    first = np.r_[True, key[1:] != key[:-1]]
    return np.sort(order[first])


def kcore(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of the rows kept by the (min_user, min_item)-core, iterated until stable.

    Each round drops rows whose user has fewer than ``min_user`` kept rows or whose item has fewer
    than ``min_item`` (counts by ``np.bincount``); dropping rows can push others below the bar,
    hence the loop. ``0`` (or 1) disables a side.
    """
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    while True:
        u, i = users[keep], items[keep]
        ok_user = np.bincount(u, minlength=n_users) >= min_user
        ok_item = np.bincount(i, minlength=n_items) >= min_item
        new_keep: np.ndarray = keep & ok_user[users] & ok_item[items]
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def load_log(
    path: str | os.PathLike[str], cfg: DataConfig, fmt: str = "auto"
) -> tuple[InteractionData, dict[str, Any]]:
    """Load, clean and split an interaction log; returns the data (empty val) and a dict of counts.

    Steps, in order: read (see :func:`read_log`); remove duplicate (user, item) rows, keeping the
    earliest timestamp (counted as ``duplicates_removed``); the optional k-core filter
    (``kcore_removed``); map raw ids to contiguous indices (sorted raw ids); split per user
    (``random``: seeded holdout of ``test_ratio``; ``leave_last``: each user's latest interaction,
    needs ``time_col``). Protocol decision: test pairs whose item has no train interaction after the
    split are dropped (``test_dropped_cold_items``) and those items removed from the catalogue
    (``items_dropped``); both counts are logged at INFO on ``hqgnn.data``.
    """
    path = Path(path)
    if cfg.split not in ("random", "leave_last"):
        raise HqgnnError(f"data.split must be 'random' or 'leave_last', got {cfg.split!r}")
    if cfg.split == "leave_last" and not cfg.time_col:
        raise HqgnnError("data.split = 'leave_last' needs data.time_col (the timestamp column)")
    raw = read_log(path, cfg, fmt)
    n_rows = len(raw.users)
    user_ids, users, item_ids, items, times = raw.user_ids, raw.users, raw.item_ids, raw.items, raw.times

    keep = dedupe(users, items, times)
    n_dup = n_rows - len(keep)
    users, items = users[keep], items[keep]
    times = times[keep] if times is not None else None

    keep = kcore(users, items, cfg.min_user_interactions, cfg.min_item_interactions)
    n_kcore = int((~keep).sum())
    if not keep.any():
        raise DataError(
            path,
            f"the k-core filter (users >= {cfg.min_user_interactions}, items >= {cfg.min_item_interactions}) "
            "left no interactions",
        )
    users, items = users[keep], items[keep]
    times = times[keep] if times is not None else None
    if n_kcore:  # re-index so ids stay contiguous (raw-id maps subset to match)
        kept_users, users = np.unique(users, return_inverse=True)
        kept_items, items = np.unique(items, return_inverse=True)
        user_ids, item_ids = user_ids[kept_users], item_ids[kept_items]
    pairs = np.column_stack([users, items]).astype(np.int64)

    if cfg.split == "leave_last":
        assert times is not None
        train, test = split_leave_last(pairs, times)
    else:
        train, test = split_random(pairs, cfg.test_ratio, cfg.seed)
    train, test, item_ids, n_test_dropped, n_items_dropped = drop_items_without_train(train, test, item_ids)

    notes = {
        "rows_read": n_rows,
        "blank_lines_skipped": raw.blank_lines,
        "ignored_columns": list(raw.ignored_columns),
        "duplicates_removed": int(n_dup),
        "kcore_removed": n_kcore,
        "test_dropped_cold_items": n_test_dropped,
        "items_dropped": n_items_dropped,
    }
    log.info(
        "%s: %d rows (%d blank lines skipped; ignored columns: %s), %d duplicate (user, item) rows removed, %d removed by the k-core filter, "
        "%d test pairs dropped (item not in train), %d items dropped",
        path, n_rows, raw.blank_lines, ", ".join(raw.ignored_columns) or "none", n_dup, n_kcore, n_test_dropped, n_items_dropped,
    )
    data = InteractionData(
        name=path.name,
        n_users=len(user_ids),
        n_items=len(item_ids),
        train=train,
        val=np.empty((0, 2), dtype=np.int64),
        test=test,
        user_ids=user_ids,
        item_ids=item_ids,
    )
    return data, notes
