"""Where the time of one asymmetric GPU search goes: kernels against host gaps, and the spread within one call.

Prepared in session 7 after call s7d measured the 12 B packed kernel 10 % below calls s6a / s6c with the same
code path and the same bf16 baseline (BENCHMARKS section 3b). Same synthetic data and index as
``benchmarks/asym_gpu_tiles.py`` (1-bit packed items, float16 scales and terms, 4-bit queries, the default
launch shape and threshold fraction). It (1) times ``search()`` and torch bf16 matmul + top-k alternately,
``--rounds`` times (best of 5 each), so the spread inside one call is measured next to the ratio; (2) profiles
one ``search()`` with ``torch.profiler``: the wall time, the summed device time of its kernels (the rest is
launch, synchronisation and host work), and the kernels that take the most.

    python benchmarks/asym_gpu_profile.py --items 1000000 --dim 64 --queries 10000 --k 20 --out profile.json
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
from hqgnn.io import write_json  # noqa: E402


def kernel_summary(prof, device_type: str) -> dict:
    """Summed self time per event name on the device (CUDA) or the host (CPU runs: a smoke test)."""
    totals: dict[str, float] = {}
    for ev in prof.key_averages():
        us = ev.self_device_time_total if device_type == "cuda" else ev.self_cpu_time_total
        if us > 0:
            totals[ev.key] = totals.get(ev.key, 0.0) + float(us)
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:12]
    return {"total_us": float(sum(totals.values())), "top": [{"name": k[:120], "us": v} for k, v in top]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--query-bits", type=int, default=4)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="auto", help="auto (triton on CUDA) | torch (on CPU: a smoke test of the torch path)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from hqgnn.index.asym import build_asym_index
    from hqgnn.index.queries import prepare_queries
    from hqgnn.index import QueryCodes  # noqa: E402

    dev = args.device
    xb, xq, codes, scales, term, center = _asym_data(args.items, args.dim, 1, args.queries, 0)
    scales, term = (v.astype(np.float16).astype(np.float32) for v in (scales, term))
    q, qs = prepare_queries(xq, center=center, query_bits=args.query_bits)
    index = build_asym_index(codes, scales, 1, term, query_bits=args.query_bits, device=dev, backend=args.backend)
    index.search(QueryCodes(q[:64], qs[:64]), args.k)  # compile
    rounds = []
    for _ in range(args.rounds):  # alternate, so a drift of the card shows in both columns
        ours = args.queries / best_time(lambda: index.search(QueryCodes(q, qs), args.k), dev, reps=5)
        bf16 = torch_topk_qps(xq, xb, args.k, dev, torch.bfloat16)
        rounds.append({"qps": ours, "torch_bf16_qps": bf16, "vs_torch_bf16": ours / bf16})
        print(json.dumps(rounds[-1]), flush=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        index.search(QueryCodes(q, qs), args.k)
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = kernel_summary(prof, "cuda" if dev.startswith("cuda") else "cpu")
    out = {"device": device_name(dev, 0), "torch": torch.__version__, "items": args.items, "dim": args.dim,
           "query_bits": args.query_bits, "queries": args.queries, "k": args.k, "value_dtype": "float16",
           "bytes_per_item": index.bytes_per_item, "threshold_fraction": index._gpu.threshold_fraction
           if index._gpu is not None else None, "rounds": rounds,
           "profiled_search": {"wall_us": wall * 1e6, "kernels": kernels,
                               "kernel_share_of_wall": kernels["total_us"] / (wall * 1e6)},
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    print(json.dumps({k: out[k] for k in ("device", "profiled_search")})[:2000])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
