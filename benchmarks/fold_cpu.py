"""Issue 23 fold, CPU: every symmetric format served by the symmetric engine vs by the asymmetric engine (same codes).

Run: ``PYTHONPATH=src python benchmarks/fold_cpu.py OUT.json [--items 1000000 --queries 1000 --reps 5]``.
Both engines are built over the same synthetic codes (d = 64, top-20) and timed alternately in this
one process (A, B, A, B, ...; medians reported), and their answers are compared on every query.
The symmetric engine (``hqgnn.index.factory``) exists only before the fold: after it, the script times
the asymmetric engine alone (``sym_qps`` null), the form the index now serves these formats in.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_name  # noqa: E402
from fold_gpu import FORMATS, _data  # noqa: E402  (the same formats and codes as the GPU comparison)
from hqgnn.index import QueryCodes, reference_search  # noqa: E402
from hqgnn.index.asym import AsymCodeIndex  # noqa: E402

def _old_engine() -> Callable[..., Any] | None:
    try:
        from hqgnn.index.factory import build_code_index  # type: ignore[import-not-found]
    except ImportError:
        return None
    return build_code_index  # type: ignore[no-any-return]


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    old = _old_engine()
    rows = []
    for seed, (name, bits, kind) in enumerate(FORMATS):
        codes, q, scale, qs = _data(a.items, a.queries, a.dim, bits, kind, seed)
        new = AsymCodeIndex(codes, scale, item_bits=bits, query_bits=max(2, bits),
                            item_order="scale" if kind == "row" else "none")
        engines = {"asym": new}
        if old is not None:
            engines["sym"] = old(codes, scale, bits)
        for ix in engines.values():
            ix.threads = a.threads
        query = QueryCodes(q, qs)
        answers = {e: ix.search(query, a.k) for e, ix in engines.items()}  # also the warm-up (compile)
        ref = reference_search(q[:8], codes, a.k, None if qs is None else qs[:8], scale)
        exact = all(np.array_equal(s[:8], ref[0]) and np.array_equal(i[:8], ref[1]) for s, i in answers.values())
        same = old is None or (np.array_equal(answers["sym"][0], answers["asym"][0])
                               and np.array_equal(answers["sym"][1], answers["asym"][1]))
        times: dict[str, list[float]] = {e: [] for e in engines}
        for _ in range(a.reps):
            for e, ix in engines.items():  # alternately: load on the shared machine hits both alike
                times[e].append(_timed(lambda ix=ix: ix.search(query, a.k)))
        med = {e: statistics.median(t) for e, t in times.items()}
        row = {"format": name, "bits": bits, "scale": kind, "query_bits_asym": max(2, bits),
               "asym_qps": a.queries / med["asym"], "sym_qps": a.queries / med["sym"] if "sym" in med else None,
               "asym_bytes_per_item": new.memory_bytes() / a.items,
               "sym_bytes_per_item": engines["sym"].bytes_per_item if "sym" in engines else None,
               "times_s": times, "identical_results": bool(same), "exact_vs_reference_8q": bool(exact)}
        row["asym_over_sym"] = row["asym_qps"] / row["sym_qps"] if row["sym_qps"] else None
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "times_s"}), flush=True)
        del engines, new, answers
    try:
        load = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        load = None
    out = {"device": f"{cpu_name()} ({a.threads} threads)", "items": a.items, "queries": a.queries, "dim": a.dim,
           "k": a.k, "reps": a.reps, "method": "engines alternated in one process; median per engine",
           "loadavg_1min_end": load, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
