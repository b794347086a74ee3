"""Packing of integer codes into the layouts the search kernels read (CPU nibbles / int8, GPU bit words), and back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .common import ArrayLike, to_numpy

if TYPE_CHECKING:
    import torch

__all__ = [
    "BLOCK_ITEMS",
    "INT8",
    "NIBBLE",
    "WORD",
    "as_int8_codes",
    "check_code_range",
    "code_range",
    "nibble_query_vectors",
    "pack_int8_blocked",
    "pack_nibble_blocked",
    "padded_dim",
    "int8_query_vectors",
    "unpack_int8_blocked",
    "unpack_nibble_blocked",
    "pack_words",
    "unpack_words",
]

# b-bit layouts group items in blocks of 16 (one AVX2 register of int16 lanes); n is padded up to
# a multiple of this with code-0 items that the search never returns.
BLOCK_ITEMS = 16

NIBBLE = "nibble16"  # b <= 4: two codes per byte, offset by +8 (unsigned nibble), item-blocked
INT8 = "int8x8"  # 5 <= b <= 8: one code per byte, dimension pairs of 8-item blocks


def code_range(bits: int) -> tuple[int, int]:
    """Inclusive (lo, hi) of valid codes: {-1, +1} for 1 bit, else [-2^(b-1), 2^(b-1) - 1]."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def as_int8_codes(codes: ArrayLike, name: str = "codes") -> np.ndarray:
    """Any (n, d) integer-valued array/tensor -> C-contiguous int8 numpy array (no silent wrap)."""
    arr = to_numpy(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if arr.dtype != np.int8:
        if arr.dtype.kind == "f":
            if arr.size and not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"{name} must be integer-valued")
        elif arr.dtype.kind not in "iub":
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if arr.size and (arr.min() < -128 or arr.max() > 127):
            raise ValueError(f"{name} values do not fit in int8")
        arr = arr.astype(np.int8)
    return np.ascontiguousarray(arr)


def check_code_range(codes: np.ndarray, bits: int, name: str = "codes") -> None:
    lo, hi = code_range(bits)
    if codes.size == 0:
        return
    if bits == 1:
        if not np.all(np.abs(codes) == 1):
            raise ValueError(f"{name}: 1-bit codes must be -1 or +1")
        return
    cmin, cmax = int(codes.min()), int(codes.max())
    if cmin < lo or cmax > hi:
        raise ValueError(f"{name}: {bits}-bit codes must lie in [{lo}, {hi}], got [{cmin}, {cmax}]")


def padded_dim(d: int, multiple: int) -> int:
    return max(multiple, -(-d // multiple) * multiple)


# ------------------------------------------------- b <= 4: nibbles, 16-item blocks, 4 dims a group
def pack_nibble_blocked(codes: np.ndarray) -> np.ndarray:
    """(n, d) codes in [-8, 7] -> flat uint8 array, 16-item blocks x ceil(d/4) groups x 32 bytes.

    In group g of a block, byte 2*m + r holds item m's dims 4g+r (low nibble) and 4g+2+r (high
    nibble), each stored as code + 8 (0..15). Masking the low nibbles of the 32 bytes gives item
    m's dim pair (4g, 4g+1) in bytes (2m, 2m+1) -- exactly the operand layout of AVX2
    ``vpmaddubsw`` with one query dim pair broadcast -- and the high nibbles the next pair.
    Pads: items up to a multiple of 16, dims up to a multiple of 4, both with code 0.
    """
    n, d = codes.shape
    npad = -(-max(n, 1) // BLOCK_ITEMS) * BLOCK_ITEMS
    dp = padded_dim(d, 4)
    u = np.full((npad, dp), 8, dtype=np.uint8)
    u[:n, :d] = (codes.astype(np.int16) + 8).astype(np.uint8)
    g = dp // 4
    u = u.reshape(npad // BLOCK_ITEMS, BLOCK_ITEMS, g, 2, 2)  # [block, item, group, lo/hi pair, r]
    byte = u[:, :, :, 0, :] | (u[:, :, :, 1, :] << 4)  # [block, item, group, r]
    return np.ascontiguousarray(byte.transpose(0, 2, 1, 3)).reshape(-1)


def unpack_nibble_blocked(packed: np.ndarray, n: int, d: int) -> np.ndarray:
    dp = padded_dim(d, 4)
    g = dp // 4
    nb = packed.size // (g * 32)
    byte = np.asarray(packed).reshape(nb, g, BLOCK_ITEMS, 2).transpose(0, 2, 1, 3)  # [b, m, g, r]
    lo = (byte & 15).astype(np.int16) - 8
    hi = (byte >> 4).astype(np.int16) - 8
    out = np.stack([lo, hi], axis=3).reshape(nb * BLOCK_ITEMS, dp)  # [.., g, pair, r] -> dims
    return out[:n, :d].astype(np.int8)


def _pair_vectors(qcodes: np.ndarray, dim_multiple: int, dtype: type, reps: int) -> np.ndarray:
    """Per query and dim pair, the pair repeated ``reps`` times (32 bytes); d padded to ``dim_multiple``,
    B to a multiple of 8 (the kernels' query group), with code 0."""
    b, d = qcodes.shape
    dp = padded_dim(d, dim_multiple)
    bp = -(-max(b, 1) // 8) * 8
    q = np.zeros((bp, dp), dtype=dtype)
    q[:b, :d] = qcodes
    pairs = q.reshape(bp, dp // 2, 1, 2)
    return np.ascontiguousarray(np.broadcast_to(pairs, (bp, dp // 2, reps, 2))).reshape(bp, -1)


def nibble_query_vectors(qcodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Queries for the nibble kernel: per query and dim pair, the pair repeated 16x (32 bytes).

    Returns (vectors int8 (B_pad, ceil(d/4)*2 * 32), offsets int64 (B,)). Items are stored as
    code + 8, so the kernel computes <q, c + 8> = <q, c> + 8 * sum(q); ``offsets`` is that second
    term, subtracted afterwards. B is padded to a multiple of 8 (the kernel's query group).
    """
    return _pair_vectors(qcodes, 4, np.int8, 16), 8 * qcodes.astype(np.int64).sum(axis=1)


# ------------------------------------------ 5..8 bits: int8, 8-item blocks, dimension pairs inside
def pack_int8_blocked(codes: np.ndarray) -> np.ndarray:
    """(n, d) int8 codes -> flat int8, 8-item blocks x ceil(d/2) pairs x 16 bytes.

    Bytes (2m, 2m+1) of pair p hold item m's dims (2p, 2p+1): sign-extended to int16 this is the
    operand of AVX2 ``vpmaddwd`` against one query dim pair broadcast 8x. Items are padded to a
    multiple of 16 (so both layouts share the block count) and dims to even, with code 0.
    """
    n, d = codes.shape
    npad = -(-max(n, 1) // BLOCK_ITEMS) * BLOCK_ITEMS
    dp = padded_dim(d, 2)
    x = np.zeros((npad, dp), dtype=np.int8)
    x[:n, :d] = codes
    x = x.reshape(npad // 8, 8, dp // 2, 2).transpose(0, 2, 1, 3)  # [block8, pair, item, r]
    return np.ascontiguousarray(x).reshape(-1)


def unpack_int8_blocked(packed: np.ndarray, n: int, d: int) -> np.ndarray:
    dp = padded_dim(d, 2)
    nb = packed.size // (8 * dp)
    x = np.asarray(packed).reshape(nb, dp // 2, 8, 2).transpose(0, 2, 1, 3).reshape(nb * 8, dp)
    return np.ascontiguousarray(x[:n, :d]).astype(np.int8, copy=False)


def int8_query_vectors(qcodes16: np.ndarray) -> np.ndarray:
    """Queries (int16, codes may be +128 after sign folding) for the int8 kernel: per query and dim
    pair, the pair repeated 8x as int16 (32 bytes); B padded to a multiple of 8."""
    return _pair_vectors(qcodes16, 2, np.int16, 8)


# --------------------------------------- 1 bit on the GPU: 32 dims per int32 word, word-major (coalesced tiles)
WORD = 32  # dims per int32 word (= the int8 tensor-core K tile of the packed kernel)


def pack_words(codes: np.ndarray, dpad: int) -> np.ndarray:
    """+-1 codes (n, d) -> int32 words (dpad / 32, n), word-major so that a tile of consecutive
    items reads consecutive words (coalesced). Bit j of word w is dim 32 w + j: 1 for +1, 0 for
    -1; dims d..dpad-1 are 0 (-1), harmless because the queries are zero-padded there."""
    n, d = codes.shape
    bits = np.zeros((n, dpad), np.bool_)
    bits[:, :d] = codes > 0
    by = np.packbits(bits.reshape(n, dpad // WORD, WORD), axis=-1, bitorder="little")  # (n, W, 4)
    words = np.ascontiguousarray(by).view("<u4").reshape(n, dpad // WORD)
    return np.ascontiguousarray(words.T).view(np.int32)


def unpack_words(words: torch.Tensor, idx: slice | torch.Tensor) -> torch.Tensor:
    """int8 +-1 codes (*idx.shape, dpad) of items ``idx`` (a slice or an id tensor) from words
    (W, n): only those rows are expanded, never the whole catalogue."""
    import torch

    w = words[:, idx].movedim(0, -1)  # (..., W)
    shifts = torch.arange(WORD, dtype=torch.int32, device=words.device)
    bits = (w[..., None] >> shifts) & 1  # arithmetic shift, then one bit: sign-safe
    return (bits * 2 - 1).to(torch.int8).reshape(*w.shape[:-1], w.shape[-1] * WORD)
