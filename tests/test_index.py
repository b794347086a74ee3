"""hqgnn.index through its one interface (build_index / load_index): every format x backend equals brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hqgnn.index import CodeFormat, Index, QueryCodes, build_index, load_index, reference_search, search_rerank
from hqgnn.index.common import normalize_exclusion, normalize_query_scale
from hqgnn.index.packing import (
    code_range,
    pack_int8_blocked,
    pack_nibble_blocked,
    pack_words,
    unpack_int8_blocked,
    unpack_nibble_blocked,
    unpack_words,
)
from hqgnn.topk import stable_topk

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA not available")
try:
    import faiss
except ImportError:  # pragma: no cover - faiss-cpu is a dependency, absent on the GPU machine
    faiss = None
needs_faiss = pytest.mark.skipif(faiss is None, reason="faiss not installed")


# ------------------------------------------------------------------------------------ helpers
def random_codes(rng: np.random.Generator, m: int, d: int, bits: int) -> np.ndarray:
    lo, hi = code_range(bits)
    if bits == 1:
        return (rng.integers(0, 2, size=(m, d)) * 2 - 1).astype(np.int8)
    return rng.integers(lo, hi + 1, size=(m, d)).astype(np.int8)


def random_exclusion(rng: np.random.Generator, b: int, n: int, frac: float = 0.1):
    rows = [rng.choice(n, size=int(rng.integers(0, max(1, int(n * frac)) + 1)), replace=False) for _ in range(b)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, np.concatenate(rows).astype(np.int64)  # rows deliberately unsorted


def make_case(seed: int, bits: int, n: int, d: int, b: int, scale_kind: str, dup: bool = True):
    """Codes with many duplicated items (exact score ties) and the requested item scales."""
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, n, d, bits)
    if dup and n > 4:
        src = rng.integers(0, n, size=n // 3)
        dst = rng.integers(0, n, size=n // 3)
        codes[dst] = codes[src]
    q = random_codes(rng, b, d, bits)
    scale = {
        "none": None,
        "tensor": np.float32(0.37),
        # few distinct values, incl. negative and zero: many exact key ties across items
        "row": rng.choice(np.array([-0.5, 0.0, 0.25, 0.5, 1.0, 2.0], np.float32), size=n),
    }[scale_kind]
    qs = rng.choice(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32), size=b)
    return codes, q, scale, qs, rng


def assert_same(got, want, what: str = "") -> None:
    gs, gi = got
    if isinstance(gs, torch.Tensor):
        gs, gi = gs.cpu().numpy(), gi.cpu().numpy()
    ws, wi = want
    assert gs.dtype == np.float32 and gi.dtype == np.int64, what
    assert gs.shape == ws.shape and gi.shape == wi.shape, what
    bad = np.argwhere(gi != wi)
    assert bad.size == 0, f"{what}: ids differ at {bad[:5].tolist()}: got {gi[tuple(bad[0])]} want {wi[tuple(bad[0])]}"
    assert np.array_equal(gs, ws), f"{what}: scores differ"


# ---------------------------------------------------------------------------------- stable_topk
def brute_topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, x.shape[1])
    ids = np.stack([np.lexsort((np.arange(x.shape[1]), -row))[:k] for row in x])
    return np.take_along_axis(x, ids, 1), ids


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_topk_matches_lexsort(device: str, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    for trial in range(12):
        b, n = int(rng.integers(1, 40)), int(rng.integers(1, 300))
        x = rng.integers(-3, 4, size=(b, n)).astype(np.float64)  # heavy ties
        if trial % 3 == 0:
            x = rng.standard_normal((b, n))
        x[rng.random((b, n)) < 0.2] = -np.inf
        x[0] = -np.inf  # an all -inf row
        if b > 1:
            x[1] = 5.0  # an all-equal row
        x = x.astype(np.float32 if dtype == torch.float32 else np.float64)  # brute force on the same values
        for k in (1, 3, n // 2 + 1, n, n + 5):
            v, i = stable_topk(torch.tensor(x, dtype=dtype, device=device), k)
            wv, wi = brute_topk(x, k)
            assert i.dtype == torch.int64 and v.dtype == dtype
            np.testing.assert_array_equal(i.cpu().numpy(), wi)
            np.testing.assert_array_equal(v.cpu().numpy().astype(np.float64), wv)


def test_stable_topk_nan_is_lowest_and_chunked_rows() -> None:
    x = torch.tensor([[1.0, float("nan"), 1.0, 2.0], [float("nan")] * 4])
    v, i = stable_topk(x, 3)
    assert i.tolist() == [[3, 0, 2], [0, 1, 2]]
    assert v[0].tolist() == [2.0, 1.0, 1.0] and torch.isneginf(v[1]).all()
    import hqgnn.topk as T

    old = T._MAX_ELEMS_PER_PASS
    try:
        T._MAX_ELEMS_PER_PASS = 16  # force the row-chunked path
        y = torch.randint(0, 3, (9, 7)).double()
        v1, i1 = stable_topk(y, 4)
        wv, wi = brute_topk(y.numpy(), 4)
        np.testing.assert_array_equal(i1.numpy(), wi)
    finally:
        T._MAX_ELEMS_PER_PASS = old
    with pytest.raises(ValueError):
        stable_topk(torch.zeros(3), 1)


# -------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("d", [1, 7, 8, 63, 64, 65, 130])
def test_packing_roundtrips(d: int) -> None:
    rng = np.random.default_rng(d)
    for n in (1, 15, 16, 33):
        c4 = random_codes(rng, n, d, 4)
        assert np.array_equal(unpack_nibble_blocked(pack_nibble_blocked(c4), n, d), c4)
        c8 = random_codes(rng, n, d, 8)
        assert np.array_equal(unpack_int8_blocked(pack_int8_blocked(c8), n, d), c8)
        c1 = random_codes(rng, n, d, 1)
        dpad = -(-d // 32) * 32
        got = unpack_words(torch.from_numpy(pack_words(c1, dpad)), slice(None)).numpy()
        assert np.array_equal(got[:, :d], c1) and np.all(got[:, d:] == -1)


# ------------------------------------------------------------- exactness: every format x every backend
CPU_BACKENDS = ["numba", "numba-portable", "torch"]
GPU_BACKENDS = [pytest.param(b, marks=needs_cuda) for b in ("cuda-torch", "cuda-triton", "cuda-triton-int8")]


def build(backend: str, codes: np.ndarray, fmt: CodeFormat, scale) -> Index:
    """The index of ``fmt`` on one backend (internal switches only pick kernels: results must not move)."""
    if backend.startswith("numba"):
        index = build_index(codes, fmt, scale=scale, backend="numba")
        if backend == "numba-portable":
            index.use_simd = False
        return index
    if backend.startswith("torch"):
        index = build_index(codes, fmt, scale=scale, backend="torch")
        return index
    if backend.startswith("cuda-triton"):
        from hqgnn.index.gpu.asym import triton_asym_available

        if not triton_asym_available():
            pytest.skip("triton not available")
    fmt = fmt.replace(layout="int8" if backend.endswith("int8") else "packed")
    return build_index(codes, fmt, scale=scale, device="cuda", backend="torch" if backend == "cuda-torch" else "triton")


@pytest.mark.parametrize("backend", CPU_BACKENDS + GPU_BACKENDS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_symmetric_formats_equal_reference(backend: str, bits: int) -> None:
    """Queries of the items' width, no term: unscaled (1 bit: pure Hamming), per-tensor and per-row
    scales (negative and zero ones too, in either storage order), exclusions, k above n."""
    n, d, b = 203, 37 if bits != 4 else 300, 21  # d=300 at 4 bits: the int16 accumulator widening
    for si, scale_kind in enumerate(["none", "tensor", "row"]):
        codes, q, scale, qs, rng = make_case(100 * bits + si, bits, n, d, b, scale_kind)
        fmt = CodeFormat(dim=d, item_bits=bits, scale=scale_kind, item_order="scale" if bits % 2 else "none")
        index = build(backend, codes, fmt, scale)
        # the int8 backend's format is fmt with layout="int8" (build() sets it); nothing else may change
        assert isinstance(index, Index) and index.format == fmt.replace(layout=index.format.layout)
        assert index.format.layout == ("int8" if backend.endswith("int8") else fmt.layout)
        for with_ex in (False, True):
            ex = random_exclusion(rng, b, n) if with_ex else None
            for k in (1, 10, n + 7):
                qsc = None if (k == 1 and not with_ex) else qs
                got = index.search(QueryCodes(q, qsc), k, exclude=ex)
                want = reference_search(q, codes, k, qsc, scale, exclude=ex)
                assert_same(got, want, f"{backend} bits={bits} scale={scale_kind} ex={with_ex} k={k}")


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_cpu_many_queries_threads_and_ranges(bits: int) -> None:
    """>64 queries (several tasks), 1 query (item ranges merged), 1 and 3 threads."""
    codes, q, scale, qs, rng = make_case(7, bits, 2000, 70, 150, "row")
    index = build_index(codes, CodeFormat(dim=70, item_bits=bits), scale=scale)
    ex = random_exclusion(rng, 150, 2000, 0.02)
    want = reference_search(q, codes, 15, qs, scale, exclude=ex)
    for threads in (1, 3):
        index.threads = threads
        assert_same(index.search(QueryCodes(q, qs), 15, ex), want, f"threads={threads}")
        assert_same(index.search(QueryCodes(q[:1], qs[:1]), 15), reference_search(q[:1], codes, 15, qs[:1], scale),
                    "one query")


def test_all_items_identical_and_degenerate_inputs() -> None:
    codes = np.ones((50, 16), np.int8)
    for bits in (1, 4):
        index = build_index(codes, CodeFormat(dim=16, item_bits=bits, scale="none"))
        s, i = index.search(np.ones((2, 16), np.int8), 5)
        assert i.tolist() == [[0, 1, 2, 3, 4]] * 2 and np.all(s == 16)
        s, i = index.search(np.ones((3, 16), np.int8), 0)
        assert s.shape == (3, 0)
        s, i = index.search(np.ones((0, 16), np.int8), 4)
        assert s.shape == (0, 4) and i.shape == (0, 4)
        # every item excluded -> all padding
        s, i = index.search(np.ones((1, 16), np.int8), 3, exclude=(np.array([0, 50]), np.arange(50)))
        assert i.tolist() == [[-1, -1, -1]] and np.all(np.isneginf(s))
    empty = build_index(np.zeros((0, 16), np.int8), CodeFormat(dim=16, item_bits=4, scale="none"))
    s, i = empty.search(np.ones((2, 16), np.int8), 3)
    assert i.tolist() == [[-1] * 3] * 2 and np.all(np.isneginf(s))
    fmt4 = CodeFormat(dim=4, item_bits=4)
    with pytest.raises(ValueError, match="4-bit"):
        build_index(np.full((3, 4), 8, np.int8), fmt4)  # out of the 4-bit range
    with pytest.raises(ValueError, match="1-bit"):
        build_index(np.zeros((3, 4), np.int8), CodeFormat(dim=4, item_bits=1))  # 0 is not a 1-bit code
    with pytest.raises(ValueError, match="shape"):
        build_index(codes, CodeFormat(dim=16, item_bits=4)).search(np.ones((1, 15), np.int8), 3)  # wrong dim
    with pytest.raises(ValueError, match="1-bit"):  # 1-bit queries are exactly +-1, though searched as 2-bit codes
        build_index(codes, CodeFormat(dim=16, item_bits=1)).search(np.zeros((1, 16), np.int8), 3)
    with pytest.raises(ValueError, match="k must be"):
        build_index(codes, CodeFormat(dim=16, item_bits=4)).search(np.ones((1, 16), np.int8), -1)


# ------------------------------------------------------------------------------ memory & storage
def test_memory_bytes_of_symmetric_formats() -> None:
    """What the CPU index holds: packed codes (+ float32 per-row scales + the int32 order + the per-chunk
    scale bounds, 8 B per 256 items): fmt.item_bytes per item plus the bounds."""
    rng = np.random.default_rng(0)
    n, d = 512, 64
    for bits, kind, order in ((1, "none", "none"), (1, "row", "scale"), (4, "tensor", "none"), (8, "row", "none")):
        fmt = CodeFormat(dim=d, item_bits=bits, scale=kind, item_order=order)
        scale = {"none": None, "tensor": 0.5, "row": rng.random(n).astype(np.float32) + 0.1}[kind]
        index = build_index(random_codes(rng, n, d, bits), fmt, scale=scale)
        bounds = 8 * (n // 256) if kind == "row" else 0
        assert index.memory_bytes() == n * fmt.item_bytes + bounds, (bits, kind, order)
    assert CodeFormat(dim=64, item_bits=1, scale="none").item_bytes == 8  # FAISS IndexBinaryFlat's bytes


@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("form", ["dir", "npz"])
def test_save_load_roundtrip(tmp_path, bits: int, form: str) -> None:
    codes, q, scale, qs, rng = make_case(11, bits, 120, 33, 9, "row")
    fmt = CodeFormat(dim=33, item_bits=bits, item_order="scale")
    index = build_index(codes, fmt, scale=scale)
    path = tmp_path / ("idx.npz" if form == "npz" else "idx")
    index.save(path)
    if form == "dir":
        assert sorted(p.name for p in path.iterdir()) == ["codes.npy", "meta.json", "order.npy", "scales.npy"]
        assert json.loads((path / "meta.json").read_text())["code_format"] == fmt.to_dict()
    want = reference_search(q, codes, 7, qs, scale)
    for mmap in (True, False):
        loaded = load_index(path, mmap=mmap)
        assert loaded.format == fmt and loaded.n == 120 and loaded.memory_bytes() == index.memory_bytes()
        assert_same(loaded.search(QueryCodes(q, qs), 7), want, f"loaded mmap={mmap}")
    assert_same(load_index(path, backend="torch").search(QueryCodes(q, qs), 7), want, "loaded on torch")


def test_index_saved_by_the_symmetric_engine_is_refused_by_name(tmp_path) -> None:
    from hqgnn.index.io import write_index_files

    meta = {"kind": "BinaryCodeIndex", "bits": 1, "n": 2, "dim": 64, "scale": "none", "layout": "u64words"}
    path = write_index_files(tmp_path / "old", meta, {"codes": np.zeros((2, 1), np.uint64)})
    with pytest.raises(ValueError, match=r"old: saved by the symmetric code index .* re-export"):
        load_index(path)


# --------------------------------------------------------------------------------------- FAISS
@needs_faiss
def test_pure_hamming_index_agrees_with_faiss_binary_flat() -> None:
    """1-bit codes without scales rank by Hamming distance (score d - 2h), FAISS IndexBinaryFlat's task."""
    from hqgnn.faiss_export import faiss_binary_bytes, to_faiss_binary, to_faiss_flat_ip

    rng = np.random.default_rng(5)
    d = 64
    codes = random_codes(rng, 3000, d, 1)
    codes[1000:1100] = codes[:100]  # duplicates: ties at every distance
    q = random_codes(rng, 40, d, 1)
    k = 25
    dist, fid = to_faiss_binary(codes).search(faiss_binary_bytes(q), k)
    s, i = build_index(codes, CodeFormat(dim=d, item_bits=1, scale="none")).search(q, k)
    assert_same((s, i), reference_search(q, codes, k), "hamming")
    ham = (d - s) / 2
    assert np.array_equal(dist, ham.astype(dist.dtype))  # same distance profile
    for r in range(q.shape[0]):  # same neighbours; FAISS' order among equal distances may differ
        last = dist[r, -1]
        assert set(fid[r][dist[r] < last]) == set(i[r][ham[r] < last])
    x = np.ascontiguousarray(codes[:5].astype(np.float32))  # FAISS' own bit order: dim t -> bit t % 8 of byte t // 8
    fb = np.zeros((5, d // 8), np.uint8)
    faiss.real_to_binary(5 * d, faiss.swig_ptr(x), faiss.swig_ptr(fb))
    assert np.array_equal(faiss_binary_bytes(codes[:5]), fb)
    assert to_faiss_binary(codes, hnsw=True, M=16).ntotal == 3000
    assert to_faiss_flat_ip(rng.standard_normal((10, 8)).astype(np.float32)).ntotal == 10


@needs_faiss
def test_write_faiss(tmp_path) -> None:
    from hqgnn.faiss_export import to_faiss_binary, to_faiss_flat_ip, write_faiss

    rng = np.random.default_rng(0)
    write_faiss(to_faiss_binary(random_codes(rng, 20, 16, 1)), tmp_path / "b.faiss")
    write_faiss(to_faiss_flat_ip(rng.standard_normal((5, 4)).astype(np.float32)), tmp_path / "f.faiss")
    assert faiss.read_index_binary(str(tmp_path / "b.faiss")).ntotal == 20
    assert faiss.read_index(str(tmp_path / "f.faiss")).ntotal == 5


# -------------------------------------------------------------------------------------- re-rank
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_search_rerank_is_exact_among_candidates(device: str) -> None:
    rng = np.random.default_rng(9)
    n, d, b, c, k = 500, 24, 12, 40, 10
    xf = rng.standard_normal((n, d)).astype(np.float32)
    qf = rng.standard_normal((b, d)).astype(np.float32)
    xf[7] = xf[3]  # a float tie
    codes, q = np.where(xf >= 0, 1, -1).astype(np.int8), np.where(qf >= 0, 1, -1).astype(np.int8)
    index = build_index(codes, CodeFormat(dim=d, item_bits=1, scale="none"), device=device)
    ex = random_exclusion(rng, b, n, 0.05)
    s, i = search_rerank(index, q, qf, xf, k, candidates=c, exclude=ex)
    if device != "cpu":
        s, i = s.cpu().numpy(), i.cpu().numpy()
    _, cand = reference_search(q, codes, c, exclude=ex)
    for r in range(b):
        sc = qf[r].astype(np.float64) @ xf[cand[r]].astype(np.float64).T
        order = np.lexsort((cand[r], -sc))[:k]
        assert i[r].tolist() == cand[r][order].tolist()
        assert np.array_equal(s[r], sc[order].astype(np.float32))
    _, i2 = search_rerank(index, q, qf, xf, k, candidates=3)  # candidates < k -> raised to k
    assert (torch.as_tensor(i2) >= 0).all()


# -------------------------------------------------------------------------------- CPU internals
def test_simd_and_portable_kernels_agree_on_raw_scores() -> None:
    from hqgnn.index.cpu import simd as S
    from hqgnn.index.packing import int8_query_vectors, nibble_query_vectors

    if not S.HAVE_AVX2:
        pytest.skip("no AVX2 on this CPU")
    rng = np.random.default_rng(1)
    for bits, d in ((4, 300), (8, 37)):
        codes = random_codes(rng, 64, d, bits)
        q = random_codes(rng, 8, d, bits)
        if bits == 4:
            items, (qv, off), ngp = pack_nibble_blocked(codes), nibble_query_vectors(q), -(-d // 4)
        else:
            items, qv, ngp = pack_int8_blocked(codes).view(np.uint8), int8_query_vectors(q.astype(np.int16)), -(-d // 2)
            off = np.zeros(8, np.int64)
        qb = qv.view(np.uint8).reshape(qv.shape[0], -1)
        out = []
        for simd in (True, False):
            buf = np.zeros((8, 64), np.int32)
            if bits == 4:
                (S._u4_ir_py if simd else S._u4_portable)(items, 0, 4, ngp, qb, 0, buf)
            else:
                (S._s8_ir_py if simd else S._s8_portable)(items, 0, 8, ngp, qb, 0, buf)
            out.append(buf - off[:, None])
        want = q.astype(np.int64) @ codes.T.astype(np.int64)
        assert np.array_equal(out[0], want) and np.array_equal(out[1], want)


def test_exclusion_normalization() -> None:
    ex = normalize_exclusion((np.array([0, 3, 3, 5]), np.array([9, 2, 5, 4, 1])), 3, 10)
    assert ex.indices.tolist() == [2, 5, 9, 1, 4]
    import scipy.sparse as sp

    m = sp.csr_matrix((np.ones(2), ([0, 1], [3, 4])), shape=(2, 10))
    assert normalize_exclusion(m, 2, 10).indices.tolist() == [3, 4]
    with pytest.raises(ValueError):
        normalize_exclusion((np.array([0, 1]), np.array([1])), 3, 10)
    assert normalize_query_scale(None, 2).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------- bench
def test_run_retrieval_bench_smoke() -> None:
    from retrieval import run_retrieval_bench

    for bits in (1, 4):
        r = run_retrieval_bench(3000, 32, bits, 20, 5, device="cpu", threads=2)
        assert r["exact"] is True
        assert r["qps"]["hqgnn"] > 0 and r["qps"]["torch_float32"] > 0
        assert r["float32_bytes_per_item"] == 128 and r["bits"] == bits and r["threads"] == 2
        assert ("hqgnn_hamming" in r["qps"]) == (bits == 1)
        json.dumps(r)


def test_fold_cpu_bench_smoke(tmp_path) -> None:
    from fold_cpu import main

    main([str(tmp_path / "f.json"), "--items", "700", "--queries", "9", "--reps", "1", "--threads", "1"])
    rows = json.loads((tmp_path / "f.json").read_text())["rows"]
    assert len(rows) == 6 and all(r["identical_results"] and r["exact_vs_reference_8q"] for r in rows)


# -- the helpers both torch searchers share (hqgnn.index.gpu.topk) ---------------------------------------
def test_chunked_running_topk_with_exclusions_matches_brute_force() -> None:
    from hqgnn.index.gpu.topk import exclusion_rows, exclusion_slice, exclusion_tensors, running_topk

    rng = np.random.default_rng(5)
    b, n, k = 9, 257, 12
    keys = np.round(rng.normal(size=(b, n)), 1)  # rounded: many exact ties, lower id must win
    ex = normalize_exclusion(random_exclusion(rng, b, n, 0.2), b, n)
    masked = keys.copy()
    for u in range(b):
        masked[u, ex.indices[ex.indptr[u]:ex.indptr[u + 1]]] = -np.inf
    want_ids = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    exr = exclusion_tensors(ex, b, n, torch.device("cpu"))
    table = torch.from_numpy(keys)
    for step in (1, 50, 1000):  # many chunks, a ragged last chunk, one chunk
        got_k, got_i = running_topk(lambda c0, c1: table[:, c0:c1].clone(), n, b, k, step, exr, torch.device("cpu"))
        np.testing.assert_array_equal(got_i.numpy(), want_ids)
        np.testing.assert_array_equal(got_k.numpy(), np.take_along_axis(masked, want_ids, 1))
    rows = torch.tensor([7, 2])  # a subset of the queries, renumbered (the overflow redo)
    sub_k, sub_i = running_topk(lambda c0, c1: table[rows, c0:c1].clone(), n, 2, k, 64,
                                exclusion_rows(exr, rows, b), torch.device("cpu"))
    np.testing.assert_array_equal(sub_i.numpy(), want_ids[[7, 2]])
    part_k, part_i = running_topk(lambda c0, c1: table[3:6, c0:c1].clone(), n, 3, k, 64,
                                  exclusion_slice(exr, 3, 6), torch.device("cpu"))
    np.testing.assert_array_equal(part_i.numpy(), want_ids[3:6])
    # fewer eligible items than k: padded with (-inf, -1)
    few_k, few_i = running_topk(lambda c0, c1: table[:1, c0:c1].clone(), 5, 1, 8, 2, None, torch.device("cpu"))
    assert few_i[0, 5:].tolist() == [-1] * 3 and torch.isneginf(few_k[0, 5:]).all()


def test_float32_at_most_never_rounds_up() -> None:
    from hqgnn.index.gpu.topk import float32_at_most

    thr = torch.tensor([1 / 3, -1 / 3, 1.0, 0.0, float("-inf"), 1e-40, -1e-40, 16777217.0], dtype=torch.float64)
    got = float32_at_most(thr.clone())
    assert got.dtype == torch.float32
    assert bool((got.to(torch.float64) <= thr).all())
    nxt = torch.nextafter(got, torch.full_like(got, float("inf"))).to(torch.float64)
    finite = torch.isfinite(thr)
    assert bool((nxt[finite] > thr[finite]).all())  # the largest such float32, not just any
