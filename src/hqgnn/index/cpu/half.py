"""float16 scales / terms in numba kernels: a bit-exact half -> float32 widening of uint16 bit patterns."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = ["as_float32", "half_to_float32", "kernel_values", "widen_into"]


def kernel_values(values: np.ndarray) -> np.ndarray:
    """What the kernels read: float16 values as their raw uint16 bits (numba has no CPU float16
    arrays), float32 values as they are."""
    return values.view(np.uint16) if values.dtype == np.float16 else np.ascontiguousarray(values, np.float32)


@njit(cache=True)
def half_to_float32(h):
    """IEEE binary16 bits -> the same value as float32 (exact: every half is a float32). Built
    arithmetically (mantissa * 2^e, ldexp is exact) so no bit reinterpretation is needed."""
    h = np.int64(h)
    e = (h >> 10) & 31
    m = h & 1023
    if e == 31:
        v = math.inf if m == 0 else math.nan
    elif e == 0:
        v = math.ldexp(np.float64(m), -24)  # zero and subnormals: m * 2^-24
    else:
        v = math.ldexp(np.float64(m + 1024), np.int64(e) - 25)
    return np.float32(-v if h & 0x8000 else v)  # -0.0 for the negative zero pattern


def as_float32(x):  # pragma: no cover - typed through the overload below
    """float32 of one stored value in njit code: uint16 = float16 bits, a float as it is."""
    raise NotImplementedError


@overload(as_float32)
def _as_f32_ol(x):
    # one kernel source for both storage dtypes: uint16 = float16 bits, floats are read as they are
    if isinstance(x, types.Integer):
        return lambda x: half_to_float32(x)
    return lambda x: np.float32(x)


@njit(cache=True)
def widen_into(values, stride, c0, m, out):
    """out[:m] = float32 values of rows c0..c0+m (stride 1), or out[0] = the one value (stride 0)."""
    if stride == 0:
        out[0] = as_float32(values[0])
    else:
        for j in range(m):
            out[j] = as_float32(values[c0 + j])
