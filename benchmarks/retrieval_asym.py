"""Asymmetric retrieval benchmark: b-bit items x b-bit or float queries vs torch and FAISS fast-scan / RaBitQ."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench_common import best_time, result_fields, threads_set, torch_topk_qps
from hqgnn.index import QueryCodes

__all__ = ["run_asym_bench"]


def _asym_data(items: int, dim: int, bits: int, queries: int, seed: int):
    """Float item/query embeddings with a shared offset (like trained embeddings, which are far
    from centred), the items' b-bit codes + per-row scales (hqgnn.quant's data_scale /
    integer_codes), and the query centre m with the per-item term t_i = s_i <m, c_i> it moves
    into the items: s_i <x_u - m, c_i> + t_i = s_i <x_u, c_i>, with a better-quantized query."""
    import torch

    from hqgnn.quant.estimators import integer_codes
    from hqgnn.quant.quantizer import data_scale

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
            qps[name] = xq.shape[0] / best_time(lambda: index.search(xq, k, **kw), "cpu", reps=5,
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
    """(queries/s, bytes per item) of the int8 device layout (``gpu_layout="int8"``) on the same queries."""
    from hqgnn.index import build_index

    alt = build_index(codes, index.format.replace(layout="int8"), scale=scales, term=term, device=device,
                      backend=index.backend)
    alt.search(QueryCodes(q[:64], None if qs is None else qs[:64]), k)  # compile
    rate = q.shape[0] / best_time(lambda: alt.search(QueryCodes(q, qs), k), device, reps=5)
    per_item = alt.memory_bytes() / alt.n
    alt = None  # freed before the caller goes on
    return rate, per_item


def run_asym_bench(items: int, dim: int, bits: int, query_bits: int, queries: int, k: int, device: str = "cpu",
                   seed: int = 0, threads: int | None = None, train_n: int = 65536, item_order: str = "renumbered",
                   value_dtype: str = "float16") -> dict:
    """Time exact asymmetric search (``bits``-bit items, ``query_bits``-bit or float queries) against
    torch matmul + topk and FAISS IndexPQFastScan 32x4 / 16x4, IndexRaBitQ, IndexRaBitQFastScan, all
    in one run on the same synthetic embeddings (see _asym_data).

    ``exact`` compares EVERY query's ids and scores with the float64 brute force
    (reference_asym_search, in query blocks; on CUDA with integer queries the same keys computed on
    the card, reference_asym_search_torch). ``recall`` is each engine's recall@k against the exact
    float top-k of the unquantized embeddings (what the FAISS methods approximate); FAISS entries are
    None where this faiss build rejects a setting (``faiss_notes`` says why). hqgnn and FAISS are
    timed alike: best of up to 5 runs within a 15 s budget, after a warm-up; ``loadavg_1min`` records
    how busy the machine was (shared machines make every number noisy).
    ``item_order``: none | scale (the index's int32 storage order, +4 B/item) | renumbered (items
    renumbered into that order before the build, so an index without an order array has its locality).
    ``value_dtype="float16"`` rounds the items' scales and terms to float16 first (the stored format
    of quant.scale_dtype=float16 runs; the index then holds 2 B for each).
    """
    import torch

    from hqgnn.index import CodeFormat, build_index
    from hqgnn.index.asym_layout import scale_order_of
    from hqgnn.index.queries import prepare_queries
    from hqgnn.index.reference import reference_asym_search
    from bench_common import reference_asym_search_torch

    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available")
    xb, xq, codes, scales, term, center = _asym_data(items, dim, bits, queries, seed)
    if value_dtype == "float16":  # as trained models store them (quant.scale_dtype=float16): 2 B each per item
        scales, term = (v.astype(np.float16).astype(np.float32) for v in (scales, term))
    elif value_dtype != "float32":
        raise ValueError(f"value_dtype must be float32 or float16, got {value_dtype!r}")
    q, qs = prepare_queries(xq, center=center, query_bits=query_bits)
    build_order = item_order
    if item_order == "renumbered":
        # the items numbered in the index's storage order first (as `hqgnn serve` does with a run: its
        # id table absorbs the permutation), then an index without an order array; the reference, the
        # torch and FAISS baselines all see the same renumbered items
        order = scale_order_of(scales, term, items)
        xb, codes, scales, term = xb[order], codes[order], scales[order], term[order]
        build_order = "none"
    with threads_set(threads) as nthreads:
        t0 = time.perf_counter()
        fmt = CodeFormat(dim=dim, item_bits=bits, query_bits=query_bits, term=True, item_order=build_order,
                         scale_dtype=value_dtype)
        index = build_index(codes, fmt, scale=scales, term=term, device=device)
        build_s = time.perf_counter() - t0
        index.threads = nthreads
        w = min(queries, 64)
        index.search(QueryCodes(q[:w], None if qs is None else qs[:w]), k)  # compile / autotune
        qps: dict[str, Any] = {}
        qps["hqgnn"] = queries / best_time(lambda: index.search(QueryCodes(q, qs), k), device, reps=5)
        int8_bytes = None
        if index._gpu is not None and index._gpu.packed:  # the unpacked int8 device path, same run
            qps["hqgnn_int8"], int8_bytes = _int8_path_qps(index, codes, scales, term, q, qs, k, device)
        s, i = index.search(QueryCodes(q, qs), k)
        if device.startswith("cuda"):
            s, i = s.cpu().numpy(), i.cpu().numpy()
        if device.startswith("cuda"):  # every query checked, on the card (the host would take minutes)
            rs, ri = reference_asym_search_torch(q, codes, k, scales, term, qs, device=device,
                                                 float_queries=query_bits == 0)
        else:
            rs, ri = reference_asym_search(q, codes, k, scales, term, qs, float_queries=query_bits == 0, block=16)
        exact = bool(np.array_equal(i, ri) and np.array_equal(s, rs))
        n_wrong = int((~np.all(i == ri, axis=1)).sum())
        qps["torch_float32"] = torch_topk_qps(xq, xb, k, device, torch.float32)
        if device.startswith("cuda"):
            qps["torch_bf16"] = torch_topk_qps(xq, xb, k, device, torch.bfloat16)
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
        "bytes_per_item_int8": int8_bytes,
        **result_fields(index, device, nthreads, build_s, qps, items=items, dim=dim, bits=bits, item_order=item_order,
                        value_dtype=value_dtype, item_bits=bits, query_bits=query_bits, queries=queries, k=k, seed=seed),
    }
    return result
