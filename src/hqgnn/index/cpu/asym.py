"""CPU kernels for asymmetric search: the 1-bit LUT task (one or two query planes, the second computed only
where the first cannot prune), the nibble / int8 task, exact keys and the integer cut.

1-bit items use the ``vpshufb`` lookup-table kernels of :mod:`hqgnn.index.cpu.lut1`; 5..8-bit queries are split
into a high plane h and a low plane l (c = 16 h + l, both looked up), and <c_u, b_i> becomes
<c_u, c_i> = 2 <c_u, b_i> - sum(c_u). b-bit items reuse cpu.simd's nibble (``vpmaddubsw``) and int8
(``vpmaddwd``) kernels; 8-bit queries against nibble items are split into two planes with |h|, |l| <= 8
(c = 16 h + l), which is the range that kernel is exact for.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .lut1 import (  # noqa: F401  (re-exported: the index's view of the LUT layout)
    HAVE_LUT_SIMD,
    LUT_BLOCK,
    LUT_MAX_DIM,
    _lut1q_ir,
    _lut8_ir,
    _lut8x_ir,
    _lut_portable,
    _pass_ir,
    _pass_portable,
    lut1_cols,
    lut1_tables,
    pack_lut1,
    unpack_lut1,
)
from .select import Arr, Float, Int, _accept, _finalize, _heap_state, _init_expos, _is_excluded, _push, as_float32
from .simd import QG, _addr, _popcnt64, _s8_ir, _s8_portable, _u4_ir, _u4_portable

__all__ = ["HAVE_LUT_SIMD", "LUT_BLOCK", "LUT_MAX_DIM", "asym_task", "lut1_tables", "lut_task", "pack_lut1",
           "unpack_lut1"]

KIND_NIBBLE, KIND_INT8 = 1, 2


@njit(cache=True)
def _raw_scores(kind: int, use_simd: bool, items: Arr, blk16_0: int, nblk16: int, ngp: int, qv: Arr, g0: int,
                buf: Arr) -> None:
    """Raw kernel scores of 8 queries (rows g0.. of qv) x 16-item blocks blk16_0.. into buf (nibble / int8 items)."""
    qrow = qv.shape[1]
    if kind == KIND_NIBBLE:
        if use_simd:
            _u4_ir(_addr(items) + blk16_0 * ngp * 32, nblk16, ngp, _addr(qv) + g0 * qrow, _addr(buf), buf.shape[1])
        else:
            _u4_portable(items, blk16_0, nblk16, ngp, qv, g0, buf)
    else:
        if use_simd:
            _s8_ir(_addr(items) + 2 * blk16_0 * ngp * 16, 2 * nblk16, ngp, _addr(qv) + g0 * qrow, _addr(buf),
                   buf.shape[1])
        else:
            _s8_portable(items, 2 * blk16_0, 2 * nblk16, ngp, qv, g0, buf)


@njit(cache=True, inline="always")
def _key(ip: Int, s: Float, su: float, t: Float) -> float:
    # the one float64 formula of the score; reference_asym_scores evaluates exactly the same ops
    return np.float64(ip) * s * su + t


@njit(cache=True)
def _cuts(smax: float, smin: float, su: float, tm: float, tau: float, lo: Int, hi: Int) -> tuple[np.int64, np.int64]:
    """(P, N): an item of the chunk (ip in [lo, hi], s_i in [smin, smax], t_i <= tm) can reach
    tau only if ip >= P or ip <= N. For each corner s, f(ip) = _key(ip, s, su, tm) is monotone in
    ip (every rounding step is) and bounds every computed key with that ip, so {ip : f(ip) >= tau}
    is a ray: its end is estimated in float64, then moved to the exact integer by evaluating f."""
    P = np.int64(hi) + 1
    N = np.int64(lo) - 1
    lo64 = np.float64(lo) - 1.0
    hi64 = np.float64(hi) + 1.0
    for s in (smax, smin):
        a = s * su
        if a == 0.0:
            if _key(0, s, su, tm) >= tau:
                P = min(P, np.int64(lo))  # constant key: every item may reach tau
            continue
        x = min(max((tau - tm) / a, lo64), hi64)
        if a > 0.0:
            e = np.int64(np.floor(x))
            while e > lo and _key(e - 1, s, su, tm) >= tau:
                e -= 1
            while e <= hi and _key(e, s, su, tm) < tau:
                e += 1
            P = min(P, e)
        else:
            e = np.int64(np.ceil(x))
            while e < hi and _key(e + 1, s, su, tm) >= tau:
                e += 1
            while e >= lo and _key(e, s, su, tm) < tau:
                e -= 1
            N = max(N, e)
    return P, N


@njit(cache=True, inline="always")
def _task_range(t: int, B: int, n: int, n_ranges: int, chunk: int) -> tuple[int, int, int, int]:
    """(q0, q1, ch0, ch1) of task t = qt * n_ranges + rr: queries [64 qt, 64 qt + 64) x the rr-th chunk range."""
    nchunks = (n + chunk - 1) // chunk
    cpr = (nchunks + n_ranges - 1) // n_ranges
    qt = t // n_ranges
    rr = t - qt * n_ranges
    return qt * 64, min(qt * 64 + 64, B), rr * cpr, min(nchunks, rr * cpr + cpr)


@njit(cache=True, inline="always")
def _bound(lo: Int, hi: Int, smax: float, smin: float, su: float, tm: float) -> float:
    # the key is bilinear in (ip, s_i): its max over the chunk is at a corner, and every rounding
    # step is monotone, so evaluating the same formula there bounds it exactly
    if smin >= 0.0 and su >= 0.0:  # the usual case: non-decreasing in ip, so the corner is known
        return _key(hi, smax if hi >= 0 else smin, su, tm)
    return max(max(_key(hi, smax, su, tm), _key(hi, smin, su, tm)), max(_key(lo, smax, su, tm), _key(lo, smin, su, tm)))


@njit(cache=True, inline="always")
def _chunk(ch: int, chunk: int, block: int, n: int, cmax: Arr, cmin: Arr, tmax: Arr, sstride: int,
           tstride: int) -> tuple[int, int, int, int, float, float, float]:
    """Chunk ``ch``'s first item, its valid items, its first kernel block of ``block`` items and their count, and
    its bounds: max / min scale, max |term| (float64)."""
    c0 = ch * chunk
    nvalid = min(c0 + chunk, n) - c0
    return (c0, nvalid, c0 // block, (nvalid + block - 1) // block, np.float64(cmax[ch * sstride]),
            np.float64(cmin[ch * sstride]), np.float64(tmax[ch * tstride]))


@njit(cache=True, nogil=True)
def lut_task(t: int, use_simd: bool, need_min: bool, items: Arr, ngp: int, n: int, k: int, qa: Arr, qb: Arr,
             nplanes: int, mul_a: int, mul_b: int, qadd: Arr, bmin: Arr, bmax: Arr, qs: Arr, scales: Arr, sstride: int,
             terms: Arr, tstride: int, cmax: Arr, cmin: Arr, tmax: Arr, oid: Arr, ex_ptr: Arr, ex_idx: Arr,
             has_ex: bool, n_ranges: int, chunk: int, sc_chunks: int, out_keys: Arr, out_ids: Arr) -> None:
    """One task of the 1-bit LUT search: queries [64 qt, 64 qt + 64) x item range rr (t = qt * R + rr).

    ip = mul_a A + mul_b B + qadd[q] from the biased table sums A (tables qa) and, with two planes, B (qb);
    mul_b B lies in [bmin[q], bmax[q]], so A alone bounds ip. A query re-scans a chunk only when A's range
    and the chunk's scale / term ranges bound a key that reaches its k-th best, and then looks up plane B
    only for the 32-item blocks holding an item past the exact integer cut (_cuts) on A. Keys, ties and
    exclusions as in :func:`asym_task`. ``need_min`` False (no negative scale): max-only kernel, floor 0.
    """
    B = qs.shape[0]
    q0, q1, ch0, ch1 = _task_range(t, B, n, n_ranges, chunk)
    rr = t - (t // n_ranges) * n_ranges
    nqq = q1 - q0
    ident = oid.shape[0] == 0
    npad = -(-nqq // QG) * QG  # whole 8-query groups, so the screen below has a fixed trip count
    keys, ids, cnt, tau, tau_id, expos = _heap_state(npad, k)
    tau[nqq:] = np.inf  # pad queries: never live
    if has_ex:
        _init_expos(ex_ptr, ex_idx, q0, nqq, ch0 * chunk, expos)
    bufa = np.empty((QG, chunk), np.uint16)
    bufb = np.empty((QG, chunk), np.uint16)
    mm = np.empty((QG, 2), np.int32)
    mmb = np.empty((QG, 2), np.int32)
    masks = np.empty(chunk // 32, np.uint32)
    # addresses once: passing arrays into the per-block kernel calls costs an incref / decref pair each
    ia, ta, tb, ba, bb, ma, mba, ka = (_addr(items), _addr(qa), _addr(qb), _addr(bufa), _addr(bufb), _addr(mm),
                                       _addr(mmb), _addr(masks))
    trow = qa.shape[1]
    bstep = ngp * 64  # bytes per 32-item block
    addhi = np.zeros(npad, np.int64)
    addhi[:nqq] = qadd[q0:q1] + bmax[q0:q1]  # ip <= mul_a * A + addhi
    sug = np.zeros(npad)
    sug[:nqq] = qs[q0:q1]
    # loop order as in asym_task: super-chunk (stays in L2) x 8-query group (tables in L1) x chunk
    for sc0 in range(ch0, ch1, sc_chunks):
        for g0 in range(q0, q1, QG):
            for ch in range(sc0, min(ch1, sc0 + sc_chunks)):
                c0, nvalid, blk0, nblk, smax, smin, tm = _chunk(ch, chunk, 32, n, cmax, cmin, tmax, sstride, tstride)
                if use_simd and need_min:
                    _lut8_ir(ia + blk0 * bstep, nblk, ngp, ta + g0 * trow, ba, chunk, ma)
                elif use_simd:  # max only: A >= 0 is the lower bound (see need_min)
                    _lut8x_ir(ia + blk0 * bstep, nblk, ngp, ta + g0 * trow, ba, chunk, ma)
                    mm[:, 1] = 0
                else:
                    _lut_portable(items, blk0, nblk, ngp, qa, g0, QG, bufa, 0, 0, mm)
                nr8 = min(QG, q1 - g0)
                if not need_min:
                    # branch-free screen of the 8 queries (the bound's corner is known: _bound's fast path)
                    live = 0
                    for r8 in range(QG):
                        hi = mul_a * np.int64(mm[r8, 0]) + addhi[g0 - q0 + r8]
                        ub = _key(hi, smax if hi >= 0 else smin, sug[g0 - q0 + r8], tm)
                        tr = tau[g0 - q0 + r8]
                        live |= np.int64((ub > tr) | ((ub == tr) & (not ident))) << r8  # type: ignore[assignment]
                    if live == 0:
                        continue
                for r8 in range(nr8):
                    qi = g0 + r8
                    r = qi - q0
                    add = np.int64(qadd[qi])
                    blo = np.int64(bmin[qi])
                    bhi = np.int64(bmax[qi])
                    lo = mul_a * np.int64(mm[r8, 1]) + add + blo  # pad slots included: wider, safe
                    hi = mul_a * np.int64(mm[r8, 0]) + add + bhi
                    su = np.float64(qs[qi])
                    ub = _bound(lo, hi, smax, smin, su, tm)
                    if not (ub > tau[r] or (ub == tau[r] and not ident)):
                        continue
                    e_end = ex_ptr[qi + 1] if has_ex else 0
                    pc, nc = _cuts(smax, smin, su, tm, tau[r], lo, hi)
                    # the cut in plane A's units: an item can pass only if A >= ahi or A <= alo
                    ahi = -((add + bhi - pc) // mul_a)
                    alo = (nc - add - blo) // mul_a
                    if use_simd:
                        _pass_ir(ba + 2 * r8 * chunk, nblk, ahi, alo, ka)
                    else:
                        _pass_portable(bufa, r8, nblk, ahi, alo, masks)
                    for bi in range(nblk):
                        m = np.int64(masks[bi])
                        if m == 0:
                            continue
                        j0 = 32 * bi
                        if nplanes == 2 and use_simd:  # plane B for this query and block only
                            _lut1q_ir(ia + (blk0 + bi) * bstep, 1, ngp, tb + qi * trow, bb + 2 * (r8 * chunk + j0),
                                      chunk, mba)
                        elif nplanes == 2:
                            _lut_portable(items, blk0 + bi, 1, ngp, qb, qi, 1, bufb, r8, j0, mmb)
                        # (the heap insertion below is written out in both tasks: as one inline helper it
                        # measured 8 % slower on the float path, BENCHMARKS.md § 3c)
                        while m != 0:  # the items past the cut on A, in increasing order (exclusion cursor)
                            j = j0 + _popcnt64(np.uint64((m & -m) - 1))
                            m &= m - 1
                            if j >= nvalid:
                                break  # pad slots: the last block's tail
                            ip = mul_a * np.int64(bufa[r8, j]) + add
                            if nplanes == 2:
                                ip += mul_b * np.int64(bufb[r8, j])
                                if ip < pc and ip > nc:
                                    continue
                            p = c0 + j
                            key = _key(ip, as_float32(scales[p * sstride]), su, as_float32(terms[p * tstride]))
                            if key < tau[r]:
                                continue
                            o = p if ident else np.int64(oid[p])
                            if _accept(key, o, tau[r], tau_id[r]):
                                if has_ex and _is_excluded(ex_idx, expos, r, e_end, p):
                                    continue
                                _push(keys, ids, cnt, tau, tau_id, r, key, o, k)
    for r in range(nqq):
        _finalize(keys, ids, cnt, r, k, out_keys, out_ids, rr, q0 + r)


@njit(cache=True, nogil=True)
def asym_task(t: int, kind: int, use_simd: bool, items: Arr, ngp: int, n: int, k: int, qa: Arr, qb: Arr,
              nplanes: int, mul_a: int, mul_b: int, qadd: Arr, qs: Arr, scales: Arr, sstride: int, terms: Arr,
              tstride: int, cmax: Arr, cmin: Arr, tmax: Arr, oid: Arr, ex_ptr: Arr, ex_idx: Arr, has_ex: bool,
              n_ranges: int, chunk: int, sc_chunks: int, out_keys: Arr, out_ids: Arr) -> None:
    """One task of the nibble / int8 asymmetric search: queries [64 qt, 64 qt + 64) x item range rr (t = qt * R + rr).

    ip = mul_a * rawA + mul_b * rawB + qadd[q] is the exact integer <c_u, c_i> from the raw kernel
    scores of plane A (query vectors qa) and, when nplanes == 2, plane B (qb); the ranking key is
    ``ip * s_i * s_u + t_i`` in float64 (see _key). Per (8-query group, chunk) the integer range of
    ip and the chunk's scale / term ranges bound every key; the chunk is re-scanned for a query only
    when that bound reaches its current k-th best. Ties go to the lower original id (oid), and
    exclusions are storage positions sorted per query, as in cpu.sym.

    ``scales`` / ``terms``: float32, or the uint16 bits of float16 values (widened per item, only
    for the items of a re-scanned chunk whose ip passes the chunk's integer cut); ``cmax`` /
    ``cmin`` (per-chunk scale range) and ``tmax`` (per-chunk max term) are float32, one entry per
    chunk for per-row values (stride 1) or a single entry (stride 0).
    """
    B = qs.shape[0]
    q0, q1, ch0, ch1 = _task_range(t, B, n, n_ranges, chunk)
    rr = t - (t // n_ranges) * n_ranges
    nqq = q1 - q0
    ident = oid.shape[0] == 0
    keys, ids, cnt, tau, tau_id, expos = _heap_state(nqq, k)
    if has_ex:
        _init_expos(ex_ptr, ex_idx, q0, nqq, ch0 * chunk, expos)
    bufa = np.empty((QG, chunk), np.int32)
    bufb = np.empty((QG, chunk), np.int32)
    # loop order: super-chunk (a few hundred KiB of items, stays in L2) x 8-query group (its
    # tables, 4 KiB at d=64, stay in L1) x chunk; 64 queries' tables at once would overflow L1
    # (measured 3-4x slower kernel)
    for sc0 in range(ch0, ch1, sc_chunks):
        for g0 in range(q0, q1, QG):
            for ch in range(sc0, min(ch1, sc0 + sc_chunks)):
                c0, nvalid, blk0, nblk, smax, smin, tm = _chunk(ch, chunk, 16, n, cmax, cmin, tmax, sstride, tstride)
                _raw_scores(kind, use_simd, items, blk0, nblk, ngp, qa, g0, bufa)
                if nplanes == 2:
                    _raw_scores(kind, use_simd, items, blk0, nblk, ngp, qb, g0, bufb)
                for r8 in range(min(QG, q1 - g0)):
                    qi = g0 + r8
                    r = qi - q0
                    add = np.int32(qadd[qi])
                    if nplanes == 2:
                        lo = np.int32(2147483647)
                        hi = np.int32(-2147483647)
                        for j in range(nvalid):
                            v = np.int32(mul_a * bufa[r8, j] + mul_b * bufb[r8, j] + add)
                            bufa[r8, j] = v
                            lo = min(lo, v)
                            hi = max(hi, v)
                    else:
                        # one plane: ip = mul_a * raw + add with mul_a > 0, so the raw range is enough
                        # (ip is formed only for the items of a chunk that gets re-scanned)
                        rlo = np.int32(2147483647)
                        rhi = np.int32(-2147483647)
                        for j in range(nvalid):
                            v = bufa[r8, j]
                            rlo = min(rlo, v)
                            rhi = max(rhi, v)
                        lo = np.int32(mul_a * rlo + add)
                        hi = np.int32(mul_a * rhi + add)
                    su = np.float64(qs[qi])
                    ub = _bound(lo, hi, smax, smin, su, tm)
                    if not (ub > tau[r] or (ub == tau[r] and not ident)):
                        continue
                    e_end = ex_ptr[qi + 1] if has_ex else 0
                    # re-scan: an integer cut on ip first (one compare per item), keys only for the
                    # items past it -- without a storage order most chunks get here, and computing
                    # every key was the bottleneck
                    pc, nc = _cuts(smax, smin, su, tm, tau[r], lo, hi)
                    for j in range(nvalid):
                        ip = bufa[r8, j] if nplanes == 2 else np.int32(mul_a * bufa[r8, j] + add)
                        if ip < pc and ip > nc:
                            continue
                        p = c0 + j
                        key = _key(ip, as_float32(scales[p * sstride]), su, as_float32(terms[p * tstride]))
                        if key < tau[r]:
                            continue
                        o = p if ident else np.int64(oid[p])
                        if _accept(key, o, tau[r], tau_id[r]):
                            if has_ex and _is_excluded(ex_idx, expos, r, e_end, p):
                                continue
                            _push(keys, ids, cnt, tau, tau_id, r, key, o, k)
    for r in range(nqq):
        _finalize(keys, ids, cnt, r, k, out_keys, out_ids, rr, q0 + r)
