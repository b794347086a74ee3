"""Brute-force float64 reference top-k every fast path is tested against (NumPy, and torch on a device for large
benchmarks): every format (float or b-bit queries, item scales and terms)."""

from __future__ import annotations

import numpy as np
import torch

from .common import ArrayLike, DeviceLike, ExcludeLike, ScaleLike, normalize_exclusion, to_numpy
from .common import normalize_item_scale, normalize_item_term, normalize_query_scale

__all__ = ["reference_asym_scores", "reference_asym_search", "reference_asym_search_torch", "reference_search"]


def reference_search(query_codes: ArrayLike, item_codes: ArrayLike, k: int, query_scales: ScaleLike = None,
                     item_scales: ScaleLike = None, exclude: ExcludeLike = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of code queries by brute force: :func:`reference_asym_search` without terms, the key
    ``(<c_u, c_i> * s_i) * s_u`` (the dequantized inner product; with no scales ``d - 2 * hamming``
    for 1-bit codes). (scores float32 (B, k), ids int64 (B, k)); key desc, id asc; -1 / -inf padding."""
    return reference_asym_search(query_codes, item_codes, k, item_scale=item_scales, query_scales=query_scales,
                                 exclude=exclude)


def reference_asym_scores(queries: ArrayLike, item_codes: ArrayLike, item_scale: ScaleLike = None, item_term: ScaleLike = None,
                          query_scales: ScaleLike = None, float_queries: bool = False) -> np.ndarray:
    """(B, n) float64 keys by brute force: ``(ip * s_i) * s_u + t_i`` for integer queries (ip exact),
    ``dot64(x_u, c_i) * s_i + t_i`` for float queries."""
    ic = to_numpy(item_codes).astype(np.float64)
    n = ic.shape[0]
    s_i = normalize_item_scale(item_scale, n).dense(n).astype(np.float64)
    t_i = normalize_item_term(item_term, n).dense(n).astype(np.float64)
    q = to_numpy(queries).astype(np.float64)
    ip = q @ ic.T
    if float_queries:
        return ip * s_i[None, :] + t_i[None, :]
    s_u = normalize_query_scale(query_scales, q.shape[0]).astype(np.float64)
    return (ip * s_i[None, :]) * s_u[:, None] + t_i[None, :]


def reference_asym_search(queries: ArrayLike, item_codes: ArrayLike, k: int, item_scale: ScaleLike = None,
                          item_term: ScaleLike = None, query_scales: ScaleLike = None, exclude: ExcludeLike = None,
                          float_queries: bool = False, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by float64 brute force, ``block`` queries at a time (so 1M items x 1000 queries
    fit in memory): (scores float32 (B, k), ids int64 (B, k)); key desc, id asc; -1 / -inf padding."""
    q = to_numpy(queries)
    b = q.shape[0]
    ic = to_numpy(item_codes)
    n = ic.shape[0]
    ex = normalize_exclusion(exclude, b, n)
    qs = None if float_queries else normalize_query_scale(query_scales, b)
    ids = np.full((b, k), -1, np.int64)
    scores = np.full((b, k), -np.inf, np.float32)
    for r0 in range(0, b, block):
        r1 = min(b, r0 + block)
        key = reference_asym_scores(q[r0:r1], ic, item_scale, item_term, None if qs is None else qs[r0:r1],
                                    float_queries)
        if ex is not None and ex.nnz:
            a, e = ex.indptr[r0], ex.indptr[r1]
            rows = np.repeat(np.arange(r1 - r0), np.diff(ex.indptr[r0 : r1 + 1]))
            cols = ex.indices[a:e]
            ok = (cols >= 0) & (cols < n)
            key[rows[ok], cols[ok]] = -np.inf
        kk = min(k, n)
        if kk == 0:
            continue
        part = np.argpartition(-key, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (r1 - r0, 1))
        thr = np.take_along_axis(key, part, 1).min(axis=1)
        for r in range(r1 - r0):
            cand = np.flatnonzero(key[r] >= thr[r])  # all ties of the k-th key, so id order is exact
            order = cand[np.lexsort((cand, -key[r, cand]))][:k]
            order = order[key[r, order] > -np.inf]
            ids[r0 + r, : order.size] = order
            scores[r0 + r, : order.size] = key[r, order].astype(np.float32)
    return scores, ids


def reference_asym_search_torch(queries: ArrayLike, item_codes: ArrayLike, k: int, item_scale: ScaleLike = None,
                                item_term: ScaleLike = None, query_scales: ScaleLike = None, device: DeviceLike = "cpu",
                                block: int = 256, float_queries: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hqgnn.index.reference.reference_asym_search`, computed with torch on ``device``.

    The same float64 keys, ``(ip * s_i) * s_u + t_i`` for integer queries (ip integer-valued, so exact in
    any summation order; eager elementwise ops, so no fused multiply-add) and ``ip * s_i + t_i`` for float
    queries (ip = the float64 dot of float32 queries with integer codes: exact products, and a sum exact in
    float64 whenever the query's entries span less than 2^(29 - log2 d), as for the NumPy reference), and
    the same order (key descending, id ascending, ties at the k-th key resolved exactly). No exclusion.
    Returns numpy (scores float32, ids int64).
    """
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
