"""Host-side cost of preparing B integer queries inside the asymmetric index's GPU ``search()`` (BENCHMARKS § 3b, s7d).

The NumPy work the timed ``AsymIndex.search`` -> ``AsymTorchSearcher.search`` does before anything reaches the
device: the int8 check and range check, the query scales, the zero padding to d_pad and the float64 scale /
error vectors (integer queries). Run on the CPU; the transfers and the kernels are not in it.

    python benchmarks/asym_host_prep.py --queries 10000 --dim 64 --out benchmarks/results/asym_host_prep.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from hqgnn.index.common import normalize_query_scale  # noqa: E402
from hqgnn.index.packing import as_int8_codes, check_code_range  # noqa: E402
from hqgnn.io import write_json  # noqa: E402


def prepare(q: np.ndarray, qs: np.ndarray, query_bits: int, dpad: int) -> np.ndarray:
    codes = as_int8_codes(q, "queries")
    check_code_range(codes, query_bits, "queries")
    scales = normalize_query_scale(qs, q.shape[0])
    padded = np.zeros((q.shape[0], dpad), np.int8)
    padded[:, : q.shape[1]] = codes
    np.ascontiguousarray(scales.astype(np.float64))
    np.ascontiguousarray(np.zeros(q.shape[0]), np.float64)
    return padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--query-bits", type=int, default=4)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    lo = -(2 ** (args.query_bits - 1))
    q = rng.integers(lo, -lo, size=(args.queries, args.dim)).astype(np.int8)
    qs = rng.random(args.queries).astype(np.float32)
    dpad = max(32, -(-args.dim // 32) * 32)
    for _ in range(3):
        prepare(q, qs, args.query_bits, dpad)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        prepare(q, qs, args.query_bits, dpad)
        times.append(time.perf_counter() - t0)
    row = {"queries": args.queries, "dim": args.dim, "query_bits": args.query_bits, "reps": args.reps,
           "median_ms": float(np.median(times) * 1e3), "min_ms": float(np.min(times) * 1e3),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    print(row)
    if args.out:
        write_json(args.out, row)


if __name__ == "__main__":
    main()
