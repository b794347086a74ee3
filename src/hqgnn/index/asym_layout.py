"""AsymCodeIndex's CPU storage layout: storage order, packed codes, per-row records (also rebuilt from a GPU copy on
save), and the query vectors its kernels read."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .common import (
    ItemScale,
    ScaleLike,
    compact_values,
    normalize_item_scale,
    normalize_item_term,
)
from .cpu import asym as KA
from .packing import (
    INT8,
    NIBBLE,
    int8_query_vectors,
    nibble_query_vectors,
    pack_int8_blocked,
    pack_nibble_blocked,
    unpack_int8_blocked,
    unpack_nibble_blocked,
)

__all__ = ["ITEM_ORDERS", "LUT1", "SCALE_BUCKETS", "chunk_bounds", "compact_record", "gather_rows", "host_layout", "lut_planes",
           "meta_only", "query_planes", "scale_order_of", "storage_order"]

LUT1 = "lut1x32"  # 1-bit items: bit bytes of 32-item blocks for the vpshufb fast-scan kernel


SCALE_BUCKETS = 64
# "none" (default): items kept in id order, nothing held beyond codes + scales + terms;
# "scale": sorted by scale / term buckets (tighter chunk bounds) at the cost of an int32 order per item.
# (A uint16 order local to blocks of 65536 items was measured too: +15-30% q/s with 4-bit queries,
# none with float queries, for 2 B per item: not kept, the bounds need the global sort. BENCHMARKS.md § 3b.)
ITEM_ORDERS = ("none", "scale")


def compact_record(rec: ItemScale) -> ItemScale:
    """Per-row values as held: float16 when every value survives the float16 round trip exactly,
    else float32; a constant column collapses to one value (stride 0)."""
    if not rec.per_row:
        return rec
    v = compact_values(rec.values)
    if v.size == 1 and rec.values.size != 1:
        return ItemScale(v, 0, False, True)
    return ItemScale(v, 1, True, True)


def storage_order(scale: ItemScale, term: ItemScale, n: int, item_order: str = "none") -> np.ndarray | None:
    """Storage order that keeps each chunk's scale and term ranges narrow (the kernel bounds a
    chunk by max(ip s) + max(t)): items sorted by scale quantile bucket (descending), and by term
    (descending) inside a bucket; per-row scales without terms: by scale. None: keep item order.
    The records are compacted first (a constant column is not per-row), so the order is the index's
    whether its caller passes raw or held values (the renumbered serving path passes raw ones)."""
    if item_order not in ITEM_ORDERS:
        raise ValueError(f"item_order must be one of {ITEM_ORDERS}, got {item_order!r}")
    scale, term = compact_record(scale), compact_record(term)
    if item_order == "none" or (not scale.per_row and not term.per_row):
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


def host_layout(codes: np.ndarray, scale: ItemScale, term: ItemScale, item_bits: int,
                item_order: str = "none") -> tuple[np.ndarray, str, ItemScale, ItemScale, np.ndarray | None]:
    """(packed codes, layout, compact scale and term records in storage order, order) of the CPU layout."""
    scale, term = compact_record(scale), compact_record(term)
    order = storage_order(scale, term, codes.shape[0], item_order)
    stored = codes if order is None else codes[order]
    layout = LUT1 if item_bits == 1 else (NIBBLE if item_bits <= 4 else INT8)
    pack = {LUT1: KA.pack_lut1, NIBBLE: pack_nibble_blocked, INT8: pack_int8_blocked}[layout]
    return pack(stored), layout, _permute(scale, order), _permute(term, order), order


def chunk_bounds(scale: ItemScale, term: ItemScale, n: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-chunk max / min scale and max term (float32: the max of float16 or float32 values is
    exact in float32), one entry per chunk for per-row values, else the single value."""
    nch = -(-n // chunk)

    def chunked(rec: ItemScale, fn: Callable[..., np.ndarray]) -> np.ndarray:
        if rec.stride == 0:
            return np.asarray(rec.values[:1], dtype=np.float32)
        pad = np.full(nch * chunk, np.nan, np.float32)
        pad[:n] = rec.values
        return np.asarray(fn(pad.reshape(nch, chunk), axis=1), dtype=np.float32)

    return chunked(scale, np.nanmax), chunked(scale, np.nanmin), chunked(term, np.nanmax)


def meta_only(rec: ItemScale) -> ItemScale:
    """The record without its per-row values (held on the device instead): flags and scalar only."""
    return ItemScale(rec.values[:0], rec.stride, True, rec.given) if rec.per_row else rec


def scale_order_of(scale: ScaleLike, term: ScaleLike, n: int) -> np.ndarray | None:
    """:func:`storage_order` (``item_order="scale"``) of raw item scales / terms (arrays, scalars or None),
    the order an items-renumbering caller applies before building an index without an order array."""
    return storage_order(normalize_item_scale(scale, n), normalize_item_term(term, n), n, "scale")


def _permute(rec: ItemScale, order: np.ndarray | None) -> ItemScale:
    """An ItemScale-shaped record in storage order."""
    if not rec.per_row or order is None:
        return rec
    return ItemScale(np.ascontiguousarray(rec.values[order]), 1, True, True)


def gather_rows(packed: np.ndarray, layout: str, n: int, dim: int, ngp: int, pos: np.ndarray | None) -> np.ndarray:
    """int8 codes (m, dim) of storage rows ``pos`` (None = all n rows, storage order) of a packed layout;
    ``ngp``: the layout's column groups (AsymCodeIndex._ngp)."""
    if layout == LUT1:
        return KA.unpack_lut1(packed, n, dim, pos)
    if pos is None:
        return unpack_nibble_blocked(packed, n, dim) if layout == NIBBLE else unpack_int8_blocked(packed, n, dim)
    pos = np.asarray(pos, np.int64)
    if layout == NIBBLE:
        by = packed.reshape(-1, ngp, 16, 2)[pos // 16, :, pos % 16, :]  # (m, g, r)
        lo = (by & 15).astype(np.int16) - 8
        hi = (by >> 4).astype(np.int16) - 8
        return np.stack([lo, hi], axis=2).reshape(pos.size, 4 * ngp)[:, :dim].astype(np.int8)
    by = packed.reshape(-1, ngp, 8, 2)[pos // 8, :, pos % 8, :]  # (m, pairs, r)
    return np.ascontiguousarray(by.reshape(pos.size, 2 * ngp)[:, :dim]).astype(np.int8)


def lut_planes(ngp: int, qc: np.ndarray) -> tuple[Any, ...]:
    """The LUT kernels' tables for query codes qc (``ngp`` kernel steps per item) and how their biased sums A, B
    make ip = mul_a A + mul_b B + qadd: (qa, qb, nplanes, mul_a, mul_b, qadd, bmin, bmax), mul_b B in [bmin, bmax].
    Codes in [-8, 7]: one plane. Wider: c = 16 h + l, rounded (l in [-8, 7], half of truncation's margin
    sum |l|) for rows whose codes are <= 119, else truncated (h = c >> 4, l = c & 15)."""
    b = qc.shape[0]
    cols = 2 * ngp
    q32 = qc.astype(np.int32)
    total = q32.sum(axis=1).astype(np.int64)
    zero = np.zeros(b, np.int64)
    if not qc.size or (int(qc.min()) >= -8 and int(qc.max()) <= 7):
        qa, off = KA.lut1_tables(qc, cols)
        # <c_u, c_i> = 2 <c_u, b_i> - sum(c_u), b_i = item bits, <c_u, b_i> = A - off
        return qa, qa, 1, 2, 0, -2 * off - total, zero, zero
    rnd = (q32.max(axis=1) <= 119)[:, None]
    hi = np.where(rnd, (q32 + 8) >> 4, q32 >> 4)
    lo = q32 - 16 * hi
    qa, offa = KA.lut1_tables(hi.astype(np.int8), cols)
    qb, offb = KA.lut1_tables(lo.astype(np.int8), cols)
    neg = np.minimum(lo, 0).sum(axis=1).astype(np.int64)  # <l, b_i> lies in [neg, pos]
    pos = np.maximum(lo, 0).sum(axis=1).astype(np.int64)
    return qa, qb, 2, 32, 2, -32 * offa - 2 * offb - total, 2 * (offb + neg), 2 * (offb + pos)


def query_planes(layout: str, ngp: int, qc: np.ndarray) -> tuple[Any, ...]:
    """The vectors the nibble / int8 ``layout`` kernels read for query codes qc (``ngp`` kernel steps per
    item): (qa, qb, nplanes, mul_a, mul_b, qadd); wide codes are split into two planes."""
    b = qc.shape[0]
    q32 = qc.astype(np.int32)
    two = bool(qc.size) and (int(qc.min()) < -8 or int(qc.max()) > 7)
    if layout == NIBBLE:
        if not two:
            qa, off = nibble_query_vectors(qc)  # raw = ip + off
            return qa.view(np.uint8), qa.view(np.uint8), 1, 1, 0, -off
        hi = ((q32 + 8) >> 4).astype(np.int8)  # |hi|, |lo| <= 8: the nibble kernel's exact range
        lo = (q32 - 16 * hi.astype(np.int32)).astype(np.int8)
        va, offa = nibble_query_vectors(hi)
        vb, offb = nibble_query_vectors(lo)
        return va.view(np.uint8), vb.view(np.uint8), 2, 16, 1, -(16 * offa + offb)
    qa = int8_query_vectors(qc.astype(np.int16))
    qa = qa.view(np.uint8).reshape(qa.shape[0], -1)
    return qa, qa, 1, 1, 0, np.zeros(b, np.int64)
