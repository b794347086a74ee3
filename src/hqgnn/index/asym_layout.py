"""AsymCodeIndex's CPU storage layout: storage order, packed codes, per-row records (also rebuilt from a GPU copy on save)."""

from __future__ import annotations

import numpy as np

from . import kernels_asym_cpu as KA
from .common import ItemScale
from .packing import INT8, NIBBLE, pack_int8_blocked, pack_nibble_blocked

__all__ = ["LUT1", "SCALE_BUCKETS", "host_layout", "meta_only", "storage_order"]

LUT1 = "lut1x32"  # 1-bit items: bit bytes of 32-item blocks for the vpshufb fast-scan kernel


SCALE_BUCKETS = 64


def storage_order(scale: ItemScale, term: ItemScale, n: int) -> np.ndarray | None:
    """Storage order that keeps each chunk's scale and term ranges narrow (the kernel bounds a
    chunk by max(ip s) + max(t)): items sorted by scale quantile bucket (descending), and by term
    (descending) inside a bucket; per-row scales without terms: by scale. None: keep item order."""
    if not scale.per_row and not term.per_row:
        return None
    dtype = np.int32 if n < 2**31 else np.int64
    if not term.per_row:
        return np.argsort(-scale.values.astype(np.float64), kind="stable").astype(dtype)
    if not scale.per_row:
        return np.argsort(-term.values.astype(np.float64), kind="stable").astype(dtype)
    s = scale.values.astype(np.float64)
    edges = np.quantile(s, np.linspace(0, 1, SCALE_BUCKETS + 1)[1:-1])
    bucket = np.searchsorted(edges, s, side="right")
    return np.lexsort((-term.values.astype(np.float64), -bucket)).astype(dtype)


def host_layout(codes: np.ndarray, scale: ItemScale, term: ItemScale,
                item_bits: int) -> tuple[np.ndarray, str, ItemScale, ItemScale, np.ndarray | None]:
    """(packed codes, layout, scale and term records in storage order, order) of the CPU layout."""
    order = storage_order(scale, term, codes.shape[0])
    stored = codes if order is None else codes[order]
    layout = LUT1 if item_bits == 1 else (NIBBLE if item_bits <= 4 else INT8)
    pack = {LUT1: KA.pack_lut1, NIBBLE: pack_nibble_blocked, INT8: pack_int8_blocked}[layout]
    return pack(stored), layout, _permute(scale, order), _permute(term, order), order


def meta_only(rec: ItemScale) -> ItemScale:
    """The record without its per-row values (held on the device instead): flags and scalar only."""
    return ItemScale(rec.values[:0], rec.stride, True, rec.given) if rec.per_row else rec


def _permute(rec: ItemScale, order: np.ndarray | None) -> ItemScale:
    """An ItemScale-shaped record in storage order."""
    if not rec.per_row or order is None:
        return rec
    return ItemScale(np.ascontiguousarray(rec.values[order]), 1, True, True)
