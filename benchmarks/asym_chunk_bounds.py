"""Why the unordered asymmetric CPU index prunes little: per-chunk score bounds against the final k-th key.

For Q queries of the retrieval benchmark's synthetic data (1-bit items, 4-bit queries, centered, so a
per-item term), the fraction of 256-item chunks whose bound (max over the chunk's ip / scale range
corners + max term) still exceeds the query's final k-th best key -- a chunk the index cannot skip
even with a perfect threshold -- and the items per such chunk past the integer cut. One JSON line.

    python benchmarks/asym_chunk_bounds.py --queries 20 [--order scale]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hqgnn.index.asym_layout import scale_order_of  # noqa: E402
from retrieval_asym import _asym_data  # noqa: E402
from hqgnn.index.queries import prepare_queries  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--order", default="none", help="none | scale: chunks of the scale-sorted storage order")
    a = ap.parse_args()
    _, xq, codes, scales, term, center = _asym_data(a.items, 64, 1, a.queries, 0)
    if a.order == "scale":  # the index's own storage order (scale buckets, then term)
        perm = scale_order_of(scales, term, len(scales))
        codes, scales, term = codes[perm], scales[perm], term[perm]
    q, qs = prepare_queries(xq, center=center, query_bits=4)
    ip = q.astype(np.float64) @ codes.astype(np.float64).T
    key = ip * scales[None] * qs[:, None] + term[None]
    tau = np.sort(key, 1)[:, -a.k]
    c, nch = a.chunk, a.items // a.chunk
    ipc = ip[:, : nch * c].reshape(a.queries, nch, c)
    s, t = scales[: nch * c].reshape(nch, c), term[: nch * c].reshape(nch, c)
    smax, smin, tmax = s.max(1), s.min(1), t.max(1)
    hi, lo = ipc.max(2), ipc.min(2)
    su = qs[:, None]
    ub = np.maximum.reduce([hi * smax * su, hi * smin * su, lo * smax * su, lo * smin * su]) + tmax
    live = ub > tau[:, None]
    cut = ipc * (np.where(su > 0, smax, smin) * su)[:, :, None] + tmax[None, :, None] >= tau[:, None, None]
    print(json.dumps({"command": " ".join(["python"] + sys.argv), "order": a.order, "queries": a.queries,
                      "chunk": c, "frac_chunks_not_prunable": float(live.mean()),
                      "items_past_cut_per_live_chunk": float(cut.sum(2)[live].mean()) if live.any() else 0.0,
                      "term_range": [float(term.min()), float(term.max())],
                      "scale_range": [float(scales.min()), float(scales.max())]}))


if __name__ == "__main__":
    main()
