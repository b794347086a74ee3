"""Per-query candidate buffers of the GPU two-phase searches: append the items whose key reaches a threshold,
then rank the candidates exactly."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["append_candidates", "gathered_dot", "sorted_candidates", "top_candidates"]

# re-scoring gathers (queries, candidates, width) rows: at most this many elements at once (128 MiB of
# float64), whatever the width (a 4-layer code is d = 256) or the number of candidates per query
GATHER_ELEMS = 1 << 24


def append_candidates(key: torch.Tensor, thr: torch.Tensor, c0: int, counts: torch.Tensor, cand_ids: torch.Tensor,
                      cap: int) -> None:
    """Append, for each query row, the ids ``c0 + j`` of the columns with ``key >= thr[row]`` to its
    buffer ``cand_ids[row]`` (int32, ``cap`` slots) and count them all in ``counts`` (a row whose
    count passes ``cap`` overflowed: its caller redoes it exactly). The torch form of what the
    Triton kernels' EMIT pass does, so both backends fill the same buffers."""
    r, c = torch.nonzero(key >= thr[:, None], as_tuple=True)
    if r.numel() == 0:
        return
    # slot = running count + rank within this chunk's hits of the same row (nonzero is row-major)
    first = torch.searchsorted(r, r, right=False)
    slot = counts[r].to(torch.int64) + (torch.arange(r.numel(), device=key.device) - first)
    ok = slot < cap
    cand_ids[r[ok], slot[ok]] = (c[ok] + c0).to(torch.int32)
    counts += torch.bincount(r, minlength=counts.numel()).to(torch.int32)


def sorted_candidates(cand_ids: torch.Tensor, counts: torch.Tensor, cap: int, n: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The used part of the buffers as int64 ids in ascending order per row (the kernels append in
    any order; after a stable sort by key, equal keys then stay in id order: the tie-break), with a
    validity mask and the ids made safe to gather (invalid slots -> 0). Returns (ids, valid, safe)."""
    # slots fill from 0, so columns past the fullest row are empty: work on the used part only
    used = max(1, min(cap, int(counts.max().item()) if counts.numel() else 1))
    ids64 = cand_ids[:, :used].to(torch.int64)
    ids_sorted, _ = torch.sort(torch.where(ids64 >= 0, ids64, torch.full_like(ids64, n)), dim=1)
    valid = ids_sorted < n
    return ids_sorted, valid, torch.where(valid, ids_sorted, torch.zeros_like(ids_sorted))


def top_candidates(key: torch.Tensor, ids_sorted: torch.Tensor, valid: torch.Tensor, k: int,
                   exr: tuple[torch.Tensor, torch.Tensor] | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(key desc, id asc) top-k of each row's exact candidate keys, invalid slots and excluded
    (row, id) pairs removed; rows with fewer than k eligible candidates end in -inf / -1."""
    b = key.shape[0]
    key = torch.where(valid, key, torch.full_like(key, float("-inf")))
    if exr is not None and exr[0].numel():
        # excluded (row, id) pairs: membership by binary search on row * n + id
        ex_code = torch.sort(exr[0] * n + exr[1]).values
        code = (torch.arange(b, device=key.device)[:, None] * n + ids_sorted).reshape(-1)
        pos = torch.searchsorted(ex_code, code).clamp_max(ex_code.numel() - 1)
        hit = (ex_code[pos] == code).view(b, -1) & valid
        key = torch.where(hit, torch.full_like(key, float("-inf")), key)
    v, order = torch.sort(key, dim=1, descending=True, stable=True)  # ids sorted: ties by id
    kk = min(k, key.shape[1])
    v = v[:, :kk]
    out_i = ids_sorted.gather(1, order[:, :kk])
    out_i = torch.where(torch.isneginf(v), torch.full_like(out_i, -1), out_i)
    if kk < k:
        v = torch.cat([v, torch.full((b, k - kk), float("-inf"), dtype=v.dtype, device=v.device)], 1)
        out_i = torch.cat([out_i, torch.full((b, k - kk), -1, dtype=out_i.dtype, device=v.device)], 1)
    return v, out_i


def gathered_dot(rows: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor, vec: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor:
    """(B, m) dot products of each query ``vec[b]`` (B, w) with the rows ``rows(ids[b])`` (m, w) of
    its candidates, in ``dtype``, gathered a slice of queries at a time (GATHER_ELEMS)."""
    if ids.shape[0] == 0:
        return torch.empty(ids.shape, dtype=dtype, device=ids.device)
    step = max(1, GATHER_ELEMS // max(1, ids.shape[1] * vec.shape[1]))
    return torch.cat([torch.bmm(rows(ids[r0:r0 + step]).to(dtype), vec[r0:r0 + step, :, None].to(dtype)).squeeze(2)
                      for r0 in range(0, ids.shape[0], step)])
