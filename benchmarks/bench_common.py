"""Shared by the retrieval benchmarks: timing, thread control, device names, torch baselines, result fields."""

from __future__ import annotations

import contextlib
import platform
import time
from typing import Any, Callable, Iterator

__all__ = ["best_time", "cpu_name", "device_name", "faiss_pq_fastscan", "reference_asym_search_torch", "result_fields", "threads_set",
           "torch_topk_qps"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()} ({threads} threads)"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def best_time(fn: Callable[[], object], device: str, reps: int = 3, budget_s: float = 15.0,
               warm: Callable[[], object] | None = None) -> float:
    """Best wall time of up to ``reps`` runs (fewer once ``budget_s`` is spent) after a warm-up:
    ``warm`` if given (a cheap call for baselines with nothing to compile), else one full run."""
    (warm or fn)()
    _sync(device)
    best = float("inf")
    spent = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        if spent > budget_s:
            break
    return best


@contextlib.contextmanager
def threads_set(threads: int | None) -> Iterator[int]:
    import torch

    from hqgnn.index.cpu import default_threads

    n = default_threads() if threads is None else int(threads)
    old_torch = torch.get_num_threads()
    torch.set_num_threads(n)
    faiss_old = None
    try:
        import faiss

        faiss_old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
    except ImportError:
        faiss = None
    try:
        yield n
    finally:
        torch.set_num_threads(old_torch)
        if faiss is not None and faiss_old is not None:
            faiss.omp_set_num_threads(faiss_old)


def torch_topk_qps(q: "object", x: "object", k: int, device: str, dtype: "object") -> float:
    """q/s of ``topk(q @ x.T)`` in query chunks (score block <= 1 GiB on CPU, 4 GiB fp32 on CUDA)."""
    import torch

    qt = torch.as_tensor(q, device=device).to(dtype)
    xt = torch.as_tensor(x, device=device).to(dtype)
    n = xt.shape[0]
    budget = (1 << 30) if device.startswith("cuda") else (1 << 28)  # score block: 4 GiB GPU / 1 GiB CPU fp32
    rows = max(1, min(qt.shape[0], budget // max(n, 1)))

    def run(nq: int) -> None:
        for r0 in range(0, nq, rows):
            torch.topk(qt[r0 : min(nq, r0 + rows)] @ xt.T, k, dim=1)

    return qt.shape[0] / best_time(lambda: run(qt.shape[0]), device, warm=lambda: run(min(rows, 64)))


def result_fields(index: Any, device: str, nthreads: int, build_s: float, qps: dict[str, Any], **shape: Any) -> dict:
    """The keys every retrieval result carries: bytes as held, device, backend, shape, timing context."""
    result = {"bytes_per_item": index.memory_bytes() / max(index.n, 1), "float32_bytes_per_item": shape["dim"] * 4,
              "device": device_name(device, nthreads), "backend": index.backend, **shape, "threads": nthreads,
              "build_s": build_s}
    if device.startswith("cuda"):
        result["speedup_vs_torch_bf16"] = qps["hqgnn"] / qps["torch_bf16"]
    try:
        result["loadavg_1min"] = float(open("/proc/loadavg").read().split()[0])  # shared machines: context
    except (OSError, ValueError, IndexError):
        pass
    return result


def faiss_pq_fastscan(xb: Any, seed: int = 0, m: int = 32, train_n: int = 65536) -> Any:
    """The CPU baseline of the retrieval goals: FAISS IndexPQFastScan ``m``x4 (inner product) over the float items
    ``xb``, trained on ``train_n`` of them drawn without replacement by ``default_rng(seed + 1)``, items added."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    index = faiss.IndexPQFastScan(xb.shape[1], m, 4, faiss.METRIC_INNER_PRODUCT)
    index.train(xb[rng.choice(len(xb), size=min(train_n, len(xb)), replace=False)])
    index.add(xb)
    return index


def reference_asym_search_torch(queries: Any, item_codes: Any, k: int, item_scale: Any = None,
                                item_term: Any = None, query_scales: Any = None, device: str = "cpu",
                                block: int = 256, float_queries: bool = False) -> tuple[Any, Any]:
    """:func:`hqgnn.index.reference.reference_asym_search`, computed with torch on ``device`` (the exactness check
    of the GPU benchmarks at 10,000 queries x 1M items, which the NumPy reference would take minutes for).

    The same float64 keys, ``(ip * s_i) * s_u + t_i`` for integer queries (ip integer-valued, so exact in
    any summation order; eager elementwise ops, so no fused multiply-add) and ``ip * s_i + t_i`` for float
    queries (ip = the float64 dot of float32 queries with integer codes: exact products, and a sum exact in
    float64 whenever the query's entries span less than 2^(29 - log2 d), as for the NumPy reference), and
    the same order (key descending, id ascending, ties at the k-th key resolved exactly). No exclusion.
    Returns numpy (scores float32, ids int64).
    """
    import numpy as np
    import torch

    from hqgnn.index.common import normalize_item_scale, normalize_item_term, normalize_query_scale, to_numpy

    dev = torch.device(device)
    ic = torch.as_tensor(to_numpy(item_codes)).to(dev, torch.float64)
    n = ic.shape[0]
    q = to_numpy(queries)
    b = q.shape[0]
    s_i = torch.as_tensor(normalize_item_scale(item_scale, n).dense(n).astype(np.float64), device=dev)
    t_i = torch.as_tensor(normalize_item_term(item_term, n).dense(n).astype(np.float64), device=dev)
    s_u = torch.as_tensor(normalize_query_scale(None if float_queries else query_scales, b).astype(np.float64),
                          device=dev)
    kk = min(k, n)
    ids = np.full((b, k), -1, np.int64)
    scores = np.full((b, k), -np.inf, np.float32)
    for r0 in range(0, b, block):
        r1 = min(b, r0 + block)
        ip = torch.as_tensor(q[r0:r1]).to(dev, torch.float64) @ ic.T
        key = ip * s_i[None, :] + t_i[None, :] if float_queries else (ip * s_i[None, :]) * s_u[r0:r1, None] + t_i[None, :]
        thr = torch.topk(key, kk, dim=1).values[:, -1:]
        rows, cols = torch.nonzero(key >= thr, as_tuple=True)  # row-major: ids ascending within a row
        vals = key[rows, cols]
        order = torch.sort(-vals, stable=True).indices  # key descending, ties keep id order
        order = order[torch.sort(rows[order], stable=True).indices]  # then grouped by row
        r, c, v = rows[order].cpu().numpy(), cols[order].cpu().numpy(), vals[order].cpu().numpy()
        rank = np.arange(r.size) - np.searchsorted(r, np.arange(r1 - r0))[r]
        keep = rank < kk
        ids[r0 + r[keep], rank[keep]] = c[keep]
        scores[r0 + r[keep], rank[keep]] = v[keep].astype(np.float32)
    return scores, ids
