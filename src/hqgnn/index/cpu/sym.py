"""Multi-threaded CPU top-k kernels (numba, plus AVX2 micro-kernels written in LLVM IR) over packed codes.

Design (why it is fast):
* Work is split into tasks of up to 64 queries x a contiguous item range, run by a thread pool on
  nogil numba functions. A task streams its items in small chunks that stay in L1 while 8-query
  register groups sweep them, so memory traffic is (#queries / 64) x the code bytes.
* Selection never sorts all scores. Each query keeps a bounded heap of its k best (root = the
  exact current k-th best key ``tau``). Per (8-query group, chunk) a cheap vectorized bound is
  computed (min Hamming distance; min/max integer score combined with the chunk's scale range);
  only when it can reach ``tau`` is the chunk re-scanned for that query, and the re-scan first
  compares integers (a Hamming-distance / raw-score limit derived from ``tau``). With k << n
  almost every chunk is rejected by one compare.
* With per-row scales the index stores items sorted by scale (descending), so every chunk spans
  a narrow scale range and the bound is tight; ``oid`` maps storage rows back to item ids.
* Exactness: ranking keys are float64 values that are exact (integer inner product times a float32
  scale needs <= 45 significant bits), and every comparison is on (key, original id), so ties go
  to the lower id whatever the scan order. The final heap is sorted by (key desc, id asc).
* b-bit inner products use ``vpmaddubsw`` (b <= 4, nibble codes; exact: no int16 saturation for
  |q| <= 8, nibble <= 15) and ``vpmaddwd`` (b <= 8) emitted from LLVM IR (module cpu.simd),
  because numba's auto-vectorizer does not produce them (measured ~15x slower). A portable numba
  fallback reads the same layouts and is used when the host has no AVX2 (and by the tests).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

# per-query heap state lives in cpu.select, the b-bit micro-kernels in cpu.simd;
# merge_ranges, HAVE_AVX2 and the *_py entries are re-exported for callers and tests
from .select import _accept, _finalize, _heap_state, _init_expos, _is_excluded, _push, merge_ranges  # noqa: F401
from .simd import (  # noqa: F401
    HAVE_AVX2,
    QG,
    _addr,
    _popcnt64,
    _s8_ir,
    _s8_ir_py,
    _s8_portable,
    _u4_ir,
    _u4_ir_py,
    _u4_portable,
)

__all__ = [
    "HAVE_AVX2",
    "binary_task",
    "choose_ranges",
    "default_threads",
    "merge_ranges",
    "n_tasks",
    "run_tasks",
    "scalar_task",
]

QT = 64  # queries per task: a chunk of items is reused by this many queries while it sits in L1


# ------------------------------------------------------------------------------- 1-bit codes
@njit(cache=True)
def _hmin8(q, g0, x, c0, c1, hmin):
    """Min Hamming distance of 8 queries (rows g0..g0+7 of q) over items c0..c1 (x words)."""
    W = q.shape[1]
    if W == 1:
        # one word per code: 8 queries live in registers and every loaded item word is reused 8x
        q0 = q[g0, 0]
        q1 = q[g0 + 1, 0]
        q2 = q[g0 + 2, 0]
        q3 = q[g0 + 3, 0]
        q4 = q[g0 + 4, 0]
        q5 = q[g0 + 5, 0]
        q6 = q[g0 + 6, 0]
        q7 = q[g0 + 7, 0]
        m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.int64(1 << 30)
        for j in range(c0, c1):
            xj = x[j, 0]
            m0 = min(m0, _popcnt64(q0 ^ xj))
            m1 = min(m1, _popcnt64(q1 ^ xj))
            m2 = min(m2, _popcnt64(q2 ^ xj))
            m3 = min(m3, _popcnt64(q3 ^ xj))
            m4 = min(m4, _popcnt64(q4 ^ xj))
            m5 = min(m5, _popcnt64(q5 ^ xj))
            m6 = min(m6, _popcnt64(q6 ^ xj))
            m7 = min(m7, _popcnt64(q7 ^ xj))
    else:
        m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.int64(1 << 30)
        for j in range(c0, c1):
            h0 = h1 = h2 = h3 = h4 = h5 = h6 = h7 = np.int64(0)
            for w in range(W):
                xw = x[j, w]
                h0 += _popcnt64(q[g0, w] ^ xw)
                h1 += _popcnt64(q[g0 + 1, w] ^ xw)
                h2 += _popcnt64(q[g0 + 2, w] ^ xw)
                h3 += _popcnt64(q[g0 + 3, w] ^ xw)
                h4 += _popcnt64(q[g0 + 4, w] ^ xw)
                h5 += _popcnt64(q[g0 + 5, w] ^ xw)
                h6 += _popcnt64(q[g0 + 6, w] ^ xw)
                h7 += _popcnt64(q[g0 + 7, w] ^ xw)
            m0 = min(m0, h0)
            m1 = min(m1, h1)
            m2 = min(m2, h2)
            m3 = min(m3, h3)
            m4 = min(m4, h4)
            m5 = min(m5, h5)
            m6 = min(m6, h6)
            m7 = min(m7, h7)
    hmin[0] = m0
    hmin[1] = m1
    hmin[2] = m2
    hmin[3] = m3
    hmin[4] = m4
    hmin[5] = m5
    hmin[6] = m6
    hmin[7] = m7


@njit(cache=True)
def _hamming(q, qi, x, j):
    h = np.int64(0)
    for w in range(q.shape[1]):
        h += _popcnt64(q[qi, w] ^ x[j, w])
    return h


@njit(cache=True)
def _bin_bound(d, h, smax, smin):
    v = np.float64(d - 2 * h)
    return v * smax if v >= 0 else v * smin


@njit(cache=True)
def _h_limit(scaled, d, qm, smax, smin, tau, ident):
    """Largest Hamming distance an item of this chunk may have and still be accepted (-1: none).

    Hamming mode: tau = -h_k exactly, so h < h_k wins (h == h_k too when ids are not in scan
    order). Scaled mode: key <= qm * (d - 2h) * (smax or smin), non-increasing in h, so a binary
    search finds the last h whose bound reaches tau (>=: a superset; _accept decides exactly).
    """
    if tau == -np.inf:
        return np.int64(d)
    if not scaled:
        t = np.int64(-tau)
        return t - 1 if ident else t
    if qm == 0.0:  # every key is 0
        ok = 0.0 > tau or (0.0 == tau and not ident)
        return np.int64(d) if ok else np.int64(-1)
    if _bin_bound(d, 0, smax, smin) < tau:
        return np.int64(-1)
    lo = np.int64(0)  # bound(lo) >= tau
    hi = np.int64(d) + 1  # bound(hi) < tau (virtual)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _bin_bound(d, mid, smax, smin) >= tau:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True)
def _raw_limit(tau, smax, smin, off):
    """Smallest raw kernel score (ip + off) whose key ip * s (s in [smin, smax]) may reach tau.

    Valid when smin >= 0 (then the bound max(ip*smax, ip*smin) is non-decreasing in ip);
    otherwise no prefilter (returns the int64 minimum).
    """
    none = np.int64(-(2**62))
    if tau == -np.inf or smin < 0:
        return none
    if tau > 0:
        if smax <= 0:
            return np.int64(2**62)
        c = np.int64(np.floor(tau / smax)) - 1
        while np.float64(c) * smax < tau:
            c += 1
        return c + off
    if smin == 0:  # any ip <= 0 has bound 0 >= tau
        return none
    c = np.int64(np.ceil(tau / smin)) + 1  # <= 0 region: smallest ip with ip * smin >= tau
    while np.float64(c - 1) * smin >= tau:
        c -= 1
    return c + off


@njit(cache=True, nogil=True)
def binary_task(t, q, x, n, k, scaled, d, scales, sstride, cmax, cmin, qmul, oid, ex_ptr, ex_idx, has_ex,
                n_ranges, chunk, out_keys, out_ids):
    """One task of the 1-bit search: queries [64 qt, 64 qt + 64) x item range rr (t = qt * R + rr).

    q (B_pad8, W) / x (n, W) uint64 sign words in storage order. Hamming mode (scaled=False):
    key = -hamming. Scaled mode: key = qmul[q] * (d - 2 h) * scales[j * sstride] with scales >= 0 (the index
    complements the words of items / queries with negative scale, so the chunk bound holds);
    cmax/cmin are each chunk's max/min scale. oid maps storage position -> original id (empty =
    identity); ties are broken by original id. Exclusions are storage positions, sorted per query.
    Results go to out_keys/out_ids[rr, query, :] (float64 keys, original ids; -inf/-1 padding).
    """
    B = qmul.shape[0]
    nchunks = (n + chunk - 1) // chunk
    cpr = (nchunks + n_ranges - 1) // n_ranges
    cap = k
    ident = oid.shape[0] == 0
    qt = t // n_ranges
    rr = t - qt * n_ranges
    q0 = qt * QT
    q1 = min(q0 + QT, B)
    nqq = q1 - q0
    ch0 = rr * cpr
    ch1 = min(nchunks, ch0 + cpr)
    keys, ids, cnt, tau, tau_id, expos = _heap_state(nqq, cap)
    if has_ex:
        _init_expos(ex_ptr, ex_idx, q0, nqq, ch0 * chunk, expos)
    hmin = np.empty(QG, np.int64)
    W1 = q.shape[1] == 1
    for ch in range(ch0, ch1):
        c0 = ch * chunk
        c1 = min(c0 + chunk, n)
        for g0 in range(q0, q1, QG):
            _hmin8(q, g0, x, c0, c1, hmin)
            for r8 in range(min(QG, q1 - g0)):
                qi = g0 + r8
                r = qi - q0
                qm = qmul[qi]
                hl = _h_limit(scaled, d, qm, cmax[ch], cmin[ch], tau[r], ident)
                if hmin[r8] > hl:
                    continue  # the whole chunk is out of reach: one compare for 1024 items
                e_end = ex_ptr[qi + 1] if has_ex else 0
                qw = q[qi, 0]
                for j in range(c0, c1):
                    hj = _popcnt64(qw ^ x[j, 0]) if W1 else _hamming(q, qi, x, j)
                    if hj > hl:
                        continue
                    if scaled:
                        key = qm * (np.float64(d - 2 * hj) * scales[j * sstride])
                    else:
                        key = np.float64(-hj)
                    o = j if ident else np.int64(oid[j])
                    if _accept(key, o, tau[r], tau_id[r]):
                        if has_ex and _is_excluded(ex_idx, expos, r, e_end, j):
                            continue
                        _push(keys, ids, cnt, tau, tau_id, r, key, o, k)
                        hl = _h_limit(scaled, d, qm, cmax[ch], cmin[ch], tau[r], ident)
    for r in range(nqq):
        _finalize(keys, ids, cnt, r, k, out_keys, out_ids, rr, q0 + r)


# ------------------------------------------------------------------------------ b-bit codes
@njit(cache=True, nogil=True)
def scalar_task(t, qv, qoff, items, nibble, ngp, n, k, scales, sstride, cmax, cmin, oid, ex_ptr, ex_idx, has_ex,
                n_ranges, chunk, use_simd, out_keys, out_ids):
    """One task of the b-bit search; key = (<q, c> as float64) * scales[j * sstride].

    nibble=True: items from packing.pack_nibble_blocked, qv = bytes of nibble_query_vectors and
    ngp = #groups of 4 dims; raw kernel scores include + qoff[q]. nibble=False: items from
    pack_int8_blocked, qv = bytes of int8_query_vectors, ngp = #dim pairs, qoff = 0.
    chunk is a multiple of 16; cmax/cmin are each chunk's max/min (signed) scale; oid, exclusions
    and outputs as in binary_task.
    """
    B = qoff.shape[0]
    nchunks = (n + chunk - 1) // chunk
    cpr = (nchunks + n_ranges - 1) // n_ranges
    cap = k
    ident = oid.shape[0] == 0
    qrow_bytes = qv.shape[1]  # qv is raw bytes
    qt = t // n_ranges
    rr = t - qt * n_ranges
    q0 = qt * QT
    q1 = min(q0 + QT, B)
    nqq = q1 - q0
    ch0 = rr * cpr
    ch1 = min(nchunks, ch0 + cpr)
    keys, ids, cnt, tau, tau_id, expos = _heap_state(nqq, cap)
    if has_ex:
        _init_expos(ex_ptr, ex_idx, q0, nqq, ch0 * chunk, expos)
    buf = np.empty((QG, chunk), np.int32)
    items_addr = _addr(items)
    qv_addr = _addr(qv)
    buf_addr = _addr(buf)
    for ch in range(ch0, ch1):
        c0 = ch * chunk
        c1 = min(c0 + chunk, n)
        nvalid = c1 - c0
        nblk = (nvalid + 15) // 16
        blk0 = c0 // 16
        smax = cmax[ch]
        smin = cmin[ch]
        for g0 in range(q0, q1, QG):
            if nibble:
                if use_simd:
                    _u4_ir(items_addr + blk0 * ngp * 32, nblk, ngp, qv_addr + g0 * qrow_bytes, buf_addr, chunk)
                else:
                    _u4_portable(items, blk0, nblk, ngp, qv, g0, buf)
            else:
                if use_simd:
                    _s8_ir(items_addr + 2 * blk0 * ngp * 16, 2 * nblk, ngp, qv_addr + g0 * qrow_bytes, buf_addr,
                           chunk)
                else:
                    _s8_portable(items, 2 * blk0, 2 * nblk, ngp, qv, g0, buf)
            for r8 in range(min(QG, q1 - g0)):
                qi = g0 + r8
                r = qi - q0
                off = qoff[qi]
                # vectorized integer min/max, then the bilinear bound over the chunk's scale range
                lo = np.int32(2147483647)
                hi = np.int32(-2147483647)
                for j in range(nvalid):
                    sv = buf[r8, j]
                    lo = min(lo, sv)
                    hi = max(hi, sv)
                iph = np.float64(hi - off)
                ipl = np.float64(lo - off)
                ub = max(max(iph * smax, iph * smin), max(ipl * smax, ipl * smin))
                if not (ub > tau[r] or (ub == tau[r] and not ident)):
                    continue
                e_end = ex_ptr[qi + 1] if has_ex else 0
                rl = _raw_limit(tau[r], smax, smin, off)  # integer prefilter (scales >= 0)
                for j in range(nvalid):
                    raw = buf[r8, j]
                    if raw < rl:
                        continue
                    key = np.float64(raw - off) * scales[(c0 + j) * sstride]
                    p = c0 + j
                    o = p if ident else np.int64(oid[p])
                    if _accept(key, o, tau[r], tau_id[r]):
                        if has_ex and _is_excluded(ex_idx, expos, r, e_end, p):
                            continue
                        _push(keys, ids, cnt, tau, tau_id, r, key, o, k)
                        rl = _raw_limit(tau[r], smax, smin, off)
    for r in range(nqq):
        _finalize(keys, ids, cnt, r, k, out_keys, out_ids, rr, q0 + r)


def choose_ranges(n_queries: int, n_chunks: int, threads: int) -> int:
    """Split items into ranges only when there are too few query tasks to keep all threads busy."""
    nqt = max(1, math.ceil(n_queries / QT))
    if nqt >= 2 * threads:
        return 1
    return int(max(1, min(n_chunks, math.ceil(2 * threads / nqt))))


def n_tasks(n_queries: int, n_ranges: int) -> int:
    return max(1, math.ceil(n_queries / QT)) * n_ranges


# ------------------------------------------------------------------------------ threading
# Tasks run on a plain thread pool: the task kernels are nogil, so threads really run in parallel,
# and -- unlike numba's parallel=True -- there is no parfor compile step (it cost ~4.5 s per kernel
# on a cold cache) and the thread count is a per-call argument.
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def default_threads() -> int:
    env = os.environ.get("HQGNN_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
    if env and env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def run_tasks(fn, ntasks: int, args: tuple, threads: int | None = None) -> None:
    """Call ``fn(t, *args)`` for t in range(ntasks) on up to ``threads`` threads."""
    threads = default_threads() if threads is None else max(1, int(threads))
    if threads == 1 or ntasks == 1:
        for t in range(ntasks):
            fn(t, *args)
        return
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < threads:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hqgnn-index")
            _POOL_SIZE = threads
        pool = _POOL
    # at most `threads` workers pull task ids from a shared counter (dynamic load balance)
    counter = iter(range(ntasks))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                t = next(counter, None)
            if t is None:
                return
            fn(t, *args)

    futures = [pool.submit(worker) for _ in range(min(threads, ntasks))]
    for f in futures:
        f.result()
