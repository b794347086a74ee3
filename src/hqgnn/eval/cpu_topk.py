"""Fused CPU top-K for float embeddings: blocked scores + a bounded heap, never the full score matrix.

On a 2-core machine the (users x items) score matrix of full-ranking evaluation costs more to write
and re-read than to compute. Here each thread takes a block of 128 users, scores one cache-sized
block of 1,024 items at a time (:mod:`hqgnn.eval.float_scores`: every score in a fixed order, so a
user's scores do not depend on the batch) and keeps only a size-K heap per user. Ties go to the lower
item index, exactly as :func:`hqgnn.topk.stable_topk`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .float_scores import ITEM_BLOCK, USE_IR, _block_scores, _pack_items  # noqa: F401  (USE_IR: tests switch it)

USER_BLOCK = 128


def pack_items(item_emb: torch.Tensor) -> np.ndarray:
    """The item table in the kernels' 16-item panels (:func:`float_topk_cpu`'s ``item_blocks``)."""
    return _pack_items(item_emb.detach().cpu().float().numpy())


@numba.njit(inline="always")
def _worse(v1: float, i1: int, v2: float, i2: int) -> bool:
    return v1 < v2 or (v1 == v2 and i1 > i2)


@numba.njit(inline="always")
def _sift_down(hv: np.ndarray, hi: np.ndarray, k: int) -> None:
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= k:
            break
        child = left
        right = left + 1
        if right < k and _worse(hv[right], hi[right], hv[left], hi[left]):
            child = right
        if _worse(hv[child], hi[child], hv[pos], hi[pos]):
            hv[pos], hv[child] = hv[child], hv[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            break


@numba.njit(inline="always")
def _sort_heap(v: np.ndarray, ix: np.ndarray) -> None:
    """Order one heap by (score desc, index asc): insertion sort of k entries."""
    for a in range(1, len(v)):
        va, ia = v[a], ix[a]
        b = a - 1
        while b >= 0 and _worse(v[b], ix[b], va, ia):
            v[b + 1] = v[b]
            ix[b + 1] = ix[b]
            b -= 1
        v[b + 1] = va
        ix[b + 1] = ia




@numba.njit(parallel=True, cache=True)
def _float_topk(
    user_emb: np.ndarray, item_blocks: np.ndarray, n_items: int, users: np.ndarray, ex_indptr: np.ndarray,
    ex_indices: np.ndarray, k: int, out_v: np.ndarray, out_i: np.ndarray, use_ir: bool,
) -> None:
    dim = user_emb.shape[1]
    n_blocks = (len(users) + USER_BLOCK - 1) // USER_BLOCK
    for blk in numba.prange(n_blocks):
        b0 = blk * USER_BLOCK
        nb = min(len(users), b0 + USER_BLOCK) - b0
        hv = np.full((nb, k), -np.inf, dtype=np.float32)
        hi = np.full((nb, k), np.int64(1) << 62, dtype=np.int64)
        ptr = np.empty(nb, dtype=np.int64)
        ublk = np.empty((nb, dim), dtype=np.float32)
        scores = np.empty((nb, ITEM_BLOCK), dtype=np.float32)  # one item block's scores, stays in cache
        for r in range(nb):
            ptr[r] = ex_indptr[users[b0 + r]]
            ublk[r] = user_emb[users[b0 + r]]
        for j in range(item_blocks.shape[0]):
            i0 = j * ITEM_BLOCK
            i1 = min(n_items, i0 + ITEM_BLOCK)
            _block_scores(ublk, item_blocks[j], scores, use_ir)
            for r in range(nb):
                u = users[b0 + r]
                p = ptr[r]
                end = ex_indptr[u + 1]
                while p < end and ex_indices[p] < i1:  # sorted CSR row: this block's seen items
                    scores[r, ex_indices[p] - i0] = -np.inf
                    p += 1
                ptr[r] = p
                rv = hv[r]
                ri = hi[r]
                for i in range(i0, i1):
                    s = scores[r, i - i0]
                    # items arrive in increasing index, so an equal score never displaces a real entry
                    if _worse(rv[0], ri[0], s, i):
                        rv[0] = s
                        ri[0] = i
                        _sift_down(rv, ri, k)
        for r in range(nb):
            _sort_heap(hv[r], hi[r])
            out_v[b0 + r] = hv[r]
            out_i[b0 + r] = hi[r]


def float_topk_cpu(
    user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, ex_indptr: torch.Tensor,
    ex_indices: torch.Tensor, k: int, item_blocks: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items by inner product for ``users``, seen items (CSR rows, sorted here if needed) excluded.

    ``item_blocks``: ``pack_items(item_emb)`` when the caller keeps it across calls (a batched evaluation or
    a server ranks many batches against one table; packing copies the table twice). Returns CPU tensors
    (scores, item ids), each (len(users), k); slots with no item left hold -inf / -1.
    """
    n_items = item_emb.shape[0]
    k = min(k, n_items)
    blocks = pack_items(item_emb) if item_blocks is None else item_blocks
    ue = np.ascontiguousarray(user_emb.detach().cpu().float().numpy())
    u = users.cpu().numpy().astype(np.int64)
    out_v = np.empty((len(u), k), dtype=np.float32)
    out_i = np.empty((len(u), k), dtype=np.int64)
    # the kernel scans each exclusion row forwards: rows must be sorted (an unsorted row leaks seen
    # items and can index out of its block), so normalise them first (sorts only where needed)
    from ..index.common import normalize_exclusion

    ip = ex_indptr.cpu().numpy().astype(np.int64)
    ex = normalize_exclusion((ip, ex_indices.cpu().numpy().astype(np.int64)), len(ip) - 1, n_items)
    assert ex is not None  # given (indptr, indices), never None
    _float_topk(ue, blocks, n_items, u, ex.indptr, ex.indices, k, out_v, out_i, USE_IR)
    out_i[np.isneginf(out_v)] = -1
    return torch.from_numpy(out_v), torch.from_numpy(out_i)
