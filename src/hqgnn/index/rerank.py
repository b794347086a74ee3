"""Two-stage retrieval (HashGNN protocol): top-C candidates by the codes, re-ranked exactly by float dot products."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .common import ArrayLike, ExcludeLike, ScaleLike, to_numpy
from .queries import QueryCodes

if TYPE_CHECKING:  # annotation only: base imports this module for CodeIndex.search_rerank
    from .base import CodeIndex

__all__ = ["search_rerank"]


def search_rerank(index: CodeIndex, query_codes: ArrayLike, query_float: ArrayLike, item_float: ArrayLike, k: int,
                  candidates: int = 100, query_scales: ScaleLike = None, exclude: ExcludeLike = None,
                  mode: str = "scaled") -> tuple[object, object]:
    """Top-``candidates`` items by the codes (exact, see :meth:`CodeIndex.search`), then the best
    ``k`` of those by the float inner product <query_float[u], item_float[i]>.

    The re-rank is exact among the candidates: inner products in float64 (CPU) / float64 (CUDA)
    of the given float32 embeddings, ordered by (score desc, item id asc); scores are returned as
    float32. ``candidates`` is raised to ``k`` if smaller. Returns numpy arrays for a CPU index and
    torch tensors on the device for a CUDA index, like ``search``; missing slots are -1 / -inf.
    """
    c = max(int(candidates), int(k))
    _, cand = index.search(QueryCodes(query_codes, query_scales), c, exclude=exclude, mode=mode)
    if index.device != "cpu":
        import torch

        from ..topk import stable_topk

        qf = torch.as_tensor(query_float, device=index.device).to(torch.float64)
        xf = torch.as_tensor(item_float, device=index.device)
        valid = cand >= 0
        safe = torch.where(valid, cand, torch.zeros_like(cand))
        # sort candidates by id first so stable_topk's column tie-break is the id tie-break
        safe_sorted, perm = torch.sort(torch.where(valid, safe, torch.full_like(safe, index.n)), dim=1)
        valid = safe_sorted < index.n
        safe_sorted = torch.where(valid, safe_sorted, torch.zeros_like(safe_sorted))
        s = torch.einsum("bd,bcd->bc", qf, xf[safe_sorted].to(torch.float64))
        s = torch.where(valid, s, torch.full_like(s, float("-inf")))
        v, pos = stable_topk(s, min(k, s.shape[1]))
        ids = torch.where(torch.isneginf(v), torch.full_like(pos, -1), safe_sorted.gather(1, pos))
        return v.to(torch.float32), ids
    qf = np.asarray(to_numpy(query_float), dtype=np.float64)
    if qf.ndim == 1:
        qf = qf[None, :]
    xf = np.asarray(to_numpy(item_float))
    b = cand.shape[0]
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    s = np.einsum("bd,bcd->bc", qf, xf[safe].astype(np.float64))
    s[~valid] = -np.inf
    order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), -s), axis=-1)[:, :k]
    scores = np.take_along_axis(s, order, 1)
    ids = np.take_along_axis(cand, order, 1)
    ids[np.isneginf(scores)] = -1
    out_s = np.full((b, k), -np.inf, np.float32)
    out_i = np.full((b, k), -1, np.int64)
    out_s[:, : scores.shape[1]] = scores
    out_i[:, : ids.shape[1]] = ids
    return out_s, out_i
