"""Float scores of a block of users against a block of items, in a fixed order: the kernels of
:mod:`hqgnn.eval.cpu_topk`.

Scores are **bit-identical whatever the batch** (a user alone, or at any position of any batch), on
a given machine. Every score is computed by one float32 recurrence, in dimension order::

    s = +0.0
    for d in 0 .. D-1:  s = madd(u[d], v[d], s)

where ``madd`` is, for every score and in every code path:

* where the compile target has FMA (x86-64 with FMA3, which every AVX2 CPU we know of has; aarch64):
  a fused multiply-add, ``fma(u[d], v[d], s)``, i.e. ``u[d] * v[d] + s`` rounded once to float32;
* elsewhere: ``fl32(fl32(u[d] * v[d]) + s)``, a float32 multiply then a float32 add (no
  contraction, no reassociation).

Nothing else is reassociated, reordered or accumulated in another precision, so the result depends
only on the two vectors (not on the batch, the thread count, or which kernel computed it). A BLAS
GEMM promises none of this (its kernels, and so its summation order, depend on the matrix shape, the
CPU and the thread count), and users expect ``recommend([u])`` to equal row ``u`` of
``recommend(users)`` (BENCHMARKS § 1 measures the kernels against the GEMM they replaced).

Kernels. With AVX2 + FMA (:data:`USE_IR`), every score goes through AVX2 micro-kernels emitted as
LLVM IR (as in :mod:`hqgnn.index.cpu.simd`; numba's loops kept the score rows in memory, store-bound
at ~10 GMAC/s): a 4-user x 16-item register tile (eight ``<8 x float>`` accumulators updated with
``llvm.fma.v8f32`` once per dimension, in order) for groups of four users, and 1-user x 64-item /
1 x 16 tiles for the leftover users, with the same per-score recurrence. Items are packed in
16-item panels, ``(panels, dim, 16)`` per block, so a tile streams contiguous memory. The portable
numba fallback (non-AVX2 hosts, or ``HQGNN_DISABLE_SIMD=1``) runs the same recurrence through an
explicit ``llvm.fma.f32`` (or an uncontracted multiply + add where there is no FMA) and is compiled
without fast-math, so on one machine it gives the same bits as the IR kernels (the tests check).
"""

from __future__ import annotations

from typing import Any, Callable

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..index.cpu.simd import _CODEGEN_AVX2, HAVE_AVX2, _addr, _ir_intrinsic

ITEM_BLOCK = 1024
PANEL = 16  # items per packed panel (two <8 x float> vectors)


def _target_has_fma() -> bool:
    """Does numba compile for a CPU with a hardware fused multiply-add (cached code is keyed on it)?"""
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        # numba sets its config attributes at import time (from the environment): not visible to mypy
        if config.CPU_NAME is not None or config.CPU_FEATURES is not None:  # type: ignore[attr-defined]
            return "+fma" in (config.CPU_FEATURES or "")  # type: ignore[attr-defined]
        triple = llvm.get_process_triple()
        if triple.startswith(("aarch64", "arm64")):
            return True  # FMA is part of the base ARMv8 ISA
        if not triple.startswith(("x86_64", "amd64")):
            return False
        return bool(llvm.get_host_cpu_features().get("fma", False))
    except Exception:  # pragma: no cover - exotic llvmlite builds
        return False


# The per-score arithmetic (fma or mul + add) is a compile-target constant, like _CODEGEN_AVX2, so a
# cached kernel always matches it; it is never switched by the environment.
_FMA: bool = _target_has_fma()


@intrinsic
def _madd(typingctx: Any, a: Any, b: Any, c: Any) -> tuple[Any, Callable[..., Any]]:
    """float32 ``a * b + c``: one fused multiply-add where the target has FMA (``llvm.fma.f32``),
    else a multiply then an add with no fast-math flags (LLVM never contracts them)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        x, y, z = args
        if _FMA:
            f32 = ir.FloatType()
            # numba.core.cgutils is unannotated
            fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32"
            )
            return builder.call(fn, [x, y, z])
        return builder.fadd(builder.fmul(x, y), z)

    return sig, codegen


# --------------------------------------------------------------------------- AVX2 micro-kernels
def _gen_f32_ir(name: str, mr: int, np_: int) -> str:
    """``mr`` users x ``np_`` 16-item panels register tile, fma over d in order.

    Signature: name(u*, nrg, dim, items*, npg, out*, ostride) -- all i64 (pointers as addresses).
    u: (nrg * mr, dim) float32, C-contiguous; items: (npg * np_, dim, 16) float32 panels;
    out[(g mr + r) * ostride + 16 (q np_ + j) + m] = the score of user g mr + r and panel item
    (q np_ + j, m), for row group g < nrg and panel group q < npg. The panel-group loop is outside
    the row-group loop (the panels stay in L1 while the users stream past).
    """
    v8 = "<8 x float>"
    nh = 2 * np_  # vectors per user row of the tile
    L = [f"declare {v8} @llvm.fma.v8f32({v8}, {v8}, {v8})"]
    L.append(f"define void @{name}(i64 %u, i64 %nrg, i64 %dim, i64 %items, i64 %npg, i64 %out, i64 %ostride) {{")
    L.append("entry:")
    L.append("  %pu = inttoptr i64 %u to ptr")
    L.append("  %pit = inttoptr i64 %items to ptr")
    L.append("  %po = inttoptr i64 %out to ptr")
    L.append("  %pstride = mul i64 %dim, 16")
    L.append(f"  %pgstride = mul i64 %pstride, {np_}")
    L.append(f"  %ugstride = mul i64 %dim, {mr}")
    L.append(f"  %ogstride = mul i64 %ostride, {mr}")
    for r in range(mr):
        L.append(f"  %uo{r} = mul i64 %dim, {r}")
        L.append(f"  %oo{r} = mul i64 %ostride, {r}")
    for j in range(np_):
        L.append(f"  %po{j} = mul i64 %pstride, {j}")
    L.append("  %hasd = icmp ne i64 %dim, 0")
    L.append("  %e1 = icmp eq i64 %nrg, 0")
    L.append("  %e2 = icmp eq i64 %npg, 0")
    L.append("  %e = or i1 %e1, %e2")
    L.append("  br i1 %e, label %exit, label %ploop")
    L.append("ploop:")
    L.append("  %q = phi i64 [0, %entry], [%q1, %pnext]")
    L.append("  %pbase = mul i64 %q, %pgstride")
    L.append("  %pb = getelementptr float, ptr %pit, i64 %pbase")
    L.append(f"  %ocol = mul i64 %q, {16 * np_}")
    L.append("  br label %rloop")
    L.append("rloop:")
    L.append("  %g = phi i64 [0, %ploop], [%g1, %store]")
    L.append("  %ub = mul i64 %g, %ugstride")
    L.append("  %ubp = getelementptr float, ptr %pu, i64 %ub")
    L.append("  br i1 %hasd, label %dloop, label %store")
    L.append("dloop:")
    L.append("  %d = phi i64 [0, %rloop], [%d1, %dloop]")
    for r in range(mr):
        for h in range(nh):
            L.append(f"  %a{r}_{h} = phi {v8} [zeroinitializer, %rloop], [%n{r}_{h}, %dloop]")
    for r in range(mr):
        L.append(f"  %ui{r} = add i64 %uo{r}, %d")
        L.append(f"  %up{r} = getelementptr float, ptr %ubp, i64 %ui{r}")
        L.append(f"  %us{r} = load float, ptr %up{r}, align 4")
        L.append(f"  %ux{r} = insertelement {v8} poison, float %us{r}, i32 0")
        L.append(f"  %ubc{r} = shufflevector {v8} %ux{r}, {v8} poison, <8 x i32> zeroinitializer")
    L.append("  %d16 = mul i64 %d, 16")
    for j in range(np_):
        for hh in range(2):
            h = 2 * j + hh
            L.append(f"  %io{h}a = add i64 %po{j}, %d16")
            L.append(f"  %io{h} = add i64 %io{h}a, {8 * hh}")
            L.append(f"  %ip{h} = getelementptr float, ptr %pb, i64 %io{h}")
            L.append(f"  %v{h} = load {v8}, ptr %ip{h}, align 4")
    for r in range(mr):
        for h in range(nh):
            L.append(f"  %n{r}_{h} = call {v8} @llvm.fma.v8f32({v8} %ubc{r}, {v8} %v{h}, {v8} %a{r}_{h})")
    L.append("  %d1 = add i64 %d, 1")
    L.append("  %dc = icmp ult i64 %d1, %dim")
    L.append("  br i1 %dc, label %dloop, label %store")
    L.append("store:")
    for r in range(mr):
        for h in range(nh):
            L.append(f"  %f{r}_{h} = phi {v8} [zeroinitializer, %rloop], [%n{r}_{h}, %dloop]")
    L.append("  %orow = mul i64 %g, %ogstride")
    L.append("  %obase = add i64 %orow, %ocol")
    for r in range(mr):
        for h in range(nh):
            L.append(f"  %oi{r}_{h}a = add i64 %obase, %oo{r}")
            L.append(f"  %oi{r}_{h} = add i64 %oi{r}_{h}a, {8 * h}")
            L.append(f"  %op{r}_{h} = getelementptr float, ptr %po, i64 %oi{r}_{h}")
            L.append(f"  store {v8} %f{r}_{h}, ptr %op{r}_{h}, align 4")
    L.append("  %g1 = add i64 %g, 1")
    L.append("  %gc = icmp ult i64 %g1, %nrg")
    L.append("  br i1 %gc, label %rloop, label %pnext")
    L.append("pnext:")
    L.append("  %q1 = add i64 %q, 1")
    L.append("  %qc = icmp ult i64 %q1, %npg")
    L.append("  br i1 %qc, label %ploop, label %exit")
    L.append("exit:")
    L.append("  ret void")
    L.append("}")
    return "\n".join(L) + "\n"


_TILES = (("hq_f32_4x16", 4, 1), ("hq_f32_1x64", 1, 4), ("hq_f32_1x16", 1, 1))


def _ir_f32_parses() -> bool:
    try:
        import llvmlite.binding as llvm

        for name, mr, np_ in _TILES:
            llvm.parse_assembly(_gen_f32_ir(name, mr, np_)).verify()
        return True
    except Exception:  # pragma: no cover - depends on the llvmlite build
        return False


# IR is emitted only for AVX2 + FMA targets (a compile-target fact, so cached code matches it);
# USE_IR is the runtime choice (HQGNN_DISABLE_SIMD=1 selects the portable path, same bits).
_CODEGEN_IR: bool = _CODEGEN_AVX2 and _FMA and _ir_f32_parses()
USE_IR: bool = _CODEGEN_IR and HAVE_AVX2

_f32_4x16 = _ir_intrinsic("hq_f32_4x16", lambda: _gen_f32_ir("hq_f32_4x16", 4, 1), nargs=7, emit=_CODEGEN_IR)
_f32_1x64 = _ir_intrinsic("hq_f32_1x64", lambda: _gen_f32_ir("hq_f32_1x64", 1, 4), nargs=7, emit=_CODEGEN_IR)
_f32_1x16 = _ir_intrinsic("hq_f32_1x16", lambda: _gen_f32_ir("hq_f32_1x16", 1, 1), nargs=7, emit=_CODEGEN_IR)


@numba.njit(cache=True)
def _block_scores_portable(ublk: np.ndarray, block: np.ndarray, scores: np.ndarray) -> None:
    """The same recurrence as the IR tiles, in numba: no fast-math, every step is one :func:`_madd`
    (the inner loop runs over items, so it vectorizes without reordering any one score's sum)."""
    nb, dim = ublk.shape
    npan = block.shape[0]
    width = npan * PANEL
    r = 0
    while r + 4 <= nb:
        s0, s1, s2, s3 = scores[r], scores[r + 1], scores[r + 2], scores[r + 3]
        for i in range(width):
            s0[i] = 0.0
            s1[i] = 0.0
            s2[i] = 0.0
            s3[i] = 0.0
        for d in range(dim):
            a0, a1, a2, a3 = ublk[r, d], ublk[r + 1, d], ublk[r + 2, d], ublk[r + 3, d]
            for p in range(npan):
                b = block[p, d]
                c0 = p * PANEL
                for i in range(PANEL):
                    bi = b[i]
                    s0[c0 + i] = _madd(a0, bi, s0[c0 + i])  # type: ignore[call-arg]  # numba stub keeps typingctx
                    s1[c0 + i] = _madd(a1, bi, s1[c0 + i])
                    s2[c0 + i] = _madd(a2, bi, s2[c0 + i])
                    s3[c0 + i] = _madd(a3, bi, s3[c0 + i])
        r += 4
    while r < nb:
        s0 = scores[r]
        for i in range(width):
            s0[i] = 0.0
        for d in range(dim):
            a0 = ublk[r, d]
            for p in range(npan):
                b = block[p, d]
                c0 = p * PANEL
                for i in range(PANEL):
                    s0[c0 + i] = _madd(a0, b[i], s0[c0 + i])  # type: ignore[call-arg]  # numba stub keeps typingctx
        r += 1


@numba.njit(cache=True)
def _block_scores(ublk: np.ndarray, block: np.ndarray, scores: np.ndarray, use_ir: bool) -> None:
    """scores[r, 16 p + m] = the module docstring's recurrence over d for user row ``ublk[r]`` and item
    ``block[p, :, m]``. ublk (nb, dim) and block (panels, dim, 16) C-contiguous float32, scores
    (>= nb, >= 16 panels) float32 with unit-stride rows. ``use_ir``: the AVX2 tiles (only where
    :data:`USE_IR`); either way every score is the same float32 recurrence."""
    nb, dim = ublk.shape
    npan = block.shape[0]
    # the IR tiles address raw memory: check the layout they assume (once per item block, cheap)
    if (not ublk.flags.c_contiguous or not block.flags.c_contiguous or block.shape[1] != dim
            or block.shape[2] != PANEL or scores.shape[0] < nb or scores.shape[1] < npan * PANEL
            or scores.strides[1] != 4):
        raise ValueError("_block_scores: bad shapes or layout")
    if not use_ir:
        _block_scores_portable(ublk, block, scores)
        return
    os = scores.strides[0] // 4
    ub: int = _addr(ublk)
    it = _addr(block)
    out = _addr(scores)
    g4 = nb // 4
    if g4 > 0:
        _f32_4x16(ub, g4, dim, it, npan, out, os)
    r0 = 4 * g4
    if r0 < nb:  # the 1..3 leftover users: 1 x 64 tiles, then 1 x 16 for the last panels
        ur = ub + r0 * dim * 4
        orr = out + r0 * os * 4
        q4 = npan // 4
        if q4 > 0:
            _f32_1x64(ur, nb - r0, dim, it, q4, orr, os)
        if npan > 4 * q4:
            _f32_1x16(ur, nb - r0, dim, it + 4 * q4 * dim * PANEL * 4, npan - 4 * q4,
                      orr + 4 * q4 * PANEL * 4, os)

def _pack_items(ie: np.ndarray) -> np.ndarray:
    """(n_items, dim) float32 -> (blocks, ITEM_BLOCK / 16, dim, 16) C-contiguous: 16-item panels,
    zero-padded to whole blocks (padding items score 0 and are never ranked)."""
    n_items, dim = ie.shape
    n_blocks = (n_items + ITEM_BLOCK - 1) // ITEM_BLOCK
    padded = np.zeros((n_blocks * ITEM_BLOCK, dim), dtype=np.float32)
    padded[:n_items] = ie
    return np.ascontiguousarray(padded.reshape(n_blocks, ITEM_BLOCK // PANEL, PANEL, dim).transpose(0, 1, 3, 2))
