"""Queries: the encoded form (QueryCodes), encoding float vectors in a format's query width, rotation and
centering, and the 8-bit candidate-pass codes of float queries with the residual that bounds their error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .common import ArrayLike, ScaleLike, to_numpy

if TYPE_CHECKING:
    from .format import CodeFormat

def quantize_float_queries(x: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-abs symmetric codes in [-qmax, qmax] for the float-query candidate pass: (codes int8, Delta (B,)
    float32, ||x - Delta q||_1 (B,) float64). Delta = max|x| / qmax (1 for a zero row)."""
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    delta = np.where(amax > 0, amax / np.float32(qmax), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(x / delta[:, None]), -qmax, qmax).astype(np.int8)
    resid = np.abs(x.astype(np.float64) - delta.astype(np.float64)[:, None] * codes).sum(axis=1)
    return codes, delta, resid


def float_query_err(resid: Any, x1: Any, delta: Any, sc: float, qmax: int, dim: int, tmax: float) -> Any:
    """The bound on |s_i <x, c_i> + t_i - (s_i Delta <q, c_i> + t_i)| for every item of an index whose
    |s_i| * |c_i| <= ``sc`` and |t_i| <= ``tmax``: ``sc * ||x - Delta q||_1`` (``resid``) plus float64 slack
    for the approximate key's own roundings (``x1`` = ||x||_1). Float64 NumPy arrays or torch tensors (the
    CPU and GPU searches share it)."""
    return sc * resid * (1 + 2.0**-30) + 2.0**-30 * (sc * (x1 + delta * qmax * dim) + tmax)


def prepare_queries(x: ArrayLike, rotation: ScaleLike = None, center: ScaleLike = None,
                    query_bits: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Queries as :meth:`AsymCodeIndex.search` takes them: ``(x - center) @ rotation``, then for
    ``query_bits`` in 2..8 symmetric uniform codes with one scale per row chosen to minimise the
    squared error (``hqgnn.quant.data_scale``; a zero row gets scale 1 and zero codes).

    Returns ``(codes int8 (B, d), scales float32 (B,))`` for quantized queries, or
    ``(x float32 (B, d), None)`` for ``query_bits=0``. ``center`` (d_in,) is subtracted before the
    rotation (d_in, d); the index's per-item term t_i carries what centering moved out of the items.
    """
    import torch

    from ..quant.estimators import integer_codes
    from ..quant.quantizer import data_scale

    q = np.asarray(to_numpy(x), dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must be 2-D (B, d), got shape {q.shape}")
    if center is not None:
        c = np.asarray(to_numpy(center), dtype=np.float32).reshape(-1)
        if c.size != q.shape[1]:
            raise ValueError(f"center has {c.size} entries, queries have dim {q.shape[1]}")
        q = q - c[None, :]
    if rotation is not None:
        r = np.asarray(to_numpy(rotation), dtype=np.float32)
        if r.ndim != 2 or r.shape[0] != q.shape[1]:
            raise ValueError(f"rotation must be ({q.shape[1]}, d), got shape {r.shape}")
        q = q @ r
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.all(np.isfinite(q)):
        raise ValueError("queries must be finite")
    query_bits = int(query_bits)
    if query_bits == 0:
        return q, None
    if not 2 <= query_bits <= 8:
        raise ValueError(f"query_bits must be 0 (float) or 2..8, got {query_bits}")
    t = torch.from_numpy(q)
    s = data_scale(t, query_bits, per_row=True)  # (B, 1)
    zero = t.abs().amax(dim=1, keepdim=True) == 0 if t.shape[1] else torch.ones_like(s, dtype=torch.bool)
    s = torch.where(zero | ~(s > 0), torch.ones_like(s), s)  # zero rows: codes 0, scale 1
    codes = integer_codes(t, s, query_bits).to(torch.int8).numpy()
    return np.ascontiguousarray(codes), np.ascontiguousarray(s.reshape(-1).numpy().astype(np.float32))


class QueryCodes(NamedTuple):
    """Queries already encoded in a format's query width: int8 codes (B, d) and their scales
    (None = 1, a scalar or (B,) float32), e.g. a trained run's user codes."""

    codes: Any
    scales: Any = None


def encode_queries(x: Any, fmt: CodeFormat) -> QueryCodes | np.ndarray:
    """Float vectors (B, d) as ``fmt``'s queries: unchanged (float32) for float-query formats, else
    codes of ``fmt.query_bits`` bits with one least-squares scale per row (1 bit: signs, scale mean |x|).

    Rotation and centering are not applied here: a run folds them into its encoder, and
    :func:`hqgnn.index.queries.prepare_queries` applies explicit ones.
    """
    if fmt.float_queries:
        return prepare_queries(x, query_bits=0)[0]
    if fmt.query_bits == 1:
        q = prepare_queries(x, query_bits=0)[0]
        scale = np.abs(q).mean(axis=1).astype(np.float32)
        return QueryCodes(np.where(q >= 0, 1, -1).astype(np.int8), np.where(scale > 0, scale, 1).astype(np.float32))
    codes, scales = prepare_queries(x, query_bits=fmt.query_bits)
    return QueryCodes(codes, scales)


def split_queries(queries: Any, fmt: CodeFormat) -> tuple[Any, Any]:
    """(codes, scales) of ``queries``: a QueryCodes, integer codes (scales 1), or float vectors
    encoded by ``fmt`` (float vectors stay as they are for float-query formats: scales None)."""
    if isinstance(queries, tuple) and len(queries) == 2 and not isinstance(queries, np.ndarray):
        return QueryCodes(*queries)
    arr = to_numpy(queries)
    if arr.dtype.kind == "f":
        enc = encode_queries(arr, fmt)
        return (enc, None) if isinstance(enc, np.ndarray) else (enc.codes, enc.scales)
    return arr, None
