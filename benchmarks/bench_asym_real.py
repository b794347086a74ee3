"""Retrieval engines on real trained codes: hqgnn's exact asymmetric index over a QAT run's item codes
against FAISS fast-scan PQ and RaBitQ over its float teacher's embeddings, all on this CPU.

Every engine serves the run's test users (top-20, train + validation items excluded); quality is the
project's evaluator on the served ranking, speed is users per second (best of 3):

    python benchmarks/bench_asym_real.py QAT_RUN TEACHER_RUN --out benchmarks/results/retrieval_asym_gowalla.json

FAISS has no per-query exclusion list, so it searches k + (most seen items of any user) and drops the
seen ones; its speed is reported for that search and for a plain top-k (no exclusion).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _best(fn: Callable[[], Any], reps: int = 3) -> float:
    fn()  # warm-up (numba compilation, FAISS tables)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("qat_run")
    ap.add_argument("teacher_run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()

    import faiss

    from hqgnn.data import load_dataset
    from hqgnn.eval import RankingEvaluator
    from hqgnn.eval.ranking import Ranker
    from bench_common import cpu_name as _cpu_name
    from hqgnn.run import load_run

    sys.path.insert(0, str(HERE))
    from posthoc import drop_seen_topk

    run, teacher = load_run(args.qat_run), load_run(args.teacher_run)
    data = load_dataset(run.config.data)
    k = args.k
    ev = RankingEvaluator(data.matrix(data.test), run.seen, (k,), "cpu")
    users = ev.users.numpy()
    seen = run.seen
    rows: list[dict[str, Any]] = []

    def row(name: str, item_bytes: float, topk_all: np.ndarray, qps: float, qps_plain: float | None, **extra) -> None:
        lookup = {int(u): i for i, u in enumerate(users)}

        def topk(u: torch.Tensor, kk: int) -> torch.Tensor:
            return torch.from_numpy(topk_all[[lookup[int(x)] for x in u.tolist()], :kk])

        m = ev.evaluate(topk=topk, batch_size=len(users))
        rows.append({"engine": name, "item_bytes": item_bytes, f"recall@{k}": m[f"recall@{k}"],
                     f"ndcg@{k}": m[f"ndcg@{k}"], "users_per_s": qps, "users_per_s_no_exclusion": qps_plain, **extra})
        print(json.dumps(rows[-1]), flush=True)

    # hqgnn: the run's served format, exactly as recommend / serve rank it on CPU
    ranker = Ranker(run.tables, run.format, "cpu",
                    item_order="none")  # the run's numbering at the stored bytes (no order array)
    ex = seen[users]
    ids = ranker.search(users, k, exclude=ex)[1]
    t = _best(lambda: ranker.search(users, k, exclude=ex))
    t_plain = _best(lambda: ranker.search(users, k))
    index = ranker.index
    held = index.memory_bytes() / index.n if index is not None else None
    row(f"hqgnn_{run.bits}bit_q{run.format.query_bits}", run.metrics["memory"]["bytes_per_item"], ids, len(users) / t,
        len(users) / t_plain, held_bytes_per_item=held, exact=True)

    # the same, served as `hqgnn serve` / `hqgnn recommend` do: items renumbered into the index's storage
    # order (Recommender(renumber_items=True); the id table absorbs the permutation, no order array held)
    from hqgnn.recommender import Recommender

    rec = Recommender(run, "cpu", renumber_items=True)
    ex_r = rec.run.seen[users]
    ids_r = rec.ranker.search(users, k, exclude=ex_r)[1]
    t = _best(lambda: rec.ranker.search(users, k, exclude=ex_r))
    t_plain = _best(lambda: rec.ranker.search(users, k))
    orig = {str(v): i for i, v in enumerate(run.item_ids.tolist())}  # back to the run's numbering to evaluate
    to_orig = np.array([orig[str(v)] for v in rec.run.item_ids.tolist()] + [-1])
    index = rec.ranker.index
    row(f"hqgnn_{run.bits}bit_q{run.format.query_bits}_renumbered", run.metrics["memory"]["bytes_per_item"], to_orig[ids_r],
        len(users) / t, len(users) / t_plain, held_bytes_per_item=index.memory_bytes() / index.n if index else None,
        exact=True)

    # FAISS on the float teacher (float queries; RaBitQ quantizes them to qb bits)
    xb = teacher.tables["item_emb"].float().numpy()
    xq = np.ascontiguousarray(teacher.tables["user_emb"].float().numpy()[users])
    d = xb.shape[1]
    deg = np.diff(seen.indptr)[users]
    kk = int(k + deg.max())
    ip = faiss.METRIC_INNER_PRODUCT

    def rabitq(cls: Any, qb: int) -> Any:
        index = cls(d, ip)
        index.qb = qb
        return index

    engines = {"faiss_pq_fastscan_16x4": lambda: faiss.IndexPQFastScan(d, 16, 4, ip),
               "faiss_pq_fastscan_32x4": lambda: faiss.IndexPQFastScan(d, 32, 4, ip),
               "faiss_rabitq_q4": lambda: rabitq(faiss.IndexRaBitQ, 4),
               "faiss_rabitq_fastscan_q4": lambda: rabitq(faiss.IndexRaBitQFastScan, 4)}
    for name, make in engines.items():
        index = make()
        index.train(xb)
        index.add(xb)
        found = index.search(xq, kk)[1]
        t = _best(lambda: index.search(xq, kk))
        t_plain = _best(lambda: index.search(xq, k))
        row(name, float(index.code_size), drop_seen_topk(found, users, seen, k), len(users) / t, len(users) / t_plain,
            searched_k=kk)
    out = {"benchmark": "retrieval_asym_real", "qat_run": run.config.to_dict(), "teacher_metrics": teacher.metrics["test"],
           "qat_metrics": run.metrics["test"], "device": _cpu_name(), "users": int(len(users)), "k": k, "rows": rows,
           "command": "python benchmarks/bench_asym_real.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
