"""Per-query bounded top-k state for the CPU kernels (heap, exclusion cursor, final ordering, range merge) and the
bit-exact float16 -> float32 widening of stored scales and terms.

Order everywhere is (key descending, original item id ascending), so ties go to the lower id whatever
the scan order. Hand-written selection/sorting (instead of np.partition / np.argsort): same speed on
these small buffers, but numba compiles it in a fraction of the time, which keeps cold test runs short.
numba has no CPU float16 arrays: float16 values reach the kernels as their raw uint16 bits."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = ["as_float32", "half_to_float32", "kernel_values", "merge_ranges", "widen_into"]

# annotations of the kernels' arguments (numba ignores annotations); Int / Float: a Python or a numpy scalar
Arr = np.ndarray
Int = int | np.integer
Float = float | np.floating


@njit(cache=True, inline="always")
def _before(ka: float, ia: int, kb: float, ib: int) -> bool:
    """Result order: key descending, then id ascending (ids are unique, so this is total)."""
    return ka > kb or (ka == kb and ia < ib)


@njit(cache=True)
def _sort_pairs(keys: Arr, ids: Arr, lo: int, hi: int) -> None:
    """In-place heapsort of keys/ids[lo:hi] into result order (worst case O(m log m))."""
    m = hi - lo
    # max-heap on "comes later": the root is the last element in result order
    for start in range(m // 2 - 1, -1, -1):
        _sift(keys, ids, lo, start, m)
    for end in range(m - 1, 0, -1):
        tk = keys[lo]
        ti = ids[lo]
        keys[lo] = keys[lo + end]
        ids[lo] = ids[lo + end]
        keys[lo + end] = tk
        ids[lo + end] = ti
        _sift(keys, ids, lo, 0, end)


@njit(cache=True)
def _sift(keys: Arr, ids: Arr, lo: int, root: int, m: int) -> None:
    while True:
        c = 2 * root + 1
        if c >= m:
            return
        if c + 1 < m and _before(keys[lo + c], ids[lo + c], keys[lo + c + 1], ids[lo + c + 1]):
            c += 1
        if _before(keys[lo + root], ids[lo + root], keys[lo + c], ids[lo + c]):
            tk = keys[lo + root]
            ti = ids[lo + root]
            keys[lo + root] = keys[lo + c]
            ids[lo + root] = ids[lo + c]
            keys[lo + c] = tk
            ids[lo + c] = ti
            root = c
        else:
            return


@njit(cache=True, inline="always")
def _accept(key: float, oid: Int, tau: float, tau_id: Int) -> bool | np.bool:
    """Does (key, original id) beat the current k-th best (tau, tau_id)?"""
    return key > tau or (key == tau and oid < tau_id)


@njit(cache=True)
def _push(keys: Arr, ids: Arr, cnt: Arr, tau: Arr, tau_id: Arr, r: int, key: float, oid: Int, k: int) -> None:
    """Offer an accepted candidate to query r's bounded heap (size k, root = current k-th best).

    The caller has checked _accept(key, oid, tau, tau_id); tau/tau_id always hold the exact k-th
    best once k items are in, so every later bound and prefilter is as tight as possible.
    """
    c = cnt[r]
    kr = keys[r]
    ir_ = ids[r]
    if c < k:
        kr[c] = key
        ir_[c] = oid
        c += 1
        cnt[r] = c
        if c == k:
            for start in range(k // 2 - 1, -1, -1):
                _sift(kr, ir_, 0, start, k)
            tau[r] = kr[0]
            tau_id[r] = ir_[0]
        return
    kr[0] = key
    ir_[0] = oid
    _sift(kr, ir_, 0, 0, k)
    tau[r] = kr[0]
    tau_id[r] = ir_[0]


@njit(cache=True)
def _is_excluded(ex_idx: Arr, expos: Arr, r: int, e_end: int, j: int) -> bool:
    # exclusion lists are sorted and items arrive in increasing j, so a forward pointer suffices
    p = expos[r]
    while p < e_end and ex_idx[p] < j:
        p += 1
    expos[r] = p
    return p < e_end and ex_idx[p] == j  # type: ignore[no-any-return]


@njit(cache=True)
def _finalize(keys: Arr, ids: Arr, cnt: Arr, r: int, k: int, out_keys: Arr, out_ids: Arr, rr: int, qi: int) -> None:
    c = cnt[r]
    kr = keys[r]
    ir_ = ids[r]
    _sort_pairs(kr, ir_, 0, c)
    m = min(k, c)
    for i in range(m):
        out_keys[rr, qi, i] = kr[i]
        out_ids[rr, qi, i] = ir_[i]
    for i in range(m, k):
        out_keys[rr, qi, i] = -np.inf
        out_ids[rr, qi, i] = -1


@njit(cache=True)
def _heap_state(nqq: int, cap: int) -> tuple[Arr, Arr, Arr, Arr, Arr, Arr]:
    """A task's per-query top-k state: keys, ids, counts, thresholds (tau, tau_id), exclusion cursors."""
    return (np.empty((nqq, cap), np.float64), np.empty((nqq, cap), np.int64), np.zeros(nqq, np.int64),
            np.full(nqq, -np.inf), np.full(nqq, np.iinfo(np.int64).max), np.zeros(nqq, np.int64))


@njit(cache=True)
def _init_expos(ex_ptr: Arr, ex_idx: Arr, q0: int, nqq: int, jstart: int, expos: Arr) -> None:
    for r in range(nqq):
        a = ex_ptr[q0 + r]
        b = ex_ptr[q0 + r + 1]
        expos[r] = a + np.searchsorted(ex_idx[a:b], jstart)


def merge_ranges(keys: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """keys/ids (R, B, k) per item range -> (B, k) in (key desc, id asc) order over all ranges."""
    if keys.shape[0] == 1:
        return keys[0], ids[0]
    r, b, _ = keys.shape
    ck = keys.transpose(1, 0, 2).reshape(b, r * k)
    ci = ids.transpose(1, 0, 2).reshape(b, r * k)
    order = np.lexsort((ci, -ck), axis=-1)[:, :k]  # padding (-inf) sorts last
    return np.take_along_axis(ck, order, 1), np.take_along_axis(ci, order, 1)


def kernel_values(values: np.ndarray) -> np.ndarray:
    """What the kernels read: float16 values as their raw uint16 bits (numba has no CPU float16
    arrays), float32 values as they are."""
    return values.view(np.uint16) if values.dtype == np.float16 else np.ascontiguousarray(values, np.float32)


@njit(cache=True)
def half_to_float32(h: int) -> np.float32:
    """IEEE binary16 bits -> the same value as float32 (exact: every half is a float32). Built
    arithmetically (mantissa * 2^e, ldexp is exact) so no bit reinterpretation is needed."""
    h = np.int64(h)  # type: ignore[assignment]
    e = (h >> 10) & 31
    m = h & 1023
    if e == 31:
        v = math.inf if m == 0 else math.nan
    elif e == 0:
        v = math.ldexp(np.float64(m), -24)  # zero and subnormals: m * 2^-24
    else:
        v = math.ldexp(np.float64(m + 1024), np.int64(e) - 25)  # type: ignore[arg-type]
    return np.float32(-v if h & 0x8000 else v)  # -0.0 for the negative zero pattern


def as_float32(x: float) -> np.float32:  # pragma: no cover - typed through the overload below
    """float32 of one stored value in njit code: uint16 = float16 bits, a float as it is."""
    raise NotImplementedError


@overload(as_float32)
def _as_f32_ol(x):  # type: ignore[no-untyped-def]  # unannotated: numba compares x with the impls' x
    # one kernel source for both storage dtypes: uint16 = float16 bits, floats are read as they are
    if isinstance(x, types.Integer):
        return lambda x: half_to_float32(x)
    return lambda x: np.float32(x)


@njit(cache=True)
def widen_into(values: Arr, stride: int, c0: int, m: int, out: Arr) -> None:
    """out[:m] = float32 values of rows c0..c0+m (stride 1), or out[0] = the one value (stride 0)."""
    if stride == 0:
        out[0] = as_float32(values[0])
    else:
        for j in range(m):
            out[j] = as_float32(values[c0 + j])
