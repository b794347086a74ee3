"""Large seeded synthetic graphs (power-law degrees, planted communities) streamed to disk in bounded memory."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from ..errors import HqgnnError
from ..io import built_dir
from .lightgcn_format import encode_lines

log = logging.getLogger("hqgnn.data")

# Fixed (never a parameter): the output bytes depend on the seed and the sizes only, not on memory settings.
CHUNK_USERS = 1 << 17
_P_PRIMARY, _P_SECONDARY = 0.7, 0.2  # as data/synthetic.py: main community, second one, anywhere
_ITEM_POP_SIGMA = 1.3
_USER_ACT_SIGMA = 0.8
_ITEMS_PER_COMMUNITY = 2000  # communities keep one size at every rung, so the task is equally hard per user
MAX_INTERACTIONS = 2_000_000_000  # keeps every id and count of the generator well inside int64 / the disk


@dataclass(frozen=True)
class SynthSpec:
    """Sizes of a generated graph; :meth:`for_interactions` gives the ladder's proportions."""

    n_users: int
    n_items: int
    n_communities: int
    mean_activity: float
    seed: int = 2020
    test_ratio: float = 0.2

    @classmethod
    def for_interactions(cls, interactions: int, seed: int = 2020, test_ratio: float = 0.2) -> "SynthSpec":
        """About ``interactions`` pairs: users = n / 10, items = n / 50 (100M: 10M users x 2M items)."""
        if not 1000 <= interactions <= MAX_INTERACTIONS:
            raise HqgnnError(f"--interactions must be between 1000 and {MAX_INTERACTIONS}, got {interactions}")
        n_users, n_items = max(100, interactions // 10), max(20, interactions // 50)
        return cls(n_users, n_items, max(10, n_items // _ITEMS_PER_COMMUNITY), interactions / n_users, seed, test_ratio)

    def check(self) -> None:
        """One-line :class:`HqgnnError` for sizes the generator cannot honour."""
        if self.n_users < 1 or self.n_items < 4 or not 1 <= self.n_communities <= self.n_items:
            raise HqgnnError(f"need users >= 1, items >= 4 and 1 <= communities <= items, got {self}")
        if not 2 <= self.mean_activity <= self.n_items / 4 or self.n_users * self.mean_activity > MAX_INTERACTIONS:
            raise HqgnnError(f"mean activity must be in [2, items / 4] and users x activity <= {MAX_INTERACTIONS}")
        if not 0 < self.test_ratio < 1:
            raise HqgnnError(f"test ratio must be in (0, 1), got {self.test_ratio}")


@dataclass
class _Items:
    """Item-side model: community, popularity layout for inverse-CDF sampling (O(n_items) memory)."""

    comm: np.ndarray  # community of each item
    layout: np.ndarray  # items ordered community by community
    cum: np.ndarray  # cumulative popularity along ``layout``
    comm_mass: np.ndarray
    comm_lo: np.ndarray
    comm_hi: np.ndarray
    comm_base: np.ndarray
    p_comm: np.ndarray


def _items(spec: SynthSpec) -> _Items:
    rng = np.random.default_rng([spec.seed, 0])
    k = spec.n_communities
    comm = rng.choice(k, size=spec.n_items, p=rng.dirichlet(np.full(k, 2.0))).astype(np.int32)
    pop = rng.lognormal(0.0, _ITEM_POP_SIGMA, spec.n_items)
    layout = np.argsort(comm, kind="stable")
    cum = np.cumsum(pop[layout])
    mass = np.bincount(comm, weights=pop, minlength=k)
    lo = np.searchsorted(comm[layout], np.arange(k))
    hi = np.searchsorted(comm[layout], np.arange(k), side="right") - 1
    # an empty community (possible for tiny catalogues) is never chosen: its mass is 0
    return _Items(comm, layout, cum, mass, lo, np.maximum(hi, lo), np.r_[0.0, cum][lo], mass / mass.sum())


def _chunk(spec: SynthSpec, it: _Items, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users ``[chunk * CHUNK_USERS, ...)``: (pairs sorted by user then draw, is_test, primary, secondary).

    Its own seeded stream ([seed, 1, chunk]), so chunks are independent of each other and of the order
    they are made in. Each user draws 70% of its items from its primary community, 20% from its
    secondary, 10% from the whole catalogue, always by popularity; duplicates dropped; >= 2 items each.
    """
    u0 = chunk * CHUNK_USERS
    n = min(CHUNK_USERS, spec.n_users - u0)
    rng = np.random.default_rng([spec.seed, 1, chunk])
    mu = np.log(spec.mean_activity) - _USER_ACT_SIGMA**2 / 2
    activity = np.clip(np.rint(rng.lognormal(mu, _USER_ACT_SIGMA, n)), 2, max(2, spec.n_items // 4)).astype(np.int64)
    k = spec.n_communities
    primary = rng.choice(k, size=n, p=it.p_comm).astype(np.int32)
    secondary = rng.choice(k, size=n, p=it.p_comm).astype(np.int32)
    n_draws = np.ceil(activity * 1.3).astype(np.int64) + 2
    users = np.repeat(np.arange(n, dtype=np.int64), n_draws)
    source = rng.random(len(users))
    comm = np.where(source < _P_PRIMARY, primary[users], secondary[users])
    anywhere = source >= _P_PRIMARY + _P_SECONDARY
    u = rng.random(len(users))
    target = np.where(anywhere, u * it.cum[-1], it.comm_base[comm] + u * it.comm_mass[comm])
    slot = np.searchsorted(it.cum, target, side="right")
    slot = np.where(anywhere, np.minimum(slot, spec.n_items - 1), np.clip(slot, it.comm_lo[comm], it.comm_hi[comm]))
    items = it.layout[slot].astype(np.int64)
    del source, comm, anywhere, u, target, slot
    # first occurrence of each (user, item), in draw order; then each user's first `activity` of them
    _, first = np.unique(users * spec.n_items + items, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    start = np.searchsorted(users, np.arange(n))
    rank = np.arange(len(users)) - start[users]
    keep = rank < activity[users]
    users, items = users[keep], items[keep]
    # a user left with one distinct item (tiny communities) gets a second, different one
    have = np.bincount(users, minlength=n)
    lone = np.flatnonzero(have < 2)
    if lone.size:
        first_item = items[np.searchsorted(users, lone)]
        extra = (first_item + 1 + rng.integers(0, spec.n_items - 1, lone.size)) % spec.n_items
        users, items = np.r_[users, lone], np.r_[items, extra]
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
    # per-user random test share; a user always keeps at least one train item
    counts = np.bincount(users, minlength=n)
    n_test = np.minimum(np.floor(counts * spec.test_ratio + rng.random(n)).astype(np.int64), counts - 1)
    key = rng.random(len(users))
    order = np.lexsort((key, users))  # random order within each user
    pos = np.empty(len(users), np.int64)
    pos[order] = np.arange(len(users)) - np.searchsorted(users[order], users[order])
    is_test = pos < n_test[users]
    pairs = np.column_stack([users + u0, items])
    return pairs, is_test, primary, secondary


def _chunks(spec: SynthSpec, it: _Items, workers: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Every chunk, in order; ``workers > 1``: made by that many processes, at most 2 x workers in flight."""
    n_chunks = -(-spec.n_users // CHUNK_USERS)
    if workers <= 1 or n_chunks == 1:
        for c in range(n_chunks):
            yield _chunk(spec, it, c)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers inherit the item model instead of pickling it per chunk (numpy only, no threads yet)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_init_worker,
                             initargs=(spec, it)) as pool:
        pending: deque[Any] = deque()
        for c in range(n_chunks):
            pending.append(pool.submit(_worker_chunk, c))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_WORKER: dict[str, Any] = {}


def _init_worker(spec: SynthSpec, it: _Items) -> None:
    _WORKER.update(spec=spec, it=it)


def _worker_chunk(c: int) -> tuple[np.ndarray, ...]:
    return _chunk(_WORKER["spec"], _WORKER["it"], c)


def generate(out: str | os.PathLike[str], spec: SynthSpec, parquet: bool = False,
             progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Write ``train.txt`` / ``test.txt`` (LightGCN format), the planted structure and ``synth.json`` to ``out``.

    Streamed in chunks of :data:`CHUNK_USERS` users: memory is O(n_items + CHUNK_USERS x activity),
    never O(interactions). The directory appears complete or not at all (built beside ``out``, then
    swapped in). Same spec => same bytes. Every test item also occurs in train: a test pair whose
    item has no train pair yet (in generation order) is moved to train, so the files load without
    dropping anything. Planted structure: ``item_community.npy`` (int32, per item) and
    ``user_communities.npy`` (int32, (n_users, 2): primary, secondary).
    ``workers > 1`` makes chunks in that many processes (the bytes do not change).
    Returns the summary that is also written to ``synth.json``.
    """
    spec.check()
    out = Path(out)
    t0 = time.perf_counter()
    it = _items(spec)
    with built_dir(out) as stage:
        n_train = n_test = n_moved = 0
        seen = np.zeros(spec.n_items, dtype=bool)
        item_deg = np.zeros(spec.n_items, dtype=np.int64)
        np.save(stage / "item_community.npy", it.comm)
        user_comm = np.lib.format.open_memmap(stage / "user_communities.npy", mode="w+", dtype=np.int32,
                                              shape=(spec.n_users, 2))
        writer = _ParquetPair(stage) if parquet else None
        n_chunks = -(-spec.n_users // CHUNK_USERS)
        with open(stage / "train.txt", "wb") as ftr, open(stage / "test.txt", "wb") as fte:
            for c, (pairs, is_test, primary, secondary) in enumerate(_chunks(spec, it, workers)):
                u0 = c * CHUNK_USERS
                user_comm[u0 : u0 + len(primary), 0] = primary
                user_comm[u0 : u0 + len(primary), 1] = secondary
                seen[pairs[~is_test, 1]] = True
                cold = is_test & ~seen[pairs[:, 1]]
                n_moved += int(cold.sum())
                is_test &= ~cold
                seen[pairs[cold, 1]] = True
                item_deg += np.bincount(pairs[:, 1], minlength=spec.n_items)
                _write(ftr, pairs[~is_test], u0, len(primary), writer, "train")
                _write(fte, pairs[is_test], u0, len(primary), writer, "test")
                n_test += int(is_test.sum())
                n_train += int(len(pairs) - is_test.sum())
                if progress and (c + 1) % 8 == 0:
                    log.info("synth: %d / %d user chunks, %.0fs", c + 1, n_chunks, time.perf_counter() - t0)
        user_comm.flush()
        del user_comm
        if writer is not None:
            writer.close()
        summary = {**asdict(spec), "interactions": n_train + n_test, "train": n_train, "test": n_test,
                   "test_moved_to_train": n_moved, "items_without_interactions": int((item_deg == 0).sum()),
                   "max_item_degree": int(item_deg.max()), "chunk_users": CHUNK_USERS, "parquet": parquet,
                   "generate_seconds": round(time.perf_counter() - t0, 2)}
        (stage / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write(fh: BinaryIO, pairs: np.ndarray, u0: int, n: int, writer: "_ParquetPair | None", split: str) -> None:
    fh.write(encode_lines(pairs, u0, u0 + n))
    if writer is not None:
        writer.write(split, pairs)


class _ParquetPair:
    """``train.parquet`` / ``test.parquet`` (int64 columns user, item), one row group per chunk."""

    def __init__(self, folder: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        schema = pa.schema([("user", pa.int64()), ("item", pa.int64())])
        self.writers = {s: pq.ParquetWriter(folder / f"{s}.parquet", schema) for s in ("train", "test")}

    def write(self, split: str, pairs: np.ndarray) -> None:
        table = self.pa.table({"user": pairs[:, 0].copy(), "item": pairs[:, 1].copy()})
        self.writers[split].write_table(table)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def load_planted(folder: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(user_communities (n_users, 2), item_community (n_items,))`` of a generated directory."""
    folder = Path(folder)
    try:
        return np.load(folder / "user_communities.npy", mmap_mode="r"), np.load(folder / "item_community.npy")
    except FileNotFoundError as exc:
        raise HqgnnError(f"{exc.filename}: not a directory written by 'hqgnn data synth'") from None
