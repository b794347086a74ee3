"""benchmarks/posthoc.py: each post-hoc method's ranking against a NumPy brute force of its definition."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import faiss  # noqa: E402
import posthoc as P  # noqa: E402

from hqgnn.eval import RankingEvaluator  # noqa: E402
from hqgnn.topk import stable_topk  # noqa: E402

N_USERS, N_ITEMS, D, K = 40, 700, 16, 20


@pytest.fixture(autouse=True)
def _fast_faiss(monkeypatch):
    # fewer k-means / OPQ iterations keep the suite fast; the code path is the one FAISS defaults run
    monkeypatch.setattr(P, "PQ_KMEANS_ITERS", 6)
    monkeypatch.setattr(P, "OPQ_ITERS", 3)
    monkeypatch.setattr(P, "OPQ_PQ_ITERS", 2)
    # one OpenMP thread: spinning FAISS threads crawl when the test machine's cores are busy elsewhere
    monkeypatch.setattr(P, "FAISS_THREADS", 1)


def correlated(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) * np.linspace(1.5, 0.1, d)[:, None]
    return (rng.standard_normal((n, d)) @ mix + 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def emb():
    return correlated(N_USERS, D, 1), correlated(N_ITEMS, D, 2)


def scores_of(c: P.Compressed, n_users: int) -> np.ndarray:
    return c.scorer(torch.arange(n_users)).numpy()


def top_ids(scores: np.ndarray, k: int = K) -> np.ndarray:
    return stable_topk(torch.from_numpy(np.asarray(scores, dtype=np.float64)), k)[1].numpy()


def assert_same_ranking(got: np.ndarray, want: np.ndarray, k: int = K) -> None:
    np.testing.assert_array_equal(top_ids(got, k), top_ids(want, k))


def pm1(x):
    return np.where(x >= 0, 1.0, -1.0)


# ---------------------------------------------------------------------------------- (1) brute force


def test_sign_hamming_is_minus_hamming(emb):
    u, it = emb
    c = P.build("sign_hamming", u, it)
    bu, bi = np.packbits(u >= 0, axis=1), np.packbits(it >= 0, axis=1)
    ham = np.unpackbits(bu[:, None, :] ^ bi[None, :, :], axis=2).sum(2)
    np.testing.assert_array_equal(scores_of(c, N_USERS), -ham.astype(np.float32))


def test_sign_rowscale_sym_and_asym(emb):
    u, it = emb
    su, si = np.abs(u).mean(1), np.abs(it).mean(1)
    sym = (su[:, None] * pm1(u)) @ (si[:, None] * pm1(it)).T
    asym = u.astype(np.float64) @ (si[:, None] * pm1(it)).T
    for name, want in (("sign_rowscale_sym", sym), ("sign_rowscale_asym", asym)):
        got = scores_of(P.build(name, u, it), N_USERS)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert_same_ranking(got, want)


def test_itq_scorers_rank_like_the_reconstruction(emb):
    """ITQ scores = <query, reconstruction> minus a per-user constant, so the rankings coincide."""
    u, it = emb
    for name in ("itq_sign_asym", "itq_sign_sym", "itq_hamming"):
        c = P.build(name, u, it, seed=3)
        r, mu = c.extra["rotation"].astype(np.float64), c.extra["mean"].astype(np.float64)
        np.testing.assert_allclose(r.T @ r, np.eye(D), atol=1e-5)
        np.testing.assert_allclose(mu, it.mean(0), atol=1e-5)
        p = (it - mu) @ r
        bi, si = pm1(p), np.abs(p).mean(1)
        np.testing.assert_array_equal(c.extra["item_codes"], bi)
        recon_i = mu + (si[:, None] * bi) @ r.T
        if name == "itq_sign_asym":
            q = u.astype(np.float64)
            offset = q @ mu
        else:
            pu = u @ r
            bu = pm1(pu)
            q = (np.abs(pu).mean(1)[:, None] * bu) @ r.T if name == "itq_sign_sym" else None
            offset = q @ mu if q is not None else None
        got = scores_of(c, N_USERS)
        if name == "itq_hamming":
            want = -(bu[:, None, :] != bi[None, :, :]).sum(2)
            np.testing.assert_array_equal(got, want)
            continue
        want = q @ recon_i.T
        np.testing.assert_allclose(got + offset[:, None], want, rtol=1e-4, atol=1e-4)
        assert_same_ranking(got, want)


def decode_sq(index, bits: int) -> np.ndarray:
    tr = faiss.vector_to_array(index.sq.trained)
    vmin, vdiff = tr[:D], tr[D:]
    codes = faiss.vector_to_array(index.codes).reshape(index.ntotal, -1)
    if bits == 4:  # two dimensions per byte, the lower nibble first
        codes = np.stack([codes & 15, codes >> 4], -1).reshape(index.ntotal, -1)
    return vmin + (codes + 0.5) / (2**bits - 1) * vdiff


@pytest.mark.parametrize("bits", [8, 4])
def test_sq_scores_are_float_query_times_decoded_codes(emb, bits):
    u, it = emb
    c = P.build(f"sq{bits}", u, it)
    want = u.astype(np.float64) @ decode_sq(c.extra["index"], bits).T
    got = scores_of(c, N_USERS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert_same_ranking(got, want)
    # and what FAISS' own search returns
    dist, ids = c.extra["index"].search(u, K)
    np.testing.assert_allclose(np.take_along_axis(got, ids, 1), dist, rtol=1e-5, atol=1e-4)


def pq_adc(index, queries: np.ndarray) -> np.ndarray:
    """Inner-product ADC by lookup tables: sum_m <q_m, C_m[code_im]>."""
    ipq = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    pq = ipq.pq
    cent = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    codes = faiss.vector_to_array(ipq.codes).reshape(ipq.ntotal, pq.M)  # 8 bits: one byte per sub-quantizer
    lut = np.einsum("umd,mkd->umk", queries.reshape(len(queries), pq.M, pq.dsub).astype(np.float64), cent)
    return lut[:, np.arange(pq.M)[None, :], codes].sum(2)


@pytest.mark.parametrize("name", ["pq4x8_adc", "pq8x8_adc", "opq4_pq4x8_adc"])
def test_pq_scorer_is_lookup_table_adc(emb, name):
    u, it = emb
    c = P.build(name, u, it)
    index = c.extra["index"]
    q = faiss.downcast_VectorTransform(index.chain.at(0)).apply(u) if name.startswith("opq") else u
    want = pq_adc(index, q)
    got = scores_of(c, N_USERS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert_same_ranking(got, want)


def test_float32_row_scores_are_inner_products(emb):
    u, it = emb
    got = scores_of(P.build("float32", u, it), N_USERS)
    np.testing.assert_allclose(got, u.astype(np.float64) @ it.T, rtol=1e-5, atol=1e-5)


def random_seen(n_users: int, n_items: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=0.05, format="lil", random_state=rng)
    m[0, :300] = 1  # one heavy user: more seen items than k
    m = m.tocsr()
    m.data[:] = 1
    m.sort_indices()
    return m


@pytest.mark.parametrize("qb", [4, 8])
def test_rabitq_topk_is_faiss_ranking_minus_seen(emb, qb):
    u, it = emb
    seen = random_seen(N_USERS, N_ITEMS, 5)
    c = P.build(f"rabitq_q{qb}", u, it, seen=seen)
    index = c.extra["index"]
    assert c.extra["inner"].qb == qb and c.extra["params"].qb == qb
    assert isinstance(c.extra["rotation"], faiss.RandomRotationMatrix)
    users = torch.arange(N_USERS)
    got = c.topk(users, K).numpy()
    params = faiss.RaBitQSearchParameters()
    params.qb = qb
    _, full = index.search(u, N_ITEMS, params=params)  # FAISS' whole ranking, then drop seen by hand
    for row in range(N_USERS):
        s = set(seen[row].indices.tolist())
        want = [i for i in full[row] if i not in s][:K]
        assert got[row].tolist() == want
    # the code's ranking depends on the query bits (so qb really reaches FAISS)
    other = P.build(f"rabitq_q{12 - qb}", u, it, seen=seen).topk(users, K).numpy()
    assert (other != got).any()


def test_drop_seen_topk_pads_with_minus_one():
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    ids = np.array([[0, 2, 1, 3], [3, -1, -1, -1]])
    out = P.drop_seen_topk(ids, np.array([0, 1]), seen, 3)
    np.testing.assert_array_equal(out, [[2, 3, -1], [3, -1, -1]])


# ---------------------------------------------------------------------------------- (2) vs FAISS search


@pytest.mark.parametrize("name", ["pq4x8_adc", "opq4_pq4x8_adc", "pq16x8_adc"])
def test_pq_scorer_matches_faiss_search(emb, name):
    u, it = emb
    c = P.build(name, u, it)
    dist, ids = c.extra["index"].search(u, K)
    got = scores_of(c, N_USERS)
    np.testing.assert_allclose(np.take_along_axis(got, ids, 1), dist, rtol=1e-5, atol=1e-4)
    mine = top_ids(got)
    # same top-K as FAISS wherever FAISS' own scores are not tied within float rounding
    gaps = np.abs(np.diff(dist, axis=1)).min(1)
    clear = gaps > 1e-4
    assert clear.sum() >= N_USERS // 2
    np.testing.assert_array_equal(mine[clear], ids[clear])


# ---------------------------------------------------------------------------------- (3) bytes


def test_item_bytes_are_what_the_format_stores():
    d = 64
    u, it = correlated(10, d, 7), correlated(300, d, 8)
    seen = sp.csr_matrix((10, 300), dtype=np.float32)
    want = {
        "float32": (256, 256, 0),
        "sign_hamming": (8, 8, 0),
        "sign_rowscale_sym": (12, 12, 0),
        "sign_rowscale_asym": (12, 256, 0),
        "itq_sign_sym": (12, 12, 4 * d * d + 4 * d),
        "itq_sign_asym": (12, 256, 4 * d * d + 4 * d),
        "itq_hamming": (8, 8, 4 * d * d + 4 * d),
        "sq8": (64, 256, 2 * 4 * d),
        "sq4": (32, 256, 2 * 4 * d),
        # 64 sign bits + two float32 factors per item; the center and the random rotation per table
        "rabitq_q4": (16, 256, 4 * d + 4 * d * d),
        "rabitq_q8": (16, 256, 4 * d + 4 * d * d),
        "rabitq_b4_q8": (52, 256, 4 * d + 4 * d * d),  # FAISS: 1 + 3 bits per dim (32 B) + float factors
    }
    for name, (ib, ub, tb) in want.items():
        c = P.build(name, u, it, seen=seen)
        assert (c.item_bytes, c.user_bytes, c.table_bytes) == (ib, ub, tb), name
        if "index" in c.extra:  # FAISS' stored code array really is item_bytes per item
            stored = c.extra.get("inner", c.extra["index"])
            assert faiss.vector_to_array(stored.codes).size == ib * len(it), name
    for m in (8, 16):
        for name in (f"pq{m}x8_adc", f"opq{m}_pq{m}x8_adc"):
            c = P.build(name, u, it)
            assert c.item_bytes == m
            inner = faiss.downcast_index(c.extra["index"].index) if name.startswith("opq") else c.extra["index"]
            assert faiss.vector_to_array(inner.codes).size == m * len(it)
            assert c.table_bytes == 256 * d * 4 + (d * d * 4 if name.startswith("opq") else 0)


def test_bad_method_names_are_errors(emb):
    u, it = emb
    for bad in ("pq5x8_adc", "opq4_pq8x8_adc", "lsh", "rabitq_q4"):
        with pytest.raises(ValueError):
            P.build(bad, u, it)  # rabitq without `seen`, pq with M not dividing d, unknown names


# ---------------------------------------------------------------------------------- (4) ITQ


def test_itq_reduces_quantization_error_on_correlated_data():
    x = correlated(2000, 32, 11)
    v = x - x.mean(0)
    eye = np.eye(32, dtype=np.float32)
    # ITQ's loss ||B - VR||^2 never increases over the alternations, from its random start on
    losses = [P.itq_objective(v, P.itq_rotation(v, n_iter=n, seed=0)) for n in (0, 5, 50)]
    assert losses[0] > losses[1] > losses[2]
    r = P.itq_rotation(v, seed=0)
    assert P.itq_objective(v, r) < P.itq_objective(v, eye)
    # the stored reconstruction s * sign(.) is clearly better after the rotation than without it
    assert P.rowscale_error(v, r) < 0.92 * P.rowscale_error(v)


# ---------------------------------------------------------------------------------- (5) end to end


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A float run directory on small synthetic data (embeddings: a truncated SVD of the train matrix)."""
    from hqgnn.config import DataConfig, RunConfig
    from hqgnn.data import load_dataset
    from hqgnn.run import save_run

    cfg = RunConfig(data=DataConfig(synthetic_users=400, synthetic_items=500, synthetic_communities=8))
    data = load_dataset(cfg.data)
    m = data.matrix(data.train).toarray().astype(np.float64)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # small; BLAS threads only spin on a busy machine
        uu, s, vt = np.linalg.svd(m, full_matrices=False)
    d = 32
    user_emb = torch.from_numpy((uu[:, :d] * np.sqrt(s[:d])).astype(np.float32))
    item_emb = torch.from_numpy((vt[:d].T * np.sqrt(s[:d])).astype(np.float32))
    run_dir = tmp_path_factory.mktemp("posthoc") / "run"
    save_run(run_dir, cfg, {}, {}, {"user_emb": user_emb, "item_emb": item_emb}, data.user_ids, data.item_ids,
             data.matrix(data.seen))
    ev = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), (20, 50), "cpu")
    return run_dir, data, ev, user_emb, item_emb


def test_posthoc_rows_end_to_end(synthetic_run):
    _, data, ev, user_emb, item_emb = synthetic_run
    hooks = P.evaluator_hooks(ev)
    rows = P.posthoc_rows(user_emb, item_emb, hooks["evaluate"], data.name, "cpu test", seed=0,
                          evaluate_ranking=hooks["evaluate_ranking"], seen=hooks["seen"])
    assert [r["method"] for r in rows] == list(P.DEFAULT_METHODS)
    keys = {"dataset", "method", "family", "item_bytes", "user_bytes", "table_bytes", *P.METRIC_KEYS,
            "train_seconds", "device", "seed"}
    by = {r["method"]: r for r in rows}
    for r in rows:
        assert keys <= set(r)
        assert r["family"] == ("float" if r["method"] == "float32" else "posthoc")
        assert all(0.0 <= r[k] <= 1.0 for k in P.METRIC_KEYS)
        assert r["recall@50"] >= r["recall@20"]
    # the float row is the teacher's own exact evaluation (the fused CPU path)
    exact = ev.evaluate_embeddings(user_emb, item_emb)
    for k in P.METRIC_KEYS:
        assert by["float32"][k] == pytest.approx(exact[k], abs=1e-9)
    # SVD embeddings carry signal: every method beats random ranking (recall@20 ~ 20 / n_items); plain sign
    # is weakest here (the leading SVD component has one sign for every row)
    chance = 20 / data.n_items
    for r in rows:
        assert r["recall@20"] > 1.3 * chance, r["method"]
    # finer codes lose less: 8-bit SQ is within 2 points of float, PQ32 (1 dim/sub-space) nearly exact
    assert by["sq8"]["recall@20"] == pytest.approx(by["float32"]["recall@20"], abs=0.02)
    assert by["pq32x8_adc"]["recall@20"] == pytest.approx(by["float32"]["recall@20"], abs=0.02)


def test_cli_on_a_run_directory(synthetic_run, tmp_path, capsys):
    run_dir, _, ev, user_emb, item_emb = synthetic_run
    out = tmp_path / "rows.json"
    assert P.main([str(run_dir), "--out", str(out), "--methods", "float32,sign_hamming,rabitq_q8"]) == 0
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["float32", "sign_hamming", "rabitq_q8"]
    assert rows[0]["recall@20"] == pytest.approx(ev.evaluate_embeddings(user_emb, item_emb)["recall@20"], abs=1e-9)
    assert rows[0]["dataset"] == "synthetic"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert P.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert P.main([str(tmp_path), "--methods", "float32,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_posthoc_rows_checks_methods_before_fitting(emb):
    u, it = emb
    calls = []
    with pytest.raises(ValueError, match="bogus"):
        P.posthoc_rows(u, it, lambda s: calls.append(s), "x", "cpu", methods=["float32", "bogus"])
    with pytest.raises(ValueError, match="evaluate_ranking"):
        P.posthoc_rows(u, it, lambda s: calls.append(s), "x", "cpu", methods=["float32", "rabitq_q4"])
    assert calls == []  # nothing was evaluated
