"""Short CPU timing of AsymCodeIndex with and without the scale-sorted storage order (BENCHMARKS.md § 3b)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from hqgnn.index import CodeFormat, build_index
from retrieval_asym import _asym_data
from bench_common import best_time as _best_time
from hqgnn.index.queries import prepare_queries
from hqgnn.index import QueryCodes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--bits", type=int, default=1)
    ap.add_argument("--query-bits", type=int, default=4)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--order", default="none", help="item_order: none | scale (old code: always scale)")
    ap.add_argument("--fp16", action="store_true", help="round scales and terms to float16 (as the model stores)")
    a = ap.parse_args()
    xb, xq, codes, scales, term, center = _asym_data(a.items, a.dim, a.bits, a.queries, 0)
    del xb
    if a.fp16:
        scales = scales.astype(np.float16).astype(np.float32)
        term = term.astype(np.float16).astype(np.float32)
    q, qs = prepare_queries(xq, center=center, query_bits=a.query_bits)
    kw = {"item_order": a.order}
    fmt = CodeFormat(dim=codes.shape[1], item_bits=a.bits, query_bits=a.query_bits, term=True, item_order=a.order)
    index = build_index(codes, fmt, scale=scales, term=term)
    index.search(QueryCodes(q[:64], None if qs is None else qs[:64]), a.k)
    load0 = os.getloadavg()
    best = _best_time(lambda: index.search(QueryCodes(q, qs), a.k), "cpu", reps=3, budget_s=8.0)
    print(json.dumps({"command": " ".join(["python"] + sys.argv), "order": kw.get("item_order", "scale (old code)"),
                      "fp16_values": a.fp16, "query_bits": a.query_bits, "qps": a.queries / best,
                      "bytes_per_item": index.memory_bytes() / index.n, "loadavg_before": load0, "loadavg_after": os.getloadavg(),
                      "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))


if __name__ == "__main__":
    main()
