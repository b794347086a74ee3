"""AVX2 micro-kernels for b-bit integer dot products, emitted as LLVM IR, plus portable numba fallbacks.

``vpmaddubsw`` (b <= 4, nibble codes) and ``vpmaddwd`` (b <= 8): numba's auto-vectorizer does not
produce them (measured ~15x slower). The fallbacks read the same layouts and give the same results;
they run when the host has no AVX2, and the tests use them to cross-check the IR kernels.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
if TYPE_CHECKING:  # numba's stub keeps typingctx in an intrinsic's call signature: Any for the call sites
    def intrinsic(func: Callable[..., Any]) -> Any: ...
else:
    from numba.extending import intrinsic

from .select import Arr

QG = 8  # queries per register group inside the micro-kernels


def _target_has_avx2() -> bool:
    """Does numba compile for a CPU with AVX2? (numba keys its cache on the same CPU features.)"""
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        if config.CPU_NAME is not None or config.CPU_FEATURES is not None:  # type: ignore[attr-defined]
            # numba was told to compile for another CPU: only trust an explicit +avx2 feature
            return "+avx2" in (config.CPU_FEATURES or "")  # type: ignore[attr-defined]
        if not llvm.get_process_triple().startswith(("x86_64", "amd64")):
            return False
        return bool(llvm.get_host_cpu_features().get("avx2", False))
    except Exception:  # pragma: no cover - exotic llvmlite builds
        return False


def ir_parses(*texts: Callable[[], str]) -> bool:
    """Do the kernels' IR texts parse and verify? They use opaque pointers (LLVM >= 15); older llvmlite
    builds fall back to portable code."""
    try:
        import llvmlite.binding as llvm

        for text in texts:
            llvm.parse_assembly(text()).verify()
        return True
    except Exception:  # pragma: no cover - depends on the llvmlite build
        return False


# ------------------------------------------------------------------------------------ popcount
@intrinsic
def _popcnt64(typingctx, x):  # type: ignore[no-untyped-def]
    """llvm.ctpop.i64: one ``popcnt`` on x86 (numba has no popcount builtin)."""
    sig = types.int64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return sig, codegen


# --------------------------------------------------------------------- LLVM IR micro-kernels
def _gen_u4_ir() -> str:
    """8 queries x (16-item blocks) nibble kernel; see packing.pack_nibble_blocked for the layout.

    Signature: hq_u4_scores(items*, nblocks, ngroups, qvec*, out*, ostride) -- all i64.
    out[r * ostride + 16 b + m] (int32) = sum_t q_r[t] * (code[m, t] + 8).
    int16 accumulators are widened every 64 groups (<= 64 * 2 * 240 < 32767: no overflow).
    """
    v32, v16, w16 = "<32 x i8>", "<16 x i16>", "<16 x i32>"
    c15 = "<" + ", ".join(["i8 15"] * 32) + ">"
    c4 = "<" + ", ".join(["i8 4"] * 32) + ">"
    L = [f"declare {v16} @llvm.x86.avx2.pmadd.ub.sw({v32}, {v32})"]
    L.append("define void @hq_u4_scores(i64 %items, i64 %nblocks, i64 %ngroups, i64 %qvec, i64 %out, i64 %ostride) {")
    L.append("entry:")
    L.append("  %pit = inttoptr i64 %items to ptr")
    L.append("  %pq = inttoptr i64 %qvec to ptr")
    L.append("  %po = inttoptr i64 %out to ptr")
    L.append("  %qrow = mul i64 %ngroups, 64")
    for r in range(QG):
        L.append(f"  %qo{r} = mul i64 %qrow, {r}")
        L.append(f"  %qb{r} = getelementptr i8, ptr %pq, i64 %qo{r}")
        L.append(f"  %oo{r} = mul i64 %ostride, {r}")
    L.append("  %nz = icmp eq i64 %nblocks, 0")
    L.append("  br i1 %nz, label %exit, label %bloop")
    L.append("bloop:")
    L.append("  %b = phi i64 [0, %entry], [%b1, %bstore]")
    L.append("  %bbase = mul i64 %b, %ngroups")
    L.append("  br label %cloop")
    L.append("cloop:")
    L.append("  %gc = phi i64 [0, %bloop], [%gce, %cend]")
    for r in range(QG):
        L.append(f"  %A{r} = phi {w16} [zeroinitializer, %bloop], [%An{r}, %cend]")
    L.append("  %gce0 = add i64 %gc, 64")
    L.append("  %gcl = icmp ult i64 %gce0, %ngroups")
    L.append("  %gce = select i1 %gcl, i64 %gce0, i64 %ngroups")
    L.append("  br label %gloop")
    L.append("gloop:")
    L.append("  %g = phi i64 [%gc, %cloop], [%g1, %gloop]")
    for r in range(QG):
        L.append(f"  %acc{r} = phi {v16} [zeroinitializer, %cloop], [%nacc{r}, %gloop]")
    L.append("  %gi = add i64 %bbase, %g")
    L.append("  %gib = mul i64 %gi, 32")
    L.append("  %ip = getelementptr i8, ptr %pit, i64 %gib")
    L.append(f"  %v = load {v32}, ptr %ip, align 1")
    L.append(f"  %lo = and {v32} %v, {c15}")
    L.append(f"  %sh = lshr {v32} %v, {c4}")
    L.append("  %g64 = mul i64 %g, 64")
    for r in range(QG):
        L.append(f"  %qa{r}p = getelementptr i8, ptr %qb{r}, i64 %g64")
        L.append(f"  %qh{r}p = getelementptr i8, ptr %qa{r}p, i64 32")
        L.append(f"  %qa{r} = load {v32}, ptr %qa{r}p, align 1")
        L.append(f"  %qh{r} = load {v32}, ptr %qh{r}p, align 1")
        L.append(f"  %ma{r} = call {v16} @llvm.x86.avx2.pmadd.ub.sw({v32} %lo, {v32} %qa{r})")
        L.append(f"  %mh{r} = call {v16} @llvm.x86.avx2.pmadd.ub.sw({v32} %sh, {v32} %qh{r})")
        L.append(f"  %s{r} = add {v16} %ma{r}, %mh{r}")
        L.append(f"  %nacc{r} = add {v16} %acc{r}, %s{r}")
    L.append("  %g1 = add i64 %g, 1")
    L.append("  %gcond = icmp ult i64 %g1, %gce")
    L.append("  br i1 %gcond, label %gloop, label %cend")
    L.append("cend:")
    for r in range(QG):
        L.append(f"  %x{r} = sext {v16} %nacc{r} to {w16}")
        L.append(f"  %An{r} = add {w16} %A{r}, %x{r}")
    L.append("  %cc = icmp ult i64 %gce, %ngroups")
    L.append("  br i1 %cc, label %cloop, label %bstore")
    L.append("bstore:")
    L.append("  %b16 = mul i64 %b, 16")
    for r in range(QG):
        L.append(f"  %oi{r} = add i64 %oo{r}, %b16")
        L.append(f"  %op{r} = getelementptr i32, ptr %po, i64 %oi{r}")
        L.append(f"  store {w16} %An{r}, ptr %op{r}, align 4")
    L.append("  %b1 = add i64 %b, 1")
    L.append("  %bc = icmp ult i64 %b1, %nblocks")
    L.append("  br i1 %bc, label %bloop, label %exit")
    L.append("exit:")
    L.append("  ret void")
    L.append("}")
    return "\n".join(L) + "\n"


def _gen_s8_ir() -> str:
    """8 queries x (8-item blocks) int8 kernel; see packing.pack_int8_blocked for the layout.

    Signature: hq_s8_scores(items*, nblocks8, npairs, qvec*, out*, ostride) -- all i64.
    out[r * ostride + 8 b + m] (int32) = sum_t q_r[t] * code[m, t]; vpmaddwd sums two int16
    products into int32 (|pair| <= 2 * 128 * 128: exact).
    """
    v16b, v16, w8 = "<16 x i8>", "<16 x i16>", "<8 x i32>"
    L = [f"declare {w8} @llvm.x86.avx2.pmadd.wd({v16}, {v16})"]
    L.append("define void @hq_s8_scores(i64 %items, i64 %nblocks, i64 %npairs, i64 %qvec, i64 %out, i64 %ostride) {")
    L.append("entry:")
    L.append("  %pit = inttoptr i64 %items to ptr")
    L.append("  %pq = inttoptr i64 %qvec to ptr")
    L.append("  %po = inttoptr i64 %out to ptr")
    L.append("  %qrow = mul i64 %npairs, 32")
    for r in range(QG):
        L.append(f"  %qo{r} = mul i64 %qrow, {r}")
        L.append(f"  %qb{r} = getelementptr i8, ptr %pq, i64 %qo{r}")
        L.append(f"  %oo{r} = mul i64 %ostride, {r}")
    L.append("  %nz = icmp eq i64 %nblocks, 0")
    L.append("  br i1 %nz, label %exit, label %bloop")
    L.append("bloop:")
    L.append("  %b = phi i64 [0, %entry], [%b1, %bstore]")
    L.append("  %bbase = mul i64 %b, %npairs")
    L.append("  br label %ploop")
    L.append("ploop:")
    L.append("  %p = phi i64 [0, %bloop], [%p1, %ploop]")
    for r in range(QG):
        L.append(f"  %acc{r} = phi {w8} [zeroinitializer, %bloop], [%nacc{r}, %ploop]")
    L.append("  %pi = add i64 %bbase, %p")
    L.append("  %pib = mul i64 %pi, 16")
    L.append("  %ip = getelementptr i8, ptr %pit, i64 %pib")
    L.append(f"  %xv = load {v16b}, ptr %ip, align 1")
    L.append(f"  %xs = sext {v16b} %xv to {v16}")
    L.append("  %p32 = mul i64 %p, 32")
    for r in range(QG):
        L.append(f"  %qp{r} = getelementptr i8, ptr %qb{r}, i64 %p32")
        L.append(f"  %qv{r} = load {v16}, ptr %qp{r}, align 2")
        L.append(f"  %m{r} = call {w8} @llvm.x86.avx2.pmadd.wd({v16} %xs, {v16} %qv{r})")
        L.append(f"  %nacc{r} = add {w8} %acc{r}, %m{r}")
    L.append("  %p1 = add i64 %p, 1")
    L.append("  %pc = icmp ult i64 %p1, %npairs")
    L.append("  br i1 %pc, label %ploop, label %bstore")
    L.append("bstore:")
    L.append("  %b8 = mul i64 %b, 8")
    for r in range(QG):
        L.append(f"  %oi{r} = add i64 %oo{r}, %b8")
        L.append(f"  %op{r} = getelementptr i32, ptr %po, i64 %oi{r}")
        L.append(f"  store {w8} %nacc{r}, ptr %op{r}, align 4")
    L.append("  %b1 = add i64 %b, 1")
    L.append("  %bc = icmp ult i64 %b1, %nblocks")
    L.append("  br i1 %bc, label %bloop, label %exit")
    L.append("exit:")
    L.append("  ret void")
    L.append("}")
    return "\n".join(L) + "\n"


# Whether the intrinsics below emit the AVX2 IR. It depends only on the compile target (never on
# an environment switch), so a cached kernel always matches it; HAVE_AVX2 is the runtime choice.
_CODEGEN_AVX2: bool = _target_has_avx2() and ir_parses(lambda: _gen_u4_ir(), lambda: _gen_s8_ir())
HAVE_AVX2: bool = _CODEGEN_AVX2 and os.environ.get("HQGNN_DISABLE_SIMD", "").strip() in ("", "0")


def _ir_intrinsic(fn_name: str, ir_text_fn: Callable[[], str], nargs: int = 6, emit: bool | None = None) -> Any:
    """A numba intrinsic calling ``fn_name`` (``nargs`` x i64 -> void, 5, 6 or 7) defined by LLVM IR text.

    The IR is parsed into a code library linked into the caller (so ``cache=True`` stores the
    machine code). With ``emit`` False (default: whether the target has AVX2) the intrinsic compiles
    to nothing; callers never reach it then (they pass use_simd = HAVE_AVX2 = False). Shared by the
    kernels here and the 1-bit LUT kernels of :mod:`hqgnn.index.cpu.lut1`.
    """
    emit = _CODEGEN_AVX2 if emit is None else emit
    sig = types.void(*([types.int64] * nargs))

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if not emit:
            return context.get_dummy_value()
        import llvmlite.binding as llvm

        lib = context.codegen().create_library(fn_name)
        lib.add_llvm_module(llvm.parse_assembly(ir_text_fn()))
        context.active_code_library.add_linking_library(lib)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * nargs)
        fn = cgutils.get_or_insert_function(builder.module, fnty, fn_name)
        builder.call(fn, args)
        return context.get_dummy_value()

    # numba types an intrinsic by its Python signature, so each arity is spelt out
    if nargs == 5:
        @intrinsic
        def _call(typingctx, a0, a1, a2, a3, a4):  # type: ignore[no-untyped-def]
            return sig, codegen
    elif nargs == 6:
        @intrinsic
        def _call(typingctx, a0, a1, a2, a3, a4, a5):  # type: ignore[no-untyped-def]
            return sig, codegen
    elif nargs == 7:
        @intrinsic
        def _call(typingctx, a0, a1, a2, a3, a4, a5, a6):  # type: ignore[no-untyped-def]
            return sig, codegen
    else:
        raise ValueError(f"nargs must be 5, 6 or 7, got {nargs}")
    return _call


_u4_ir = _ir_intrinsic("hq_u4_scores", _gen_u4_ir)
_s8_ir = _ir_intrinsic("hq_s8_scores", _gen_s8_ir)


@intrinsic
def _addr(typingctx, a):  # type: ignore[no-untyped-def]
    """Address of an array's data as int64, read from the array struct: ``a.ctypes.data`` builds a
    ctypes view that increfs / decrefs the array on every call (measured: 12 % of a float search's
    kernel-side time went to NRT_incref / NRT_decref around the per-block kernel calls)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        arr = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0])
        return builder.ptrtoint(arr.data, ir.IntType(64))

    return types.int64(a), codegen


# ------------------------------------------------------- portable fallbacks (same layouts/results)
# Both kernels take items and query vectors as raw bytes (uint8) so that one compiled scalar_task
# serves every layout; signed values are rebuilt here (only the slow fallback needs them).
@njit(cache=True, inline="always")
def _i8(v: int) -> np.int32:
    x = np.int32(v)
    return x - 256 if x >= 128 else x


@njit(cache=True, inline="always")
def _i16(lo: int, hi: int) -> np.int32:
    x = np.int32(lo) | (np.int32(hi) << 8)
    return x - 65536 if x >= 32768 else x


@njit(cache=True)
def _u4_portable(items: Arr, blk0: int, nblk: int, ngroups: int, qv: Arr, g0: int, buf: Arr) -> None:
    for b in range(nblk):
        base = (blk0 + b) * ngroups * 32
        for r in range(QG):
            row = g0 + r
            for m in range(16):
                s = 0
                for g in range(ngroups):
                    for rr in range(2):
                        byte = np.int32(items[base + g * 32 + 2 * m + rr])
                        s += (byte & 15) * _i8(qv[row, 64 * g + rr])  # type: ignore[assignment]
                        s += (byte >> 4) * _i8(qv[row, 64 * g + 32 + rr])  # type: ignore[assignment]
                buf[r, b * 16 + m] = s


@njit(cache=True)
def _s8_portable(items: Arr, blk0: int, nblk8: int, npairs: int, qv: Arr, g0: int, buf: Arr) -> None:
    for b in range(nblk8):
        base = (blk0 + b) * npairs * 16
        for r in range(QG):
            row = g0 + r
            for m in range(8):
                s = 0
                for p in range(npairs):
                    for rr in range(2):
                        e = 16 * p + rr  # int16 element index of the query pair
                        s += (_i8(items[base + p * 16 + 2 * m + rr])  # type: ignore[assignment]
                              * _i16(qv[row, 2 * e], qv[row, 2 * e + 1]))
                buf[r, b * 8 + m] = s


@njit(cache=True)
def _u4_ir_py(items: Arr, blk0: int, nblk: int, ngroups: int, qv: Arr, g0: int, buf: Arr) -> None:
    """Array-level entry to the AVX2 nibble kernel (tests / diagnostics)."""
    _u4_ir(_addr(items) + blk0 * ngroups * 32, nblk, ngroups, _addr(qv) + g0 * qv.shape[1], _addr(buf), buf.shape[1])


@njit(cache=True)
def _s8_ir_py(items: Arr, blk0: int, nblk8: int, npairs: int, qv: Arr, g0: int, buf: Arr) -> None:
    """Array-level entry to the AVX2 int8 kernel (tests / diagnostics); blk0 counts 8-item blocks."""
    _s8_ir(_addr(items) + blk0 * npairs * 16, nblk8, npairs, _addr(qv) + g0 * qv.shape[1], _addr(buf), buf.shape[1])
