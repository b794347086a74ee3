"""Top-K for every user of a run, streamed in chunks of users to one Parquet (or CSV) file, resumable after a crash."""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .errors import HqgnnError, check_k
from .io import DirLock, atomic_path, fsync_dir, write_json
from .progress import Heartbeat

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .recommender import Recommender

log = logging.getLogger("hqgnn.recommend_all")

__all__ = [
    "COLUMNS",
    "FRAME_ROWS",
    "MAX_SLOTS",
    "chunk_size",
    "recommend_all",
    "recommend_all_frame",
    "run_identity",
    "work_dir",
]

COLUMNS = ("user", "rank", "item", "score")
# answer slots (users x k) of one chunk: ~25 MB of answer, ~100 MB with its Arrow table while it is written
DEFAULT_SLOTS = 1 << 21
WRITERS = 2  # threads that turn chunks into tables and chunk files (the output's encoder is one more)
MAX_USERS_PER_CHUNK = 65_536  # a crash loses at most one chunk of work
MAX_SLOTS = 1 << 26  # a user-chosen --chunk x k above this (~1.6 GB per chunk) is refused
FRAME_ROWS = 1 << 25  # recommend_all(out=None) refuses answers of more rows (~0.8 GB as a DataFrame)
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
STATE = "state.json"
_PART = re.compile(r"^part-(\d{12})-(\d{12})\.arrow$")


def chunk_size(n_users: int, k: int, chunk: int | None = None) -> int:
    """Users per chunk: ``chunk`` if given (refused when ``chunk x k`` exceeds :data:`MAX_SLOTS`), else
    :data:`DEFAULT_SLOTS` / k users (at least 1, at most :data:`MAX_USERS_PER_CHUNK`)."""
    if chunk is None:
        return max(1, min(n_users, MAX_USERS_PER_CHUNK, DEFAULT_SLOTS // max(k, 1)))
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise HqgnnError(f"--chunk must be an integer >= 1, got {chunk!r}")
    if int(chunk) * k > MAX_SLOTS:
        raise HqgnnError(
            f"--chunk {chunk} x k {k} = {int(chunk) * k:,} answer slots held at once; at most "
            f"{MAX_SLOTS:,} (--chunk <= {max(1, MAX_SLOTS // k)} for this k)"
        )
    return min(int(chunk), max(1, n_users))


def _run_hash(run: Any) -> str:
    """sha256 of the run's manifest (it hashes every file), else of its tables, id maps and seen items."""
    if run.manifest is not None:
        return hashlib.sha256(json.dumps(run.manifest, sort_keys=True).encode()).hexdigest()
    import torch

    h = hashlib.sha256()  # a fitted, unsaved estimator (or a run written before manifests): its content
    for name in sorted(run.tables):
        t = run.tables[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    seen = run.seen.tocsr()
    for arr in (run.user_ids, run.item_ids, seen.indptr.astype(np.int64), seen.indices.astype(np.int64)):
        h.update(str(arr.dtype).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def run_identity(rec: Recommender, k: int, exclude_seen: bool) -> dict[str, Any]:
    """What a resumed job must share with the one that wrote the parts: the run (its manifest's hash),
    k, the seen-item flag and the device type (float scores may differ in the last bit between devices)."""
    return {
        "run": _run_hash(rec.run),
        "k": int(k),
        "exclude_seen": bool(exclude_seen),
        "device": rec.device.type,
        "users": rec.run.n_users,
        "items": rec.run.n_items,
    }


def work_dir(out: str | os.PathLike[str]) -> Path:
    """The hidden folder beside ``out`` that holds a job's finished chunks until the file is complete."""
    out = Path(out)
    return out.parent / f".{out.name}.recommend-all"


class _Ids:
    """The run's own ids as Arrow arrays, and the long-format table of one chunk's answers."""

    def __init__(self, rec: Recommender) -> None:
        import pyarrow as pa

        self.users = pa.array(rec.run.user_ids)
        self.items = pa.array(rec.run.item_ids)  # the ranker's numbering (renumbered runs carry theirs)
        self.schema = pa.schema(
            [("user", self.users.type), ("rank", pa.int32()), ("item", self.items.type), ("score", pa.float32())]
        )

    def table(self, r0: int, scores: np.ndarray, items: np.ndarray) -> pa.Table:
        """One row per (user, rank) with an item: padding slots (fewer eligible items than k) are dropped."""
        import pyarrow as pa

        valid = items >= 0  # a prefix of each row: best first, padding last
        rows, cols = np.nonzero(valid)
        return pa.Table.from_arrays(
            [
                self.users.take(pa.array(rows.astype(np.int64) + r0)),
                pa.array((cols + 1).astype(np.int32)),
                self.items.take(pa.array(items[rows, cols].astype(np.int64, copy=False))),
                pa.array(scores[rows, cols].astype(np.float32, copy=False)),
            ],
            schema=self.schema,
        )


def _chunks(rec: Recommender, k: int, exclude_seen: bool, chunk: int, start: int) -> Iterator[tuple[int, int, Any]]:
    """(r0, r1, (scores, items)) for each chunk of users from row ``start`` on, through the path ``recommend``
    uses (its ranker bounds the scores it materialises: hqgnn.eval.ranking.SCORE_ELEMENTS)."""
    for r0 in range(start, rec.run.n_users, chunk):
        r1 = min(rec.run.n_users, r0 + chunk)
        yield r0, r1, rec.recommend(np.arange(r0, r1, dtype=np.int64), k, exclude_seen=exclude_seen)


def recommend_all_frame(rec: Recommender, k: int, exclude_seen: bool = True, chunk: int | None = None) -> pd.DataFrame:
    """Every user's top-``k`` as one long DataFrame (columns :data:`COLUMNS`), held in memory.

    Refused (one :class:`HqgnnError`) when ``n_users x k`` exceeds :data:`FRAME_ROWS`: stream to a file
    with :func:`recommend_all` instead.
    """
    import pyarrow as pa

    k = check_k(k, rec.run.n_items)
    n = rec.run.n_users
    if n * k > FRAME_ROWS:
        raise HqgnnError(
            f"recommend_all(k={k}) would hold {n * k:,} rows in memory (more than {FRAME_ROWS:,}): "
            "pass out='recs.parquet' to stream them to a file"
        )
    ids = _Ids(rec)
    tables = [ids.table(r0, *ans) for r0, _, ans in _chunks(rec, k, exclude_seen, chunk_size(n, k, chunk), 0)]
    return pa.concat_tables(tables or [ids.schema.empty_table()]).to_pandas()


def _done_parts(work: Path) -> tuple[list[Path], int]:
    """The contiguous run of finished chunk files from user row 0, and the row after it."""
    parts = sorted((int(m[1]), int(m[2]), p) for p in work.iterdir() if (m := _PART.match(p.name)))
    kept, end = [], 0
    for r0, r1, path in parts:
        if r0 != end:
            break
        kept.append(path)
        end = r1
    return kept, end


def _open_work(work: Path, identity: dict[str, Any], restart: bool, out: Path) -> None:
    """Under the lock: check (or start) the job's state; stale temp files of a killed writer go."""
    state_path = work / STATE
    state = None
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = None  # unreadable: nothing can be trusted, start over
    if state is not None and state.get("identity") != identity and not restart:
        old = state.get("identity") or {}
        diff = ", ".join(
            f"{key} {old.get(key)!r} -> {identity[key]!r}" for key in identity if old.get(key) != identity[key]
        )
        raise HqgnnError(
            f"{work}: holds an unfinished recommend-all into {out} of another run or other arguments "
            f"({diff}); rerun that command to finish it, or pass --restart to discard it"
        )
    if restart or state is None or state.get("identity") != identity:
        for p in work.iterdir():
            if p.name != ".lock":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        write_json(state_path, {"identity": identity, "columns": list(COLUMNS)})
    for p in work.iterdir():  # a part a kill -9 caught mid-write: its temp file (the part itself is absent)
        if p.name.startswith(".") and p.name != ".lock":
            p.unlink(missing_ok=True)


def _open_writer(path: Path, kind: str, schema: pa.Schema) -> Any:
    """The output's writer: Parquet (snappy; user and rank dictionary-encoded, they repeat) or CSV."""
    import pyarrow.parquet as pq

    if kind == "parquet":
        return pq.ParquetWriter(str(path), schema, compression="snappy", use_dictionary=["user", "rank"])
    import pyarrow.csv as pcsv

    return pcsv.CSVWriter(str(path), schema)


def _read_part(path: Path) -> pa.Table:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _write_part(work: Path, ids: _Ids, r0: int, r1: int, scores: np.ndarray, items: np.ndarray) -> pa.Table:
    """One finished chunk as its table and its Arrow IPC file (atomic: what a resume continues from)."""
    import pyarrow as pa

    table = ids.table(r0, scores, items)
    with atomic_path(work / f"part-{r0:012d}-{r1:012d}.arrow") as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, ids.schema) as ipc:
            ipc.write_table(table)
    return table


def _append(writer: Any, part: concurrent.futures.Future[pa.Table]) -> int:
    """Append a chunk's rows to the output (called in chunk order by one thread); returns its rows."""
    table = part.result()
    writer.write_table(table)
    return int(table.num_rows)


def recommend_all(
    rec: Recommender,
    out: str | os.PathLike[str],
    k: int,
    exclude_seen: bool = True,
    chunk: int | None = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write every user's top-``k`` to ``out`` (``.parquet`` / ``.pq``, or ``.csv``), chunk by chunk.

    Parameters
    ----------
    rec : Recommender
        The run's recommender (its device and item numbering); scored exactly as ``recommend``.
    out : path
        The file to write; an existing one is refused unless ``overwrite``.
    k : int
        Items per user, clamped to the catalog.
    exclude_seen : bool
        Mask each user's train + validation items.
    chunk : int, optional
        Users per chunk (default: :func:`chunk_size`); memory is bounded by ``chunk x k`` answers.
    overwrite, restart : bool
        Replace an existing ``out``; discard an unfinished job's chunks (of any arguments) and start over.
    progress : bool
        A tqdm bar (with its ETA); log lines with the ETA are written off a terminal regardless.

    Returns
    -------
    dict
        ``out``, ``users``, ``k``, ``rows``, ``chunks``, ``resumed_from`` (user row), ``seconds``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if out.is_dir():
        raise HqgnnError(f"{out}: is a directory; --out names the file to write")
    kind = SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise HqgnnError(f"{out}: the output must end in .parquet, .pq or .csv")
    if out.exists() and not overwrite:
        raise HqgnnError(f"{out}: already exists; pass --overwrite to replace it")
    k = check_k(k, rec.run.n_items)
    n = rec.run.n_users
    size = chunk_size(n, k, chunk)
    identity = run_identity(rec, k, exclude_seen)
    work = work_dir(out)
    t0 = time.perf_counter()
    with DirLock(work):
        _open_work(work, identity, restart, out)
        parts, start = _done_parts(work)
        for stale in set(work.glob("part-*.arrow")) - set(parts):  # finished out of order past a gap: redone
            stale.unlink()
        if start:
            log.info("recommend-all: resuming %s at user %d of %d (%d chunks done)", out, start, n, len(parts))
        for stale in out.parent.glob(f".{out.name}.*.tmp{out.suffix}"):  # a killed job's unfinished output
            stale.unlink(missing_ok=True)
        ids = _Ids(rec)
        beat = Heartbeat("recommend-all users", n - start, log)
        bar = tqdm(
            total=n,
            initial=start,
            desc="recommend-all",
            unit="user",
            disable=not progress,
            mininterval=1.0,
            smoothing=0.1,
        )
        rows = 0
        # the output is written as the chunks come (a temp file beside it, renamed over it at the end);
        # after a resume, the finished chunks' files are copied into it first
        with atomic_path(out) as tmp:
            writer = _open_writer(tmp, kind, ids.schema)
            try:
                for part in parts:
                    table = _read_part(part)
                    writer.write_table(table)
                    rows += table.num_rows
                # while the next chunk is ranked, WRITERS threads build the finished chunks' tables and files
                # and one thread appends them to the output in order: at most WRITERS + 2 chunks held
                inflight: collections.deque[concurrent.futures.Future[int]] = collections.deque()
                with (
                    concurrent.futures.ThreadPoolExecutor(WRITERS) as parts_pool,
                    concurrent.futures.ThreadPoolExecutor(1) as out_pool,
                    bar,
                ):
                    for r0, r1, (scores, items) in _chunks(rec, k, exclude_seen, size, start):
                        while len(inflight) >= WRITERS + 1:
                            rows += inflight.popleft().result()
                        made = parts_pool.submit(_write_part, work, ids, r0, r1, scores, items)
                        inflight.append(out_pool.submit(_append, writer, made))
                        bar.update(r1 - r0)
                        beat.tick(r1 - start)
                    while inflight:
                        rows += inflight.popleft().result()
            finally:
                writer.close()
            parts, end = _done_parts(work)
            if end != n:  # only a bug could get here: never publish a file that misses users
                raise HqgnnError(f"{work}: chunk files cover users 0..{end} of {n}; rerun to finish them")
        shutil.rmtree(work)  # the lock file goes with it; the lock itself is held until release
        fsync_dir(out.parent)
    return {
        "out": str(out),
        "users": n,
        "k": k,
        "rows": rows,
        "chunks": len(parts),
        "resumed_from": start,
        "seconds": time.perf_counter() - t0,
    }
