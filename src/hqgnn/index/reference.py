"""Brute-force float64 reference top-k every fast path is tested against (NumPy; the same on a GPU for large
benchmarks is ``benchmarks/bench_common.reference_asym_search_torch``): every format."""

from __future__ import annotations

import numpy as np

from .common import ArrayLike, ExcludeLike, ScaleLike, normalize_exclusion, to_numpy
from .common import normalize_item_scale, normalize_item_term, normalize_query_scale

__all__ = ["reference_asym_scores", "reference_asym_search", "reference_search"]


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
