"""The one top-k toolkit of the torch searchers: excluded pairs as device tensors, the chunked exact top-k,
float32 rounding down, and the per-query candidate buffers of the two-phase search (the Triton scan appends
the items whose key reaches a threshold; these rank the candidates exactly)."""

from __future__ import annotations

from typing import Callable

import os
from typing import Any

import numpy as np
import torch

from ...topk import stable_topk
from ..common import Exclusion

__all__ = ["LazyKernel", "exclusion_rows", "exclusion_slice", "exclusion_tensors", "float32_at_most", "running_topk",
           "sorted_candidates", "top_candidates"]


Pairs = tuple[torch.Tensor, torch.Tensor]  # (query rows, item cols) of the excluded pairs, sorted by col


def exclusion_tensors(ex: Exclusion | None, b: int, n: int, device: torch.device) -> Pairs | None:
    """(rows, cols) of the excluded pairs of ``b`` queries that name one of the ``n`` items, sorted by column
    (so a chunk of items finds its pairs by binary search), on ``device``; None when there are none."""
    if ex is None or ex.nnz == 0:
        return None
    rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(ex.indptr))
    cols = ex.indices
    ok = (cols >= 0) & (cols < n)
    rows, cols = rows[ok], cols[ok]
    order = np.argsort(cols, kind="stable")
    return torch.from_numpy(rows[order]).to(device), torch.from_numpy(cols[order]).to(device)


def exclusion_rows(exr: Pairs | None, rows: torch.Tensor, b: int) -> Pairs | None:
    """The pairs of the queries ``rows`` (of ``b``), renumbered 0..len(rows)-1 (an overflow redo)."""
    if exr is None:
        return None
    remap = torch.full((b,), -1, dtype=torch.int64, device=rows.device)
    remap[rows] = torch.arange(rows.numel(), device=rows.device)
    r2 = remap[exr[0]]
    keep = r2 >= 0
    return r2[keep], exr[1][keep]


def exclusion_slice(exr: Pairs | None, r0: int, r1: int) -> Pairs | None:
    """The pairs of the queries r0..r1-1, renumbered from 0 (a batch of the queries)."""
    if exr is None:
        return None
    sel = (exr[0] >= r0) & (exr[0] < r1)
    return exr[0][sel] - r0, exr[1][sel]


def running_topk(chunk_keys: Callable[[int, int], torch.Tensor], n: int, b: int, k: int, step: int,
                 exr: Pairs | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` of ``b`` queries over ``n`` items, ``step`` items at a time: ``chunk_keys(c0, c1)``
    gives the float64 (b, c1 - c0) keys; excluded pairs are -inf; ties go to the lower id. Returns
    (keys, ids), (b, k), padded with (-inf, -1) where fewer than k items are eligible."""
    run_k = torch.empty((b, 0), dtype=torch.float64, device=device)
    run_i = torch.empty((b, 0), dtype=torch.int64, device=device)
    for c0 in range(0, n, step):
        c1 = min(n, c0 + step)
        key = chunk_keys(c0, c1)
        if exr is not None:
            lo = int(torch.searchsorted(exr[1], c0).item())
            hi = int(torch.searchsorted(exr[1], c1).item())
            if hi > lo:
                key[exr[0][lo:hi], exr[1][lo:hi] - c0] = float("-inf")
        ids = torch.arange(c0, c1, device=device).expand(b, -1)
        # running entries first: they have lower ids, so column order = id order on ties
        cand_k = torch.cat([run_k, key], 1)
        cand_i = torch.cat([run_i, ids], 1)
        v, pos = stable_topk(cand_k, min(k, cand_k.shape[1]))
        run_k, run_i = v, cand_i.gather(1, pos)
    run_i = torch.where(torch.isneginf(run_k), torch.full_like(run_i, -1), run_i)
    if run_k.shape[1] < k:
        pad = k - run_k.shape[1]
        run_k = torch.cat([run_k, torch.full((b, pad), float("-inf"), dtype=torch.float64, device=device)], 1)
        run_i = torch.cat([run_i, torch.full((b, pad), -1, dtype=torch.int64, device=device)], 1)
    return run_k, run_i


def float32_at_most(thr: torch.Tensor) -> torch.Tensor:
    """The largest float32 values <= the float64 ``thr`` (a threshold may only be rounded down)."""
    thr32 = thr.to(torch.float32)
    down = torch.nextafter(thr32, torch.full_like(thr32, float("-inf")))
    return torch.where(thr32.to(torch.float64) > thr, down, thr32)  # no boolean indexing: no host sync


def sorted_candidates(cand_ids: torch.Tensor, counts: torch.Tensor, used: int, n: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``used`` slots of the buffers (int32; slots past a row's count are unwritten) as ids in
    ascending order per row, empty slots as ``n`` (the kernels append in any order; after a stable sort by
    key, equal keys then stay in id order: the tie-break), with a validity mask. Returns (ids int32, valid)."""
    slot = torch.arange(used, dtype=counts.dtype, device=cand_ids.device)
    ids = torch.where(slot[None, :] < counts[:, None], cand_ids[:, :used], n)
    ids_sorted = torch.sort(ids, dim=1).values
    return ids_sorted, ids_sorted < n


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


class LazyKernel:
    """A Triton kernel built on first use, where CUDA (or Triton's CPU interpreter, TRITON_INTERPRET=1: the
    tests' CPU tensors) and an importable Triton are present; ``kernel`` is None elsewhere."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.kernel: Any = None
        self.checked = False

    def available(self) -> bool:
        if not self.checked:
            self.checked = True
            if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
                try:
                    self.kernel = self.build()
                except Exception:  # pragma: no cover - depends on the machine (no Triton, no compiler)
                    self.kernel = None
        return self.kernel is not None
