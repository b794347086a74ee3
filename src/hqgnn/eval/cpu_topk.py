"""Fused CPU top-K for float embeddings: blocked scores + a bounded heap, never the full score matrix.

On a 2-core machine the (users x items) score matrix of full-ranking evaluation costs more to write
and re-read than to compute. Here each thread takes a block of users, scores one cache-sized item
block at a time and keeps only a size-K heap per user. Ties go to the lower item index, exactly as
:func:`hqgnn.topk.stable_topk`.

Scores are **bit-identical whatever the batch**: every score is the float32 sum
``((u_0 i_0 + u_1 i_1) + u_2 i_2) + ...`` in dimension order, one multiply-add per dimension (fused
where the CPU has FMA, in every code path alike), however many users share the call and wherever a
user sits in it. A BLAS GEMM does not promise this (its
kernels, and so its summation order, depend on the matrix shape, the CPU and the thread count), and
users expect ``recommend([u])`` to equal row ``u`` of ``recommend(users)`` (BENCHMARKS § 3 measures
the cost). The register-blocked loop below computes four users at a time and the leftover users one
at a time, with the same per-score operations.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

USER_BLOCK = 128
ITEM_BLOCK = 1024


@numba.njit(inline="always")
def _worse(v1: float, i1: int, v2: float, i2: int) -> bool:
    return v1 < v2 or (v1 == v2 and i1 > i2)


@numba.njit(inline="always")
def _sift_down(hv, hi, k):
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
def _sort_heap(v, ix):
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


@numba.njit(fastmath={"contract"}, cache=True)
def _block_scores(ublk, block, scores):
    """scores[r, i] = sum_d ublk[r, d] * block[d, i], summed in d order (module docstring). The inner loop
    runs over items, so it vectorizes across items without reordering any one sum; "contract" (FMA) is
    the only fast-math flag, and no reassociation is allowed."""
    nb, dim = ublk.shape
    width = block.shape[1]
    r = 0
    while r + 4 <= nb:
        s0, s1, s2, s3 = scores[r], scores[r + 1], scores[r + 2], scores[r + 3]
        for i in range(width):
            s0[i] = 0.0
            s1[i] = 0.0
            s2[i] = 0.0
            s3[i] = 0.0
        for d in range(dim):
            a0, a1, a2, a3 = ublk[r, d], ublk[r + 1, d], ublk[r + 2, d], ublk[r + 3, d]
            b = block[d]
            for i in range(width):
                bi = b[i]
                s0[i] += a0 * bi
                s1[i] += a1 * bi
                s2[i] += a2 * bi
                s3[i] += a3 * bi
        r += 4
    while r < nb:
        s0 = scores[r]
        for i in range(width):
            s0[i] = 0.0
        for d in range(dim):
            a0 = ublk[r, d]
            b = block[d]
            for i in range(width):
                s0[i] += a0 * b[i]
        r += 1


@numba.njit(parallel=True, cache=True)
def _float_topk(user_emb, item_blocks, n_items, users, ex_indptr, ex_indices, k, out_v, out_i):
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
            _block_scores(ublk, item_blocks[j], scores)
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
    ex_indices: torch.Tensor, k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items by inner product for ``users``, seen items (CSR rows, sorted here if needed) excluded.

    Returns CPU tensors (scores, item ids), each (len(users), k); slots with no item left hold -inf / -1.
    """
    n_items = item_emb.shape[0]
    k = min(k, n_items)
    ie = item_emb.detach().cpu().float().numpy()
    n_blocks = (n_items + ITEM_BLOCK - 1) // ITEM_BLOCK
    padded = np.zeros((n_blocks * ITEM_BLOCK, ie.shape[1]), dtype=np.float32)
    padded[:n_items] = ie
    # (blocks, dim, ITEM_BLOCK), each block C-contiguous for the GEMM
    blocks = np.ascontiguousarray(padded.reshape(n_blocks, ITEM_BLOCK, -1).transpose(0, 2, 1))
    ue = np.ascontiguousarray(user_emb.detach().cpu().float().numpy())
    u = users.cpu().numpy().astype(np.int64)
    out_v = np.empty((len(u), k), dtype=np.float32)
    out_i = np.empty((len(u), k), dtype=np.int64)
    # the kernel scans each exclusion row forwards: rows must be sorted (an unsorted row leaks seen
    # items and can index out of its block), so normalise them first (sorts only where needed)
    from ..index.common import normalize_exclusion

    ip = ex_indptr.cpu().numpy().astype(np.int64)
    ex = normalize_exclusion((ip, ex_indices.cpu().numpy().astype(np.int64)), len(ip) - 1, n_items)
    _float_topk(ue, blocks, n_items, u, ex.indptr, ex.indices, k, out_v, out_i)
    out_i[np.isneginf(out_v)] = -1
    return torch.from_numpy(out_v), torch.from_numpy(out_i)
