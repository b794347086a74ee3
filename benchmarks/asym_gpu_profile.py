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
    ap.add_argument("--queries", default="10000", help="query counts, comma-separated (e.g. 100,1000,10000)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="auto", help="auto (triton on CUDA) | torch (on CPU: a smoke test of the torch path)")
    ap.add_argument("--gpu-set", default="", help="searcher launch attributes, e.g. block_q=128,warps=8")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from hqgnn.index import CodeFormat, QueryCodes, build_index
    from hqgnn.index.queries import prepare_queries

    dev = args.device
    counts = [int(c) for c in str(args.queries).split(",")]
    xb, xq_all, codes, scales, term, center = _asym_data(args.items, args.dim, 1, max(counts), 0)
    scales, term = (v.astype(np.float16).astype(np.float32) for v in (scales, term))
    fmt = CodeFormat(dim=args.dim, item_bits=1, query_bits=args.query_bits, term=True, scale_dtype="float16")
    index = build_index(codes, fmt, scale=scales, term=term, device=dev, backend=args.backend)
    for item in filter(None, args.gpu_set.split(",")):
        name, value = item.split("=")
        setattr(index._gpu, name, type(getattr(index._gpu, name))(float(value)))
    out = {"device": device_name(dev, 0), "torch": torch.__version__, "items": args.items, "dim": args.dim,
           "query_bits": args.query_bits, "k": args.k, "value_dtype": "float16", "format": fmt.to_dict(),
           "bytes_per_item": index.memory_bytes() / args.items,
           "launch": {a: getattr(index._gpu, a, None) for a in ("block_q", "warps", "tile", "group", "zero_one",
                                                                   "threshold_fraction")}, "threshold_fraction": index._gpu.threshold_fraction
           if index._gpu is not None else None, "by_queries": {},
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    for nq in counts:
        xq = xq_all[:nq]
        q, qs = prepare_queries(xq, center=center, query_bits=args.query_bits)
        # float queries start on the device, as the bf16 baseline's do; quantized ones are encoded on the host
        queries = torch.as_tensor(q, device=dev) if qs is None and dev.startswith("cuda") else QueryCodes(q, qs)
        index.search(queries[:64] if qs is None and dev.startswith("cuda") else
                     QueryCodes(q[:64], None if qs is None else qs[:64]), args.k)  # compile
        rounds = []
        for _ in range(args.rounds):  # alternate, so a drift of the card shows in both columns
            ours = nq / best_time(lambda: index.search(queries, args.k), dev, reps=5)
            bf16 = torch_topk_qps(xq, xb, args.k, dev, torch.bfloat16)
            rounds.append({"qps": ours, "torch_bf16_qps": bf16, "vs_torch_bf16": ours / bf16})
            print(nq, json.dumps(rounds[-1]), flush=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if dev.startswith("cuda"):
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            index.search(queries, args.k)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        kernels = kernel_summary(prof, "cuda" if dev.startswith("cuda") else "cpu")
        gpu = index._gpu
        cand = {}
        if gpu is not None and getattr(gpu, "last_counts", None) is not None:
            c = gpu.last_counts.to(torch.float64)
            cand = {"cap": int(gpu.last_cap), "mean": float(c.mean()), "max": float(c.max()),
                    "over_cap": int((gpu.last_counts > gpu.last_cap).sum())}
        out["by_queries"][str(nq)] = {
            "rounds": rounds, "candidates": cand,
            "profiled_search": {"wall_us": wall * 1e6, "kernels": kernels,
                                "kernel_share_of_wall": kernels["total_us"] / (wall * 1e6)}}
        print(nq, json.dumps({"candidates": cand, "profiled": out["by_queries"][str(nq)]["profiled_search"]})[:3000],
              flush=True)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
