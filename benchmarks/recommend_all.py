"""Recommend-all throughput: every user's top-K from 1-bit item codes x float queries vs torch bf16 and FAISS.

A synthetic run (``--users`` x ``--items``, d = ``--dim``; the winning format: 1-bit items with float16
per-row scales and per-item terms, float (or ``--query-bits``-bit) queries, CodeFormat(dim=64,
item_bits=1, query_bits=0, scale='row', scale_dtype='float16', term=True)) is ranked for every user
through ``hqgnn.recommend_all`` (the path ``HQGNN.recommend`` uses): once ranking only (the answers
held as NumPy, per chunk), once end to end (ids mapped, chunk files and the Parquet output written).
In the same process, interleaved ``--reps`` times with the hqgnn ranking: on CUDA, torch bf16 matmul
+ top-k over the float embeddings of the same users (chunked, the same k, answers copied to the host);
on the CPU, FAISS IndexPQFastScan 32x4 (faiss-cpu) over the same users. Medians are reported, with
every repetition; users/s are extrapolated to 1M and 14M users (``extrapolated_s``; the sample sizes
are in ``config``). ``exact`` checks ``--check`` users' answers against the float64 brute force.

    PYTHONPATH=src python benchmarks/recommend_all.py --device cpu --users 3000 --json OUT.json
    PYTHONPATH=src python benchmarks/recommend_all.py --device cuda --users 1000000 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench_common import device_name, faiss_pq_fastscan, threads_set
from retrieval_asym import _asym_data


def synthetic_run(users: int, items: int, dim: int, query_bits: int, seen: int, seed: int) -> tuple[Any, dict]:
    """(TrainedRun, raw arrays): item codes / float16 scales / terms and the users' queries of
    ``retrieval_asym._asym_data``; ``seen`` random items per user in the run's seen CSR."""
    import scipy.sparse as sp
    import torch

    from hqgnn.config import RunConfig
    from hqgnn.index.queries import prepare_queries
    from hqgnn.run import TrainedRun

    xb, xq, codes, scales, term, center = _asym_data(items, dim, 1, users, seed)
    scales, term = (v.astype(np.float16) for v in (scales, term))  # the stored float16 format: 2 B each
    q, qs = prepare_queries(xq, center=center, query_bits=query_bits)
    tables = {"item_codes": torch.from_numpy(codes), "item_scale": torch.from_numpy(scales),
              "item_term": torch.from_numpy(term)}
    if query_bits:
        tables.update(user_codes=torch.from_numpy(q), user_scale=torch.from_numpy(qs))
    else:
        tables["user_query"] = torch.from_numpy(q)
    cfg = RunConfig()
    cfg.model.dim = dim
    cfg.quant.bits, cfg.quant.user_bits, cfg.quant.center, cfg.quant.scale_dtype = 1, query_bits, True, "float16"
    rng = np.random.default_rng(seed + 7)
    cols = rng.integers(0, items, size=(users, seen)).reshape(-1)
    mat = sp.csr_matrix((np.ones(len(cols), np.float32), (np.repeat(np.arange(users), seen), cols)),
                        shape=(users, items))
    mat.sum_duplicates()
    mat.sort_indices()
    # a saved run's manifest (what the CLI loads; recommend-all's resume identity is its hash), so the
    # end-to-end time does not include hashing the tables, which only an unsaved estimator pays
    manifest = {"synthetic": {"users": users, "items": items, "dim": dim, "query_bits": query_bits, "seed": seed}}
    run = TrainedRun(Path("synthetic"), cfg, {}, tables, np.arange(users, dtype=np.int64),
                     np.arange(items, dtype=np.int64), mat, manifest=manifest)
    return run, {"xb": xb, "xq": xq, "codes": codes, "scales": scales.astype(np.float32),
                 "term": term.astype(np.float32), "q": q, "qs": qs}


def hqgnn_ranking(rec: Any, k: int, chunk: int) -> Callable[[], None]:
    """Every user's answers, chunk by chunk, held as NumPy (what recommend-all writes, before the file)."""
    from hqgnn import recommend_all as ra

    def run() -> None:
        for _ in ra._chunks(rec, k, True, chunk, 0):
            pass
    return run


def bf16_job(xq: np.ndarray, xb: np.ndarray, seen: Any, k: int, device: str) -> Callable[[], None]:
    """torch bf16 ``topk(q @ x.T)`` over the users, seen items set to -inf, answers copied to the host."""
    import torch

    qt = torch.as_tensor(xq, device=device).to(torch.bfloat16)
    xt = torch.as_tensor(xb, device=device).to(torch.bfloat16)
    rows = max(1, min(len(qt), (1 << 31) // (2 * xt.shape[0])))  # a 2 GiB bf16 score block
    indptr = torch.as_tensor(seen.indptr, device=device)
    indices = torch.as_tensor(seen.indices, device=device)

    def run() -> None:
        for r0 in range(0, len(qt), rows):
            r1 = min(len(qt), r0 + rows)
            s = qt[r0:r1] @ xt.T
            a, b = indptr[r0], indptr[r1]
            if b > a:  # the chunk's seen pairs
                counts = indptr[r0 + 1 : r1 + 1] - indptr[r0:r1]
                r = torch.repeat_interleave(torch.arange(r1 - r0, device=device), counts)
                s[r, indices[a:b]] = -float("inf")
            v, i = torch.topk(s, k, dim=1)
            v.cpu(), i.cpu()
    return run


def faiss_job(xb: np.ndarray, xq: np.ndarray, seen: Any, k: int, seed: int, train_n: int = 65536) -> Callable[[], None]:
    """FAISS IndexPQFastScan 32x4 (inner product) over the float items: top (k + most seen) per user,
    the seen items then dropped (FAISS has no per-query exclusion)."""
    index = faiss_pq_fastscan(xb, seed, train_n=train_n)
    extra = int(np.diff(seen.indptr).max()) if seen.nnz else 0

    def run() -> None:
        _, ids = index.search(xq, k + extra)
        if extra:  # per row: drop the seen ids, keep the first k others (vectorised)
            rows = np.repeat(np.arange(len(xq)), ids.shape[1])
            hit = np.asarray(seen[rows, ids.reshape(-1)]).reshape(ids.shape) != 0
            order = np.argsort(hit, axis=1, kind="stable")
            np.take_along_axis(ids, order, axis=1)[:, :k]
    return run


def timed(fn: Callable[[], Any], device: str) -> float:
    import torch

    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(a: argparse.Namespace, qb: int) -> dict[str, Any]:
    """One format (``qb``-bit or float queries): the timings, the end-to-end job, the exactness check."""
    import torch

    from hqgnn import recommend_all as ra
    from hqgnn.index.reference import reference_asym_search
    from hqgnn.recommender import Recommender

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    t0 = time.perf_counter()
    run, raw = synthetic_run(a.users, a.items, a.dim, qb, a.seen, a.seed)
    data_s = time.perf_counter() - t0
    k = min(a.k, a.items)
    chunk = ra.chunk_size(a.users, k, a.chunk)
    nb = min(a.users, a.baseline_users or a.users)
    base_name = "torch_bf16" if cuda else "faiss_pq_fastscan_32x4"
    with threads_set(a.threads) as nthreads:
        t0 = time.perf_counter()
        rec = Recommender(run, a.device)
        build_s = time.perf_counter() - t0
        rec.recommend(np.arange(min(a.users, 1024)), k)  # compile / autotune outside the timings
        engines = {"hqgnn_ranking": hqgnn_ranking(rec, k, chunk)}
        t0 = time.perf_counter()
        xqb, seenb = raw["xq"][:nb], run.seen[:nb]
        engines[base_name] = (bf16_job(xqb, raw["xb"], seenb, k, a.device) if cuda
                              else faiss_job(raw["xb"], xqb, seenb, k, a.seed))
        baseline_build_s = time.perf_counter() - t0
        if cuda:  # cuBLAS / top-k kernels loaded outside the timings (FAISS has nothing to warm)
            bf16_job(xqb[:64], raw["xb"], seenb[:64], k, a.device)()
        # end to end: ids, chunk files, the Parquet written and renamed (the CLI's path), overwritten each time
        work = Path(a.workdir or tempfile.mkdtemp(prefix="recall-bench-"))
        out = work / "recs.parquet"
        e2e: dict[str, Any] = {}

        def end_to_end() -> None:
            e2e.update(ra.recommend_all(rec, out, k, chunk=a.chunk, overwrite=True))
            e2e["parquet_bytes"] = out.stat().st_size

        engines["hqgnn_end_to_end"] = end_to_end
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(a.reps):  # interleaved: hqgnn, baseline, hqgnn end to end, hqgnn, ...
            for name, fn in engines.items():
                times[name].append(timed(fn, a.device))
        out.unlink()
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        # exactness: the first --check users against the float64 brute force (seen items excluded)
        m = min(a.check, a.users)
        s, i = rec.recommend(np.arange(m), k)
        rs, ri = reference_asym_search(raw["q"][:m], raw["codes"], k, raw["scales"], raw["term"],
                                       None if raw["qs"] is None else raw["qs"][:m], exclude=run.seen[:m],
                                       float_queries=qb == 0, block=16)
        exact = bool(np.array_equal(i, ri) and np.array_equal(s, rs))
    users_n = {"hqgnn_ranking": a.users, base_name: nb, "hqgnn_end_to_end": a.users}
    med = {name: statistics.median(ts) for name, ts in times.items()}
    rate = {name: users_n[name] / med[name] for name in med}
    result: dict[str, Any] = {
        "config": {"device": device_name(a.device, nthreads), "users": a.users, "baseline_users": nb,
                   "items": a.items, "dim": a.dim, "k": k, "query_bits": qb, "seen_per_user": a.seen,
                   "chunk": chunk, "reps": a.reps, "threads": nthreads, "torch": torch.__version__,
                   "format": str(rec.run.format), "end_to_end_users": a.users},
        "users_per_s": rate,
        "times_s": times,
        "end_to_end": {"rows": e2e["rows"], "chunks": e2e["chunks"], "parquet_bytes": e2e["parquet_bytes"],
                       "bytes_per_row": e2e["parquet_bytes"] / max(1, e2e["rows"])},
        "extrapolated_s": {f"{n // 10**6}M_users": {name: n / r for name, r in rate.items()}
                           for n in (1_000_000, 14_000_000)},
        f"speedup_vs_{base_name}": rate["hqgnn_ranking"] / rate[base_name],
        # per repetition (each pair timed back to back): robust to load that changes between repetitions
        f"speedup_per_rep_vs_{base_name}": [(tb / nb) / (th / a.users) for th, tb
                                            in zip(times["hqgnn_ranking"], times[base_name])],
        f"speedup_end_to_end_vs_{base_name}": rate["hqgnn_end_to_end"] / rate[base_name],
        "exact": exact, "exact_checked_users": m,
        "setup_s": {"data": data_s, "index_build": build_s, "baseline_build": baseline_build_s},
    }
    if cuda:
        torch.cuda.empty_cache()
    print(json.dumps({"query_bits": qb, "users_per_s": rate}), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--users", type=int, default=3000, help="users ranked (the run's users)")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--query-bits", default="0", help="0: float queries; 2..8: quantized queries; a list (0,4) runs each")
    p.add_argument("--seen", type=int, default=0, help="random seen items per user, masked by every engine")
    p.add_argument("--chunk", type=int, default=None, help="users per recommend-all chunk (default: its own)")
    p.add_argument("--baseline-users", type=int, default=None,
                   help="users of the bf16 / FAISS job (default all; fewer: sampled, its users/s extrapolated)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians reported)")
    p.add_argument("--check", type=int, default=64, help="users checked against the float64 brute force")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the end-to-end Parquet is written (default: a temp dir)")
    p.add_argument("--json", dest="json_out", default=None, help="write the result JSON here")
    a = p.parse_args(argv)

    runs = [measure(a, int(qb)) for qb in str(a.query_bits).split(",")]
    result: dict[str, Any] = {
        "runs": runs,
        "command": "python benchmarks/recommend_all.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    try:
        result["loadavg_1min"] = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    text = json.dumps(result, indent=2)
    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
