"""The 1-bit LUT layout and its AVX2 ``vpshufb`` fast-scan micro-kernels (LLVM IR), exact integer sums.

1-bit items are scored by 16-entry lookup tables (FAISS "fast-scan" style, but exact): per query and
group of 4 dims, table[v] = sum of the query codes of the dims whose bit is set in nibble v. One
``vpshufb`` then looks up 32 items at once. Four table lookups (16 dims) are summed in int8 -- exact:
a signed plane has codes in [-8, 7] (sum in [-128, 112]), an unsigned plane codes in [0, 15] (sum in
[0, 240], read as uint8) -- and widened into int16 accumulators (exact for d <= 2048). The kernels
return <c_u, b_i> (b_i = item bits, 1 for +1); :mod:`hqgnn.index.cpu.asym` turns that into scores.

Why LUTs and not bit planes: at d=64 a 4-bit query costs 4 AND + 4 POPCNT + the weighted sum per
item with bit planes (~12 scalar ops), vs 16 table lookups per 32 items here (~1.5 vector ops per
item); measured kernel alone, one core of the 2-core AMD EPYC (Zen 4) dev box, d=64: ~0.17 ns per
(query, item) when its 8 queries' tables (4 KiB) stay in L1 -- the task loop keeps them there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .simd import _CODEGEN_AVX2, HAVE_AVX2, QG, _addr, _ir_intrinsic

__all__ = ["HAVE_LUT_SIMD", "LUT_BLOCK", "LUT_MAX_DIM", "lut1_cols", "lut1_tables", "pack_lut1", "unpack_lut1"]

LUT_BLOCK = 32  # items per block of the 1-bit LUT layout (one ymm of item bytes)
LUT_MAX_DIM = 2048  # int16 accumulators: d/16 steps x <= 240 per step stays below 32767


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


def lut1_tables(qcodes: np.ndarray, cols: int) -> np.ndarray:
    """Per-query lookup tables: uint8 (B_pad8, cols * 2 * 32). Table (c, h) entry v (repeated in
    both 16-byte lanes) = sum over set bits j of v of q[8c + 4h + j], stored as a byte (two's
    complement for negative sums). Query codes must lie in [-8, 15] (one plane)."""
    b, d = qcodes.shape
    bp = -(-max(b, 1) // QG) * QG
    q = np.zeros((bp, cols * 8), np.int32)
    q[:b, :d] = qcodes
    q4 = q.reshape(bp, cols * 2, 4)  # groups of 4 dims
    v = np.arange(16)
    sel = ((v[:, None] >> np.arange(4)[None, :]) & 1).astype(np.int32)  # (16, 4)
    tab = np.einsum("bgj,vj->bgv", q4, sel)  # (bp, groups, 16)
    tab = np.concatenate([tab, tab], axis=2)  # both lanes
    return np.ascontiguousarray((tab & 0xFF).astype(np.uint8)).reshape(bp, -1)


def _gen_lut1_ir(signed: bool, minmax: bool = False) -> str:
    """IR of hq_lut1_{s,u}(items*, nblocks, nsteps, tables*, out*, ostride), all i64.

    out[r * ostride + 32 b + m] (int32) = sum over dims of q_r[t] * bit(item m, t) for 8 queries r
    (tables rows of nsteps * 128 bytes). One step = 2 item byte columns = 4 tables = 16 dims.
    minmax: hq_lut1_{s,u}_mm with a 7th argument mm* (int32 [8][2]): each query's max and min
    over all 32 * nblocks slots (pad slots included), reduced in registers -- saves the caller a
    pass over the scores.
    """
    name = ("hq_lut1_s" if signed else "hq_lut1_u") + ("_mm" if minmax else "")
    v32, v16, w16 = "<32 x i8>", "<16 x i16>", "<16 x i32>"
    c15 = "<" + ", ".join(["i8 15"] * 32) + ">"
    s4 = "<" + ", ".join(["i16 4"] * 16) + ">"
    s8 = "<" + ", ".join(["i16 8"] * 16) + ">"
    m255 = "<" + ", ".join(["i16 255"] * 16) + ">"
    L = [f"declare {v32} @llvm.x86.avx2.pshuf.b({v32}, {v32})"]
    big = "<" + ", ".join(["i16 32767"] * 16) + ">"
    small = "<" + ", ".join(["i16 -32768"] * 16) + ">"
    extra = ", i64 %mmp" if minmax else ""
    if minmax:
        L.append(f"declare {v16} @llvm.smax.v16i16({v16}, {v16})")
        L.append(f"declare {v16} @llvm.smin.v16i16({v16}, {v16})")
        L.append("declare i16 @llvm.vector.reduce.smax.v16i16(<16 x i16>)")
        L.append("declare i16 @llvm.vector.reduce.smin.v16i16(<16 x i16>)")
    L.append(f"define void @{name}(i64 %items, i64 %nblocks, i64 %nsteps, i64 %tabs, i64 %out, i64 %ostride{extra}) {{")
    L.append("entry:")
    L.append("  %pit = inttoptr i64 %items to ptr")
    L.append("  %pt = inttoptr i64 %tabs to ptr")
    L.append("  %po = inttoptr i64 %out to ptr")
    L.append("  %trow = mul i64 %nsteps, 128")
    L.append("  %bbytes = mul i64 %nsteps, 64")
    for r in range(QG):
        L.append(f"  %to{r} = mul i64 %trow, {r}")
        L.append(f"  %tb{r} = getelementptr i8, ptr %pt, i64 %to{r}")
        L.append(f"  %oo{r} = mul i64 %ostride, {r}")
    L.append("  %nz = icmp eq i64 %nblocks, 0")
    L.append("  br i1 %nz, label %exit, label %bloop")
    L.append("bloop:")
    L.append("  %b = phi i64 [0, %entry], [%b1, %bstore]")
    if minmax:
        for r in range(QG):
            L.append(f"  %mx{r} = phi {v16} [{small}, %entry], [%mxn{r}, %bstore]")
            L.append(f"  %mn{r} = phi {v16} [{big}, %entry], [%mnn{r}, %bstore]")
    L.append("  %boff = mul i64 %b, %bbytes")
    L.append("  %bp = getelementptr i8, ptr %pit, i64 %boff")
    L.append("  br label %sloop")
    L.append("sloop:")
    L.append("  %s = phi i64 [0, %bloop], [%s1, %sloop]")
    for r in range(QG):
        L.append(f"  %ae{r} = phi {v16} [zeroinitializer, %bloop], [%nae{r}, %sloop]")
        L.append(f"  %ao{r} = phi {v16} [zeroinitializer, %bloop], [%nao{r}, %sloop]")
    L.append("  %s64 = mul i64 %s, 64")
    L.append("  %ip0 = getelementptr i8, ptr %bp, i64 %s64")
    L.append("  %ip1 = getelementptr i8, ptr %ip0, i64 32")
    for c in range(2):
        L.append(f"  %v{c} = load {v32}, ptr %ip{c}, align 1")
        L.append(f"  %lo{c} = and {v32} %v{c}, {c15}")
        L.append(f"  %vw{c} = bitcast {v32} %v{c} to {v16}")
        L.append(f"  %shw{c} = lshr {v16} %vw{c}, {s4}")
        L.append(f"  %shb{c} = bitcast {v16} %shw{c} to {v32}")
        L.append(f"  %hi{c} = and {v32} %shb{c}, {c15}")
    L.append("  %s128 = mul i64 %s, 128")
    idx = ["lo0", "hi0", "lo1", "hi1"]
    for r in range(QG):
        L.append(f"  %tp{r} = getelementptr i8, ptr %tb{r}, i64 %s128")
        for j in range(4):
            if j:
                L.append(f"  %tp{r}_{j} = getelementptr i8, ptr %tp{r}, i64 {32 * j}")
            else:
                L.append(f"  %tp{r}_{j} = getelementptr i8, ptr %tp{r}, i64 0")
            L.append(f"  %t{r}_{j} = load {v32}, ptr %tp{r}_{j}, align 1")
            L.append(f"  %l{r}_{j} = call {v32} @llvm.x86.avx2.pshuf.b({v32} %t{r}_{j}, {v32} %{idx[j]})")
        L.append(f"  %p{r}a = add {v32} %l{r}_0, %l{r}_1")
        L.append(f"  %p{r}b = add {v32} %l{r}_2, %l{r}_3")
        L.append(f"  %p{r} = add {v32} %p{r}a, %p{r}b")
        L.append(f"  %w{r} = bitcast {v32} %p{r} to {v16}")
        if signed:
            L.append(f"  %we{r}s = shl {v16} %w{r}, {s8}")
            L.append(f"  %we{r} = ashr {v16} %we{r}s, {s8}")
            L.append(f"  %wo{r} = ashr {v16} %w{r}, {s8}")
        else:
            L.append(f"  %we{r} = and {v16} %w{r}, {m255}")
            L.append(f"  %wo{r} = lshr {v16} %w{r}, {s8}")
        L.append(f"  %nae{r} = add {v16} %ae{r}, %we{r}")
        L.append(f"  %nao{r} = add {v16} %ao{r}, %wo{r}")
    L.append("  %s1 = add i64 %s, 1")
    L.append("  %sc = icmp ult i64 %s1, %nsteps")
    L.append("  br i1 %sc, label %sloop, label %bstore")
    L.append("bstore:")
    L.append("  %b32 = mul i64 %b, 32")
    for r in range(QG):
        L.append(f"  %xe{r} = sext {v16} %nae{r} to {w16}")
        L.append(f"  %xo{r} = sext {v16} %nao{r} to {w16}")
        L.append(f"  %oi{r} = add i64 %oo{r}, %b32")
        L.append(f"  %op{r} = getelementptr i32, ptr %po, i64 %oi{r}")
        L.append(f"  %oq{r} = getelementptr i32, ptr %op{r}, i64 16")
        L.append(f"  store {w16} %xe{r}, ptr %op{r}, align 4")
        L.append(f"  store {w16} %xo{r}, ptr %oq{r}, align 4")
        if minmax:
            L.append(f"  %mxa{r} = call {v16} @llvm.smax.v16i16({v16} %mx{r}, {v16} %nae{r})")
            L.append(f"  %mxn{r} = call {v16} @llvm.smax.v16i16({v16} %mxa{r}, {v16} %nao{r})")
            L.append(f"  %mna{r} = call {v16} @llvm.smin.v16i16({v16} %mn{r}, {v16} %nae{r})")
            L.append(f"  %mnn{r} = call {v16} @llvm.smin.v16i16({v16} %mna{r}, {v16} %nao{r})")
    L.append("  %b1 = add i64 %b, 1")
    L.append("  %bc = icmp ult i64 %b1, %nblocks")
    L.append("  br i1 %bc, label %bloop, label %exit")
    L.append("exit:")
    if minmax:
        for r in range(QG):
            L.append(f"  %fx{r} = phi {v16} [{small}, %entry], [%mxn{r}, %bstore]")
            L.append(f"  %fn{r} = phi {v16} [{big}, %entry], [%mnn{r}, %bstore]")
        L.append("  %pm = inttoptr i64 %mmp to ptr")
        for r in range(QG):
            L.append(f"  %rx{r} = call i16 @llvm.vector.reduce.smax.v16i16({v16} %fx{r})")
            L.append(f"  %rn{r} = call i16 @llvm.vector.reduce.smin.v16i16({v16} %fn{r})")
            L.append(f"  %ex{r} = sext i16 %rx{r} to i32")
            L.append(f"  %en{r} = sext i16 %rn{r} to i32")
            L.append(f"  %px{r} = getelementptr i32, ptr %pm, i64 {2 * r}")
            L.append(f"  %pn{r} = getelementptr i32, ptr %pm, i64 {2 * r + 1}")
            L.append(f"  store i32 %ex{r}, ptr %px{r}, align 4")
            L.append(f"  store i32 %en{r}, ptr %pn{r}, align 4")
    L.append("  ret void")
    L.append("}")
    return "\n".join(L) + "\n"


def _lut_ir_parses() -> bool:
    try:
        import llvmlite.binding as llvm

        for signed in (True, False):
            for minmax in (False, True):
                llvm.parse_assembly(_gen_lut1_ir(signed, minmax)).verify()
        return True
    except Exception:  # pragma: no cover - depends on the llvmlite build
        return False


_CODEGEN_LUT = _CODEGEN_AVX2 and _lut_ir_parses()
HAVE_LUT_SIMD: bool = HAVE_AVX2 and _CODEGEN_LUT


# numba intrinsics calling the IR kernels (they compile to nothing without AVX2; never reached then)
_lut1_s_ir = _ir_intrinsic("hq_lut1_s", lambda: _gen_lut1_ir(True), 6, _CODEGEN_LUT)
_lut1_u_ir = _ir_intrinsic("hq_lut1_u", lambda: _gen_lut1_ir(False), 6, _CODEGEN_LUT)
_lut1_s_mm_ir = _ir_intrinsic("hq_lut1_s_mm", lambda: _gen_lut1_ir(True, True), 7, _CODEGEN_LUT)  # + min/max
_lut1_u_mm_ir = _ir_intrinsic("hq_lut1_u_mm", lambda: _gen_lut1_ir(False, True), 7, _CODEGEN_LUT)


@njit(cache=True)
def _lut1_mm_ir_py(items, blk0, nblk, nsteps, tabs, g0, signed, buf, mm):
    """Array-level entry to the min/max variant (tests / diagnostics); mm int32 (8, 2)."""
    a = _addr(items) + blk0 * nsteps * 64
    t = _addr(tabs) + g0 * tabs.shape[1]
    if signed:
        _lut1_s_mm_ir(a, nblk, nsteps, t, _addr(buf), buf.shape[1], _addr(mm))
    else:
        _lut1_u_mm_ir(a, nblk, nsteps, t, _addr(buf), buf.shape[1], _addr(mm))


@njit(cache=True)
def _lut1_portable(items, blk0, nblk, nsteps, tabs, g0, signed, buf):
    """Same layout and results as the IR kernel (int32 sums; used without AVX2 and by the tests)."""
    ncols = 2 * nsteps
    for b in range(nblk):
        base = (blk0 + b) * ncols * 32
        for r in range(QG):
            row = g0 + r
            for m in range(32):
                pos = 2 * m if m < 16 else 2 * (m - 16) + 1
                s = 0
                for c in range(ncols):
                    byte = np.int32(items[base + c * 32 + pos])
                    for h in range(2):
                        v = np.int32(tabs[row, (2 * c + h) * 32 + ((byte >> (4 * h)) & 15)])
                        if signed and v >= 128:
                            v -= 256
                        s += v
                buf[r, b * 32 + m] = s


@njit(cache=True)
def _lut1_ir_py(items, blk0, nblk, nsteps, tabs, g0, signed, buf):
    """Array-level entry to the AVX2 LUT kernel (tests / diagnostics)."""
    a = _addr(items) + blk0 * nsteps * 64
    t = _addr(tabs) + g0 * tabs.shape[1]
    if signed:
        _lut1_s_ir(a, nblk, nsteps, t, _addr(buf), buf.shape[1])
    else:
        _lut1_u_ir(a, nblk, nsteps, t, _addr(buf), buf.shape[1])
