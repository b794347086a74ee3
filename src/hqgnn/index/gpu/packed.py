"""Device storage helpers for the asymmetric GPU searcher: bit-packed 1-bit codes (32 dimensions per int32 word)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pack_words", "unpack_words", "WORD"]

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
    w = words[:, idx].movedim(0, -1)  # (..., W)
    shifts = torch.arange(WORD, dtype=torch.int32, device=words.device)
    bits = (w[..., None] >> shifts) & 1  # arithmetic shift, then one bit: sign-safe
    return (bits * 2 - 1).to(torch.int8).reshape(*w.shape[:-1], w.shape[-1] * WORD)
