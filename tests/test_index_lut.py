"""The 1-bit LUT search's pruning (plane B only where plane A cannot prune, max-only kernel, branch-free screen,
float candidates accepted on the exact k-th key): adversarial cases against the float64 brute force, every query."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from hqgnn.index import QueryCodes, prepare_queries, reference_asym_search
from hqgnn.index.asym import AsymCodeIndex
from hqgnn.index.asym_layout import lut_planes
from hqgnn.index.cpu import lut1 as KL
from hqgnn.index.cpu.simd import _addr

@njit(cache=True)
def lut_scores(use_simd, items, blk0, nblk, nsteps, tabs, row0, nq, buf, brow, bcol0, mm):
    """Array-level entry to the kernels (the search task calls them with addresses): biased sums of table rows
    row0..row0+nq (nq = 8 or 1) x 32-item blocks blk0.. into buf (uint16), each row's max / min into mm."""
    if use_simd:
        a = _addr(items) + blk0 * nsteps * 64
        t = _addr(tabs) + row0 * tabs.shape[1]
        o = _addr(buf) + 2 * (brow * buf.shape[1] + bcol0)
        if nq == 8:
            KL._lut8_ir(a, nblk, nsteps, t, o, buf.shape[1], _addr(mm))
        else:
            KL._lut1q_ir(a, nblk, nsteps, t, o, buf.shape[1], _addr(mm))
    else:
        KL._lut_portable(items, blk0, nblk, nsteps, tabs, row0, nq, buf, brow, bcol0, mm)


@njit(cache=True)
def pass_masks(use_simd, buf, row, nblk, ahi, alo, out):
    if use_simd:
        KL._pass_ir(_addr(buf) + 2 * row * buf.shape[1], nblk, ahi, alo, _addr(out))
    else:
        KL._pass_portable(buf, row, nblk, ahi, alo, out)


SIMD = [pytest.param(True, id="simd", marks=pytest.mark.skipif(not KL.HAVE_LUT_SIMD, reason="no AVX2")),
        pytest.param(False, id="portable")]


def _check(index, q, qs, k, codes, scale, term, exclude=None):
    s, i = index.search(q if qs is None and index.query_bits == 0 else QueryCodes(q, qs), k, exclude=exclude)
    rs, ri = reference_asym_search(q, codes, k, scale, term, qs, exclude=exclude, float_queries=index.query_bits == 0)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs)
    return s, i


def _exclusion(rng, b, n):
    rows = [np.sort(rng.choice(n, size=int(rng.integers(0, n // 3 + 1)), replace=False)) for _ in range(b)]
    return np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64), np.concatenate(rows)


def _queries(rng, b, d, query_bits, sign):
    x = rng.normal(size=(b, d)).astype(np.float32)
    q, qs = prepare_queries(x, query_bits=query_bits)
    if qs is not None and sign == "mixed":
        qs = qs.copy()
        qs[::3] *= -1  # a negative query scale: the kernel keeps the chunk minimum (need_min)
    return q, qs


SCENARIOS = ["ties", "equal_scales", "never_prunes", "positive", "negative_scales", "zero_query_scale"]


@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.parametrize("query_bits", [4, 8, 0])
@pytest.mark.parametrize("d", [48, 64, 67, 112])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pruning_equals_reference(scenario, d, query_bits, simd):
    rng = np.random.default_rng(abs(hash((scenario, d, query_bits))) % 2**32)
    n = 1100  # 4 full 256-item chunks and a partial one ending mid-block
    codes = (rng.integers(0, 2, size=(n, d)) * 2 - 1).astype(np.int8)
    scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
    term = rng.normal(0, 1, n).astype(np.float32)
    sign = "positive"
    if scenario == "ties":  # few distinct rows, scales and terms: nearly every key is tied
        codes = codes[rng.integers(0, 5, n)]
        scale = np.round(scale * 2) / 2
        term = np.round(term)
    elif scenario == "equal_scales":  # one scale for all (held once) and a constant term
        scale = np.full(n, 0.75, np.float32)
        term = np.full(n, -2.0, np.float32)
    elif scenario == "never_prunes":  # identical rows, one scale: every chunk bound equals the threshold
        codes[:] = codes[0]
        scale[:] = 1.0
        term = None
    elif scenario == "negative_scales":
        scale = rng.uniform(-1.5, 1.0, n).astype(np.float32)
        sign = "mixed"
    q, qs = _queries(rng, 19, d, query_bits, sign)
    if scenario == "zero_query_scale" and qs is not None:
        qs = qs.copy()
        qs[1] = 0.0  # every key is t_i
    index = AsymCodeIndex(codes, scale, 1, term, query_bits=query_bits)
    index.use_simd = None if simd else False
    for k in (1, 20):
        _check(index, q, qs, k, codes, scale, term)
    _check(index, q, qs, 20, codes, scale, term, exclude=_exclusion(rng, 19, n))
    s, i = _check(index, q, qs, n + 7, codes, scale, term)  # k > n
    assert (i[:, n:] == -1).all() and np.isneginf(s[:, n:]).all()


@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("d", [16, 48, 64, 112, 2048])
def test_lut_kernels_match_dot(signed, d, simd):
    """8-row and 1-row kernels (AVX2 and portable) = <q, bits> + bias on every slot, max / min over all slots
    (pads included), at the extremes of the uint8 per-step sums and the 16-bit accumulators (d = 2048)."""
    rng = np.random.default_rng(d + signed)
    n = 96
    c = (rng.integers(0, 2, size=(n, d)) * 2 - 1).astype(np.int8)
    lo, hi = (-8, 7) if signed else (0, 15)
    q = rng.integers(lo, hi + 1, size=(9, d)).astype(np.int8)
    q[0] = lo  # extremes: the uint8 / 16-bit accumulators' worst cases
    q[1] = hi
    c[0] = 1
    c[1] = -1
    packed = KL.pack_lut1(c).reshape(-1)
    ncols = KL.lut1_cols(d)
    tabs, off = KL.lut1_tables(q, ncols)
    nb = -(-n // 32)
    bits = np.zeros((nb * 32, d), np.int64)
    bits[:n] = c > 0
    want = q.astype(np.int64) @ bits.T + off[:, None]  # pads: no bits set
    buf = np.zeros((8, nb * 32 + 32), np.uint16)
    mm = np.zeros((8, 2), np.int32)
    lut_scores(simd, packed, 0, nb, ncols // 2, tabs, 1, 8, buf, 0, 32, mm)  # rows 1..8, columns from 32
    np.testing.assert_array_equal(buf[:, 32:], want[1:9])
    np.testing.assert_array_equal(mm[:, 0], want[1:9].max(axis=1))
    np.testing.assert_array_equal(mm[:, 1], want[1:9].min(axis=1))
    one = np.zeros((8, nb * 32), np.uint16)
    lut_scores(simd, packed, 1, nb - 1, ncols // 2, tabs, 0, 1, one, 3, 32, mm)  # row 0, blocks 1.. into row 3
    np.testing.assert_array_equal(one[3, 32:], want[0, 32:])
    assert mm[0, 0] == want[0, 32:].max() and mm[0, 1] == want[0, 32:].min()


@pytest.mark.parametrize("simd", SIMD)
def test_plane_split_and_margin(simd):
    """lut_planes: mul_a A + mul_b B + qadd = <c, x> exactly for codes in [-128, 127] (rows <= 119 split by
    rounding, the others by truncation), and mul_b B always within [bmin, bmax]."""
    rng = np.random.default_rng(0)
    d, n = 112, 64
    c = rng.integers(-128, 128, size=(16, d)).astype(np.int8)
    c[:8] = np.clip(c[:8], -119, 119)
    c[2] = -128
    c[3] = 119
    c[9] = 127
    x = (rng.integers(0, 2, size=(n, d)) * 2 - 1).astype(np.int8)
    x[0] = 1
    x[1] = -1
    qa, qb, nplanes, ma, mb, qadd, bmin, bmax = lut_planes(KL.lut1_cols(d) // 2, c)
    assert nplanes == 2 and (bmin <= bmax).all()
    packed = KL.pack_lut1(x).reshape(-1)
    a = np.zeros((16, n), np.uint16)
    b = np.zeros((16, n), np.uint16)
    mm = np.zeros((8, 2), np.int32)
    for g in (0, 8):
        lut_scores(simd, packed, 0, n // 32, KL.lut1_cols(d) // 2, qa, g, 8, a, g, 0, mm)
        lut_scores(simd, packed, 0, n // 32, KL.lut1_cols(d) // 2, qb, g, 8, b, g, 0, mm)
    ip = ma * a.astype(np.int64) + mb * b.astype(np.int64) + qadd[:, None]
    np.testing.assert_array_equal(ip, c.astype(np.int64) @ x.T.astype(np.int64))
    part = mb * b.astype(np.int64)
    assert (part >= bmin[:, None]).all() and (part <= bmax[:, None]).all()
    rounded = c.max(axis=1) <= 119
    assert rounded[:8].all() and not rounded[9]
    assert (bmax - bmin <= np.where(rounded, 2 * 8 * d, 2 * 15 * d)).all()  # |l| <= 8 where the split rounds


@pytest.mark.parametrize("simd", SIMD)
def test_pass_masks(simd):
    rng = np.random.default_rng(1)
    buf = rng.integers(0, 65536, size=(3, 96)).astype(np.uint16)
    buf[1, :5] = [0, 65535, 100, 101, 99]
    for ahi, alo in ((101, 99), (-5, -1), (70000, 65535), (0, -1), (65536, 65534), (40000, 20000)):
        out = np.zeros(3, np.uint32)
        pass_masks(simd, buf, 1, 3, ahi, alo, out)
        v = buf[1].astype(np.int64)
        want = ((v >= ahi) | (v <= alo)).reshape(3, 32)
        got = (out[:, None] >> np.arange(32, dtype=np.uint32)) & 1
        np.testing.assert_array_equal(got.astype(bool), want)


def test_float_candidates_grow_and_stay_exact():
    """A query with one huge entry has a coarse grid (Delta ~ 4): the first candidate set is not enough (K'
    doubles, until it holds every item for some), still exact."""
    rng = np.random.default_rng(2)
    n, d = 3000, 64
    codes = (rng.integers(0, 2, size=(n, d)) * 2 - 1).astype(np.int8)
    index = AsymCodeIndex(codes, None, 1, None, query_bits=0)
    calls = []
    orig = index._search_int

    def spy(qc, qs, kk, ex):
        calls.append(kk)
        return orig(qc, qs, kk, ex)

    index._search_int = spy
    x = rng.normal(size=(40, d)).astype(np.float32)
    x[:, 0] = 500.0
    _check(index, x, None, 20, codes, None, None)
    assert len(calls) > 2 and calls[1] == 2 * calls[0]
    _check(index, x, None, 20, codes, None, None, exclude=_exclusion(rng, 40, n))
