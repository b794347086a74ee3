"""CPU speed of exact search before / after a change, both code paths in one process, against FAISS PQFastScan 32x4.

The "before" index package is another checkout's ``src/hqgnn/index`` (e.g. ``git archive REV src/hqgnn/index |
tar -x -C /tmp/base``), loaded as ``hqgnn.index_base`` beside this checkout's ``hqgnn.index``. Every engine runs
once per repetition, in a rotated order, and each repetition's queries/s are divided by PQFastScan's of the same
repetition: the ratios are what a shared machine can report (BENCHMARKS.md § 3c, issue 23).

Served setting: 1-bit items renumbered into the storage order (``--item-order renumbered`` of
``retrieval_asym.py``), float16 scales and terms, 4-bit and float queries. ``--others-items`` also times the other
CPU engines before / after (no PQ ratio): 1-bit items in their own numbering, nibble and int8 items, the
symmetric engine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from bench_common import cpu_name, faiss_pq_fastscan, threads_set
from retrieval_asym import _asym_data


def load_base(path: str) -> Any:
    """The index package at ``path`` as ``hqgnn.index_base`` (its relative imports resolve inside hqgnn)."""
    import hqgnn  # noqa: F401  (the parent package of the copy)

    spec = importlib.util.spec_from_file_location("hqgnn.index_base", os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["hqgnn.index_base"] = mod
    spec.loader.exec_module(mod)
    return mod


def interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, ``reps`` rounds, the order rotated each round (after one warm call each)."""
    for f in fns.values():
        f()
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            out[k].append(time.perf_counter() - t0)
    return out


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]))


def served(args: argparse.Namespace, base: Any, new: Any) -> dict[str, Any]:

    from hqgnn.index.asym_layout import scale_order_of
    from hqgnn.index.queries import prepare_queries
    from hqgnn.index.reference import reference_asym_search

    xb, xq, codes, scales, term, center = _asym_data(args.items, args.dim, 1, args.queries, args.seed)
    scales, term = (v.astype(np.float16).astype(np.float32) for v in (scales, term))
    order = scale_order_of(scales, term, args.items)  # renumbered: the served numbering
    xb, codes, scales, term = xb[order], codes[order], scales[order], term[order]
    q4, qs4 = prepare_queries(xq, center=center, query_bits=4)
    qf, _ = prepare_queries(xq, center=center, query_bits=0)
    fns: dict[str, Callable[[], Any]] = {}
    for tag, mod in (("before", base), ("after", new)):
        for qb in (4, 0):
            fmt = mod.CodeFormat(dim=args.dim, item_bits=1, query_bits=qb, term=True, scale_dtype="float16")
            idx = mod.build_index(codes, fmt, scale=scales, term=term)
            fns[f"{tag}_q{qb}"] = ((lambda i=idx, m=mod: i.search(m.QueryCodes(q4, qs4), args.k)) if qb
                                   else (lambda i=idx: i.search(qf, args.k)))
    pq = faiss_pq_fastscan(xb, args.seed)
    fns["faiss_pq_fastscan_32x4"] = lambda: pq.search(xq, args.k)
    exact: dict[str, Any] = {}
    for qb, q, qs in ((4, q4, qs4), (0, qf, None)):
        a, b = fns[f"before_q{qb}"](), fns[f"after_q{qb}"]()
        exact[f"after_equals_before_q{qb}"] = _same(a, b)
        if not args.skip_reference:  # every query against the float64 brute force
            ref = reference_asym_search(q, codes, args.k, scales, term, qs, float_queries=qb == 0, block=16)
            exact[f"after_equals_reference_q{qb}"] = _same(b, ref)
    t = interleaved(fns, args.reps)
    qps = {k: args.queries / np.asarray(v) for k, v in t.items()}
    pq_qps = qps["faiss_pq_fastscan_32x4"]
    return {"exact": exact, "qps_median": {k: float(np.median(v)) for k, v in qps.items()},
            "ratio_to_pq_median": {k: float(np.median(v / pq_qps)) for k, v in qps.items()},
            "qps_per_rep": {k: [round(float(x), 1) for x in v] for k, v in qps.items()}}


def others(args: argparse.Namespace, base: Any, new: Any) -> dict[str, Any]:
    """Before / after of the other CPU engines (median after / before over the interleaved repetitions)."""
    from hqgnn.index.queries import prepare_queries

    rng = np.random.default_rng(args.seed)
    n, d = args.others_items, args.dim
    x = rng.normal(size=(args.queries, d)).astype(np.float32)
    out: dict[str, Any] = {}
    for ib, qb, sym in ((1, 4, False), (1, 0, False), (4, 4, False), (4, 0, False), (8, 8, False), (8, 0, False),
                        (1, 1, True), (4, 4, True)):
        name = f"{'sym' if sym else 'asym'}_b{ib}_q{qb}"
        lo, hi = (-1, 1) if ib == 1 else (-(2 ** (ib - 1)), 2 ** (ib - 1) - 1)
        codes = (rng.integers(0, 2, (n, d)) * 2 - 1) if ib == 1 else rng.integers(lo, hi + 1, (n, d))
        codes = codes.astype(np.int8)
        scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
        term = None if sym else rng.normal(size=n).astype(np.float32)
        q, qs = prepare_queries(x, query_bits=qb) if qb > 1 or qb == 0 else (np.where(x >= 0, 1, -1).astype(np.int8),
                                                                             None)
        fns = {}
        for tag, mod in (("before", base), ("after", new)):
            fmt = mod.CodeFormat(dim=d, item_bits=ib, query_bits=qb, term=not sym)
            idx = mod.build_index(codes, fmt, scale=scale, term=term)
            fns[tag] = ((lambda i=idx: i.search(q, args.k)) if qs is None
                        else (lambda i=idx, m=mod: i.search(m.QueryCodes(q, qs), args.k)))
        same = _same(fns["before"](), fns["after"]())
        t = interleaved(fns, args.reps)
        ratio = np.asarray(t["before"]) / np.asarray(t["after"])
        out[name] = {"same_results": same, "after_over_before_qps_median": float(np.median(ratio)),
                     "before_qps_median": float(args.queries / np.median(t["before"])),
                     "after_qps_median": float(args.queries / np.median(t["after"]))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="the 'before' checkout's src/hqgnn/index directory")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--others-items", type=int, default=0, help="also time the other engines at this many items")
    p.add_argument("--skip-reference", action="store_true", help="skip the float64 brute-force check")
    p.add_argument("--out", default=None, help="JSON path (else printed)")
    args = p.parse_args()
    base = load_base(args.baseline)
    from hqgnn import index as new

    with threads_set(args.threads) as nthreads:
        load0 = os.getloadavg()[0]
        res: dict[str, Any] = {"settings": vars(args), "cpu": cpu_name(), "threads": nthreads,
                               "served": served(args, base, new)}
        if args.others_items:
            res["others"] = others(args, base, new)
        res["loadavg_1min_before_after"] = [load0, os.getloadavg()[0]]
    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
