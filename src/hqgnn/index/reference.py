"""Brute-force float64 reference top-k (dequantize, matmul, mask, lexsort) every fast path is tested against."""

from __future__ import annotations

import numpy as np

from .common import normalize_exclusion, normalize_item_scale, normalize_query_scale, to_numpy

__all__ = ["reference_search", "reference_scores"]


def reference_scores(query_codes: object, item_codes: object, query_scales: object = None,
                     item_scales: object = None, mode: str = "scaled") -> np.ndarray:
    """(B, n) float64 ranking keys.

    scaled: the dequantized inner product <c_u s_u, c_i s_i>, evaluated as ``(<c_u, c_i> * s_i) * s_u``
    -- the integer inner product is exact in float64 and so is its product with a float32 scale,
    whereas a float64 matmul of the dequantized vectors rounds each term (~1e-16) and can break
    exact ties differently per item. hamming (1-bit codes): ``d - 2 * hamming`` = <c_u, c_i>,
    scales ignored.
    """
    qc = to_numpy(query_codes).astype(np.float64)
    ic = to_numpy(item_codes).astype(np.float64)
    ip = qc @ ic.T  # integer-valued, exact for d * 2^14 < 2^53
    if mode == "hamming":
        return ip
    if mode != "scaled":
        raise ValueError(f"mode must be 'scaled' or 'hamming', got {mode!r}")
    s_i = normalize_item_scale(item_scales, ic.shape[0]).dense(ic.shape[0]).astype(np.float64)
    s_u = normalize_query_scale(query_scales, qc.shape[0]).astype(np.float64)
    return (ip * s_i[None, :]) * s_u[:, None]


def reference_search(query_codes: object, item_codes: object, k: int, query_scales: object = None,
                     item_scales: object = None, exclude: object = None,
                     mode: str = "scaled") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force: (scores float32 (B, k), ids int64 (B, k)).

    Order: key descending, item id ascending; excluded items never appear; missing slots (k > #
    eligible items) are id -1 with score -inf. Scores are the float64 keys rounded to float32.
    """
    key = reference_scores(query_codes, item_codes, query_scales, item_scales, mode)
    b, n = key.shape
    ex = normalize_exclusion(exclude, b, n)
    if ex is not None and ex.nnz:
        rows = np.repeat(np.arange(b), np.diff(ex.indptr))
        ok = (ex.indices >= 0) & (ex.indices < n)
        key[rows[ok], ex.indices[ok]] = -np.inf
    ids = np.full((b, k), -1, np.int64)
    scores = np.full((b, k), -np.inf, np.float32)
    cols = np.arange(n)
    for r in range(b):
        order = np.lexsort((cols, -key[r]))[:k]  # primary: key desc; secondary: id asc
        order = order[key[r, order] > -np.inf]
        m = order.size
        ids[r, :m] = order
        scores[r, :m] = key[r, order].astype(np.float32)
    return scores, ids
