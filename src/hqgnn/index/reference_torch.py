"""The float64 brute-force asymmetric reference on a torch device: every query of a large benchmark checked on the GPU."""

from __future__ import annotations

import numpy as np
import torch

from .common import normalize_item_scale, normalize_item_term, normalize_query_scale, to_numpy

__all__ = ["reference_asym_search_torch"]


def reference_asym_search_torch(queries: object, item_codes: object, k: int, item_scale: object = None,
                                item_term: object = None, query_scales: object = None, device: object = "cpu",
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
        rows, cols, vals = rows[order].cpu().numpy(), cols[order].cpu().numpy(), vals[order].cpu().numpy()
        start = np.searchsorted(rows, np.arange(r1 - r0))
        rank = np.arange(rows.size) - start[rows]
        keep = rank < kk
        ids[r0 + rows[keep], rank[keep]] = cols[keep]
        scores[r0 + rows[keep], rank[keep]] = vals[keep].astype(np.float32)
    return scores, ids
