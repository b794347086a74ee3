"""hqgnn.index asymmetric search: every item/query width, kernel and backend equals the float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hqgnn.index import QueryCodes, prepare_queries, reference_asym_search
from hqgnn.index import load_index
from hqgnn.index.asym import AsymCodeIndex
from hqgnn.index.cpu import lut1 as KL
from hqgnn.index.queries import quantize_float_queries
from hqgnn.index.reference import reference_asym_scores
from hqgnn.index.packing import code_range

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA not available")


# ------------------------------------------------------------------------------------ helpers
def item_codes(rng, n, d, bits, dup=True):
    lo, hi = code_range(bits)
    if bits == 1:
        c = (rng.integers(0, 2, size=(n, d)) * 2 - 1).astype(np.int8)
    else:
        c = rng.integers(lo, hi + 1, size=(n, d)).astype(np.int8)
    if dup and n > 8:
        c[n // 2 : n // 2 + n // 4] = c[: n // 4]  # duplicated items: exact score ties
    return c


def make_scale(rng, n, kind):
    if kind == "none":
        return None
    if kind == "tensor":
        return 0.75
    s = rng.uniform(-0.5, 1.5, n).astype(np.float32)  # some negative scales
    s[: n // 3] = s[n // 3 : 2 * (n // 3)]  # repeated scales: more ties
    return s


def make_term(rng, n, kind):
    if kind == "none":
        return None
    if kind == "scalar":
        return 0.5
    t = rng.normal(0, 2, n).astype(np.float32)
    t[: n // 4] = 0.0
    return t


def make_queries(rng, b, d, query_bits, neg=True):
    x = rng.normal(size=(b, d)).astype(np.float32)
    q, qs = prepare_queries(x, query_bits=query_bits)
    if qs is not None and neg:
        qs = qs.copy()
        qs[::3] *= -1  # negative query scales flip the ranking
    return q, qs


def random_exclusion(rng, b, n, frac=0.2):
    rows = [rng.choice(n, size=int(rng.integers(0, max(1, int(n * frac)) + 1)), replace=False) for _ in range(b)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, np.concatenate(rows).astype(np.int64)


def check(index, q, qs, k, codes, scale, term, exclude=None):
    s, i = index.search(QueryCodes(q, qs), k, exclude=exclude)
    if isinstance(s, torch.Tensor):
        s, i = s.cpu().numpy(), i.cpu().numpy()
    rs, ri = reference_asym_search(q, codes, k, scale, term, qs, exclude=exclude,
                                   float_queries=index.query_bits == 0)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs)
    return s, i


# --------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("d", [1, 8, 48, 64, 96, 112, 128, 256])
@pytest.mark.parametrize("n", [1, 31, 33, 100])
def test_lut1_pack_roundtrip(n, d):
    rng = np.random.default_rng(n * 1000 + d)
    c = item_codes(rng, n, d, 1, dup=False)
    packed = KL.pack_lut1(c)
    assert packed.shape == (-(-n // 32), KL.lut1_cols(d), 32)
    np.testing.assert_array_equal(KL.unpack_lut1(packed, n, d), c)
    rows = rng.integers(0, n, size=7)
    np.testing.assert_array_equal(KL.unpack_lut1(packed, n, d, rows), c[rows])


def test_lut1_tables_hand_case():
    q = np.array([[3, -2, 5, 7, 0, 0, 0, 0], [3, 2, 5, 7, 0, 0, 0, 15]], np.int8)
    tab, off = KL.lut1_tables(q, 2)  # (8, 2 cols * 2 halves * 32), biased by 32 where a row has a negative code
    tab = tab.astype(np.int32)
    t0 = tab[0, :16] - 32
    assert t0[0] == 0 and t0[1] == 3 and t0[2] == -2 and t0[0b1111] == 13 and t0[0b1010] == 5
    np.testing.assert_array_equal(tab[0, :16], tab[0, 16:32])  # both 128-bit lanes
    assert tab[1, 0] == 0 and tab[1, 0b1111] == 17 and tab[1, 32 + 0b1000] == 15  # no negative code: no bias
    np.testing.assert_array_equal(off, [32 * 4, 0])
    assert tab.min() >= 0 and tab.max() <= 60
    with pytest.raises(ValueError):
        KL.lut1_tables(np.array([[-1, 8]], np.int8), 2)  # a row mixing signs must fit [-8, 7]


# ---------------------------------------------------------------------------------- search
CASES = [
    # item_bits, query_bits, d
    (1, 4, 64), (1, 4, 48), (1, 8, 96), (1, 8, 112), (1, 2, 128), (1, 5, 256), (1, 0, 64), (1, 0, 112),
    (4, 4, 64), (4, 8, 48), (4, 0, 96), (2, 4, 112), (3, 8, 128),
    (8, 4, 64), (8, 8, 112), (8, 0, 48), (6, 4, 256),
]


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "portable"])
@pytest.mark.parametrize("item_bits,query_bits,d", CASES)
def test_search_equals_reference(item_bits, query_bits, d, simd):
    if simd and not KL.HAVE_LUT_SIMD:
        pytest.skip("no AVX2")
    rng = np.random.default_rng(item_bits * 100 + query_bits * 10 + d)
    n = 1000  # not a multiple of the 256-item chunk nor of the 32-item block
    codes = item_codes(rng, n, d, item_bits)
    for scale_kind, term_kind in [("row", "row"), ("none", "none"), ("tensor", "scalar"), ("row", "none")]:
        scale, term = make_scale(rng, n, scale_kind), make_term(rng, n, term_kind)
        index = AsymCodeIndex(codes, scale, item_bits, term, query_bits=query_bits)
        index.use_simd = None if simd else False
        q, qs = make_queries(rng, 21, d, query_bits)
        check(index, q, qs, 10, codes, scale, term)
        check(index, q, qs, 10, codes, scale, term, exclude=random_exclusion(rng, 21, n))


@pytest.mark.parametrize("item_bits,query_bits", [(1, 4), (1, 8), (4, 4), (8, 8), (1, 0), (4, 0)])
def test_extreme_query_codes_and_scales(item_bits, query_bits):
    """Queries at the ends of the code range (int8/int16 accumulator limits), one-sided scales."""
    rng = np.random.default_rng(7)
    n, d = 300, 128
    codes = item_codes(rng, n, d, item_bits)
    codes[0] = code_range(item_bits)[1]
    codes[1] = code_range(item_bits)[0]
    for scale in [np.full(n, 2.0, np.float32), -rng.uniform(0.5, 1, n).astype(np.float32)]:
        index = AsymCodeIndex(codes, scale, item_bits, None, query_bits=query_bits)
        if query_bits == 0:
            q = rng.normal(size=(9, d)).astype(np.float32)
            q[0] = 1e3
            qs = None
        else:
            lo, hi = code_range(query_bits)
            q = rng.integers(lo, hi + 1, size=(9, d)).astype(np.int8)
            q[0], q[1] = lo, hi
            qs = rng.uniform(0.1, 2, 9).astype(np.float32)
        check(index, q, qs, 7, codes, scale, None)


@pytest.mark.parametrize("query_bits", [4, 0])
def test_edge_cases(query_bits):
    rng = np.random.default_rng(3)
    n, d = 50, 96
    codes = item_codes(rng, n, d, 1)
    scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
    term = rng.normal(size=n).astype(np.float32)
    index = AsymCodeIndex(codes, scale, 1, term, query_bits=query_bits)
    q, qs = make_queries(rng, 5, d, query_bits)
    s, i = check(index, q, qs, 80, codes, scale, term)  # k > n
    assert (i[:, n:] == -1).all() and np.isneginf(s[:, n:]).all()
    every = (np.arange(0, 5 * n + 1, n), np.tile(np.arange(n), 5))
    s, i = index.search(QueryCodes(q, qs), 3, exclude=every)  # everything excluded
    assert (i == -1).all() and np.isneginf(s).all()
    part = (np.array([0, n - 2, n - 2, n - 2, n - 2, n - 2]), np.concatenate([np.arange(n - 2)]))
    s, i = check(index, q, qs, 4, codes, scale, term, exclude=part)  # query 0: only 2 eligible
    assert (i[0, 2:] == -1).all() and (i[0, :2] >= n - 2).all()
    assert index.search(QueryCodes(q, qs), 0)[1].shape == (5, 0)
    assert index.search(QueryCodes(q[:0], None if qs is None else qs[:0]), 3)[1].shape == (0, 3)
    one = AsymCodeIndex(codes[:1], scale[:1], 1, term[:1], query_bits=query_bits)
    check(one, q, qs, 2, codes[:1], scale[:1], term[:1])


def test_threads_and_item_ranges_agree():
    """Few queries split the items into ranges (merged afterwards); 1 vs 2 threads, same result."""
    rng = np.random.default_rng(11)
    n, d = 5000, 64
    codes = item_codes(rng, n, d, 1)
    scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
    index = AsymCodeIndex(codes, scale, 1, None, query_bits=4)
    q, qs = make_queries(rng, 3, d, 4)
    index.threads = 1
    a = check(index, q, qs, 20, codes, scale, None)
    index.threads = 2
    b = check(index, q, qs, 20, codes, scale, None)
    np.testing.assert_array_equal(a[1], b[1])


def test_float_queries_candidate_growth():
    """A query with one huge entry has a coarse 8-bit grid: the candidate set must grow, still exact."""
    rng = np.random.default_rng(5)
    n, d = 4000, 64
    codes = item_codes(rng, n, d, 1, dup=False)
    index = AsymCodeIndex(codes, None, 1, None, query_bits=0)
    x = rng.normal(size=(6, d)).astype(np.float32)
    x[:, 0] = 500.0  # Delta ~ 4: every other dim is quantized to 0 or +-1
    check(index, x, None, 10, codes, None, None)
    check(index, x, None, 10, codes, None, None, exclude=random_exclusion(rng, 6, n))


@pytest.mark.parametrize("qmax", [127, 119])  # the GPU's and the CPU's candidate codes
def test_quantize_float_queries_bound(qmax):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 33)).astype(np.float32)
    x[0] = 0
    codes, delta, resid = quantize_float_queries(x, qmax)
    assert np.abs(codes).max() == qmax and delta[0] == 1.0
    np.testing.assert_allclose(resid, np.abs(x - delta[:, None] * codes).sum(1), rtol=1e-5, atol=1e-7)
    assert (np.abs(x - delta[:, None] * codes) <= delta[:, None] / 2 * (1 + 1e-6)).all()


# ------------------------------------------------------------------------------ queries / API
def test_prepare_queries_rotation_center_and_codes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 16)).astype(np.float32)
    r, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    mu = rng.normal(size=16).astype(np.float32)
    xf, none = prepare_queries(x, rotation=r, center=mu, query_bits=0)
    assert none is None
    np.testing.assert_allclose(xf, (x - mu) @ r.astype(np.float32), rtol=1e-5, atol=1e-5)
    x[3] = 0
    for bits in (2, 4, 8):
        c, s = prepare_queries(x, rotation=r, center=mu, query_bits=bits)
        lo, hi = code_range(bits)
        assert c.dtype == np.int8 and c.min() >= lo and c.max() <= hi and (s > 0).all()
        err = np.abs(c * s[:, None] - xf).mean()
        assert err < np.abs(xf).mean() * (0.6 if bits == 2 else 0.15)  # a real quantizer, not noise
    c, s = prepare_queries(np.zeros((1, 4), np.float32), query_bits=4)
    assert (c == 0).all() and s[0] == 1.0
    with pytest.raises(ValueError, match="query_bits"):
        prepare_queries(x, query_bits=1)
    with pytest.raises(ValueError, match="rotation"):
        prepare_queries(x, rotation=np.eye(3))


def test_input_validation():
    rng = np.random.default_rng(0)
    codes = item_codes(rng, 20, 16, 1)
    index = AsymCodeIndex(codes, None, 1, None, query_bits=4)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((2, 15), np.int8), 3)
    with pytest.raises(ValueError, match="4-bit"):
        index.search(np.full((2, 16), 9, np.int8), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((2, 16), np.int8), -1)
    fidx = AsymCodeIndex(codes, None, 1, None, query_bits=0)
    with pytest.raises(ValueError, match="query_scales"):
        fidx.search(QueryCodes(np.zeros((2, 16), np.float32), 1.0), 3)
    with pytest.raises(ValueError, match="float queries"):
        fidx.search(np.zeros((2, 16), np.int8), 3)
    with pytest.raises(ValueError, match="query_bits"):
        AsymCodeIndex(codes, None, 1, None, query_bits=1)
    with pytest.raises(ValueError, match="1-bit"):
        AsymCodeIndex(np.zeros((3, 4), np.int8), None, 1)
    with pytest.raises(ValueError, match="terms"):
        AsymCodeIndex(codes, None, 1, np.zeros(3, np.float32))


@pytest.mark.parametrize("item_bits", [1, 4, 8])
@pytest.mark.parametrize("suffix", ["", ".npz"])
def test_save_load_and_memory(tmp_path, item_bits, suffix):
    rng = np.random.default_rng(item_bits)
    n, d = 333, 112
    codes = item_codes(rng, n, d, item_bits)
    scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
    term = rng.normal(size=n).astype(np.float32)
    index = AsymCodeIndex(codes, scale, item_bits, term, query_bits=8)
    np.testing.assert_array_equal(index.codes(), codes)
    np.testing.assert_array_equal(index.item_scale_dense(), scale)
    np.testing.assert_array_equal(index.item_term_dense(), term)
    packed = {1: -(-n // 32) * 32 * 14, 4: -(-n // 16) * 16 * 56, 8: -(-n // 16) * 16 * 112}[item_bits]
    nch = -(-n // 256)
    assert index.memory_bytes() == packed + 4 * n * 2 + 12 * nch  # codes + float32 scale, term + chunk bounds
    path = tmp_path / f"asym{suffix}"
    index.save(path)
    for loaded in (load_index(path), load_index(path, mmap=False)):
        assert isinstance(loaded, AsymCodeIndex) and loaded.query_bits == 8
        assert loaded.memory_bytes() == index.memory_bytes()
        q, qs = make_queries(rng, 7, d, 8)
        a = index.search(QueryCodes(q, qs), 5)
        b = loaded.search(QueryCodes(q, qs), 5)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    small = AsymCodeIndex(codes, None, item_bits, None, query_bits=4)
    assert small.memory_bytes() == packed  # no scale, term or order stored
    ordered = AsymCodeIndex(codes, scale, item_bits, term, query_bits=8, item_order="scale")
    assert ordered.memory_bytes() == packed + 4 * n * 3 + 12 * nch  # + the int32 storage order
    ordered.save(tmp_path / f"ordered{suffix}")
    back = load_index(tmp_path / f"ordered{suffix}")
    assert back._order is not None and back.memory_bytes() == ordered.memory_bytes()
    check(back, q, qs, 5, codes, scale, term, exclude=random_exclusion(rng, 7, n))


def test_reference_scores_formula():
    q = np.array([[1, -2]], np.int8)
    c = np.array([[1, 1], [-1, 1]], np.int8)
    key = reference_asym_scores(q, c, np.array([2.0, 0.5], np.float32), np.array([0.25, -1], np.float32),
                                np.array([3.0], np.float32))
    np.testing.assert_array_equal(key, [[-1 * 2 * 3 + 0.25, -3 * 0.5 * 3 - 1]])


# ----------------------------------------------------------------------- torch / CUDA backends
def _torch_index(codes, scale, item_bits, term, query_bits, device, backend, method, cap):
    index = AsymCodeIndex(codes, scale, item_bits, term, query_bits=query_bits, device=device, backend=backend)
    index._gpu.method = method
    index._gpu.cap = cap
    return index


@pytest.mark.parametrize("item_bits,query_bits,d", [(1, 4, 64), (1, 0, 96), (4, 8, 112), (8, 0, 48)])
def test_torch_backend_on_cpu(item_bits, query_bits, d):
    """The torch backend's chunked float64 search (the two-phase search is the Triton kernels', tested in
    Triton's interpreter below)."""
    rng = np.random.default_rng(d + item_bits)
    n = 2100
    codes = item_codes(rng, n, d, item_bits)
    scale, term = make_scale(rng, n, "row"), make_term(rng, n, "row")
    index = _torch_index(codes, scale, item_bits, term, query_bits, "cpu", "torch", "exact", None)
    q, qs = make_queries(rng, 13, d, query_bits)
    check(index, q, qs, 9, codes, scale, term)
    check(index, q, qs, 9, codes, scale, term, exclude=random_exclusion(rng, 13, n))


CUDA_BACKENDS = [pytest.param(b, marks=needs_cuda) for b in ("cuda-exact", "cuda-triton")]


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("item_bits,query_bits,d", [(1, 4, 64), (1, 8, 48), (1, 0, 112), (4, 4, 96), (4, 0, 64),
                                                    (8, 8, 128), (2, 4, 256)])
def test_cuda_backends(item_bits, query_bits, d, backend):
    rng = np.random.default_rng(d * 3 + item_bits)
    n = 5000  # several item groups and a ragged last tile
    codes = item_codes(rng, n, d, item_bits)
    for sk, tk in [("row", "row"), ("none", "none"), ("tensor", "scalar")]:
        scale, term = make_scale(rng, n, sk), make_term(rng, n, tk)
        if backend == "cuda-triton":
            index = AsymCodeIndex(codes, scale, item_bits, term, query_bits=query_bits, device="cuda",
                                     backend="triton")
        else:
            index = _torch_index(codes, scale, item_bits, term, query_bits, "cuda", "torch", "exact", None)
        q, qs = make_queries(rng, 70, d, query_bits)
        s, i = index.search(QueryCodes(q, qs), 20)
        assert s.device.type == "cuda"
        check(index, q, qs, 20, codes, scale, term)
        check(index, q, qs, 20, codes, scale, term, exclude=random_exclusion(rng, 70, n, 0.01))
        check(index, q, qs, n + 5, codes, scale, term)  # k > n
        if backend == "cuda-triton":
            index._gpu.cap = 8  # forced buffer overflow -> exact redo
            check(index, q, qs, 20, codes, scale, term)


def test_lut_kernel_is_built_where_avx2_is():
    """The LUT IR must parse wherever the other AVX2 kernels do (a broken IR would silently fall
    back to the portable kernel)."""
    from hqgnn.index.cpu import simd as kernels_simd

    assert KL.HAVE_LUT_SIMD == (kernels_simd.HAVE_AVX2 and kernels_simd._CODEGEN_AVX2)


@pytest.mark.parametrize("query_bits", [4, 0])
def test_asym_bench_small(query_bits):
    from retrieval_asym import run_asym_bench

    r = run_asym_bench(3000, 32, 1, query_bits, 40, 5, train_n=1000)
    assert r["exact"] is True and r["exact_checked_queries"] == 40 and r["queries_not_exact"] == 0
    assert r["qps"]["hqgnn"] > 0 and r["query_bits"] == query_bits
    for key in ("faiss_pq_fastscan_32x4", "faiss_pq_fastscan_16x4", "faiss_rabitq", "faiss_rabitq_fastscan"):
        assert key in r["qps"]
    assert 0 <= r["recall_vs_float"]["hqgnn"] <= 1


@pytest.mark.parametrize("term_kind", ["row", "constant", "none"])
def test_storage_order_of_raw_values_is_the_index_order(term_kind):
    """What the renumbered serving path computes from a run's raw tables is the order the index
    itself holds (a constant term column is compacted away in both)."""
    from hqgnn.index.asym_layout import scale_order_of

    rng = np.random.default_rng(11)
    n, d = 1500, 32
    codes = item_codes(rng, n, d, 1)
    scale = make_scale(rng, n, "row")
    term = {"row": make_term(rng, n, "row"), "constant": np.full(n, 0.5, np.float32), "none": None}[term_kind]
    index = AsymCodeIndex(codes, scale, 1, term, query_bits=4, item_order="scale")
    np.testing.assert_array_equal(scale_order_of(scale, term, n), index._order)


def test_asym_bench_renumbered_float16_holds_no_order():
    """--item-order renumbered --value-dtype float16: exact on every query against the brute force
    of the same renumbered items, and the index holds codes + float16 scale + term + bounds only."""
    from retrieval_asym import run_asym_bench

    n, d = 3000, 64
    r = run_asym_bench(n, d, 1, 4, 40, 5, train_n=1000, item_order="renumbered", value_dtype="float16")
    assert r["exact"] is True and r["queries_not_exact"] == 0
    assert r["item_order"] == "renumbered" and r["value_dtype"] == "float16"
    chunks = -(-n // 256)
    padded = -(-n // 32) * 32  # the LUT layout's 32-item blocks
    assert r["bytes_per_item"] == (padded * d / 8 + 2 * n + 2 * n + 12 * chunks) / n
    with pytest.raises(ValueError, match="value_dtype"):
        run_asym_bench(100, 16, 1, 4, 4, 2, train_n=100, value_dtype="float64")


# ------------------------------------------------------------ packed device layout (CPU-checkable)
def test_packed_words_roundtrip_and_compact_values():
    from hqgnn.index.common import compact_values
    from hqgnn.index.packing import pack_words, unpack_words

    rng = np.random.default_rng(4)
    for d in (1, 16, 33, 64, 100):
        c = item_codes(rng, 77, d, 1, dup=False)
        dpad = max(32, -(-d // 32) * 32)
        w = torch.from_numpy(pack_words(c, dpad))
        assert w.dtype == torch.int32 and w.shape == (dpad // 32, 77)
        full = unpack_words(w, slice(0, 77)).numpy()
        np.testing.assert_array_equal(full[:, :d], c)
        assert (full[:, d:] == -1).all()  # padding bits are 0 -> -1, against zero-padded queries
        ids = torch.from_numpy(rng.integers(0, 77, size=(3, 5)))
        np.testing.assert_array_equal(unpack_words(w, ids).numpy()[..., :d], c[ids.numpy()])
    exact16 = np.array([0.5, -1.25, 3.0, 0.0], np.float32)
    assert compact_values(exact16).dtype == np.float16
    assert compact_values(np.array([0.1, 0.2], np.float32)).dtype == np.float32
    assert compact_values(np.array([1e6, 1.0], np.float32)).dtype == np.float32  # float16 overflow
    assert compact_values(np.array([-0.0, 0.0], np.float32)).size == 2  # bitwise, not == equality
    const = compact_values(np.full(9, 0.1, np.float32))
    assert const.shape == (1,) and const.dtype == np.float32


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("query_bits", [4, 0])
def test_torch_searcher_layouts_on_cpu(packed, query_bits):
    """Packed words and the int8 layout, float16 / float32 / constant scales and terms: exact."""
    from hqgnn.index.gpu.asym import AsymTorchSearcher

    rng = np.random.default_rng(17 + packed)
    n, d = 1700, 100
    codes = item_codes(rng, n, d, 1)
    f16 = make_scale(rng, n, "row").astype(np.float16).astype(np.float32)
    for scale, term in [(f16, make_term(rng, n, "row")), (make_scale(rng, n, "row"), None), (None, 0.25)]:
        sd = np.ones(n, np.float32) if scale is None else scale
        td = np.zeros(n, np.float32) if term is None else np.broadcast_to(np.float32(term), (n,))
        for method in ("exact",):
            g = AsymTorchSearcher(codes, sd, td, 1, "cpu", method=method, packed=packed)
            g.tile, g.group = 32, 2  # many small groups: a real threshold, not -inf
            q, qs = make_queries(rng, 11, d, query_bits)
            qsn = None if qs is None else qs.astype(np.float32)
            ex = random_exclusion(rng, 11, n)
            from hqgnn.index.common import normalize_exclusion

            s, i = g.search(q, 12, qsn, normalize_exclusion(ex, 11, n), float_queries=query_bits == 0)
            rs, ri = reference_asym_search(q, codes, 12, scale, term, qs, exclude=ex, float_queries=query_bits == 0)
            np.testing.assert_array_equal(i.numpy(), ri)
            np.testing.assert_array_equal(s.numpy(), rs)
        words = 4 * (-(-d // 32)) if packed else -(-d // 32) * 32
        per_value = {np.dtype(np.float16): 2, np.dtype(np.float32): 4}
        want = n * words + sum(v.numel() * per_value[np.dtype(str(v.dtype).replace("torch.", ""))]
                               for v in (g.scales, g.terms))
        assert g.device_bytes == want


def test_torch_backend_holds_only_the_device_copy(tmp_path):
    """memory_bytes is the device copy alone (10 B/item: 1-bit d=64 + float16 scale, no term);
    save rebuilds the CPU files from it, identical to a CPU index's."""
    rng = np.random.default_rng(8)
    n, d = 1000, 64
    codes = item_codes(rng, n, d, 1)
    scale = make_scale(rng, n, "row").astype(np.float16).astype(np.float32)
    index = AsymCodeIndex(codes, scale, 1, None, query_bits=4, device="cpu", backend="torch")
    assert index.memory_bytes() == n * (8 + 2) + 2  # + the one float16 term 0.0
    assert index._packed is None and index._order is None
    np.testing.assert_array_equal(index.codes(), codes)
    np.testing.assert_array_equal(index.item_scale_dense(), scale)
    term = make_term(rng, n, "row")
    for t in (None, term):
        cpu = AsymCodeIndex(codes, scale, 1, t, query_bits=4)
        gpu = AsymCodeIndex(codes, scale, 1, t, query_bits=4, device="cpu", backend="torch")
        cpu.save(tmp_path / "cpu")
        gpu.save(tmp_path / "gpu")
        for name in ("codes", "scales", "terms", "order"):
            a, b = tmp_path / "cpu" / f"{name}.npy", tmp_path / "gpu" / f"{name}.npy"
            assert a.exists() == b.exists()
            if a.exists():
                np.testing.assert_array_equal(np.load(a), np.load(b))
        loaded = load_index(tmp_path / "gpu", device="cpu", backend="torch")
        q, qs = make_queries(rng, 9, d, 4)
        check(loaded, q, qs, 10, codes, scale, t)


# ------------------------------------------------------ the Triton kernel in its CPU interpreter
def _triton_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


# (d, query bits, packed, zero_one): the packed cases also with the 0/1 operand (and 32-query programs)
INTERP_CASES = [(d, qb, True, False) for d in (16, 64, 100) for qb in (0, 4, 8)] + [
    (64, 4, False, False), (100, 0, False, False), (16, 4, True, True), (64, 8, True, True), (100, 0, True, True)]


def run_interp_case(d: int, query_bits: int, packed: bool, zero_one: bool = False) -> None:
    """One interpreter case (run in a TRITON_INTERPRET=1 subprocess): the two-phase Triton path
    with and without exclusion, a forced buffer overflow, float16 / float32 / constant values;
    ``zero_one``: the 0/1 bit operand (ip = 2 <q, bits> - sum q) with 32 queries per program."""
    from hqgnn.index.common import normalize_exclusion
    from hqgnn.index.gpu.asym import AsymTorchSearcher, triton_asym_available

    assert triton_asym_available()
    rng = np.random.default_rng(d * 10 + query_bits + packed)
    n, b, k = 1000, 9, 6
    codes = item_codes(rng, n, d, 1)  # duplicated rows: exact ties
    kinds = {16: ("f16", "f16"), 64: ("row", "row"), 100: ("none", "none")}[d]
    scale = None if kinds[0] == "none" else make_scale(rng, n, "row")
    term = None if kinds[1] == "none" else make_term(rng, n, "row")
    if kinds[0] == "f16":
        scale, term = (v.astype(np.float16).astype(np.float32) for v in (scale, term))
    sd = np.ones(n, np.float32) if scale is None else scale
    td = np.zeros(n, np.float32) if term is None else term
    g = AsymTorchSearcher(codes, sd, td, 1, "cpu", use_triton=True, method="two_phase", packed=packed)
    g.tile, g.group = 32, 2  # 16 groups: a finite threshold with few candidates
    g.zero_one = zero_one  # both operand forms (the default is the 0/1 one)
    g.threshold_fraction = 0.25 if zero_one else 1.0  # the default (first groups only) and every group
    if zero_one:  # also 32-query programs
        g.block_q = 32
    q, qs = make_queries(rng, b, d, query_bits)
    cases = [(None, None), (random_exclusion(rng, b, n, 0.005), None)] + ([(None, 4)] if d == 64 else [])
    for ex, cap in cases:
        g.cap = cap  # 4: every row overflows -> exact redo
        s, i = g.search(q, k, None if qs is None else qs.astype(np.float32), normalize_exclusion(ex, b, n),
                        float_queries=query_bits == 0)
        rs, ri = reference_asym_search(q, codes, k, scale, term, qs, exclude=ex, float_queries=query_bits == 0)
        np.testing.assert_array_equal(i.numpy(), ri)
        np.testing.assert_array_equal(s.numpy(), rs)


@pytest.fixture(scope="module")
def interp_results():
    """Runs every INTERP_CASES entry in one subprocess with TRITON_INTERPRET=1 (set before triton
    is imported there; this process's Triton, used by the CUDA tests, stays compiled)."""
    import json

    from run_helpers import run_in_triton_interpreter

    code = (
        "import json, traceback\n"
        "import test_index_asym as T\n"
        "out = {}\n"
        "for case in T.INTERP_CASES:\n"
        "    try:\n"
        "        T.run_interp_case(*case); out[repr(case)] = 'ok'\n"
        "    except Exception:\n"
        "        out[repr(case)] = traceback.format_exc()[-3000:]\n"
        "print('RESULTS' + json.dumps(out))\n"
    )
    res = run_in_triton_interpreter(code)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULTS")]
    assert line, res.stderr[-3000:]
    return json.loads(line[-1][len("RESULTS"):])


@pytest.mark.skipif(not _triton_importable(), reason="triton is not installed (its CPU interpreter runs these)")
@pytest.mark.parametrize("d,query_bits,packed,zero_one", INTERP_CASES)
def test_triton_kernel_in_interpreter(interp_results, d, query_bits, packed, zero_one):
    """The real Triton kernel (packed words expanded in registers, or int8) on CPU, vs float64."""
    result = interp_results[repr((d, query_bits, packed, zero_one))]
    assert result == "ok", result


# ------------------------------------------------------------------ float16 scales and terms
def test_half_to_float32_is_bit_exact_for_every_pattern():
    from hqgnn.index.cpu.select import widen_into

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(bits.size, np.float32)
    widen_into(bits, 1, 0, bits.size, out)
    ref = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    assert nan.sum() == 2 * 1023  # exponent 31 with a nonzero mantissa, both signs: skipped, nothing else
    np.testing.assert_array_equal(out[~nan].view(np.uint32), ref[~nan].view(np.uint32))  # -0.0, subnormals, inf
    assert np.isnan(out[nan]).all()
    one = np.empty(1, np.float32)
    widen_into(np.array([0.25], np.float32), 0, 5, 9, one)  # stride 0: the single value, float32 as is
    assert one[0] == 0.25


def fp16_values(rng, n, kind):
    """float16-exact float32 values with ties, negative values and both signed zeros."""
    v = rng.uniform(-0.5, 1.5, n) if kind == "scale" else rng.normal(0, 2, n)
    v = v.astype(np.float16).astype(np.float32)
    v[: n // 3] = v[n // 3 : 2 * (n // 3)]  # repeated values: ties
    v[5], v[6] = 0.0, -0.0
    return v


FP16_CASES = [(1, 4, 64), (1, 8, 64), (1, 0, 64), (2, 4, 48), (2, 0, 112), (4, 4, 64), (4, 8, 96), (4, 0, 64),
              (8, 4, 64), (8, 8, 48), (8, 0, 64)]


@pytest.mark.parametrize("item_order", ["none", "scale"])
@pytest.mark.parametrize("item_bits,query_bits,d", FP16_CASES)
def test_float16_values_equal_reference(item_bits, query_bits, d, item_order):
    rng = np.random.default_rng(item_bits * 31 + query_bits * 7 + d)
    n = 1000
    codes = item_codes(rng, n, d, item_bits)
    scale, term = fp16_values(rng, n, "scale"), fp16_values(rng, n, "term")
    for s, t in [(scale, term), (scale, None), (None, term), ((np.abs(scale) + 0.5).astype(np.float16).astype(np.float32), term)]:
        index = AsymCodeIndex(codes, s, item_bits, t, query_bits=query_bits, item_order=item_order)
        for rec, given in ((index._scale, s), (index._term, t)):
            assert given is None or rec.values.dtype == np.float16
        q, qs = make_queries(rng, 21, d, query_bits)
        if qs is not None:
            qs[1] = 0.0  # every key is t_i: the kernel's integer cut must keep all items
        check(index, q, qs, 10, codes, s, t)
        check(index, q, qs, 10, codes, s, t, exclude=random_exclusion(rng, 21, n))
    index = AsymCodeIndex(codes, scale, item_bits, term, query_bits=query_bits, item_order=item_order)
    index.use_simd = False
    check(index, q, qs, 10, codes, scale, term, exclude=random_exclusion(rng, 21, n))


@pytest.mark.parametrize("item_bits,per_item", [(1, 8), (2, 32), (4, 32), (8, 64)])
def test_memory_bytes_exact_per_format(item_bits, per_item):
    """d = 64: codes (d * b / 8 B, 1 byte per dim for 5..8 bits, nibbles for 2..4) + 2 B per float16
    value or 4 B per float32 value + the per-chunk bounds (4 B per bound per 256 items)."""
    rng = np.random.default_rng(1)
    n, d = 4096, 64  # whole blocks and chunks: no padding in the count
    nch = n // 256
    codes = item_codes(rng, n, d, item_bits)
    s16, t16 = fp16_values(rng, n, "scale"), fp16_values(rng, n, "term")
    s32 = rng.uniform(0.5, 1.5, n).astype(np.float32)
    t32 = rng.normal(size=n).astype(np.float32)
    s32[0], t32[0] = 0.1, 0.1  # not float16-exact

    def held(s, t, **kw):
        return AsymCodeIndex(codes, s, item_bits, t, query_bits=4, **kw).memory_bytes()

    code = per_item * n
    assert held(s16, None) == code + 2 * n + 8 * nch  # 1-bit: 10 B / item (+ 0.03 bounds)
    assert held(s16, t16) == code + 4 * n + 12 * nch  # 1-bit: 12 B / item (+ 0.05)
    assert held(s32, t32) == code + 8 * n + 12 * nch  # 1-bit: 16 B / item (+ 0.05)
    assert held(s32, t16) == code + 6 * n + 12 * nch
    assert held(s16, t16, item_order="scale") == code + 8 * n + 12 * nch  # + int32 order
    assert held(np.full(n, 0.3, np.float32), np.full(n, 0.1, np.float32)) == code  # constants held once
    assert held(None, None) == code
    index = AsymCodeIndex(codes, s16, item_bits, t16, query_bits=4)
    assert index.memory_bytes() == code + 4 * n + 12 * nch
    np.testing.assert_array_equal(index.item_scale_dense(), s16)
    np.testing.assert_array_equal(index.item_term_dense(), t16)
    assert index.item_scale_dense().dtype == np.float32


@pytest.mark.parametrize("suffix", ["", ".npz"])
def test_float16_save_load_and_old_format(tmp_path, suffix):
    from hqgnn.index.asym_layout import storage_order
    from hqgnn.index.common import normalize_item_scale, normalize_item_term
    from hqgnn.index.packing import NIBBLE, pack_nibble_blocked
    from hqgnn.index.io import read_index_files, write_index_files

    rng = np.random.default_rng(4)
    n, d = 700, 64
    codes = item_codes(rng, n, d, 4)
    scale, term = fp16_values(rng, n, "scale"), fp16_values(rng, n, "term")
    q, qs = make_queries(rng, 9, d, 4)
    ex = random_exclusion(rng, 9, n)
    index = AsymCodeIndex(codes, scale, 4, term, query_bits=4)
    index.save(tmp_path / f"new{suffix}")
    _, arrays = read_index_files(tmp_path / f"new{suffix}", mmap=False)
    assert arrays["scales"].dtype == np.float16 and arrays["terms"].dtype == np.float16 and "order" not in arrays
    new = load_index(tmp_path / f"new{suffix}")
    assert new.memory_bytes() == index.memory_bytes()
    check(new, q, qs, 10, codes, scale, term, exclude=ex)
    # the format the code wrote before float16 storage: float32 records and an int32 order, codes in that order
    s_rec, t_rec = normalize_item_scale(scale, n), normalize_item_term(term, n)
    order = storage_order(s_rec, t_rec, n, "scale").astype(np.int32)
    meta = {"kind": "AsymCodeIndex", "bits": 4, "item_bits": 4, "query_bits": 4, "n": n, "dim": d,
            "layout": NIBBLE, "scales": "row", "terms": "row"}
    write_index_files(tmp_path / f"old{suffix}", meta, {"codes": pack_nibble_blocked(codes[order]),
                                                      "scales": scale[order], "terms": term[order], "order": order})
    old = load_index(tmp_path / f"old{suffix}")
    assert old._order is not None and old._scale.values.dtype == np.float16  # compacted on load
    np.testing.assert_array_equal(old.codes(), codes)
    np.testing.assert_array_equal(old.item_scale_dense(), scale)
    check(old, q, qs, 10, codes, scale, term, exclude=ex)
    check(old, q, qs, 10, codes, scale, term)



@pytest.mark.parametrize("item_bits,query_bits", [(1, 4), (1, 8), (4, 4), (1, 0), (4, 0)])
def test_torch_reference_equals_the_numpy_reference_with_ties(item_bits, query_bits):
    from bench_common import reference_asym_search_torch  # the benchmarks' GPU reference (benchmarks/)

    rng = np.random.default_rng(3)
    n, d, b, k = 700, 24, 37, 15
    lo, hi = (-1, 1) if item_bits == 1 else (-(2 ** (item_bits - 1)), 2 ** (item_bits - 1) - 1)
    codes = rng.choice([-1, 1], (n, d)) if item_bits == 1 else rng.integers(lo, hi + 1, (n, d))
    codes[350:] = codes[:350]  # duplicate rows: exact ties broken by the lower id
    scale = np.round(rng.uniform(0.5, 2, n), 1).astype(np.float32)
    scale[350:] = scale[:350]
    term = np.round(rng.normal(0, 1, n), 1).astype(np.float32)
    term[350:] = term[:350]
    fq = query_bits == 0  # float queries: random float32 vectors (duplicated items still tie exactly)
    q = (rng.standard_normal((b, d)).astype(np.float32) if fq
         else rng.integers(-(2 ** (query_bits - 1)), 2 ** (query_bits - 1), (b, d)))
    qs = None if fq else rng.uniform(0.5, 1.5, b).astype(np.float32)
    want = reference_asym_search(q, codes, k, scale, term, qs, block=8, float_queries=fq)
    got = reference_asym_search_torch(q, codes, k, scale, term, qs, device="cpu", block=10, float_queries=fq)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    big_k = reference_asym_search_torch(q, codes[:9], 12, scale[:9], term[:9], qs, device="cpu", float_queries=fq)
    np.testing.assert_array_equal(big_k[1], reference_asym_search(q, codes[:9], 12, scale[:9], term[:9], qs,
                                                                  float_queries=fq)[1])


def test_gpu_layout_int8_is_exact_and_holds_one_byte_per_dimension():
    rng = np.random.default_rng(12)
    n, d = 1500, 64
    codes = item_codes(rng, n, d, 1)
    scale = make_scale(rng, n, "row").astype(np.float16).astype(np.float32)
    term = make_term(rng, n, "row")
    packed = AsymCodeIndex(codes, scale, 1, term, query_bits=4, device="cpu", backend="torch")
    dense = AsymCodeIndex(codes, scale, 1, term, query_bits=4, device="cpu", backend="torch", gpu_layout="int8")
    assert packed._gpu.packed and not dense._gpu.packed
    assert dense.memory_bytes() - packed.memory_bytes() == n * (d - d // 8)
    q, qs = make_queries(rng, 17, d, 4)
    for index in (packed, dense):
        check(index, q, qs, 10, codes, scale, term)
    with pytest.raises(ValueError, match="gpu_layout"):
        AsymCodeIndex(codes, scale, 1, term, device="cpu", backend="torch", gpu_layout="int4")


def test_two_phase_needs_triton():
    from hqgnn.index.gpu.asym import AsymTorchSearcher

    codes = np.ones((40, 16), np.int8)
    with pytest.raises(ValueError, match="two_phase"):
        AsymTorchSearcher(codes, np.ones(40, np.float32), np.zeros(40, np.float32), 1, "cpu", method="two_phase")
    assert AsymTorchSearcher(codes, np.ones(40, np.float32), np.zeros(40, np.float32), 1, "cpu").method == "exact"
