"""Triton kernel of the asymmetric two-phase scan (int8 or bit-packed 1-bit items); imported only when Triton is used."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - no Triton: triton_asym_available() is False, nothing imports these
    triton = None

__all__ = ["asym_rescore_kernel", "asym_scan_kernel", "expand_bits", "expand_bits01"]

# Module level (not built inside a function): the CPU interpreter (TRITON_INTERPRET=1) re-runs a
# kernel's source against its module globals, so a helper captured from a closure would be unseen.
if triton is not None:
    @triton.jit
    def expand_bits(w):  # type: ignore[no-untyped-def]
        """int32 words (BN,) -> the int8 (32, BN) +-1 operand: row j = bit j (1 -> +1, 0 -> -1).
        Built in registers, so the kernel reads 4 bytes per item and 32 dims instead of 32."""
        sh = tl.arange(0, 32)
        return (((w[None, :] >> sh[:, None]) & 1) * 2 - 1).to(tl.int8)

    @triton.jit
    def expand_bits01(w):  # type: ignore[no-untyped-def]
        """int32 words (BN,) -> the int8 (32, BN) 0/1 operand (row j = bit j): two operations per
        element fewer than the +-1 form; the kernel recovers <q, x> = 2 <q, bits> - sum(q)."""
        sh = tl.arange(0, 32)
        return ((w[None, :] >> sh[:, None]) & 1).to(tl.int8)

    @triton.jit
    def asym_scan_kernel(Q, X, S, T, SU, QSUM, THR, GMAX, CNT, OUT_ID, B, N, ngroups,  # type: ignore[no-untyped-def]
                         cap, stride_q, stride_x, s_stride, t_stride, D: tl.constexpr, BK: tl.constexpr,
                         BQ: tl.constexpr, BN: tl.constexpr, TILES: tl.constexpr, EMIT: tl.constexpr,
                         PACKED: tl.constexpr, ZERO_ONE: tl.constexpr):
        """Program (i, j) = queries [BQ i, BQ i + BQ) x group j of TILES tiles of BN items.
        key = fl(fl(fl(<q, x>) * s_i) * s_u) + t_i from an exact int8 tensor-core dot. EMIT=False:
        store each (query, group) max key in GMAX; EMIT=True: append the id of every item whose key
        reaches THR[query] to the query's buffer.
        PACKED: X is int32 words (D / 32, N) (row stride stride_x), BK = 32, one word row per dot;
        else int8 codes (N, D). ZERO_ONE (packed only): bits expand to a 0/1 operand and
        ip = 2 <q, bits> - QSUM[query] (the int32 sum of the query's codes), exact like the +-1 form.
        S / T are float16 or float32, stride 0 when one value is stored."""
        pid_q = tl.program_id(0)
        pid_n = tl.program_id(1)
        rq = pid_q * BQ + tl.arange(0, BQ)
        qmask = rq < B
        rd = tl.arange(0, BK)
        cols = tl.arange(0, BN)
        su = tl.load(SU + rq, mask=qmask, other=0.0)
        if ZERO_ONE:
            qsum = tl.load(QSUM + rq, mask=qmask, other=0)
        if EMIT:
            thr = tl.load(THR + rq, mask=qmask, other=float("inf"))
        else:
            gmax = tl.full([BQ], float("-inf"), dtype=tl.float32)
        for t in range(TILES):
            tile = pid_n * TILES + t
            rn = tile * BN + cols
            nmask = rn < N
            ip = tl.zeros([BQ, BN], dtype=tl.int32)
            for k0 in tl.static_range(0, D, BK):
                q = tl.load(Q + rq[:, None] * stride_q + (k0 + rd)[None, :], mask=qmask[:, None], other=0)
                if PACKED:
                    w = tl.load(X + (k0 // 32) * stride_x + rn, mask=nmask, other=0)
                    if ZERO_ONE:
                        ip += tl.dot(q, expand_bits01(w), out_dtype=tl.int32)  # exact int32
                    else:
                        ip += tl.dot(q, expand_bits(w), out_dtype=tl.int32)
                else:
                    x = tl.load(X + rn[:, None] * stride_x + (k0 + rd)[None, :], mask=nmask[:, None], other=0)
                    ip += tl.dot(q, tl.trans(x), out_dtype=tl.int32)  # int8 x int8 -> exact int32
            if ZERO_ONE:
                ip = 2 * ip - qsum[:, None]
            # float16 values widen exactly: the same float32 key as from float32 storage
            s = tl.load(S + rn * s_stride, mask=nmask, other=0.0).to(tl.float32)
            # items past N: term -inf, so their key is -inf (no mask on every key of the tile)
            tt = tl.load(T + rn * t_stride, mask=nmask, other=float("-inf")).to(tl.float32)
            key = (ip.to(tl.float32) * s[None, :]) * su[:, None] + tt[None, :]
            if EMIT:
                hit = ((key >= thr[:, None]) & nmask[None, :]).to(tl.int32)
                rowcnt = tl.sum(hit, axis=1)
                while tl.max(rowcnt, axis=0) > 0:  # hits are rare: one per row per round
                    pos = tl.argmax(hit, axis=1, tie_break_left=True)
                    has = rowcnt > 0
                    slot = tl.atomic_add(CNT + rq, 1, mask=has, sem="relaxed")
                    tl.store(OUT_ID + rq * cap + slot, tile * BN + pos, mask=has & (slot < cap))
                    hit = tl.where(cols[None, :] == pos[:, None], 0, hit)
                    rowcnt -= has.to(tl.int32)
            else:
                gmax = tl.maximum(gmax, tl.max(key, axis=1))
        if not EMIT:
            tl.store(GMAX + rq * ngroups + pid_n, gmax, mask=qmask)

    @triton.jit
    def asym_rescore_kernel(Q, X, S, T, SU, IDS, KEY, N, used, stride_q, stride_x,  # type: ignore[no-untyped-def]
                            s_stride, t_stride, D: tl.constexpr, BC: tl.constexpr, PACKED: tl.constexpr,
                            FLOATQ: tl.constexpr):
        """Program (i, j) = query i x candidate slots [BC j, BC j + BC): the exact float64 key of each candidate id
        IDS[i, slot] (N marks an empty slot: key -inf), ``dot64 * s_i + t_i`` (FLOATQ: Q float32) or
        ``(ip * s_i) * s_u + t_i`` (Q int8 codes, ip exact). Each dimension's product is exact in float64, so the
        sum is the reference's for any order of addition; launched without FMA contraction, so the last two
        roundings are the reference's too. PACKED: X is int32 words (D / 32, N), else int8 codes (N, D)."""
        pid_q = tl.program_id(0)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = c < used
        ids = tl.load(IDS + pid_q * used + c, mask=cm, other=N)
        valid = ids < N
        safe = tl.where(valid, ids, 0)
        sh = tl.arange(0, 32)
        acc = tl.zeros([BC], dtype=tl.float64)
        for k0 in tl.static_range(0, D, 32):
            qv = tl.load(Q + pid_q * stride_q + k0 + sh).to(tl.float64)
            if PACKED:
                w = tl.load(X + (k0 // 32) * stride_x + safe)
                acc += tl.sum(tl.where(((w[:, None] >> sh[None, :]) & 1) != 0, qv[None, :], -qv[None, :]), axis=1)
            else:
                x = tl.load(X + safe[:, None] * stride_x + (k0 + sh)[None, :]).to(tl.float64)
                acc += tl.sum(x * qv[None, :], axis=1)
        s = tl.load(S + safe * s_stride).to(tl.float64)
        t = tl.load(T + safe * t_stride).to(tl.float64)
        if FLOATQ:
            key = acc * s + t
        else:
            key = (acc * s) * tl.load(SU + pid_q) + t
        tl.store(KEY + pid_q * used + c, tl.where(valid, key, float("-inf")), mask=cm)
