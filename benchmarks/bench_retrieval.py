"""Retrieval sweep: hqgnn exact code search vs torch float32 (+bf16 on CUDA) and FAISS, bits 1/2/4/8; writes JSON.

Usage:
    python benchmarks/bench_retrieval.py OUT.json [--device cpu|cuda] [--items 1000000] [--dim 64]
        [--queries N] [--k 20] [--bits 1,2,4,8] [--threads T]

Defaults follow the project's goal sizes: 1M items, d=64, top-20, 1000 queries on CPU and 10000 on
CUDA. FAISS columns are null where faiss is not installed (e.g. the GPU machine). Prints one JSON
document (the same that is written to OUT.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="path of the JSON file to write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=None, help="default: 1000 on CPU, 10000 on CUDA")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--bits", default="1,2,4,8")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from retrieval import run_retrieval_bench

    queries = args.queries or (10_000 if args.device.startswith("cuda") else 1000)
    runs = []
    t0 = time.time()
    for bits in [int(b) for b in args.bits.split(",") if b.strip()]:
        try:
            r = run_retrieval_bench(args.items, args.dim, bits, queries, args.k, device=args.device, seed=args.seed,
                                    threads=args.threads)
        except Exception as e:  # keep the sweep going; record what failed
            r = {"bits": bits, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        runs.append(r)
        print(json.dumps({"bits": bits, "qps": r.get("qps"), "exact": r.get("exact")}), file=sys.stderr, flush=True)
    doc = {
        "benchmark": "retrieval",
        "args": vars(args) | {"queries": queries},
        "host_cpus": os.cpu_count(),
        "wall_s": time.time() - t0,
        "runs": runs,
    }
    text = json.dumps(doc, indent=2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
