"""Argument normalization of the code index: devices, backends, scales and terms, the seen-item exclusion CSR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import scipy.sparse
    import torch

# what the index functions accept: numpy arrays, torch tensors (read through ``__array__``), lists
DeviceLike = Union[str, "torch.device"]  # "cpu" or "cuda[:i]"
ScaleLike = Union[ArrayLike, None]  # None (1), one value, or one per row
ExcludeLike = Union[tuple[ArrayLike, ArrayLike], "scipy.sparse.spmatrix", None]  # CSR rows of item ids per query

BACKENDS = ("auto", "numba", "torch", "triton")  # the index's kernels: numba on the CPU, torch or Triton on a device

__all__ = ["BACKENDS", "ArrayLike", "DeviceLike", "ExcludeLike", "ScaleLike", "Exclusion", "ItemScale", "compact_values",
           "normalize_exclusion", "normalize_item_scale", "normalize_item_term", "normalize_query_scale",
           "subset_exclusion", "unpermute", "to_numpy"]


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy array of ``x`` (a torch tensor is detached and copied to the host)."""
    import torch

    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass(frozen=True)
class ItemScale:
    """Item scales: ``values`` float32 (float16 in AsymCodeIndex's compacted records) of length n
    (per row) or 1 (per tensor); ``stride`` 1 or 0.

    ``per_row`` tells whether the index really stores n scales (memory accounting); ``None`` scale
    means 1.0 and is stored as a per-tensor scale.
    """

    values: np.ndarray
    stride: int
    per_row: bool
    given: bool  # False when no scale was passed (plain codes)

    def dense(self, n: int) -> np.ndarray:
        return self.values if self.stride == 1 else np.full(n, self.values[0], dtype=np.float32)


def normalize_item_scale(scale: ScaleLike, n: int, what: str = "scales", default: float = 1.0) -> ItemScale:
    """Item scales (or terms: ``what="terms"``, ``default=0``): None (``default``, not stored), one value
    (stride 0) or one per item (stride 1), finite float32."""
    if scale is None:
        return ItemScale(np.full(1, default, np.float32), 0, False, False)
    arr = np.ascontiguousarray(to_numpy(scale).astype(np.float32, copy=False).reshape(-1))
    if arr.size != n and not (arr.size == 1 and n != 1):
        raise ValueError(f"item {what} must be a scalar or have one value per item ({n}), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"item {what} must be finite")
    return ItemScale(arr, 0, False, True) if arr.size == 1 and n != 1 else ItemScale(arr, 1, True, True)


def normalize_item_term(term: ScaleLike, n: int) -> ItemScale:
    """Item terms like item scales (None -> 0): an ItemScale-shaped record."""
    return normalize_item_scale(term, n, "terms", 0.0)


def normalize_query_scale(scale: ScaleLike, b: int) -> np.ndarray:
    """Query scales -> float32 (b,); None means 1.0."""
    if scale is None:
        return np.ones(b, np.float32)
    arr = to_numpy(scale).astype(np.float32, copy=False).reshape(-1)
    if arr.size == 1:
        return np.full(b, arr[0], np.float32)
    if arr.size != b:
        raise ValueError(f"query scales must be a scalar or one per query ({b}), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("query scales must be finite")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class Exclusion:
    """Seen items per query as CSR: ``indices[indptr[q]:indptr[q+1]]`` sorted ascending (int64)."""

    indptr: np.ndarray
    indices: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.indices.size)


def normalize_exclusion(exclude: ExcludeLike, b: int, n: int) -> Exclusion | None:
    """Accept ``(indptr, indices)`` or a scipy CSR matrix of shape (b, n); sort each row."""
    if exclude is None:
        return None
    if hasattr(exclude, "tocsr") and hasattr(exclude, "indptr"):
        m = cast(Any, exclude).tocsr()
        indptr, indices = m.indptr, m.indices
    else:
        try:
            indptr, indices = exclude
        except (TypeError, ValueError):
            raise TypeError("exclude must be (indptr, indices) or a scipy.sparse CSR matrix") from None
    indptr = to_numpy(indptr).astype(np.int64, copy=False).reshape(-1)
    indices = to_numpy(indices).astype(np.int64, copy=False).reshape(-1)
    if indptr.size != b + 1:
        raise ValueError(f"exclude indptr must have {b + 1} entries (one row per query), got {indptr.size}")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] > indices.size:
        raise ValueError("exclude indptr must start at 0, be non-decreasing and fit indices")
    indices = indices[: indptr[-1]]
    if indices.size:
        # rows must be sorted for the kernels' forward-pointer scan; sort only if needed
        rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(indptr))
        d = np.diff(indices)
        same_row = rows[1:] == rows[:-1]
        if np.any(d[same_row] < 0):
            order = np.lexsort((indices, rows))
            indices = indices[order]
    return Exclusion(np.ascontiguousarray(indptr), np.ascontiguousarray(indices))


def subset_exclusion(ex: Exclusion | None, rows: np.ndarray) -> Exclusion | None:
    """The exclusion CSR restricted to query rows ``rows`` (in that order)."""
    if ex is None:
        return None
    if rows.size == ex.indptr.size - 1:
        return ex
    starts, ends = ex.indptr[rows], ex.indptr[rows + 1]
    lens = ends - starts
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
    return Exclusion(indptr, ex.indices[idx])


def compact_values(x: np.ndarray) -> np.ndarray:
    """Per-item scales or terms as the asymmetric index stores them (GPU device copy and CPU layout):
    one value when all are bitwise equal (read with stride 0), float16 when every value survives the float16 round trip exactly (the
    kernels widen to float32, so keys and error bounds are unchanged), else float32."""
    x = np.array(x, np.float32)  # an owned, writable copy (torch.from_numpy shares it)
    if x.size and np.all(x.view(np.uint32) == x.view(np.uint32)[0]):
        x = x[:1]
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16)
    if np.array_equal(h.astype(np.float32), x) and np.array_equal(np.signbit(h), np.signbit(x)):
        return h
    return x


def unpermute(stored: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Rows kept in storage order (``stored[j]`` is item ``order[j]``) back in item order."""
    if order is None:
        return stored
    out = np.empty_like(stored)
    out[order] = stored
    return out
