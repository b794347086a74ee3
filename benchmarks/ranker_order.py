"""Evaluation's Ranker on a run's asymmetric codes with the CPU index's two storage orders: users/s and identity.

    python benchmarks/ranker_order.py QAT_RUN --out benchmarks/results/ranker_item_order_gowalla.json

Every user of the run, top-20, its seen items excluded, best of 3 after a warm-up; the rankings of both
orders must be identical (the index is exact with ties to the lower id in either order).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hqgnn.eval.ranking import Ranker  # noqa: E402
from bench_common import cpu_name  # noqa: E402
from hqgnn.run import load_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()
    run = load_run(args.run)
    users = np.arange(run.n_users)
    ex = run.seen[users]
    rows, first = {}, None
    load0 = os.getloadavg()
    for order in ("none", "scale"):
        ranker = Ranker(run.tables, run.format, "cpu", item_order=order)
        ranker.search(users[:2000], args.k, exclude=ex[:2000])  # compile
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            scores, ids = ranker.search(users, args.k, exclude=ex)
            best = min(best, time.perf_counter() - t0)
        first = first or (scores, ids)
        rows[order] = {"users_per_s": len(users) / best, "held_bytes_per_item": ranker.index.memory_bytes() / ranker.index.n,
                       "identical_to_none": bool(np.array_equal(first[0], scores) and np.array_equal(first[1], ids))}
    out = {"benchmark": "ranker_item_order", "run": str(args.run), "users": int(len(users)), "k": args.k,
           "device": cpu_name(), "loadavg_before": load0, "loadavg_after": os.getloadavg(), "orders": rows,
           "command": "python benchmarks/ranker_order.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
