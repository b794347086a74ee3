"""ScalarCodeIndex: exact top-k over b-bit (2..8) integer codes with per-row / per-tensor float32 scales."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import CodeIndex, keys_to_scores
from .binary import _stored
from .common import ArrayLike, DeviceLike, Exclusion, ScaleLike, normalize_item_scale
from .cpu import sym as K
from .packing import (
    BLOCK_ITEMS,
    INT8,
    NIBBLE,
    as_int8_codes,
    check_code_range,
    int8_query_vectors,
    layout_for_bits,
    nibble_query_vectors,
    pack_int8_blocked,
    pack_nibble_blocked,
    padded_dim,
    unpack_int8_blocked,
    unpack_nibble_blocked,
)

__all__ = ["ScalarCodeIndex"]

# Items per selection chunk: 8 queries x 256 int32 scores (8 KiB) plus the chunk's codes stay in L1.
_CHUNK = 256


class ScalarCodeIndex(CodeIndex):
    """b-bit codes in [-2^(b-1), 2^(b-1) - 1], scored by s_u * s_i * <c_u, c_i> (integer dot product).

    Storage (see :mod:`hqgnn.index.packing`): b <= 4 -> two codes per byte (nibbles, d/2 bytes per
    item); 5 <= b <= 8 -> one int8 per code (d bytes per item). Items are padded to a multiple of 16
    and d to a multiple of 4 (nibbles) / 2 (int8) with code 0; bytes_per_item reports the padded size.
    1-bit {-1,+1} codes are accepted too (stored like 2-bit ones), but :class:`BinaryCodeIndex` is
    8x smaller and faster for them.
    """

    use_simd: bool | None = None  # None: the AVX2 LLVM-IR kernels when the CPU has AVX2; False: portable numba

    def __init__(self, item_codes: ArrayLike, item_scale: ScaleLike = None, bits: int = 8, device: DeviceLike = "cpu",
                 backend: str = "auto") -> None:
        codes = as_int8_codes(item_codes, "item_codes")
        check_code_range(codes, bits, "item_codes")
        scale = normalize_item_scale(item_scale, codes.shape[0])
        order = self._scale_order(scale.values) if scale.per_row else None
        stored = codes if order is None else codes[order]
        layout = layout_for_bits(max(bits, 2))
        packed = pack_nibble_blocked(stored) if layout == NIBBLE else pack_int8_blocked(stored)
        self._init(packed, layout, codes.shape[0], codes.shape[1], bits, _stored(scale, order), order, device,
                   backend)

    def _init(self, packed: np.ndarray, layout: str, n: int, dim: int, bits: int, stored_scale: ScaleLike,
              order: np.ndarray | None, device: DeviceLike, backend: str) -> None:
        """packed / stored_scale are in storage order (``order[p]`` = original id of row p)."""
        self.bits = int(bits)
        self.n = int(n)
        self.dim = int(dim)
        self._layout = layout
        self._packed = packed  # storage order (sorted by scale when scales are per row)
        if layout == NIBBLE:
            self._ngp = padded_dim(dim, 4) // 4  # groups of 4 dims
            want = -(-max(n, 1) // BLOCK_ITEMS) * self._ngp * 32
        elif layout == INT8:
            self._ngp = padded_dim(dim, 2) // 2  # dim pairs
            want = -(-max(n, 1) // BLOCK_ITEMS) * BLOCK_ITEMS * self._ngp * 2
        else:
            raise ValueError(f"unknown layout {layout!r}")
        if packed.size != want:
            raise ValueError(f"packed codes have {packed.size} bytes, expected {want} for n={n}, dim={dim}")
        self._scale = normalize_item_scale(stored_scale, self.n)  # storage order
        self._order = None if order is None else np.asarray(order)
        if self._order is not None and self._order.shape != (self.n,):
            raise ValueError("order must have one entry per item")
        self._chunk_bounds: tuple[np.ndarray, np.ndarray] | None = None
        self._setup(device, backend)

    @classmethod
    def _from_packed(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], scale: ScaleLike, device: DeviceLike,
                     backend: str) -> "ScalarCodeIndex":
        self = cls.__new__(cls)
        self._init(arrays["codes"].reshape(-1), meta["layout"], int(meta["n"]), int(meta["dim"]),
                   int(meta["bits"]), scale, arrays.get("order"), device, backend)
        return self

    def codes(self) -> np.ndarray:
        if self._layout == NIBBLE:
            stored = unpack_nibble_blocked(self._packed, self.n, self.dim)
        else:
            stored = unpack_int8_blocked(self._packed, self.n, self.dim)
        return self._unpermute(stored)

    def _packed_arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self._packed}

    def _packed_code_bytes(self) -> int:
        return int(self._packed.nbytes)

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "layout": self._layout}

    # -------------------------------------------------------------------------- numba search
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-chunk max/min item scale (signed) for the kernel's bilinear score bound."""
        if self._chunk_bounds is None:
            s = self._scale
            nch = -(-self.n // _CHUNK)
            if s.stride == 1:
                pad = np.full(nch * _CHUNK, np.nan, np.float32)
                pad[: self.n] = self._scale.values
                pad = pad.reshape(nch, _CHUNK)
                cmax = np.nanmax(pad, axis=1).astype(np.float64)
                cmin = np.nanmin(pad, axis=1).astype(np.float64)
            else:
                cmax = np.full(nch, s.values[0], np.float64)
                cmin = cmax.copy()
            self._chunk_bounds = (cmax, cmin)
        return self._chunk_bounds

    def _search_numba(self, qc: np.ndarray, k: int, qs: np.ndarray, ex: Exclusion | None, mode: str,
                      use_simd: bool | None = None):
        b = qc.shape[0]
        # fold the sign of the query scale into the codes (exact: |code| <= 128 fits int16), so the
        # kernel ranks by <sign(s_u) c_u, c_i> * s_i and the positive |s_u| is applied at the end
        sign = np.sign(qs).astype(np.int16)
        q16 = qc.astype(np.int16) * sign[:, None]
        if self._layout == NIBBLE:
            qv, qoff = nibble_query_vectors(q16.astype(np.int8))  # |q| <= 8 fits int8
            nibble = True
        else:
            qv = int8_query_vectors(q16)
            qoff = np.zeros(b, np.int64)
            nibble = False
        if use_simd is None:
            use_simd = K.HAVE_AVX2 if self.use_simd is None else bool(self.use_simd)
        cmax, cmin = self._bounds()
        ex_ptr, ex_idx, has_ex = self._ex_arrays(ex)
        nch = -(-self.n // _CHUNK)
        threads = self._threads()
        n_ranges = K.choose_ranges(b, nch, threads)
        out_keys = np.empty((n_ranges, b, k), np.float64)
        out_ids = np.empty((n_ranges, b, k), np.int64)
        # items and query vectors travel as raw bytes: one compiled kernel for every layout
        items = self._packed.view(np.uint8)
        qbytes = qv.view(np.uint8).reshape(qv.shape[0], -1)
        K.run_tasks(K.scalar_task, K.n_tasks(b, n_ranges),
                    (qbytes, qoff, items, nibble, self._ngp, self.n, k, self._scale.values, self._scale.stride,
                     cmax, cmin, self._oid(), ex_ptr, ex_idx, has_ex, n_ranges, _CHUNK, bool(use_simd and K.HAVE_AVX2),
                     out_keys, out_ids), threads)
        keys, ids = K.merge_ranges(out_keys, out_ids, k)
        return keys_to_scores(keys, ids, np.abs(qs)), ids
