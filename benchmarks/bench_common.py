"""Shared by the retrieval benchmarks: timing, thread control, device names, torch baselines, result fields."""

from __future__ import annotations

import contextlib
import platform
import time
from typing import Any, Callable, Iterator

__all__ = ["best_time", "cpu_name", "device_name", "result_fields", "threads_set", "torch_topk_qps"]


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
