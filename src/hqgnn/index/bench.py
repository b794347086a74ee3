"""Retrieval benchmark: hqgnn code search vs torch matmul+topk and FAISS on synthetic codes, exactness checked."""

from __future__ import annotations

import contextlib
import platform
import time
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["run_asym_bench", "run_retrieval_bench"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"{_cpu_name()} ({threads} threads)"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def _best_time(fn: Callable[[], object], device: str, reps: int = 3, budget_s: float = 15.0,
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
def _threads_set(threads: int | None) -> Iterator[int]:
    import torch

    from .kernels_cpu import default_threads

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


def _synthetic(items: int, dim: int, bits: int, queries: int, seed: int):
    from .packing import code_range

    rng = np.random.default_rng(seed)
    lo, hi = code_range(bits)
    if bits == 1:
        codes = (rng.integers(0, 2, size=(items, dim), dtype=np.int8) * 2 - 1).astype(np.int8)
        qcodes = (rng.integers(0, 2, size=(queries, dim), dtype=np.int8) * 2 - 1).astype(np.int8)
    else:
        codes = rng.integers(lo, hi + 1, size=(items, dim), dtype=np.int8)
        qcodes = rng.integers(lo, hi + 1, size=(queries, dim), dtype=np.int8)
    scales = rng.uniform(0.5, 1.5, size=items).astype(np.float32)
    qscales = rng.uniform(0.5, 1.5, size=queries).astype(np.float32)
    return codes, scales, qcodes, qscales


def _torch_topk_qps(q: "object", x: "object", k: int, device: str, dtype: "object") -> float:
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

    return qt.shape[0] / _best_time(lambda: run(qt.shape[0]), device, warm=lambda: run(min(rows, 64)))


def _faiss_qps(bits: int, codes: np.ndarray, scales: np.ndarray, qcodes: np.ndarray, qscales: np.ndarray,
               k: int) -> dict[str, float | None]:
    try:
        import faiss
    except ImportError:
        return {"faiss": None, "faiss_flat_ip": None, "faiss_index": None}
    out: dict[str, Any] = {}
    xf = (codes.astype(np.float32) * scales[:, None]).astype(np.float32)
    qf = (qcodes.astype(np.float32) * qscales[:, None]).astype(np.float32)
    flat = faiss.IndexFlatIP(xf.shape[1])
    flat.add(xf)
    out["faiss_flat_ip"] = qf.shape[0] / _best_time(lambda: flat.search(qf, k), "cpu",
                                                    warm=lambda: flat.search(qf[:16], k))
    del flat
    if bits == 1:
        from .faiss_interop import faiss_binary_bytes, to_faiss_binary

        index = to_faiss_binary(codes)
        qb = faiss_binary_bytes(qcodes)
        out["faiss"] = qb.shape[0] / _best_time(lambda: index.search(qb, k), "cpu",
                                                warm=lambda: index.search(qb[:16], k))
        out["faiss_index"] = "IndexBinaryFlat (Hamming, same task as hqgnn mode='hamming')"
    else:
        qtype = faiss.ScalarQuantizer.QT_4bit if bits <= 4 else faiss.ScalarQuantizer.QT_8bit
        index = faiss.IndexScalarQuantizer(xf.shape[1], qtype, faiss.METRIC_INNER_PRODUCT)
        index.train(xf)
        index.add(xf)
        out["faiss"] = qf.shape[0] / _best_time(lambda: index.search(qf, k), "cpu",
                                                warm=lambda: index.search(qf[:16], k))
        out["faiss_index"] = f"IndexScalarQuantizer({'QT_4bit' if bits <= 4 else 'QT_8bit'}, inner product)"
    return out


def run_retrieval_bench(items: int, dim: int, bits: int, queries: int, k: int, device: str = "cpu", seed: int = 0,
                        threads: int | None = None, query_bits: int | None = None, item_order: str = "none") -> dict:
    """Time exact code search against float baselines on random codes with per-row scales.

    Every engine is timed the same way: best of up to 5 runs (15 s budget) after a warm-up.
    Returns ``{"qps": {"hqgnn", "torch_float32", "torch_bf16" (CUDA only), "faiss", ...},
    "exact": bool, "bytes_per_item", "float32_bytes_per_item", "device", "items", "dim", "bits",
    "queries", "k", "threads", ...}``. For 1 bit, ``qps["hqgnn"]`` is pure Hamming mode (the task
    of FAISS IndexBinaryFlat) and ``qps["hqgnn_scaled"]`` the scaled-score mode. FAISS columns are
    None when faiss is not installed (e.g. on the GPU machine). Timings: best of up to 3 runs
    after a warm-up; ``exact`` checks a subset of queries against the float64 reference.
    """
    if query_bits is not None:
        return run_asym_bench(items, dim, bits, query_bits, queries, k, device=device, seed=seed, threads=threads,
                              item_order=item_order)
    import torch

    from .factory import build_code_index
    from .reference import reference_search

    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available")
    codes, scales, qcodes, qscales = _synthetic(items, dim, bits, queries, seed)
    with _threads_set(threads) as nthreads:
        t0 = time.perf_counter()
        index = build_code_index(codes, scales, bits, device=device)
        build_s = time.perf_counter() - t0
        index.threads = nthreads
        mode = "hamming" if bits == 1 else "scaled"
        warm = qcodes[: min(queries, 64)]
        index.search(warm, k, query_scales=qscales[: warm.shape[0]], mode=mode)  # compile / autotune
        qps: dict[str, Any] = {}
        qps["hqgnn"] = queries / _best_time(lambda: index.search(qcodes, k, query_scales=qscales, mode=mode), device)
        if bits == 1:
            index.search(warm, k, query_scales=qscales[: warm.shape[0]])
            qps["hqgnn_scaled"] = queries / _best_time(lambda: index.search(qcodes, k, query_scales=qscales), device)

        # exactness on a subset (the reference is a float64 brute force over all items)
        nchk = min(queries, 8)
        exact = True
        for m in ["hamming", "scaled"] if bits == 1 else ["scaled"]:
            s, i = index.search(qcodes[:nchk], k, query_scales=qscales[:nchk], mode=m)
            if device.startswith("cuda"):
                s, i = s.cpu().numpy(), i.cpu().numpy()
            rs, ri = reference_search(qcodes[:nchk], codes, k, qscales[:nchk], scales, mode=m)
            exact = exact and bool(np.array_equal(i, ri) and np.array_equal(s, rs))

        # float baselines on the dequantized embeddings (same ranking task in float)
        xf = codes.astype(np.float32) * scales[:, None]
        qf = qcodes.astype(np.float32) * qscales[:, None]
        qps["torch_float32"] = _torch_topk_qps(qf, xf, k, device, torch.float32)
        if device.startswith("cuda"):
            qps["torch_bf16"] = _torch_topk_qps(qf, xf, k, device, torch.bfloat16)
        del xf, qf
        faiss_info = _faiss_qps(bits, codes, scales, qcodes, qscales, k)
        faiss_index = faiss_info.pop("faiss_index", None)
        qps.update(faiss_info)

    result = {
        "qps": qps,
        "speedup_vs_torch_float32": qps["hqgnn"] / qps["torch_float32"],
        "speedup_vs_faiss": (qps["hqgnn"] / qps["faiss"]) if qps.get("faiss") else None,
        "faiss_index": faiss_index,
        "exact": exact,
        "bytes_per_item": float(index.bytes_per_item),
        "float32_bytes_per_item": dim * 4,
        "device": _device_name(device, nthreads),
        "backend": index.backend,
        "items": items,
        "dim": dim,
        "bits": bits,
        "queries": queries,
        "k": k,
        "threads": nthreads,
        "seed": seed,
        "build_s": build_s,
    }
    if device.startswith("cuda"):
        result["speedup_vs_torch_bf16"] = qps["hqgnn"] / qps["torch_bf16"]
    return result


# ------------------------------------------------------------------------------ asymmetric
def _asym_data(items: int, dim: int, bits: int, queries: int, seed: int):
    """Float item/query embeddings with a shared offset (like trained embeddings, which are far
    from centred), the items' b-bit codes + per-row scales (hqgnn.quant's data_scale /
    integer_codes), and the query centre m with the per-item term t_i = s_i <m, c_i> it moves
    into the items: s_i <x_u - m, c_i> + t_i = s_i <x_u, c_i>, with a better-quantized query."""
    import torch

    from ..quant.estimators import integer_codes
    from ..quant.quantizer import data_scale

    rng = np.random.default_rng(seed)
    offset = rng.normal(0, 0.5, size=dim).astype(np.float32)
    xb = rng.standard_normal((items, dim), dtype=np.float32) + offset
    xq = rng.standard_normal((queries, dim), dtype=np.float32) + offset
    codes = np.empty((items, dim), np.int8)
    scales = np.empty(items, np.float32)
    step = 1 << 17
    for r0 in range(0, items, step):
        t = torch.from_numpy(xb[r0 : r0 + step])
        s = data_scale(t, bits, per_row=True)
        codes[r0 : r0 + step] = integer_codes(t, s, bits).to(torch.int8).numpy()
        scales[r0 : r0 + step] = s.reshape(-1).numpy()
    center = xq.mean(axis=0).astype(np.float32)
    term = (scales.astype(np.float64) * (codes @ center.astype(np.float64))).astype(np.float32)
    return xb, xq, codes, scales, term, center


def _recall(ids: np.ndarray, gt: np.ndarray) -> float:
    k = gt.shape[1]
    hits = sum(np.intersect1d(a[a >= 0], b).size for a, b in zip(ids, gt))
    return hits / max(1, gt.size) if k else 0.0


def _faiss_asym_baselines(xb: np.ndarray, xq: np.ndarray, k: int, query_bits: int, train_n: int, seed: int):
    """q/s (+ recall vs exact float top-k) of FAISS fast-scan PQ and RaBitQ on the float vectors."""
    try:
        import faiss
    except ImportError:
        return {}, {}, {}, None
    d = xb.shape[1]
    rng = np.random.default_rng(seed + 1)
    train = xb[rng.choice(xb.shape[0], size=min(train_n, xb.shape[0]), replace=False)]
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    gt = flat.search(xq, k)[1]
    del flat
    qps: dict[str, float | None] = {}
    recall: dict[str, float | None] = {}
    notes: dict[str, str] = {}

    def measure(name: str, make, params=None) -> None:
        try:
            index = make()
            index.train(train)
            index.add(xb)
            kw = {} if params is None else {"params": params}
            qps[name] = xq.shape[0] / _best_time(lambda: index.search(xq, k, **kw), "cpu", reps=5,
                                                 warm=lambda: index.search(xq[:16], k, **kw))
            recall[name] = _recall(index.search(xq, k, **kw)[1], gt)
        except Exception as exc:  # an unsupported setting in this faiss build: report, do not fail
            qps[name] = recall[name] = None
            notes[name] = f"{type(exc).__name__}: {exc}"[:200]

    ip = faiss.METRIC_INNER_PRODUCT
    for m in (32, 16):
        if d % m == 0:
            measure(f"faiss_pq_fastscan_{m}x4", lambda m=m: faiss.IndexPQFastScan(d, m, 4, ip))
        else:
            qps[f"faiss_pq_fastscan_{m}x4"] = recall[f"faiss_pq_fastscan_{m}x4"] = None
            notes[f"faiss_pq_fastscan_{m}x4"] = f"d={d} not divisible by {m}"
    qb = int(query_bits) if query_bits else 8  # RaBitQ's query bits; float queries: its 8-bit maximum

    def rabitq(cls):
        def make():
            index = cls(d, ip)
            index.qb = qb
            return index
        return make

    measure("faiss_rabitq", rabitq(faiss.IndexRaBitQ))
    measure("faiss_rabitq_fastscan", rabitq(faiss.IndexRaBitQFastScan))
    notes["faiss_rabitq_qb"] = str(qb)
    return qps, recall, notes, gt


def _int8_path_qps(index: Any, codes: np.ndarray, scales: np.ndarray, term: np.ndarray, q: np.ndarray,
                   qs: np.ndarray | None, k: int, device: str) -> tuple[float, float]:
    """(queries/s, bytes per item) of the int8 device layout (packed=False) on the same queries."""
    from .common import normalize_query_scale
    from .kernels_asym_gpu import AsymTorchSearcher

    g = index._gpu
    alt = AsymTorchSearcher(codes, scales, term, index.item_bits, device, use_triton=g.use_triton, method=g.method,
                            packed=False)
    fq = index.query_bits == 0
    qsn = None if fq else normalize_query_scale(qs, q.shape[0])
    alt.search(q[:64], k, None if qsn is None else qsn[:64], None, fq)  # compile
    rate = q.shape[0] / _best_time(lambda: alt.search(q, k, qsn, None, fq), device, reps=5)
    per_item = alt.device_bytes / max(index.n, 1)
    del alt
    return rate, per_item


def run_asym_bench(items: int, dim: int, bits: int, query_bits: int, queries: int, k: int, device: str = "cpu",
                   seed: int = 0, threads: int | None = None, train_n: int = 65536, item_order: str = "none") -> dict:
    """Time exact asymmetric search (``bits``-bit items, ``query_bits``-bit or float queries) against
    torch matmul + topk and FAISS IndexPQFastScan 32x4 / 16x4, IndexRaBitQ, IndexRaBitQFastScan, all
    in one run on the same synthetic embeddings (see _asym_data).

    ``exact`` compares EVERY query's ids and scores with the float64 brute force
    (reference_asym_search, in query blocks). ``recall`` is each engine's recall@k against the exact
    float top-k of the unquantized embeddings (what the FAISS methods approximate); FAISS entries are
    None where this faiss build rejects a setting (``faiss_notes`` says why). hqgnn and FAISS are
    timed alike: best of up to 5 runs within a 15 s budget, after a warm-up; ``loadavg_1min`` records
    how busy the machine was (shared machines make every number noisy).
    """
    import torch

    from .asym import build_asym_index
    from .queries import prepare_queries
    from .reference import reference_asym_search

    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available")
    xb, xq, codes, scales, term, center = _asym_data(items, dim, bits, queries, seed)
    q, qs = prepare_queries(xq, center=center, query_bits=query_bits)
    with _threads_set(threads) as nthreads:
        t0 = time.perf_counter()
        index = build_asym_index(codes, scales, bits, term, query_bits=query_bits, device=device, item_order=item_order)
        build_s = time.perf_counter() - t0
        index.threads = nthreads
        w = min(queries, 64)
        index.search(q[:w], k, None if qs is None else qs[:w])  # compile / autotune
        qps: dict[str, Any] = {}
        qps["hqgnn"] = queries / _best_time(lambda: index.search(q, k, query_scales=qs), device, reps=5)
        int8_bytes = None
        if index._gpu is not None and index._gpu.packed:  # the unpacked int8 device path, same run
            qps["hqgnn_int8"], int8_bytes = _int8_path_qps(index, codes, scales, term, q, qs, k, device)
        s, i = index.search(q, k, query_scales=qs)
        if device.startswith("cuda"):
            s, i = s.cpu().numpy(), i.cpu().numpy()
        rs, ri = reference_asym_search(q, codes, k, scales, term, qs, float_queries=query_bits == 0, block=16)
        exact = bool(np.array_equal(i, ri) and np.array_equal(s, rs))
        n_wrong = int((~np.all(i == ri, axis=1)).sum())
        qps["torch_float32"] = _torch_topk_qps(xq, xb, k, device, torch.float32)
        if device.startswith("cuda"):
            qps["torch_bf16"] = _torch_topk_qps(xq, xb, k, device, torch.bfloat16)
        fq, frec, notes, gt = ({}, {}, {}, None) if device.startswith("cuda") else _faiss_asym_baselines(
            xb, xq, k, query_bits, train_n, seed)
        qps.update(fq)
    recall = {"hqgnn": _recall(i, gt) if gt is not None else None, **frec}
    result: dict[str, Any] = {
        "qps": qps,
        "exact": exact,
        "exact_checked_queries": queries,
        "queries_not_exact": n_wrong,
        "recall_vs_float": recall,
        "faiss_notes": notes,
        "speedup_vs_faiss_pq_fastscan_32x4": (qps["hqgnn"] / qps["faiss_pq_fastscan_32x4"])
        if qps.get("faiss_pq_fastscan_32x4") else None,
        "speedup_vs_torch_float32": qps["hqgnn"] / qps["torch_float32"],
        "bytes_per_item": float(index.bytes_per_item),
        "bytes_per_item_int8": int8_bytes,
        "float32_bytes_per_item": dim * 4,
        "device": _device_name(device, nthreads),
        "backend": index.backend,
        "items": items,
        "dim": dim,
        "bits": bits,
        "item_order": item_order,
        "item_bits": bits,
        "query_bits": query_bits,
        "queries": queries,
        "k": k,
        "threads": nthreads,
        "seed": seed,
        "build_s": build_s,
    }
    if device.startswith("cuda"):
        result["speedup_vs_torch_bf16"] = qps["hqgnn"] / qps["torch_bf16"]
    try:
        result["loadavg_1min"] = float(open("/proc/loadavg").read().split()[0])  # shared machines: context
    except (OSError, ValueError, IndexError):
        pass
    return result
