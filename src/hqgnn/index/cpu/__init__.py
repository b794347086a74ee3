"""CPU kernels of the code index (numba and LLVM-IR AVX2 scans, selection heaps) and the thread pool that runs them.

Work is split into tasks of up to 64 queries x a contiguous item range; the task kernels are nogil
numba functions, run here on a plain thread pool: unlike numba's ``parallel=True`` there is no parfor
compile step (it cost ~4.5 s per kernel on a cold cache) and the thread count is a per-call argument.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .select import merge_ranges
from .simd import HAVE_AVX2

__all__ = ["HAVE_AVX2", "QT", "choose_ranges", "default_threads", "merge_ranges", "n_tasks", "run_tasks"]

QT = 64  # queries per task: a chunk of items is reused by this many queries while it sits in cache

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def choose_ranges(n_queries: int, n_chunks: int, threads: int) -> int:
    """Split items into ranges only when there are too few query tasks to keep all threads busy."""
    nqt = max(1, math.ceil(n_queries / QT))
    if nqt >= 2 * threads:
        return 1
    return int(max(1, min(n_chunks, math.ceil(2 * threads / nqt))))


def n_tasks(n_queries: int, n_ranges: int) -> int:
    """Tasks of a search: query blocks of :data:`QT` times item ranges."""
    return max(1, math.ceil(n_queries / QT)) * n_ranges


def default_threads() -> int:
    """Threads of a CPU search: ``HQGNN_NUM_THREADS`` (or ``NUMBA_NUM_THREADS``), else the usable cores."""
    env = os.environ.get("HQGNN_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
    if env and env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def run_tasks(fn: Callable[..., Any], ntasks: int, args: tuple[Any, ...], threads: int | None = None) -> None:
    """Call ``fn(t, *args)`` for t in range(ntasks) on up to ``threads`` threads."""
    threads = default_threads() if threads is None else max(1, int(threads))
    if threads == 1 or ntasks == 1:
        for t in range(ntasks):
            fn(t, *args)
        return
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < threads:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hqgnn-index")
            _POOL_SIZE = threads
        pool = _POOL
    # at most `threads` workers pull task ids from a shared counter (dynamic load balance)
    counter = iter(range(ntasks))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                t = next(counter, None)
            if t is None:
                return
            fn(t, *args)

    futures = [pool.submit(worker) for _ in range(min(threads, ntasks))]
    for f in futures:
        f.result()
