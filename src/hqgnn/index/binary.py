"""BinaryCodeIndex: exact top-k over 1-bit {-1,+1} codes packed 64 dims per uint64 word (XOR + popcount)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import CodeIndex, keys_to_scores
from .common import ArrayLike, DeviceLike, Exclusion, ItemScale, ScaleLike, normalize_item_scale
from .cpu import sym as K
from .packing import WORDS, as_int8_codes, check_code_range, pack_sign_bits, unpack_sign_bits, words_for_dim

__all__ = ["BinaryCodeIndex"]


def _chunk_items(words: int) -> int:
    # 4 KiB of item words per chunk: stays in L1 while 64 queries sweep it, and a chunk that must
    # be re-scanned for one query is cheap (measured: 256..512 items beat 128 and 1024 at d=64)
    return max(64, 512 // words)


class BinaryCodeIndex(CodeIndex):
    """1-bit item codes (+ optional float32 scales) searched by Hamming distance.

    Storage: bit t of an item is dim t's sign (1 = +1), 64 dims per little-endian uint64 word --
    byte-for-byte FAISS' binary layout. d need not be a multiple of 64: the last word is zero-padded
    on items and queries alike, which leaves every Hamming distance unchanged (and the scaled score
    uses the true d). Memory: ceil(d/64) * 8 bytes per item + 4 for a per-row scale.

    Modes: "scaled" ranks by s_u * s_i * (d - 2 * hamming) (exactly the dequantized inner product);
    "hamming" ranks by smallest Hamming distance and ignores scales.
    """

    bits = 1

    def __init__(self, item_codes: ArrayLike, item_scale: ScaleLike = None, device: DeviceLike = "cpu",
                 backend: str = "auto") -> None:
        codes = as_int8_codes(item_codes, "item_codes")
        check_code_range(codes, 1, "item_codes")
        scale = normalize_item_scale(item_scale, codes.shape[0])
        order = self._scale_order(np.abs(scale.values)) if scale.per_row else None
        words = pack_sign_bits(codes if order is None else codes[order])
        self._init(words, codes.shape[1], _stored(scale, order), order, device, backend)

    def _init(self, words: np.ndarray, dim: int, stored_scale: ScaleLike, order: np.ndarray | None, device: DeviceLike,
              backend: str) -> None:
        """words / stored_scale are in storage order (``order[p]`` = original id of row p)."""
        self.n = int(words.shape[0])
        self.dim = int(dim)
        if words.ndim != 2 or words.shape[1] != words_for_dim(dim):
            raise ValueError(f"packed words have shape {words.shape}, dim {dim} needs {words_for_dim(dim)} columns")
        self._words = words  # storage order (sorted by |scale| when scales are per row)
        self._scale = normalize_item_scale(stored_scale, self.n)  # storage order
        self._order = None if order is None else np.asarray(order)
        if self._order is not None and self._order.shape != (self.n,):
            raise ValueError("order must have one entry per item")
        self._chunk = _chunk_items(words.shape[1])
        self._scaled_cache: tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray] | None = None
        self._setup(device, backend)

    @classmethod
    def _from_packed(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], scale: ScaleLike, device: DeviceLike,
                     backend: str) -> "BinaryCodeIndex":
        self = cls.__new__(cls)
        self._init(arrays["codes"], int(meta["dim"]), scale, arrays.get("order"), device, backend)
        return self

    @classmethod
    def from_words(cls, words: np.ndarray, dim: int, item_scale: ScaleLike = None, device: DeviceLike = "cpu",
                   backend: str = "auto") -> "BinaryCodeIndex":
        """Wrap already-packed (n, ceil(dim/64)) uint64 sign words in item order (e.g. from FAISS
        bytes viewed as '<u8'); no copy unless per-row scales require sorting."""
        words = np.ascontiguousarray(words, dtype=np.uint64)
        scale = normalize_item_scale(item_scale, words.shape[0])
        order = cls._scale_order(np.abs(scale.values)) if scale.per_row else None
        self = cls.__new__(cls)
        self._init(words if order is None else words[order], dim, _stored(scale, order), order, device, backend)
        return self

    @property
    def words(self) -> np.ndarray:
        """The packed (n, ceil(d/64)) uint64 sign words, in item order."""
        return self._unpermute(self._words)

    def codes(self) -> np.ndarray:
        return self._unpermute(unpack_sign_bits(self._words, self.dim))

    def _packed_arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self._words}

    def _packed_code_bytes(self) -> int:
        return int(self._words.nbytes)

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "layout": WORDS}

    # -------------------------------------------------------------------------- numba search
    def _dim_mask(self) -> np.ndarray:
        w = self._words.shape[1]
        mask = np.zeros(w, np.uint64)
        for i in range(w):
            nb = min(64, self.dim - 64 * i)
            mask[i] = np.uint64(0xFFFFFFFFFFFFFFFF) if nb == 64 else np.uint64((1 << nb) - 1)
        return mask

    def _scaled_view(self) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
        """(words, |scales|, scale stride, per-chunk max |scale|, per-chunk min |scale|), storage order.

        Items with a negative scale are complemented (in a copy; only if there are any):
        complementing flips the sign of d - 2h, so key = (d - 2h') * |s_i| equals (d - 2h) * s_i
        exactly, and all scales become >= 0 -- which the kernel's chunk bound needs.
        """
        if self._scaled_cache is None:
            s = self._scale
            words = self._words
            if s.stride == 1:
                neg = s.values < 0
                absval = s.values
                if np.any(neg):  # copies only when there are negative scales (rare)
                    words = np.where(neg[:, None], words ^ self._dim_mask()[None, :], words)
                    absval = np.abs(s.values).astype(np.float32)
                nch = -(-self.n // self._chunk)
                pad = np.full(nch * self._chunk, np.nan, np.float32)
                pad[: self.n] = absval
                pad = pad.reshape(nch, self._chunk)
                cmax = np.nanmax(pad, axis=1).astype(np.float64)
                cmin = np.nanmin(pad, axis=1).astype(np.float64)
            else:
                if s.values[0] < 0:
                    words = words ^ self._dim_mask()[None, :]
                absval = np.abs(s.values).astype(np.float32)
                nch = -(-self.n // self._chunk)
                cmax = np.full(nch, absval[0], np.float64)
                cmin = cmax.copy()
            self._scaled_cache = (np.ascontiguousarray(words), absval, s.stride, cmax, cmin)
        return self._scaled_cache

    def _search_numba(self, qc: np.ndarray, k: int, qs: np.ndarray, ex: Exclusion | None, mode: str):
        b = qc.shape[0]
        qwords = pack_sign_bits(qc)
        bpad = -(-b // K.QG) * K.QG
        qpad = np.zeros((bpad, qwords.shape[1]), np.uint64)
        scaled = mode == "scaled"
        if scaled:
            words, scales, sstride, cmax, cmin = self._scaled_view()
            # a negative query scale flips the score's sign: complement the query instead
            qwords = np.where((qs < 0)[:, None], qwords ^ self._dim_mask()[None, :], qwords)
            qmul = (qs != 0).astype(np.float64)
        else:
            words = self._words
            scales = np.ones(1, np.float32)
            sstride = 0
            cmax = cmin = np.ones(1, np.float64)
            qmul = np.ones(b, np.float64)
        qpad[:b] = qwords
        ex_ptr, ex_idx, has_ex = self._ex_arrays(ex)
        nch = -(-self.n // self._chunk)
        threads = self._threads()
        n_ranges = K.choose_ranges(b, nch, threads)
        out_keys = np.empty((n_ranges, b, k), np.float64)
        out_ids = np.empty((n_ranges, b, k), np.int64)
        K.run_tasks(K.binary_task, K.n_tasks(b, n_ranges),
                    (qpad, words, self.n, k, scaled, self.dim, scales, sstride, cmax, cmin, qmul, self._oid(),
                     ex_ptr, ex_idx, has_ex, n_ranges, self._chunk, out_keys, out_ids), threads)
        keys, ids = K.merge_ranges(out_keys, out_ids, k)
        if scaled:
            return keys_to_scores(keys, ids, np.abs(qs)), ids
        scores = (self.dim + 2.0 * keys).astype(np.float32)  # key = -hamming -> d - 2h
        scores[ids < 0] = -np.inf
        return scores, ids


def _stored(scale: ItemScale, order: np.ndarray | None) -> np.ndarray | float | None:
    """The user's scale argument re-expressed in storage order (per-row values permuted)."""
    if not scale.given:
        return None
    if not scale.per_row:
        return float(scale.values[0])
    return scale.values if order is None else np.ascontiguousarray(scale.values[order])
