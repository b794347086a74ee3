"""Tests for hqgnn.data: LightGCN dirs, interaction logs, splits, synthetic data, the dataset registry."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hqgnn.config import DataConfig
from hqgnn.data import (
    dataset_stats,
    holdout_validation,
    kcore,
    load_dataset,
    load_lightgcn_dir,
    load_log,
    make_synthetic,
    split_leave_last,
    split_random,
    synthetic_dataset,
    write_lightgcn_dir,
)
from hqgnn.data import registry
from hqgnn.data.split import holdout_counts
from hqgnn.errors import DataError, HqgnnError


def pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(u), int(i)) for u, i in pairs}


def write_dir(root: Path, train: str | None, test: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if train is not None:
        (root / "train.txt").write_text(train)
    if test is not None:
        (root / "test.txt").write_text(test)
    return root


# ---------------------------------------------------------------- LightGCN format

TRAIN = "0 0 1 2\n1 2 3\n2 1 4 5\n"
TEST = "0 3\n1 4 5\n2\n"


def test_lightgcn_round_trip(tmp_path: Path) -> None:
    data = load_lightgcn_dir(write_dir(tmp_path / "tiny", TRAIN, TEST))
    assert (data.name, data.n_users, data.n_items) == ("tiny", 3, 6)
    assert data.train.dtype == np.int64 and data.train.shape == (8, 2)
    assert data.train.tolist() == [[0, 0], [0, 1], [0, 2], [1, 2], [1, 3], [2, 1], [2, 4], [2, 5]]
    assert data.test.tolist() == [[0, 3], [1, 4], [1, 5]]
    assert data.val.shape == (0, 2)
    assert data.user_ids.tolist() == [0, 1, 2] and data.item_ids.tolist() == list(range(6))

    write_lightgcn_dir(tmp_path / "copy", data.train, data.test, data.n_users)
    assert (tmp_path / "copy" / "train.txt").read_text() == TRAIN
    assert (tmp_path / "copy" / "test.txt").read_text() == TEST
    again = load_lightgcn_dir(tmp_path / "copy")
    assert np.array_equal(again.train, data.train) and np.array_equal(again.test, data.test)


def test_lightgcn_tolerates_crlf_tabs_blank_lines_and_gaps(tmp_path: Path) -> None:
    # CRLF endings, a tab, trailing spaces, a blank line, no final newline; user 3 absent, item 7 unused.
    train = "0 0  1\r\n\r\n1\t2 3 \n4 0 8"
    test = "0 2\n4 1\n"
    data = load_lightgcn_dir(write_dir(tmp_path / "d", train, test))
    assert (data.n_users, data.n_items) == (5, 9)
    assert pair_set(data.train) == {(0, 0), (0, 1), (1, 2), (1, 3), (4, 0), (4, 8)}
    assert data.summary()["cold_users"] == 2  # users 2 and 3
    assert data.summary()["cold_items"] == 4  # items 4..7 never occur


@pytest.mark.parametrize(
    ("train", "test", "match"),
    [
        (None, TEST, r"train\.txt: file not found"),
        (TRAIN, None, r"test\.txt: file not found"),
        ("", TEST, r"train\.txt: empty file"),
        (TRAIN, "\n\n", r"test\.txt: empty file"),
        ("0 1 2\n1 2 x3\n", TEST, r"train\.txt:2: non-integer token 'x3'"),
        ("0 1 2\n1 2 3\n2 1.5\n", TEST, r"train\.txt:3: non-integer token '1\.5'"),
        (TRAIN, "0 3\n1 -4\n", r"test\.txt:2: negative id -4"),
        ("0 1\n1 2 3\n0 4\n", TEST, r"train\.txt:3: user 0 has a second line \(first on line 1\)"),
        ("0 1 2\n1 2 3 2\n", TEST, r"train\.txt:2: item 2 is repeated within the line"),
        (TRAIN, "0 3\n1 5 5\n", r"test\.txt:2: item 5 is repeated within the line"),
        ("0 1 2\n1 2 3\n", "0 3\n1 1\n2 1\n", r"test\.txt:3: user 2 has test items but no train items"),
        ("0 1 2\n1 2 3\n2\n", "0 3\n2 1\n", r"test\.txt:2: user 2 has test items but no train items"),
        (TRAIN, "0 3\n1 9\n", r"test\.txt:2: item 9 never occurs in train\.txt"),
        (TRAIN, "0 3\n1 4\n2 5\n", r"test\.txt:3: pair \(user 2, item 5\) is also in train\.txt"),
        ("0 1 1234567890123456789\n", TEST, r"train\.txt:1: id 1234567890123456789 is too large"),
        ("0\n1\n", "0\n", r"train\.txt: no interactions"),
    ],
)
def test_lightgcn_errors(tmp_path: Path, train: str | None, test: str | None, match: str) -> None:
    root = write_dir(tmp_path / "bad", train, test)
    with pytest.raises(DataError, match=match) as info:
        load_lightgcn_dir(root)
    assert str(root) in str(info.value)


def test_lightgcn_dir_via_load_dataset_carves_validation(tmp_path: Path) -> None:
    root = write_dir(tmp_path / "d", "0 0 1 2 3 4 5 6 7 8 9\n1 0 1\n", "0\n1 2\n")
    cfg = DataConfig(source=str(root), val_ratio=0.2, seed=1)
    data = load_dataset(cfg)
    assert len(data.val) == 2 and len(data.train) == 10  # user 0: 2 of 10; user 1: round(0.4) = 0
    assert pair_set(data.seen) == pair_set(load_lightgcn_dir(root).train)
    with pytest.raises(HqgnnError, match="directory is read as LightGCN"):
        load_dataset(dataclasses.replace(cfg, format="csv"))


# ---------------------------------------------------------------- interaction logs


def test_csv_with_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    rows = [("alice", 10), ("alice", 11), ("bob", 10), ("bob", 12), ("carol", 11), ("carol", 12), ("alice", 12)]
    pd.DataFrame(rows, columns=["user", "item"]).to_csv(path, index=False)
    data, notes = load_log(path, DataConfig(test_ratio=0.0))
    assert data.user_ids.dtype.kind == "U" and data.user_ids.tolist() == ["alice", "bob", "carol"]
    assert data.item_ids.dtype == np.int64 and data.item_ids.tolist() == [10, 11, 12]
    raw = {(data.user_ids[u], int(data.item_ids[i])) for u, i in data.train}
    assert raw == set(rows) and len(data.test) == 0
    assert notes["duplicates_removed"] == 0
    buf = io.BytesIO()  # ids must save and load without pickle
    np.savez(buf, user_ids=data.user_ids, item_ids=data.item_ids)
    buf.seek(0)
    assert np.load(buf, allow_pickle=False)["user_ids"].tolist() == ["alice", "bob", "carol"]


def test_non_canonical_integer_ids_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,007\n1,7\n2,7\n")
    data, _ = load_log(path, DataConfig(test_ratio=0.0))
    assert data.user_ids.dtype == np.int64
    assert data.item_ids.dtype.kind == "U" and data.item_ids.tolist() == ["007", "7"]


def test_integer_ids_sorted_numerically(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item\n10,9\n9,10\n9,100\n-1,9\n")
    data, _ = load_log(path, DataConfig(test_ratio=0.0))
    assert data.user_ids.tolist() == [-1, 9, 10] and data.item_ids.tolist() == [9, 10, 100]
    raw = {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in data.train}
    assert raw == {(10, 9), (9, 10), (9, 100), (-1, 9)}


def test_tsv_and_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    # User u's latest item is i(u+1): it also occurs earlier for user u+1, so it stays in train.
    rows = [f"u{u}\ti{(u + 1 + k) % 5}\t{100 * u - k}\n" for u in range(4) for k in range(5)]
    path.write_text("uid\tiid\tts\n" + "".join(rows))
    cfg = DataConfig(user_col="uid", item_col="iid", time_col="ts", split="leave_last")
    data, _ = load_log(path, cfg)
    assert (data.n_users, data.n_items) == (4, 5)
    test = {(str(data.user_ids[u]), str(data.item_ids[i])) for u, i in data.test}
    assert test == {(f"u{u}", f"i{(u + 1) % 5}") for u in range(4)}
    # An explicit separator and format override the extension.
    other = tmp_path / "log.txt"
    other.write_text(path.read_text().replace("\t", ";"))
    data2, _ = load_log(other, dataclasses.replace(cfg, sep=";"), fmt="csv")
    assert pair_set(data2.train) == pair_set(data.train)


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"log{suffix}"
    df = pd.DataFrame({"user": [5, 5, 6, 6, 7, 7], "item": ["a", "b", "a", "c", "b", "c"]})
    df.to_parquet(path)
    data = load_dataset(DataConfig(source=str(path), test_ratio=0.0, val_ratio=0.0))
    assert data.name == path.name
    assert data.user_ids.dtype == np.int64 and data.user_ids.tolist() == [5, 6, 7]
    assert data.item_ids.dtype.kind == "U" and data.item_ids.tolist() == ["a", "b", "c"]
    assert len(data.train) == 6


def test_duplicates_removed_counted_keep_earliest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log.csv"
    # (1, a) occurs at t=9 and t=1: the earliest copy stays, so b (t=5) is user 1's latest.
    path.write_text("user,item,t\n1,a,9\n1,b,5\n1,a,1\n2,a,1\n2,b,2\n2,b,3\n2,c,4\n3,c,1\n3,a,2\n")
    cfg = DataConfig(time_col="t", split="leave_last")
    with caplog.at_level(logging.INFO, logger="hqgnn.data"):
        data, notes = load_log(path, cfg)
    assert notes["duplicates_removed"] == 2
    assert "2 duplicate" in caplog.text
    test = {(int(data.user_ids[u]), str(data.item_ids[i])) for u, i in data.test}
    assert test == {(1, "b"), (2, "c"), (3, "a")}
    stats = dataset_stats(str(path), dataclasses.replace(cfg, val_ratio=0.0))
    assert stats["duplicates_removed"] == 2 and stats["interactions"] == 7 and stats["rows_read"] == 9


def test_leave_last_picks_max_timestamp_and_needs_time_col(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 6)
    items = np.tile(np.arange(6), 50)
    times = rng.permutation(len(users)).astype(float)
    pairs = np.column_stack([users, items])
    train, test = split_leave_last(pairs, times)
    assert len(test) == 50 and len(train) == 250
    for u, i in test:
        mine = users == u
        assert i == items[mine][np.argmax(times[mine])]
    # Ties go to the later row; a single interaction stays in train.
    train, test = split_leave_last(np.array([[0, 1], [0, 2], [0, 3], [1, 4]]), np.array([5, 7, 7, 1]))
    assert test.tolist() == [[0, 3]] and [1, 4] in train.tolist()
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(HqgnnError, match="needs data.time_col"):
        load_log(path, DataConfig(split="leave_last"))


def test_dates_as_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user,item,when\n1,a,2021-03-01\n1,b,2020-12-31 23:00\n1,c,2021-01-15\n2,a,2019-05-05\n2,c,2019-05-06\n"
    )
    data, _ = load_log(path, DataConfig(time_col="when", split="leave_last"))
    test = {(int(data.user_ids[u]), str(data.item_ids[i])) for u, i in data.test}
    assert test == {(1, "a"), (2, "c")}


def test_test_items_missing_from_train_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.csv"
    # Item z only occurs as user 1's latest interaction: it lands in test with no train pair.
    path.write_text("user,item,t\n1,x,1\n1,z,9\n2,x,1\n2,y,2\n3,y,1\n3,x,5\n")
    with caplog.at_level(logging.INFO, logger="hqgnn.data"):
        data, notes = load_log(path, DataConfig(time_col="t", split="leave_last"))
    assert notes["test_dropped_cold_items"] == 1 and notes["items_dropped"] == 1
    assert data.item_ids.tolist() == ["x", "y"] and data.n_items == 2
    assert "1 test pairs dropped" in caplog.text
    assert len(data.test) == 2


@pytest.mark.parametrize(
    ("text", "cfg", "match"),
    [
        ("user,product\n1,2\n", {}, r"log\.csv: no column 'item' \(columns present: 'user', 'product'; name the columns with --set"),
        ("user,item\n1,2\n", {"time_col": "ts"}, r"log\.csv: no column 'ts'"),
        ("", {}, r"log\.csv: empty file"),
        ("user,item\n", {}, r"log\.csv: no interactions"),
        ("user,item\n1,2\n1,3\n,4\n", {}, r"log\.csv:4: missing user id"),
        ("user,item\n1,2\n2,\n", {}, r"log\.csv:3: missing item id"),
        # a blank line is skipped, but the line numbers of later rows stay the file's own
        ("user,item\n1,2\n\n2,3\n,5\n", {}, r"log\.csv:5: missing user id"),
        ("user,item\n1,2\n\n2,\n", {}, r"log\.csv:4: missing item id"),
        ("user,item,t\n1,2,5\n1,3,x\n", {"time_col": "t"}, r"log\.csv:3: unparsable timestamp 'x'"),
        ("user,item,t\n1,2,2020-01-01\n1,3,not a date\n", {"time_col": "t"}, r"log\.csv:3: unparsable timestamp"),
        ("user,item,t\n1,2,5\n1,3,\n", {"time_col": "t"}, r"log\.csv:3: missing timestamp"),
        ("user,item\n1,2\n1,3,4\n", {}, r"log\.csv:3: malformed row"),
        ("user,item\n1,2,9\n1,3\n", {}, r"log\.csv:2: malformed row \(expected 2 fields\)"),
    ],
)
def test_log_errors(tmp_path: Path, text: str, cfg: dict, match: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_log(path, DataConfig(**cfg))


def test_parquet_null_names_row(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": ["a", "b", None], "item": [1, 2, 3]}).to_parquet(path)
    with pytest.raises(DataError, match=r"log\.parquet: row 2 \(0-based\): missing user id"):
        load_log(path, DataConfig())
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        load_log(tmp_path / "junk.parquet", DataConfig())


def slow_kcore(pairs: list[tuple[int, int]], min_user: int, min_item: int) -> set[tuple[int, int]]:
    kept = set(pairs)
    while True:
        uc: dict[int, int] = {}
        ic: dict[int, int] = {}
        for u, i in kept:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        new = {(u, i) for u, i in kept if uc[u] >= min_user and ic[i] >= min_item}
        if new == kept:
            return kept
        kept = new


@pytest.mark.parametrize(("min_user", "min_item"), [(0, 0), (3, 0), (0, 4), (5, 5), (8, 3)])
def test_kcore_matches_slow_reference(min_user: int, min_item: int) -> None:
    rng = np.random.default_rng(min_user * 10 + min_item)
    users = rng.zipf(1.6, 3000) % 150
    items = rng.zipf(1.4, 3000) % 200
    pairs = np.unique(np.column_stack([users, items]), axis=0)
    keep = kcore(pairs[:, 0], pairs[:, 1], min_user, min_item)
    assert pair_set(pairs[keep]) == slow_kcore([tuple(p) for p in pairs.tolist()], min_user, min_item)


def test_kcore_in_load_log(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pairs = np.unique(np.column_stack([rng.integers(0, 40, 400), rng.zipf(1.5, 400) % 60]), axis=0)
    path = tmp_path / "log.csv"
    pd.DataFrame(pairs, columns=["user", "item"]).to_csv(path, index=False)
    data, notes = load_log(path, DataConfig(min_user_interactions=5, min_item_interactions=3, test_ratio=0.0))
    expected = slow_kcore([tuple(p) for p in pairs.tolist()], 5, 3)
    got = {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in data.train}
    assert got == expected and notes["kcore_removed"] == len(pairs) - len(expected)
    with pytest.raises(DataError, match="left no interactions"):
        load_log(path, DataConfig(min_user_interactions=1000))


def test_log_format_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text("{}")
    with pytest.raises(HqgnnError, match=r"log\.json: cannot tell the format"):
        load_dataset(DataConfig(source=str(path)))
    gz = tmp_path / "log.csv.gz"
    pd.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 2]}).to_csv(gz, index=False)
    assert load_dataset(DataConfig(source=str(gz), val_ratio=0.0)).n_users == 2


# ---------------------------------------------------------------- splits


def test_random_split_proportions_and_determinism() -> None:
    users = np.repeat(np.arange(200), 10)
    pairs = np.column_stack([users, np.tile(np.arange(10), 200)])
    pairs = np.r_[pairs, [[200, 3]]]  # a single-interaction user keeps it in train
    train, test = split_random(pairs, 0.2, seed=7)
    assert np.all(np.bincount(test[:, 0], minlength=201)[:200] == 2)
    assert [200, 3] in train.tolist() and 200 not in test[:, 0]
    assert pair_set(train) | pair_set(test) == pair_set(pairs) and not pair_set(train) & pair_set(test)
    again = split_random(pairs, 0.2, seed=7)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split_random(pairs, 0.2, seed=8)[1], test)
    # Varying activity: each user holds out round-half-up(0.2 k), at most k - 1.
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 40, 300)
    pairs = np.column_stack([np.repeat(np.arange(300), counts), np.concatenate([np.arange(c) for c in counts])])
    _, test = split_random(pairs, 0.2, seed=1)
    assert np.array_equal(np.bincount(test[:, 0], minlength=300), holdout_counts(counts, 0.2))
    assert abs(len(test) / len(pairs) - 0.2) < 0.02


def test_holdout_validation() -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(1, 30, 500)
    train = np.column_stack([np.repeat(np.arange(500), counts), np.concatenate([np.arange(c) for c in counts])])
    tr, val = holdout_validation(train, 0.25, seed=3)
    assert np.all(np.bincount(tr[:, 0], minlength=500) >= 1)
    assert np.array_equal(np.bincount(val[:, 0], minlength=500), holdout_counts(counts, 0.25))
    assert not pair_set(tr) & pair_set(val) and pair_set(tr) | pair_set(val) == pair_set(train)
    tr2, val2 = holdout_validation(train, 0.25, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(val, val2)
    assert not np.array_equal(holdout_validation(train, 0.25, seed=4)[1], val)
    tr0, val0 = holdout_validation(train, 0.0, seed=3)
    assert val0.shape == (0, 2) and np.array_equal(tr0, train)
    assert holdout_counts(np.array([1, 2, 3, 10]), 0.9).tolist() == [0, 1, 2, 9]
    with pytest.raises(HqgnnError, match="val_ratio"):
        holdout_validation(train, 1.0, seed=0)


def test_holdout_validation_min_per_user_puts_every_user_in_validation() -> None:
    counts = np.array([1, 2, 5, 9, 10, 30, 40])
    train = np.column_stack([np.repeat(np.arange(7), counts), np.concatenate([np.arange(c) for c in counts])])
    # hand-computed: round-half-up(0.05 k) = 0, 0, 0, 0, 1, 2, 2; at least 1 (capped at k - 1) = 0, 1, 1, 1, 1, 2, 2
    assert holdout_counts(counts, 0.05).tolist() == [0, 0, 0, 0, 1, 2, 2]
    assert holdout_counts(counts, 0.05, min_per_user=1).tolist() == [0, 1, 1, 1, 1, 2, 2]
    tr, val = holdout_validation(train, 0.05, seed=1, min_per_user=1)
    assert np.bincount(val[:, 0], minlength=7).tolist() == [0, 1, 1, 1, 1, 2, 2]
    assert np.all(np.bincount(tr[:, 0], minlength=7) >= 1)
    assert pair_set(tr) | pair_set(val) == pair_set(train)
    cfg = DataConfig(source="synthetic", val_ratio=0.05, val_min_per_user=1)
    data = load_dataset(cfg)
    train_users = np.unique(data.seen[:, 0][np.bincount(data.seen[:, 0])[data.seen[:, 0]] >= 2])
    assert np.array_equal(np.unique(data.val[:, 0]), train_users)  # every user with >= 2 pairs is validated


# ---------------------------------------------------------------- synthetic


def test_synthetic_seeded_and_heavy_tailed() -> None:
    start = time.perf_counter()
    pairs = make_synthetic(seed=11)
    assert time.perf_counter() - start < 1.0
    assert np.array_equal(pairs, make_synthetic(seed=11))
    assert not np.array_equal(pairs, make_synthetic(seed=12))
    assert len(np.unique(pairs[:, 0] * 2000 + pairs[:, 1])) == len(pairs)  # unique pairs
    per_user = np.bincount(pairs[:, 0], minlength=3000)
    assert per_user.min() >= 2 and 20 <= per_user.mean() <= 35
    pop = np.sort(np.bincount(pairs[:, 1], minlength=2000))[::-1]
    assert pop[:200].sum() > 0.3 * pop.sum()  # top 10% of items hold > 30% of interactions


def test_synthetic_dataset_every_item_in_train() -> None:
    cfg = DataConfig(synthetic_users=500, synthetic_items=400, synthetic_communities=5, seed=3)
    data, notes = synthetic_dataset(cfg)
    assert data.n_users == 500 and data.n_items == 400 - notes["items_dropped"]
    assert np.all(np.bincount(data.train[:, 1], minlength=data.n_items) >= 1)
    assert np.all(np.bincount(data.train[:, 0], minlength=data.n_users) >= 1)
    assert 0.17 < len(data.test) / (len(data.train) + len(data.test)) < 0.23
    full = load_dataset(cfg)
    assert len(full.val) > 0 and pair_set(full.seen) == pair_set(data.train)
    assert len(data.item_ids) == data.n_items and np.all(np.diff(data.item_ids) > 0)


def test_unknown_source() -> None:
    with pytest.raises(HqgnnError, match=r"data source 'no/such/thing' is not"):
        load_dataset(DataConfig(source="no/such/thing"))


# ---------------------------------------------------------------- registry / download


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def file_server(tmp_path: Path):
    """A local HTTP server over a temp folder; yields (root, base_url, hits)."""
    root = tmp_path / "served"
    root.mkdir()
    hits: list[str] = []
    handler = type("H", (_Handler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k)
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_dataset(file_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve a tiny dataset named 'tinyset' and register its hashes (sha256 train, md5 test)."""
    root, url, hits = file_server
    write_dir(root / "tinyset", TRAIN, TEST)
    hashes = {
        "train.txt": "sha256:" + hashlib.sha256(TRAIN.encode()).hexdigest(),
        "test.txt": "md5:" + hashlib.md5(TEST.encode()).hexdigest(),
    }
    monkeypatch.setitem(registry.DATASETS, "tinyset", hashes)
    monkeypatch.setenv("HQGNN_DATA_URL", url)
    monkeypatch.setenv("HQGNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HQGNN_DATA", raising=False)
    return root, hits


def test_download_verify_and_cache(fake_dataset, tmp_path: Path) -> None:
    _, hits = fake_dataset
    cfg = DataConfig(source="tinyset", val_ratio=0.0)
    data = load_dataset(cfg)
    assert data.name == "tinyset" and len(data.train) == 8 and len(data.test) == 3
    assert sorted(hits) == ["/tinyset/test.txt", "/tinyset/train.txt"]
    cached = tmp_path / "cache" / "datasets" / "tinyset"
    assert (cached / "train.txt").read_text() == TRAIN
    assert not [p for p in cached.iterdir() if p.name.startswith(".")]  # no temp files left
    load_dataset(cfg)
    assert len(hits) == 2  # second load served from the cache
    # cfg.cache_dir wins over $HQGNN_CACHE
    load_dataset(dataclasses.replace(cfg, cache_dir=str(tmp_path / "other")))
    assert len(hits) == 4 and (tmp_path / "other" / "datasets" / "tinyset" / "test.txt").is_file()


def test_download_hash_mismatch(fake_dataset, tmp_path: Path) -> None:
    root, _ = fake_dataset
    (root / "tinyset" / "train.txt").write_text(TRAIN + "3 0\n")
    expected = hashlib.sha256(TRAIN.encode()).hexdigest()
    actual = hashlib.sha256((TRAIN + "3 0\n").encode()).hexdigest()
    with pytest.raises(HqgnnError, match=rf"tinyset/train\.txt: expected sha256:{expected}, got sha256:{actual}"):
        load_dataset(DataConfig(source="tinyset"))
    cached = tmp_path / "cache" / "datasets" / "tinyset"
    assert not cached.exists() or not list(cached.iterdir())


def test_download_network_failure(fake_dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HQGNN_DATA_URL", "http://127.0.0.1:9/nothing")  # discard port: refused
    with pytest.raises(HqgnnError, match=r"could not download .*--data-dir DIR or HQGNN_DATA") as info:
        load_dataset(DataConfig(source="tinyset"))
    assert "\n" not in str(info.value)


def test_local_data_dir_and_env_skip_download(fake_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, hits = fake_dataset
    local = tmp_path / "local"
    write_dir(local / "tinyset", TRAIN + "3 0\n", TEST)  # not the registered hash: local copies are trusted
    data = load_dataset(DataConfig(source="tinyset", data_dir=str(local), val_ratio=0.0))
    assert data.n_users == 4
    monkeypatch.setenv("HQGNN_DATA", str(local))
    assert load_dataset(DataConfig(source="tinyset", val_ratio=0.0)).n_users == 4
    assert registry.resolve_dataset("tinyset", DataConfig(data_dir=str(local / "tinyset"))) == local / "tinyset"
    assert hits == []


def test_register_dataset_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    with pytest.raises(HqgnnError, match="no hash for test.txt"):
        registry.register_dataset("x", {"train.txt": "sha256:00"})
    with pytest.raises(HqgnnError, match="bad hash spec"):
        registry.register_dataset("x", {"train.txt": "sha1:00", "test.txt": "md5:00"})
    registry.register_dataset("x", {"train.txt": "sha256:00", "test.txt": "md5:00"})
    assert registry.is_registered("x")


# ---------------------------------------------------------------- real data


def test_gowalla(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    if not (shared_data_dir / "gowalla" / "train.txt").is_file():
        reason = f"gowalla not found under {shared_data_dir}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    monkeypatch.setenv("HQGNN_DATA_URL", "http://127.0.0.1:9")  # never download here
    start = time.perf_counter()
    data = load_dataset(DataConfig(source="gowalla", data_dir=str(shared_data_dir)))
    elapsed = time.perf_counter() - start
    assert (data.n_users, data.n_items) == (29_858, 40_981)
    assert len(data.train) + len(data.val) == 810_128 and len(data.test) == 217_242
    assert len(data.val) > 0
    stats = data.summary()
    assert stats["cold_users"] == 0 and stats["cold_items"] == 0
    assert elapsed < 5.0  # typically ~0.3 s; generous bound for busy CI machines


def test_shared_data_location_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import conftest

    monkeypatch.setenv("HQGNN_TEST_DATA", str(tmp_path))
    assert conftest.shared_data_location() == tmp_path.resolve()
    monkeypatch.delenv("HQGNN_TEST_DATA")
    assert conftest.shared_data_location() == Path(conftest.__file__).resolve().parents[2] / "shared" / "data"
