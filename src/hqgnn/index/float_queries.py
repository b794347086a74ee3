"""Float queries of the asymmetric index: their 8-bit candidate-pass codes and the residual that bounds the error."""

from __future__ import annotations

import numpy as np

_FLOAT_QUERY_BITS = 8  # float queries are searched with 8-bit codes, then re-scored in float64


def quantize_float_queries(x: np.ndarray, bits: int = _FLOAT_QUERY_BITS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-abs symmetric codes for the float-query candidate pass: (codes, Delta (B,) float32,
    ||x - Delta q||_1 (B,) float64). Delta = max|x| / (2^(b-1) - 1) (1 for a zero row)."""
    qp = 2 ** (bits - 1) - 1
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    delta = np.where(amax > 0, amax / np.float32(qp), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(x / delta[:, None]), -qp, qp).astype(np.int8)
    resid = np.abs(x.astype(np.float64) - delta.astype(np.float64)[:, None] * codes).sum(axis=1)
    return codes, delta, resid
