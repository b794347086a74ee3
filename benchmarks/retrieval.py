"""Retrieval benchmark: hqgnn code search vs torch matmul+topk and FAISS on synthetic codes, exactness checked."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench_common import best_time, result_fields, threads_set, torch_topk_qps
from hqgnn.index import QueryCodes

__all__ = ["run_retrieval_bench"]


def _synthetic(items: int, dim: int, bits: int, queries: int, seed: int):
    from hqgnn.index.packing import code_range

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
    out["faiss_flat_ip"] = qf.shape[0] / best_time(lambda: flat.search(qf, k), "cpu",
                                                    warm=lambda: flat.search(qf[:16], k))
    flat = None  # freed before the next engine is built
    if bits == 1:
        from hqgnn.faiss_export import faiss_binary_bytes, to_faiss_binary

        index = to_faiss_binary(codes)
        qb = faiss_binary_bytes(qcodes)
        out["faiss"] = qb.shape[0] / best_time(lambda: index.search(qb, k), "cpu",
                                                warm=lambda: index.search(qb[:16], k))
        out["faiss_index"] = "IndexBinaryFlat (Hamming, same task as hqgnn_hamming: 1-bit codes without scales)"
    else:
        qtype = faiss.ScalarQuantizer.QT_4bit if bits <= 4 else faiss.ScalarQuantizer.QT_8bit
        index = faiss.IndexScalarQuantizer(xf.shape[1], qtype, faiss.METRIC_INNER_PRODUCT)
        index.train(xf)
        index.add(xf)
        out["faiss"] = qf.shape[0] / best_time(lambda: index.search(qf, k), "cpu",
                                                warm=lambda: index.search(qf[:16], k))
        out["faiss_index"] = f"IndexScalarQuantizer({'QT_4bit' if bits <= 4 else 'QT_8bit'}, inner product)"
    return out


def run_retrieval_bench(items: int, dim: int, bits: int, queries: int, k: int, device: str = "cpu", seed: int = 0,
                        threads: int | None = None, query_bits: int | None = None, item_order: str = "renumbered",
                        value_dtype: str = "float16") -> dict:
    """Time exact code search against float baselines on random codes with per-row scales.

    Every engine is timed the same way: best of up to 5 runs (15 s budget) after a warm-up.
    Returns ``{"qps": {"hqgnn", "torch_float32", "torch_bf16" (CUDA only), "faiss", ...},
    "exact": bool, "bytes_per_item", "float32_bytes_per_item", "device", "items", "dim", "bits",
    "queries", "k", "threads", ...}``. For 1 bit, ``qps["hqgnn_hamming"]`` is the index without scales
    (pure Hamming ranking, the task of FAISS IndexBinaryFlat) and ``qps["hqgnn"]`` the scaled score. FAISS columns are
    None when faiss is not installed (e.g. on the GPU machine). Timings: best of up to 3 runs
    after a warm-up; ``exact`` checks a subset of queries against the float64 reference.
    """
    if query_bits is not None:
        from retrieval_asym import run_asym_bench

        return run_asym_bench(items, dim, bits, query_bits, queries, k, device=device, seed=seed, threads=threads,
                              item_order=item_order, value_dtype=value_dtype)
    import torch

    from hqgnn.index import CodeFormat, build_index, reference_search

    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available")
    codes, scales, qcodes, qscales = _synthetic(items, dim, bits, queries, seed)
    with threads_set(threads) as nthreads:
        t0 = time.perf_counter()
        index = build_index(codes, CodeFormat(dim=dim, item_bits=bits), scale=scales, device=device)
        build_s = time.perf_counter() - t0
        index.threads = nthreads
        # 1 bit: pure Hamming ranking (FAISS IndexBinaryFlat's task) is the format without scales
        indexes = {"hqgnn": (index, qscales, scales)}
        if bits == 1:
            plain = build_index(codes, CodeFormat(dim=dim, item_bits=1, scale="none"), device=device)
            plain.threads = nthreads
            indexes["hqgnn_hamming"] = (plain, None, None)
        qps: dict[str, Any] = {}
        exact = True
        nchk = min(queries, 8)
        for name, (ix, qs, s_items) in indexes.items():
            warm = qcodes[: min(queries, 64)]
            ix.search(QueryCodes(warm, None if qs is None else qs[: warm.shape[0]]), k)  # compile / autotune
            qps[name] = queries / best_time(lambda ix=ix, qs=qs: ix.search(QueryCodes(qcodes, qs), k), device)
            # exactness on a subset (the reference is a float64 brute force over all items)
            qsub = None if qs is None else qs[:nchk]
            s, i = ix.search(QueryCodes(qcodes[:nchk], qsub), k)
            if device.startswith("cuda"):
                s, i = s.cpu().numpy(), i.cpu().numpy()
            rs, ri = reference_search(qcodes[:nchk], codes, k, qsub, s_items)
            exact = exact and bool(np.array_equal(i, ri) and np.array_equal(s, rs))

        # float baselines on the dequantized embeddings (same ranking task in float)
        xf = codes.astype(np.float32) * scales[:, None]
        qf = qcodes.astype(np.float32) * qscales[:, None]
        qps["torch_float32"] = torch_topk_qps(qf, xf, k, device, torch.float32)
        if device.startswith("cuda"):
            qps["torch_bf16"] = torch_topk_qps(qf, xf, k, device, torch.bfloat16)
        del xf, qf
        faiss_info = _faiss_qps(bits, codes, scales, qcodes, qscales, k)
        faiss_index = faiss_info.pop("faiss_index", None)
        qps.update(faiss_info)

    return {
        "qps": qps,
        "speedup_vs_torch_float32": qps["hqgnn"] / qps["torch_float32"],
        "speedup_vs_faiss": (qps.get("hqgnn_hamming", qps["hqgnn"]) / qps["faiss"]) if qps.get("faiss") else None,
        "faiss_index": faiss_index,
        "exact": exact,
        **result_fields(index, device, nthreads, build_s, qps, items=items, dim=dim, bits=bits, queries=queries,
                        k=k, seed=seed),
    }
