"""Recommendations from a run: the code engine (quantized runs) agrees with the evaluator's scoring."""

import json

import numpy as np
import pytest
import torch

from hqgnn.cli import main
from hqgnn.config import RunConfig
from hqgnn.eval.evaluator import code_scorer, exclusion_mask_fill
from hqgnn.recommender import Recommender
from hqgnn.run import load_run
from hqgnn.topk import stable_topk
from hqgnn.train.pipeline import run_training


@pytest.fixture(scope="module", params=[1, 4])
def quantized_run(request, tmp_path_factory):
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim = 16
    cfg.train.epochs, cfg.train.device = 2, "cpu"
    cfg.quant.bits, cfg.quant.estimator = request.param, "ste"
    out = tmp_path_factory.mktemp(f"q{request.param}") / "run"
    run_training(cfg, out, progress=False)
    return out


def test_engine_recommendations_equal_the_float64_reference(quantized_run):
    """Served lists are exact: identical to a float64 brute force of codes x scales (ties to the lower id)."""
    from hqgnn.index import reference_search

    run = load_run(quantized_run)
    rec = Recommender(run)
    assert rec.index is not None
    users = np.arange(run.n_users)
    scores, ids = rec.recommend(users, 20)
    t = run.tables
    want_scores, want_ids = reference_search(t["user_codes"].numpy(), t["item_codes"].numpy(), 20,
                                             query_scales=t["user_scale"].numpy(),
                                             item_scales=t["item_scale"].numpy(), exclude=run.seen)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    # and they agree with float32 code scoring up to its rounding
    scorer = code_scorer(t["user_codes"], t["user_scale"], t["item_codes"], t["item_scale"])
    u = torch.from_numpy(users)
    full = scorer(u)
    exclusion_mask_fill(full, u, torch.from_numpy(run.seen.indptr.astype(np.int64)),
                        torch.from_numpy(run.seen.indices.astype(np.int64)))
    np.testing.assert_allclose(scores, stable_topk(full, 20)[0].numpy(), rtol=1e-5)


def test_evaluate_with_engine_equals_training_metrics_exactly(quantized_run, capsys):
    """Training-time evaluation and `hqgnn evaluate` rank through the same path: identical metrics."""
    main(["evaluate", str(quantized_run), "--json", "--device", "cpu"])
    got = json.loads(capsys.readouterr().out)
    want = json.loads((quantized_run / "metrics.json").read_text())["test"]
    assert got == want


def test_export_faiss(quantized_run, tmp_path):
    faiss = pytest.importorskip("faiss")
    main(["export", str(quantized_run), "--out", str(tmp_path / "e.npz"), "--faiss", str(tmp_path / "idx")])
    run = load_run(quantized_run)
    flat = faiss.read_index(str(tmp_path / "idx.continuous_ip.faiss"))
    assert flat.ntotal == run.n_items
    assert not (tmp_path / "idx.flat_ip.faiss").exists()
    if run.bits == 1:
        binary = faiss.read_index_binary(str(tmp_path / "idx.binary_flat.faiss"))
        assert binary.ntotal == run.n_items and binary.d == 16
        # FAISS pure-Hamming neighbours of user 0 have the same distances as our index of the codes without scales
        codes = run.tables["user_codes"].numpy()[:1]
        from hqgnn.faiss_export import faiss_binary_bytes
        from hqgnn.index import build_index

        dist, _ = binary.search(faiss_binary_bytes(codes), 10)
        ours, _ = build_index(run.tables["item_codes"].numpy(), run.format.replace(scale="none")).search(codes, 10)
        np.testing.assert_array_equal((16 - np.asarray(ours)) / 2, dist)
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert z["item_codes"].dtype == np.int8
        np.testing.assert_allclose(z["item_codes"] * z["item_scale"].reshape(-1, 1),
                                   run.tables["item_codes"].numpy() * run.tables["item_scale"].numpy().reshape(-1, 1))


def test_exported_dequantized_faiss_index_reproduces_recommend(quantized_run, tmp_path):
    """The exported ``dequantized_ip`` index's top-K is ``recommend``'s (seen items kept), ties aside."""
    faiss = pytest.importorskip("faiss")
    from hqgnn.faiss_export import dequantize, export_faiss

    run = load_run(quantized_run)
    paths = dict(export_faiss(run, tmp_path / "idx"))
    index = faiss.read_index(str(tmp_path / "idx.dequantized_ip.faiss"))
    assert str(tmp_path / "idx.dequantized_ip.faiss") in paths and index.ntotal == run.n_items
    t = run.tables
    k = 10
    queries = dequantize(t["user_codes"], t["user_scale"])
    f_scores, f_ids = index.search(queries, k)
    r_scores, r_ids = Recommender(run).recommend(np.arange(run.n_users), k, exclude_seen=False)
    # same score at every rank (float32 rounding of the two summation orders)
    np.testing.assert_allclose(f_scores, r_scores, rtol=1e-4, atol=1e-5)
    # the same items, except where the k-th score ties with an item outside the top-k
    exact = dequantize(t["user_codes"], t["user_scale"]).astype(np.float64) @ \
        dequantize(t["item_codes"], t["item_scale"]).astype(np.float64).T
    kth = np.sort(exact, axis=1)[:, -k]
    above = np.sort(exact, axis=1)[:, -k - 1]
    clear = (kth - above) > 1e-4 * np.abs(kth).clip(1e-6)
    assert clear.mean() > 0.5  # the check below must cover most users to mean anything
    for u in np.flatnonzero(clear):
        assert set(f_ids[u].tolist()) == set(r_ids[u].tolist()), u
    # the continuous index ranks the float embeddings instead: for a quantized run it differs somewhere
    cont = faiss.read_index(str(tmp_path / "idx.continuous_ip.faiss"))
    _, c_ids = cont.search(np.ascontiguousarray(t["user_emb"].numpy(), dtype=np.float32), k)
    assert (c_ids != r_ids).any()


def test_with_item_order_moves_every_item_row_and_inverts(quantized_run):
    run = load_run(quantized_run)
    n = run.n_items
    order = np.random.default_rng(0).permutation(n)
    moved = run.with_item_order(order)
    np.testing.assert_array_equal(moved.item_ids, run.item_ids[order])
    for key, table in run.tables.items():
        if key.startswith("item_") and table.ndim and table.shape[0] == n:
            assert torch.equal(moved.tables[key], table[torch.from_numpy(order)])
        else:
            assert torch.equal(moved.tables[key], table)
    inverse = np.argsort(order)
    back = moved.with_item_order(inverse)
    np.testing.assert_array_equal(back.item_ids, run.item_ids)
    assert (back.seen != run.seen).nnz == 0
    assert all(torch.equal(back.tables[k], run.tables[k]) for k in run.tables)
    for bad in (order[:-1], np.zeros(n, np.int64)):
        with pytest.raises(ValueError, match="permutation"):
            run.with_item_order(bad)


def test_dense_paths_search_large_batches_in_row_slices(tmp_path, monkeypatch):
    """The ranker's dense paths (the item scorer of a float-query run here; a float run on a GPU alike)
    materialise at most SCORE_ELEMENTS scores: a batch past it is searched in row slices, exclusions sliced
    with it, and the answer is the one-call answer."""
    import scipy.sparse as sp

    import hqgnn.eval.ranking as ranking

    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 200, 120
    cfg.model.dim, cfg.train.epochs, cfg.train.device = 16, 1, "cpu"
    cfg.quant.bits, cfg.quant.estimator, cfg.quant.user_bits = 1, "ste", 0
    run_training(cfg, tmp_path / "run", progress=False)
    rec = Recommender(load_run(tmp_path / "run"))
    assert rec.ranker.scorers is not None
    rows = np.arange(rec.run.n_items)
    rng = np.random.default_rng(3)
    ex = sp.random(len(rows), rec.run.n_items, density=0.05, format="csr", random_state=rng)
    whole = rec.ranker.search(rows, 7, exclude=ex, side="item")
    calls = []
    real = rec.ranker._scored_search
    monkeypatch.setattr(rec.ranker, "_scored_search", lambda r, *a: calls.append(len(r)) or real(r, *a))
    monkeypatch.setattr(ranking, "SCORE_ELEMENTS", 3 * rec.run.n_items)  # 3 rows a slice
    sliced = rec.ranker.search(rows, 7, exclude=ex, side="item")
    assert max(calls) == 3 and sum(calls) == len(rows)
    np.testing.assert_array_equal(sliced[1], whole[1])
    np.testing.assert_array_equal(sliced[0], whole[0])
