"""Issue 23 fold, GPU: every symmetric format served by the symmetric engine vs the asymmetric one (packed / int8).

Run from a repository root: ``PYTHONPATH=src python benchmarks/fold_gpu.py OUT.json [--items 1000000
--queries 10000 --reps 5]``. Self-contained: synthetic codes (d = 64, top-20), per format the engines
and torch bf16 matmul + top-k on the dequantized vectors are timed alternately in this one process
(medians), and the engines' answers are compared on every query (and with the float64 reference on
8). The symmetric engine (``hqgnn.index.factory``) exists only before the fold: run the script on a
tree that has it to time both; after the fold its columns are null. ``--device cpu`` (torch backend,
small sizes) is the smoke test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hqgnn.index import QueryCodes, reference_search
from hqgnn.index.asym import AsymCodeIndex
from hqgnn.index.packing import code_range

# (name, bits, item scale): every symmetric format (1-bit pure Hamming = no scale)
FORMATS = [("b1_none", 1, "none"), ("b1_tensor", 1, "tensor"), ("b1_row", 1, "row"), ("b2_row", 2, "row"),
           ("b4_row", 4, "row"), ("b8_row", 8, "row")]


def _data(n: int, b: int, d: int, bits: int, kind: str, seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    lo, hi = code_range(bits)
    codes = rng.integers(lo, hi + 1, size=(n, d), dtype=np.int8)
    q = rng.integers(lo, hi + 1, size=(b, d), dtype=np.int8)
    if bits == 1:
        codes, q = np.where(codes >= 0, 1, -1).astype(np.int8), np.where(q >= 0, 1, -1).astype(np.int8)
    scale = {"none": None, "tensor": np.float32(0.7), "row": rng.uniform(0.5, 1.5, n).astype(np.float32)}[kind]
    qs = None if kind == "none" else rng.uniform(0.5, 1.5, b).astype(np.float32)
    return codes, q, scale, qs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _bf16_topk(q: np.ndarray, qs: Any, codes: np.ndarray, scale: Any, k: int, device: str) -> Callable[[], Any]:
    """torch bf16 matmul + top-k over the dequantized vectors, in query chunks (score block <= 4 GiB)."""
    s_i = np.ones(len(codes), np.float32) if scale is None else np.broadcast_to(scale, len(codes)).astype(np.float32)
    s_u = np.ones(len(q), np.float32) if qs is None else qs
    xt = torch.as_tensor(codes.astype(np.float32) * s_i[:, None], device=device).to(torch.bfloat16)
    qt = torch.as_tensor(q.astype(np.float32) * s_u[:, None], device=device).to(torch.bfloat16)
    rows = max(1, min(len(q), (1 << 31) // max(len(codes), 1)))

    def run() -> None:
        for r0 in range(0, len(q), rows):
            torch.topk(qt[r0 : r0 + rows] @ xt.T, k, dim=1)

    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args(argv)
    backend = "auto" if a.device.startswith("cuda") else "torch"
    try:
        from hqgnn.index.factory import build_code_index  # type: ignore[import-not-found]
    except ImportError:
        build_code_index = None
    rows = []
    for seed, (name, bits, kind) in enumerate(FORMATS):
        codes, q, scale, qs = _data(a.items, a.queries, a.dim, bits, kind, seed)
        engines: dict[str, Any] = {
            f"asym_{layout}": AsymCodeIndex(codes, scale, item_bits=bits, query_bits=max(2, bits), device=a.device,
                                            backend=backend, gpu_layout=layout) for layout in ("packed", "int8")}
        if build_code_index is not None:
            engines["sym"] = build_code_index(codes, scale, bits, device=a.device, backend=backend)
        query = QueryCodes(q, qs)
        calls: dict[str, Callable[[], Any]] = {e: (lambda ix=ix: ix.search(query, a.k)) for e, ix in engines.items()}
        calls["torch_bf16"] = _bf16_topk(q, qs, codes, scale, a.k, a.device)
        answers = {e: tuple(t.cpu().numpy() if isinstance(t, torch.Tensor) else t for t in ix.search(query, a.k))
                   for e, ix in engines.items()}
        ref = reference_search(q[:8], codes, a.k, None if qs is None else qs[:8], scale)
        first = next(iter(answers.values()))
        row: dict[str, Any] = {
            "format": name, "bits": bits, "scale": kind,
            "identical_results": all(np.array_equal(s, first[0]) and np.array_equal(i, first[1])
                                     for s, i in answers.values()),
            "exact_vs_reference_8q": all(np.array_equal(s[:8], ref[0]) and np.array_equal(i[:8], ref[1])
                                         for s, i in answers.values()),
            "device_bytes_per_item": {e: ix.memory_bytes() / a.items if hasattr(ix, "memory_bytes") else None
                                      for e, ix in engines.items()}}
        times: dict[str, list[float]] = {e: [] for e in calls}
        for f in calls.values():  # warm-up: compile / autotune
            f()
        for _ in range(a.reps):
            for e, f in calls.items():
                _sync(a.device)
                t0 = time.perf_counter()
                f()
                _sync(a.device)
                times[e].append(time.perf_counter() - t0)
        qps = {e: a.queries / statistics.median(t) for e, t in times.items()}
        row.update(qps=qps, times_s=times, vs_bf16={e: v / qps["torch_bf16"] for e, v in qps.items()})
        row["asym_over_sym"] = {e: qps[e] / qps["sym"] for e in qps if e.startswith("asym")} if "sym" in qps else None
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "times_s"}), flush=True)
        del engines, calls, answers
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu (torch backend)"
    out = {"device": dev, "items": a.items, "queries": a.queries, "dim": a.dim, "k": a.k, "reps": a.reps,
           "method": "engines and torch bf16 alternated in one process; median per engine", "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
