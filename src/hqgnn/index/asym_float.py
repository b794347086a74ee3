"""Float queries on AsymCodeIndex's CPU layout: 8-bit candidates with a proven error margin, exact float64 re-score."""

from __future__ import annotations

from typing import Any

import numpy as np

from .asym_layout import gather_rows
from .common import Exclusion, subset_exclusion
from .packing import code_range
from .queries import float_query_err, quantize_float_queries

__all__ = ["search_float", "to_scores"]

_QMAX = 119  # float queries' code range [-119, 119]: c = 16 h + l with rounded h and |l| <= 8 (asym_layout.lut_planes)


def to_scores(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float32 scores of float64 keys; -inf where no item (id -1)."""
    with np.errstate(invalid="ignore", over="ignore"):
        s = keys.astype(np.float32)
    s[ids < 0] = -np.inf
    return s


def search_float(index: Any, x: np.ndarray, k: int, ex: Exclusion | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of float queries ``x`` (B, d) on a CPU :class:`AsymCodeIndex` (module docstring of
    hqgnn.index.asym): the 8-bit search returns K' candidates, re-scored exactly; accepted once the K'-th
    approximate key plus the error bound is below the exact k-th best candidate; otherwise K' doubles for that query."""
    b = x.shape[0]
    qc, delta, resid = quantize_float_queries(x, _QMAX)
    cmaxabs = float(max(abs(v) for v in code_range(index.item_bits)))
    smax = float(np.abs(index._scale.values.astype(np.float64)).max()) if index._scale.values.size else 0.0
    tabs = float(np.abs(index._term.values.astype(np.float64)).max()) if index._term.values.size else 0.0
    x1 = np.abs(x.astype(np.float64)).sum(axis=1)
    err = float_query_err(resid, x1, delta.astype(np.float64), smax * cmaxabs, _QMAX, index.dim, tabs)
    out_s = np.full((b, k), -np.inf, np.float32)
    out_i = np.full((b, k), -1, np.int64)
    todo = np.arange(b)
    kk = min(index.n, k + 16 + k // 4)
    while todo.size:
        keys, ids = index._search_int(qc[todo], delta[todo], kk, subset_exclusion(ex, todo))
        s, i, kth = _rescore(index, x[todo], ids, k)
        if kk >= index.n:
            done = np.ones(todo.size, bool)
        else:
            # an item outside the candidates has an approximate key <= the K'-th, so an exact key
            # <= that + err: below the exact k-th best of the candidates, it cannot be in the top k
            done = ((ids >= 0).sum(axis=1) < kk) | (keys[:, kk - 1] + err[todo] < kth)
        out_s[todo[done]], out_i[todo[done]] = s[done], i[done]
        todo = todo[~done]
        kk = min(index.n, 2 * kk)
    return out_s, out_i


def _rescore(index: Any, x: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 keys dot(x, c_i) * s_i + t_i of candidate ids (-1 = none), top k sorted: (scores
    float32, ids, the k-th best float64 key: -inf where fewer than k candidates)."""
    b, m = cand.shape
    ok = cand >= 0
    flat = np.where(ok, cand, 0).reshape(-1)
    pos = flat if index._order is None else index._inv_order()[flat].astype(np.int64)
    rows = gather_rows(index._packed, index._layout, index.n, index.dim, index._ngp, pos)
    dots = np.einsum("bd,bmd->bm", x.astype(np.float64), rows.astype(np.float64).reshape(b, m, index.dim))
    s = index._scale.values[pos * index._scale.stride].astype(np.float64).reshape(b, m)
    t = index._term.values[pos * index._term.stride].astype(np.float64).reshape(b, m)
    keys = np.where(ok, dots * s + t, -np.inf)
    ids = np.where(ok, cand, np.iinfo(np.int64).max)
    order = np.lexsort((ids, -keys), axis=-1)[:, :k]
    keys = np.take_along_axis(keys, order, 1)
    ids = np.take_along_axis(ids, order, 1)
    ids = np.where(np.isfinite(keys), ids, -1)
    s_out = np.full((b, k), -np.inf, np.float32)
    i_out = np.full((b, k), -1, np.int64)
    s_out[:, : keys.shape[1]] = to_scores(keys, ids)
    i_out[:, : ids.shape[1]] = ids
    kth = keys[:, k - 1] if keys.shape[1] >= k else np.full(b, -np.inf)
    return s_out, i_out, kth
