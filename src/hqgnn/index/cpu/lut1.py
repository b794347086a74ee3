"""The 1-bit LUT layout and its AVX2 ``vpshufb`` fast-scan micro-kernels (LLVM IR), exact integer sums.

1-bit items are scored by 16-entry lookup tables (FAISS "fast-scan" style, but exact): per query and
group of 4 dims, table[v] = sum of the query codes of the dims whose bit is set in nibble v, biased into
[0, 60]. One ``vpshufb`` then looks up 32 items at once. Four table lookups (16 dims) are summed in
uint8 (<= 240, exact) and accumulated in 16-bit words without a per-step widening of the even bytes
(exact for d <= 2048). The kernels return <c_u, b_i> + bias (b_i = item bits, 1 for +1);
:mod:`hqgnn.index.cpu.asym` turns that into scores.

Why LUTs and not bit planes: at d=64 a 4-bit query costs 4 AND + 4 POPCNT + the weighted sum per
item with bit planes (~12 scalar ops), vs 16 table lookups per 32 items here (~1.3 vector ops per
item). Measured kernel alone, one core of the 2-core AMD EPYC (Zen 4) dev box, d=64, when its 8
queries' tables (4 KiB) stay in L1: ~0.15 ns per (query, item) (0.19 for the earlier signed int8 sums
widened every step to int32 outputs); zmm (AVX-512) variants were measured no faster on this core.
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from .select import Arr, Int
from .simd import _CODEGEN_AVX2, HAVE_AVX2, QG, _ir_intrinsic, ir_parses

__all__ = ["HAVE_LUT_SIMD", "LUT_BLOCK", "LUT_MAX_DIM", "lut1_cols", "lut1_tables", "pack_lut1", "unpack_lut1"]

LUT_BLOCK = 32  # items per block of the 1-bit LUT layout (one ymm of item bytes)
LUT_MAX_DIM = 2048  # 16-bit accumulators: d/16 steps x <= 240 per step stays below 65536


# ----------------------------------------------------------------------------- 1-bit layout
def lut1_cols(d: int) -> int:
    """Byte columns per item (8 dims each), padded to even: the kernel consumes 16 dims per step."""
    return max(2, -(-d // 16) * 2)


def pack_lut1(codes: np.ndarray) -> np.ndarray:
    """(n, d) {-1,+1} codes -> uint8 (nblocks, cols, 32): byte = bits of dims 8c..8c+7 (LSB first,
    1 for +1). Within a block, byte 2j holds item j and byte 2j+1 item 16+j, so the kernel's even
    / odd int16 split of a 32-byte vector yields items 0..15 and 16..31 in order. Pads (items to a
    multiple of 32, dims to a multiple of 16) are zero bits."""
    n, d = codes.shape
    cols = lut1_cols(d)
    nb = -(-max(n, 1) // LUT_BLOCK)
    bits = np.zeros((nb * LUT_BLOCK, cols * 8), np.uint8)
    bits[:n, :d] = codes > 0
    by = np.packbits(bits, axis=1, bitorder="little")  # (npad, cols)
    by = by.reshape(nb, 2, 16, cols).transpose(0, 3, 2, 1)  # [block, col, j, half] -> byte 2j + half
    return np.ascontiguousarray(by).reshape(nb, cols, LUT_BLOCK)


def lut1_slot(pos: np.ndarray) -> np.ndarray:
    """Byte position inside its block of storage row ``pos``."""
    s = pos % LUT_BLOCK
    return np.where(s < 16, 2 * s, 2 * (s - 16) + 1)


def unpack_lut1(packed: np.ndarray, n: int, d: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`pack_lut1` (optionally only storage rows ``rows``): int8 {-1,+1} codes."""
    pos = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    by = packed[pos // LUT_BLOCK, :, lut1_slot(pos)]  # (m, cols)
    bits = np.unpackbits(np.ascontiguousarray(by), axis=1, bitorder="little")[:, :d]
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


def lut1_tables(qcodes: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query lookup tables and their offsets: (uint8 (B_pad8, cols * 2 * 32), int64 (B,)).

    Table (c, h) entry v (repeated in both 16-byte lanes) = sum over set bits j of v of
    q[8c + 4h + j], plus a bias of 32 for rows with a negative code, so every entry lies in [0, 60]
    (codes in [-8, 7], or [0, 15] unbiased) and four summed entries fit one unsigned byte. The
    kernels return <q, bits> + offset, offset = bias x the row's 2 * cols tables."""
    b, d = qcodes.shape
    bp = -(-max(b, 1) // QG) * QG
    q = np.zeros((bp, cols * 8), np.int32)
    q[:b, :d] = qcodes
    lo = q.min(axis=1)
    if (lo < -8).any() or (q.max(axis=1) > np.where(lo < 0, 7, 15)).any():
        raise ValueError("LUT query codes must lie in [-8, 7] or [0, 15] per row")
    bias = np.where(lo < 0, 32, 0)
    q4 = q.reshape(bp, cols * 2, 4)  # groups of 4 dims
    v = np.arange(16)
    sel = ((v[:, None] >> np.arange(4)[None, :]) & 1).astype(np.int32)  # (16, 4)
    tab = np.einsum("bgj,vj->bgv", q4, sel) + bias[:, None, None]  # (bp, groups, 16), in [0, 60]
    tab = np.concatenate([tab, tab], axis=2)  # both lanes
    return np.ascontiguousarray(tab.astype(np.uint8)).reshape(bp, -1), (bias[:b] * 2 * cols).astype(np.int64)


def _splat(t: str, v: int, n: int) -> str:
    return "<" + ", ".join([f"{t} {v}"] * n) + ">"


def _gen_lut_ir(nq: int, with_min: bool = True) -> str:
    """IR of hq_lut{nq}[x](items*, nblocks, nsteps, tables*, out*, ostride, mm*), all i64 (nq = 8 or 1).

    out[r * ostride + 32 b + m] (uint16) = sum over the item's set bits of table row r (biased,
    see lut1_tables), for nq table rows of nsteps * 128 bytes; mm[r] (int32 [nq][2]) = max and min
    over all 32 * nblocks slots (pads included); the ``x`` variant (``with_min`` False) writes the max only
    (4-8 % faster: what the search needs when no scale is negative). One step = 2 item byte columns = 4 tables = 16 dims:
    the four looked-up bytes are summed in uint8 (<= 240), then added as one int16 word to acc
    (even byte + 256 odd byte) and the odd byte alone to acc_hi (FAISS's trick: no per-step
    widening of the even bytes); the even sums are acc - 256 acc_hi (mod 2^16, exact below 2^16).
    """
    v32, v16 = "<32 x i8>", "<16 x i16>"
    c15, s4, s8 = _splat("i8", 15, 32), _splat("i16", 4, 16), _splat("i16", 8, 16)
    big = _splat("i16", -1, 16)
    L = [f"declare {v32} @llvm.x86.avx2.pshuf.b({v32}, {v32})",
         f"declare {v16} @llvm.umax.v16i16({v16}, {v16})", f"declare {v16} @llvm.umin.v16i16({v16}, {v16})",
         f"declare i16 @llvm.vector.reduce.umax.v16i16({v16})", f"declare i16 @llvm.vector.reduce.umin.v16i16({v16})",
         f"define void @hq_lut{nq}{'' if with_min else 'x'}(i64 %items, i64 %nblocks, i64 %nsteps, i64 %tabs, i64 %out, i64 %ostride, i64 %mmp) {{",
         "entry:", "  %pit = inttoptr i64 %items to ptr", "  %pt = inttoptr i64 %tabs to ptr",
         "  %po = inttoptr i64 %out to ptr", "  %trow = mul i64 %nsteps, 128", "  %bbytes = mul i64 %nsteps, 64"]
    for r in range(nq):
        L += [f"  %to{r} = mul i64 %trow, {r}", f"  %tb{r} = getelementptr i8, ptr %pt, i64 %to{r}",
              f"  %oo{r} = mul i64 %ostride, {r}"]
    L += ["  %nz = icmp eq i64 %nblocks, 0", "  br i1 %nz, label %exit, label %bloop", "bloop:",
          "  %b = phi i64 [0, %entry], [%b1, %bstore]"]
    for r in range(nq):
        L += [f"  %mx{r} = phi {v16} [zeroinitializer, %entry], [%mxn{r}, %bstore]",
              f"  %mn{r} = phi {v16} [{big}, %entry], [%mnn{r}, %bstore]"]
    L += ["  %boff = mul i64 %b, %bbytes", "  %bp = getelementptr i8, ptr %pit, i64 %boff", "  br label %sloop",
          "sloop:", "  %s = phi i64 [0, %bloop], [%s1, %sloop]"]
    for r in range(nq):
        L += [f"  %aa{r} = phi {v16} [zeroinitializer, %bloop], [%naa{r}, %sloop]",
              f"  %ah{r} = phi {v16} [zeroinitializer, %bloop], [%nah{r}, %sloop]"]
    L += ["  %s64 = mul i64 %s, 64", "  %ip0 = getelementptr i8, ptr %bp, i64 %s64",
          "  %ip1 = getelementptr i8, ptr %ip0, i64 32"]
    for c in range(2):
        L += [f"  %v{c} = load {v32}, ptr %ip{c}, align 1", f"  %lo{c} = and {v32} %v{c}, {c15}",
              f"  %vw{c} = bitcast {v32} %v{c} to {v16}", f"  %shw{c} = lshr {v16} %vw{c}, {s4}",
              f"  %shb{c} = bitcast {v16} %shw{c} to {v32}", f"  %hi{c} = and {v32} %shb{c}, {c15}"]
    L.append("  %s128 = mul i64 %s, 128")
    idx = ["lo0", "hi0", "lo1", "hi1"]
    for r in range(nq):
        L.append(f"  %tp{r} = getelementptr i8, ptr %tb{r}, i64 %s128")
        for j in range(4):
            L += [f"  %tp{r}_{j} = getelementptr i8, ptr %tp{r}, i64 {32 * j}",
                  f"  %t{r}_{j} = load {v32}, ptr %tp{r}_{j}, align 1",
                  f"  %l{r}_{j} = call {v32} @llvm.x86.avx2.pshuf.b({v32} %t{r}_{j}, {v32} %{idx[j]})"]
        L += [f"  %p{r}a = add {v32} %l{r}_0, %l{r}_1", f"  %p{r}b = add {v32} %l{r}_2, %l{r}_3",
              f"  %p{r} = add {v32} %p{r}a, %p{r}b", f"  %w{r} = bitcast {v32} %p{r} to {v16}",
              f"  %wh{r} = lshr {v16} %w{r}, {s8}", f"  %naa{r} = add {v16} %aa{r}, %w{r}",
              f"  %nah{r} = add {v16} %ah{r}, %wh{r}"]
    L += ["  %s1 = add i64 %s, 1", "  %sc = icmp ult i64 %s1, %nsteps", "  br i1 %sc, label %sloop, label %bstore",
          "bstore:", "  %b32 = mul i64 %b, 32"]
    for r in range(nq):
        L += [f"  %hs{r} = shl {v16} %nah{r}, {s8}", f"  %el{r} = sub {v16} %naa{r}, %hs{r}",  # items 0..15
              f"  %oi{r} = add i64 %oo{r}, %b32", f"  %op{r} = getelementptr i16, ptr %po, i64 %oi{r}",
              f"  %oq{r} = getelementptr i16, ptr %op{r}, i64 16", f"  store {v16} %el{r}, ptr %op{r}, align 2",
              f"  store {v16} %nah{r}, ptr %oq{r}, align 2",  # items 16..31
              f"  %mxa{r} = call {v16} @llvm.umax.v16i16({v16} %mx{r}, {v16} %el{r})",
              f"  %mxn{r} = call {v16} @llvm.umax.v16i16({v16} %mxa{r}, {v16} %nah{r})",
              f"  %mna{r} = call {v16} @llvm.umin.v16i16({v16} %mn{r}, {v16} %el{r})",
              f"  %mnn{r} = call {v16} @llvm.umin.v16i16({v16} %mna{r}, {v16} %nah{r})"]
    L += ["  %b1 = add i64 %b, 1", "  %bc = icmp ult i64 %b1, %nblocks", "  br i1 %bc, label %bloop, label %exit",
          "exit:"]
    for r in range(nq):
        L += [f"  %fx{r} = phi {v16} [zeroinitializer, %entry], [%mxn{r}, %bstore]",
              f"  %fn{r} = phi {v16} [{big}, %entry], [%mnn{r}, %bstore]"]
    L.append("  %pm = inttoptr i64 %mmp to ptr")
    for r in range(nq):
        L += [f"  %rx{r} = call i16 @llvm.vector.reduce.umax.v16i16({v16} %fx{r})",
              f"  %rn{r} = call i16 @llvm.vector.reduce.umin.v16i16({v16} %fn{r})",
              f"  %ex{r} = zext i16 %rx{r} to i32", f"  %en{r} = zext i16 %rn{r} to i32",
              f"  %px{r} = getelementptr i32, ptr %pm, i64 {2 * r}",
              f"  %pn{r} = getelementptr i32, ptr %pm, i64 {2 * r + 1}",
              f"  store i32 %ex{r}, ptr %px{r}, align 4", f"  store i32 %en{r}, ptr %pn{r}, align 4"]
    L += ["  ret void", "}"]
    if not with_min:  # drop the running minimum (its phis, umin calls, reduction and store)
        L = [ln for ln in L if not re.search(r"%(mn|mna|mnn|fn|rn|en|pn)\d", ln)]
    return "\n".join(L) + "\n"


def _gen_pass_ir() -> str:
    """IR of hq_pass(row*, nblocks, ahi, alo, out*), all i64: out[b] (uint32) bit m = 1 where the uint16
    row[32 b + m] >= ahi or <= alo (thresholds clamped to [-1, 65536], so any int64 is fine)."""
    v32, w32 = "<32 x i16>", "<32 x i32>"
    L = ["declare i64 @llvm.smax.i64(i64, i64)", "declare i64 @llvm.smin.i64(i64, i64)",
         "define void @hq_pass(i64 %row, i64 %nblocks, i64 %ahi, i64 %alo, i64 %out) {", "entry:",
         "  %pr = inttoptr i64 %row to ptr", "  %po = inttoptr i64 %out to ptr"]
    for nm in ("ahi", "alo"):
        L += [f"  %{nm}1 = call i64 @llvm.smax.i64(i64 %{nm}, i64 -1)",
              f"  %{nm}2 = call i64 @llvm.smin.i64(i64 %{nm}1, i64 65536)", f"  %{nm}3 = trunc i64 %{nm}2 to i32",
              f"  %{nm}4 = insertelement {w32} poison, i32 %{nm}3, i64 0",
              f"  %{nm}v = shufflevector {w32} %{nm}4, {w32} poison, <32 x i32> zeroinitializer"]
    L += ["  %nz = icmp eq i64 %nblocks, 0", "  br i1 %nz, label %exit, label %loop", "loop:",
          "  %b = phi i64 [0, %entry], [%b1, %loop]", "  %off = mul i64 %b, 32",
          "  %p = getelementptr i16, ptr %pr, i64 %off", f"  %v = load {v32}, ptr %p, align 2",
          f"  %vz = zext {v32} %v to {w32}", f"  %ch = icmp sge {w32} %vz, %ahiv", f"  %cl = icmp sle {w32} %vz, %alov",
          "  %c = or <32 x i1> %ch, %cl", "  %m = bitcast <32 x i1> %c to i32",
          "  %q = getelementptr i32, ptr %po, i64 %b", "  store i32 %m, ptr %q, align 4", "  %b1 = add i64 %b, 1",
          "  %cc = icmp ult i64 %b1, %nblocks", "  br i1 %cc, label %loop, label %exit", "exit:", "  ret void", "}"]
    return "\n".join(L) + "\n"


_CODEGEN_LUT = _CODEGEN_AVX2 and ir_parses(lambda: _gen_lut_ir(QG, True), lambda: _gen_lut_ir(QG, False),
                                           lambda: _gen_lut_ir(1, True), _gen_pass_ir)
HAVE_LUT_SIMD: bool = HAVE_AVX2 and _CODEGEN_LUT


# numba intrinsics calling the IR kernels (they compile to nothing without AVX2; never reached then)
_lut8_ir = _ir_intrinsic("hq_lut8", lambda: _gen_lut_ir(QG), 7, _CODEGEN_LUT)
_lut8x_ir = _ir_intrinsic("hq_lut8x", lambda: _gen_lut_ir(QG, False), 7, _CODEGEN_LUT)  # max only
_lut1q_ir = _ir_intrinsic("hq_lut1", lambda: _gen_lut_ir(1), 7, _CODEGEN_LUT)
_pass_ir = _ir_intrinsic("hq_pass", _gen_pass_ir, 5, _CODEGEN_LUT)


@njit(cache=True)
def _lut_portable(items: Arr, blk0: int, nblk: int, nsteps: int, tabs: Arr, row0: int, nq: int, buf: Arr, brow: int,
                  bcol0: int, mm: Arr) -> None:
    """Same layout and results as the IR kernels: rows row0.. of tabs into buf[brow + r, bcol0 + 32 b + m]."""
    ncols = 2 * nsteps
    for r in range(nq):
        hi = 0
        lo = 65535
        for b in range(nblk):
            base = (blk0 + b) * ncols * 32
            for m in range(32):
                pos = 2 * m if m < 16 else 2 * (m - 16) + 1
                s = 0
                for c in range(ncols):
                    byte = np.int32(items[base + c * 32 + pos])
                    s += np.int32(tabs[row0 + r, (2 * c) * 32 + (byte & 15)])  # type: ignore[assignment]  # low nibble
                    s += np.int32(tabs[row0 + r, (2 * c + 1) * 32 + (byte >> 4)])  # type: ignore[assignment]
                buf[brow + r, bcol0 + b * 32 + m] = s
                hi = max(hi, s)
                lo = min(lo, s)
        mm[r, 0] = hi
        mm[r, 1] = lo


@njit(cache=True)
def _pass_portable(buf: Arr, row: int, nblk: int, ahi: Int, alo: Int, out: Arr) -> None:
    for b in range(nblk):
        m = 0
        for j in range(32):
            v = np.int64(buf[row, 32 * b + j])
            if v >= ahi or v <= alo:
                m |= 1 << j
        out[b] = m

