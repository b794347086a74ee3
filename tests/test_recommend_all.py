"""recommend-all: every user's top-K equals per-user recommend, streamed in chunks, resumable after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from recommender_base import FAST, community_log
from reliability_helpers import one_line
from run_helpers import run_cli

from hqgnn import HQGNN
from hqgnn import recommend_all as ra
from hqgnn.errors import HqgnnError
from hqgnn.io import DirLock

FORMATS = {
    "float": {},
    "1bit_symmetric": {"bits": 1},
    "1bit_float_queries": {"bits": 1, "quant.user_bits": 0},
    "1bit_x_4bit_centered": {"bits": 1, "quant.user_bits": 4, "quant.center": True},
}


@pytest.fixture(scope="module", params=list(FORMATS))
def model(request: pytest.FixtureRequest) -> HQGNN:
    return HQGNN(**FAST, **FORMATS[request.param]).fit(community_log(), user_col="uid", item_col="iid")


@pytest.fixture(scope="module")
def int_model() -> HQGNN:
    log = community_log(n_users=40, n_items=30, per_user=8, seed=1)
    users = log["uid"].str.removeprefix("user-").astype(np.int64) * 10 + 7  # int ids that are not row numbers
    items = log["iid"].str.removeprefix("item-").astype(np.int64) * 3 + 1000
    return HQGNN(**FAST, bits=1).fit((users.to_numpy(), items.to_numpy()))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "q1"
    HQGNN(**FAST, bits=1, **{"quant.user_bits": 0}).fit(community_log(), user_col="uid", item_col="iid").save(path)
    return path


def reference(m: HQGNN, k: int, exclude_seen: bool = True) -> pd.DataFrame:
    """The obvious slow answer: ``recommend`` called for one user at a time, padding dropped."""
    rows: list[tuple[Any, int, Any, float]] = []
    for u in m.user_ids.tolist():
        ids, scores = m.recommend([u], k=k, exclude_seen=exclude_seen)
        rows += [(u, r + 1, i, s) for r, (i, s) in enumerate(zip(ids[0].tolist(), scores[0].tolist()))
                 if np.isfinite(s)]
    return pd.DataFrame(rows, columns=list(ra.COLUMNS))


def same(frame: pd.DataFrame, want: pd.DataFrame) -> bool:
    """Equal rows in equal order; scores bit for bit (float32)."""
    return (len(frame) == len(want) and frame["user"].tolist() == want["user"].tolist()
            and frame["rank"].tolist() == want["rank"].tolist() and frame["item"].tolist() == want["item"].tolist()
            and np.array_equal(frame["score"].to_numpy(np.float32), want["score"].to_numpy(np.float32)))


# -- the answer -----------------------------------------------------------------------------------
def test_every_user_equals_recommend_at_every_chunk_size(model: HQGNN, tmp_path: Path) -> None:
    k = 12
    want = reference(model, k)
    assert len(want) == model.run.n_users * k  # every user has k unseen items here
    n = model.run.n_users
    for chunk in (1, 7, n, None):
        assert same(model.recommend_all(k, chunk=chunk), want), chunk
    path = model.recommend_all(k, out=tmp_path / "recs.parquet", chunk=7)
    table = pq.read_table(path)
    assert table.column_names == list(ra.COLUMNS)
    assert same(table.to_pandas(), want)
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-n // 7)  # one row group per chunk: streamed


def test_seen_items_masked_by_default_and_kept_on_request(model: HQGNN) -> None:
    seen = model.run.seen.tocsr()
    rows = pd.Index(model.user_ids)
    k = model.run.n_items  # every item: each user's list is exactly the unseen ones
    masked = model.recommend_all(k)
    items = pd.Index(model.item_ids)
    got = set(zip(rows.get_indexer(masked["user"]), items.get_indexer(masked["item"])))
    seen_pairs = set(zip(*seen.nonzero()))
    assert not got & seen_pairs
    assert len(masked) == model.run.n_users * model.run.n_items - seen.nnz
    kept = model.recommend_all(k, exclude_seen=False)
    assert len(kept) == model.run.n_users * model.run.n_items
    assert same(model.recommend_all(5, exclude_seen=False), reference(model, 5, exclude_seen=False))


def test_own_int_ids_and_k_above_the_catalog(int_model: HQGNN, tmp_path: Path) -> None:
    frame = int_model.recommend_all(10**9, chunk=3)  # clamped to the catalog, never allocated
    assert frame["rank"].max() <= int_model.run.n_items
    assert same(frame, reference(int_model, int_model.run.n_items))
    assert set(frame["user"]) == set(int_model.user_ids.tolist())
    path = int_model.recommend_all(4, out=tmp_path / "r.csv")
    back = pd.read_csv(path)
    assert back["user"].dtype == np.int64 and back["item"].dtype == np.int64
    want = reference(int_model, 4)
    assert back[["user", "rank", "item"]].equals(want[["user", "rank", "item"]])
    assert np.allclose(back["score"], want["score"], rtol=1e-6)  # CSV holds the decimal form


def test_memory_bounds(int_model: HQGNN, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ra.chunk_size(10**7, 100) * 100 <= ra.DEFAULT_SLOTS
    assert ra.chunk_size(10**7, 10**6) == ra.DEFAULT_SLOTS // 10**6  # a whole-catalog k: a few users per chunk
    assert ra.chunk_size(5, 10) == 5
    with pytest.raises(HqgnnError, match="answer slots"):
        ra.chunk_size(10**7, 1000, chunk=10**6)
    monkeypatch.setattr(ra, "FRAME_ROWS", 50)
    with pytest.raises(HqgnnError, match="pass out="):
        int_model.recommend_all(10)


# -- the command line -----------------------------------------------------------------------------
def test_cli_writes_the_estimators_answer(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "recs.parquet"
    code, _, err = run_cli(["recommend-all", str(saved), "--k", "9", "--out", str(out), "--device", "cpu",
                            "--chunk", "7", "-q"], capsys)
    assert code == 0, err
    assert same(pd.read_parquet(out), reference(HQGNN.load(saved), 9))
    assert not ra.work_dir(out).exists()  # the chunk files are gone once the file is complete


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k must be >= 1"),
    (["--chunk", "0"], "--chunk must be an integer >= 1"),
    (["--chunk", "100000000", "--k", "100"], "answer slots"),
    (["--out", "{tmp}/recs.txt"], "must end in .parquet"),
    (["--out", "{tmp}"], "is a directory"),
    (["--out", "{tmp}/exists.parquet"], "already exists; pass --overwrite"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_arguments_are_one_error_line(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          args: list[str], message: str) -> None:
    (tmp_path / "exists.parquet").write_bytes(b"x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "recs.parquet")]
    code, _, err = run_cli(["recommend-all", str(saved), *args], capsys)
    assert code == 1 and one_line(err) and message in err, err
    assert (tmp_path / "exists.parquet").read_bytes() == b"x"


def test_a_second_job_into_the_same_file_is_refused(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "recs.parquet"
    with DirLock(ra.work_dir(out)):
        code, _, err = run_cli(["recommend-all", str(saved), "--out", str(out)], capsys)
    assert code == 1 and one_line(err) and "another hqgnn process" in err


# -- kill -9 and resume ---------------------------------------------------------------------------
CHILD = """
import os, signal, sys
kill_at, count = int(sys.argv[1]), [0]
real = os.replace
def replace(*a, **kw):  # every durable step of the job is one os.replace (state, each chunk, the file)
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **kw)
os.replace = replace
from hqgnn.cli import main
main(sys.argv[2:])
"""


def killed_job(kill_at: int, args: list[str]) -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", CHILD, str(kill_at), *args], env=env, capture_output=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]


def test_resume_after_kill_9_equals_the_uninterrupted_file(saved: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    args = ["recommend-all", str(saved), "--k", "6", "--chunk", "7", "--device", "cpu", "-q"]
    ref = tmp_path / "ref.parquet"
    assert run_cli([*args, "--out", str(ref)], capsys)[0] == 0
    n = HQGNN.load(saved).run.n_users
    n_chunks = -(-n // 7)
    # events: 1 state file, then one per chunk, then the finished file
    for kill_at in (1 + n_chunks // 2, 2 + n_chunks):
        out = tmp_path / f"k{kill_at}.parquet"
        killed_job(kill_at, [*args, "--out", str(out)])
        assert not out.exists()  # never a partial file under the final name
        parts, done = ra._done_parts(ra.work_dir(out))
        # chunk files are written by parallel threads: the finished ones may have a gap, resumed from its start
        assert len(list(ra.work_dir(out).glob("part-*.arrow"))) == min(n_chunks, kill_at - 2)
        assert done == min(n, len(parts) * 7) and len(parts) <= min(n_chunks, kill_at - 2)
        # another run or other arguments: refused, the chunks kept
        code, _, err = run_cli([*args[:3], "7", *args[4:], "--out", str(out)], capsys)
        assert code == 1 and one_line(err) and "other arguments (k 6 -> 7)" in err, err
        code, _, err = run_cli([*args, "--include-seen", "--out", str(out)], capsys)
        assert code == 1 and "exclude_seen True -> False" in err
        assert ra._done_parts(ra.work_dir(out))[1] == done
        code, _, err = run_cli([*args, "--out", str(out)], capsys)  # the same command: resumes
        assert code == 0, err
        assert pq.read_table(out).equals(pq.read_table(ref))
        assert out.read_bytes() == ref.read_bytes()
        assert not ra.work_dir(out).exists()
        assert not list(tmp_path.glob(f".{out.name}.*"))  # the killed job's temp output was removed


def test_restart_discards_another_jobs_chunks(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "recs.parquet"
    killed_job(4, ["recommend-all", str(saved), "--k", "3", "--chunk", "5", "--out", str(out), "--device", "cpu"])
    code, _, err = run_cli(["recommend-all", str(saved), "--k", "8", "--out", str(out), "--restart", "-q"], capsys)
    assert code == 0, err
    assert same(pd.read_parquet(out), reference(HQGNN.load(saved), 8))


def test_resume_past_a_gap_with_another_chunk_size(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Chunk files finished out of order (a gap): the ones past it are redone; --chunk may change on resume."""
    args = ["recommend-all", str(saved), "--k", "4", "--device", "cpu", "-q"]
    ref = tmp_path / "ref.parquet"
    assert run_cli([*args, "--out", str(ref)], capsys)[0] == 0
    out = tmp_path / "recs.parquet"
    killed_job(6, [*args, "--chunk", "7", "--out", str(out)])  # 4 chunk files written
    work = ra.work_dir(out)
    second = sorted(work.glob("part-*.arrow"))[1]
    second.unlink()  # as if chunk 2 was still being written when chunks 3 and 4 were done
    assert ra._done_parts(work)[1] == 7
    code, _, err = run_cli([*args, "--chunk", "5", "--out", str(out)], capsys)
    assert code == 0, err
    assert pq.read_table(out).equals(pq.read_table(ref))
