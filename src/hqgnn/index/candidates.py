"""Per-query candidate buffers of the GPU two-phase searches: append the items whose key reaches a threshold."""

from __future__ import annotations

import torch

__all__ = ["append_candidates"]


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
