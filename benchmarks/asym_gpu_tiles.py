"""Launch shapes of the asymmetric Triton kernel on one GPU: packed (+-1 or 0/1 bit operand) and int8 layouts.

Same synthetic data as ``hqgnn bench retrieval`` (1-bit items with per-row scales and terms, b-bit
queries), one index per layout; each variant sets AsymTorchSearcher's launch attributes (block_q,
warps, tile, zero_one), is timed like the benchmark (best of 5 after a warm-up) and checked on EVERY
query against the float64 reference computed on the card. torch bf16 / float32 matmul + top-k in the
same run.

    python benchmarks/asym_gpu_tiles.py --items 1000000 --dim 64 --queries 10000 --k 20 --out tiles.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from retrieval_asym import _asym_data  # noqa: E402
from bench_common import best_time, device_name, torch_topk_qps  # noqa: E402

# (layout, block_q, warps, tile, zero_one[, threshold_fraction]); indices are used by the call scripts,
# so new variants go at the end. Index 1 is the packed default since session 5, 9 the int8 one.
VARIANTS = [
    ("packed", 64, 4, 128, False), ("packed", 64, 4, 128, True), ("packed", 128, 4, 128, True),
    ("packed", 128, 8, 128, True), ("packed", 128, 8, 128, False), ("packed", 256, 8, 128, True),
    ("packed", 128, 8, 256, True), ("packed", 256, 8, 64, True), ("packed", 64, 4, 256, True),
    ("int8", 64, 4, 128, False), ("int8", 128, 8, 128, False), ("int8", 128, 4, 128, False),
    # the threshold pass over the first 1/4 or 1/8 of the item groups only (threshold_fraction)
    ("packed", 64, 4, 128, True, 0.25), ("packed", 64, 4, 128, True, 0.125), ("int8", 64, 4, 128, False, 0.125),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--query-bits", type=int, default=4)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="auto", help="auto (triton on CUDA) | triton (with TRITON_INTERPRET=1 on CPU: a smoke test)")
    ap.add_argument("--max-variants", type=int, default=len(VARIANTS), help="the first N variants (smoke tests)")
    ap.add_argument("--variants", default="", help="comma-separated indices into VARIANTS (default: all)")
    ap.add_argument("--value-dtype", default="float32", help="float16: scales and terms rounded to float16, as "
                    "quant.scale_dtype=float16 runs store them (the device then holds 2 B for each)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from hqgnn.index import CodeFormat, build_index
    from hqgnn.index.queries import prepare_queries
    from hqgnn.index import QueryCodes  # noqa: E402
    from bench_common import reference_asym_search_torch

    dev = args.device
    interpret = args.backend == "triton" and not dev.startswith("cuda")
    backend = "torch" if interpret else args.backend
    xb, xq, codes, scales, term, center = _asym_data(args.items, args.dim, 1, args.queries, 0)
    if args.value_dtype == "float16":
        scales, term = (v.astype(np.float16).astype(np.float32) for v in (scales, term))
    q, qs = prepare_queries(xq, center=center, query_bits=args.query_bits)
    t0 = time.perf_counter()
    rs, ri = reference_asym_search_torch(q, codes, args.k, scales, term, qs, device=dev)
    ref_s = time.perf_counter() - t0
    rows = []
    indexes = {}
    chosen = [VARIANTS[int(v)] for v in args.variants.split(",")] if args.variants else VARIANTS[: args.max_variants]
    for layout, bq, warps, tile, zero_one, *rest in chosen:
        fraction = rest[0] if rest else 1.0
        if layout not in indexes:
            indexes.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            fmt = CodeFormat(dim=args.dim, item_bits=1, query_bits=args.query_bits, term=True, layout=layout)
            indexes[layout] = build_index(codes, fmt, scale=scales, term=term, device=dev, backend=backend)
            if interpret:  # the Triton kernel in its CPU interpreter (index built with the torch backend)
                from hqgnn.index.gpu.asym import triton_asym_available

                assert triton_asym_available()
                indexes[layout]._gpu.use_triton, indexes[layout]._gpu.method = True, "two_phase"
        index = indexes[layout]
        eng = index._gpu
        eng.block_q, eng.warps, eng.tile, eng.zero_one = bq, warps, tile, zero_one
        eng.threshold_fraction = fraction
        row = {"layout": layout, "block_q": bq, "warps": warps, "tile": tile, "zero_one": zero_one,
               "threshold_fraction": fraction,
               "bytes_per_item": index.memory_bytes() / index.n}
        try:
            index.search(QueryCodes(q[:64], qs[:64]), args.k)  # compile
            row["qps"] = args.queries / best_time(lambda: index.search(QueryCodes(q, qs), args.k), dev, reps=5)
            s, i = index.search(QueryCodes(q, qs), args.k)
            s, i = (x.cpu().numpy() if torch.is_tensor(x) else x for x in (s, i))
            row["exact"] = bool(np.array_equal(i, ri) and np.array_equal(s, rs))
            row["queries_not_exact"] = int((~np.all(i == ri, axis=1)).sum())
        except Exception as exc:  # a shape this Triton build cannot compile (registers, shared memory)
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = {"torch_bf16": torch_topk_qps(xq, xb, args.k, dev, torch.bfloat16),
            "torch_float32": torch_topk_qps(xq, xb, args.k, dev, torch.float32)}
    for r in rows:
        if "qps" in r:
            r["vs_torch_bf16"] = r["qps"] / base["torch_bf16"]
    out = {"device": device_name(dev, 0), "torch": torch.__version__, "items": args.items, "dim": args.dim,
           "query_bits": args.query_bits, "value_dtype": args.value_dtype, "queries": args.queries, "k": args.k, "baselines_qps": base,
           "reference_seconds": ref_s, "exact_checked_queries": args.queries, "variants": rows,
           "command": " ".join(["python"] + sys.argv)}
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(base))


if __name__ == "__main__":
    main()
