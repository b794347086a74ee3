"""Deterministic top-k: the k largest scores per row, ties broken by lower column index (any device)."""

from __future__ import annotations

import torch

__all__ = ["stable_topk"]

# Above this many (rows x columns) elements the tie-breaking cumsum is done in row chunks, so the
# int32 scratch stays bounded (~1 GiB) while small/medium inputs stay one vectorized pass.
_MAX_ELEMS_PER_PASS = 1 << 28


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(values, indices)`` of the ``k`` largest entries of each row of a ``(B, n)`` tensor.

    Order is (value descending, column index ascending), so ties always go to the lower index --
    unlike ``torch.topk``, whose tie order is unspecified and differs between CPU and CUDA.
    ``k`` is clamped to ``n``; ``-inf`` entries are ordinary (lowest) values; NaN is treated as
    ``-inf``. Works on any device and float dtype; indices are int64.

    Method: ``torch.topk`` gives the k-th largest value ``t`` per row; every entry ``> t`` is in
    the answer, and the remaining slots are the lowest-index entries ``== t`` (picked with a
    cumulative count). The k selected entries are then stably sorted by value.
    """
    if scores.dim() != 2:
        raise ValueError(f"stable_topk expects a 2-D (B, n) tensor, got shape {tuple(scores.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    b, n = scores.shape
    k = min(int(k), n)
    if k == 0 or b == 0:
        return (scores.new_empty((b, k)), torch.empty((b, k), dtype=torch.int64, device=scores.device))
    if scores.dtype.is_floating_point and bool(torch.isnan(scores).any()):
        scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    rows_per_pass = max(1, _MAX_ELEMS_PER_PASS // max(n, 1))
    if b <= rows_per_pass:
        return _stable_topk_pass(scores, k)
    vals, idxs = [], []
    for r0 in range(0, b, rows_per_pass):
        v, i = _stable_topk_pass(scores[r0 : r0 + rows_per_pass], k)
        vals.append(v)
        idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


def _stable_topk_pass(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, n = scores.shape
    if k == n:
        # every column is selected: a stable sort alone gives the exact order
        v, i = torch.sort(scores, dim=1, descending=True, stable=True)
        return v, i
    # Fast path: top-(k+1). Where the (k+1)-th value is strictly below the k-th, the selected set is
    # unique and only its order among equal values needs fixing (a cheap (B, k) sort). Only rows with
    # a tie across the boundary take the full threshold pass below.
    top_v, top_i = torch.topk(scores, k + 1, dim=1, largest=True, sorted=True)
    boundary_tie = top_v[:, k] == top_v[:, k - 1]
    v, i = _order_by_value_then_index(top_v[:, :k], top_i[:, :k])
    if bool(boundary_tie.any()):
        rows = boundary_tie.nonzero().squeeze(1)
        tv, ti = _threshold_pass(scores[rows], k)
        v, i = v.clone(), i.clone()
        v[rows], i[rows] = tv, ti
    return v, i


def _order_by_value_then_index(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    by_index = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, by_index), idx.gather(1, by_index)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, order), idx.gather(1, order)


def _threshold_pass(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, n = scores.shape
    thr = torch.topk(scores, k, dim=1, largest=True, sorted=True).values[:, k - 1 : k]  # (B, 1)
    gt = scores > thr
    eq = scores == thr
    need = k - gt.sum(dim=1, keepdim=True, dtype=torch.int32)  # >= 1 slots left for ties per row
    # rank of each tie within its row (1-based, by column); only the first `need` ties are taken
    tie_rank = torch.cumsum(eq, dim=1, dtype=torch.int32)
    sel = gt | (eq & (tie_rank <= need))
    # exactly k selected per row, and nonzero() lists them row-major, i.e. by ascending column
    cols = sel.nonzero()[:, 1].view(b, k)
    vals = scores.gather(1, cols)
    v, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return v, cols.gather(1, order)
