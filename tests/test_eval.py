"""Ranking metrics on hand-computed cases; the batched evaluator against a slow NumPy reference."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hqgnn.eval import RankingEvaluator, embedding_scorer, hit_rate_at_k, ndcg_at_k, precision_at_k, recall_at_k


def test_metrics_hand_computed():
    # one user, held-out items {1, 3}; ranking [3, 0, 1, 4, 2] -> hits at ranks 0 and 2
    hits = torch.tensor([[True, False, True, False, False]])
    n_rel = torch.tensor([2])
    assert recall_at_k(hits, n_rel, 1).item() == pytest.approx(0.5)
    assert recall_at_k(hits, n_rel, 2).item() == pytest.approx(0.5)
    assert recall_at_k(hits, n_rel, 5).item() == pytest.approx(1.0)
    assert precision_at_k(hits, n_rel, 5).item() == pytest.approx(0.4)
    assert hit_rate_at_k(hits, n_rel, 1).item() == 1.0
    ideal2 = 1 + 1 / math.log2(3)
    assert ndcg_at_k(hits, n_rel, 2).item() == pytest.approx(1 / ideal2)
    assert ndcg_at_k(hits, n_rel, 5).item() == pytest.approx((1 + 1 / math.log2(4)) / ideal2)


def test_ndcg_ideal_uses_min_of_relevant_and_k():
    # 5 relevant items, K = 2, both top slots hit -> perfect NDCG
    hits = torch.tensor([[True, True, False]])
    assert ndcg_at_k(hits, torch.tensor([5]), 2).item() == pytest.approx(1.0)
    # 1 relevant item found at rank 1 (0-based): 1/log2(3)
    hits = torch.tensor([[False, True, False]])
    assert ndcg_at_k(hits, torch.tensor([1]), 3).item() == pytest.approx(1 / math.log2(3))


def reference_metrics(scores, truth, exclude, ks):
    """Slow and obvious: per user, mask, lexsort (score desc, index asc), count hits."""
    n_users, n_items = scores.shape
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "precision", "hit_rate") for k in ks}
    users = 0
    for u in range(n_users):
        rel = set(truth[u].indices.tolist())
        if not rel:
            continue
        users += 1
        s = scores[u].astype(np.float64).copy()
        s[exclude[u].indices] = -np.inf
        order = np.lexsort((np.arange(n_items), -s))
        for k in ks:
            top = [i for i in order[:k] if s[i] != -np.inf]
            hit = [i in rel for i in top]
            sums[f"recall@{k}"] += sum(hit) / len(rel)
            sums[f"precision@{k}"] += sum(hit) / k
            sums[f"hit_rate@{k}"] += float(any(hit))
            dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hit) if h)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
            sums[f"ndcg@{k}"] += dcg / idcg
    return {key: v / users for key, v in sums.items()}


def random_split(rng, n_users, n_items, density):
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    m.data[:] = 1
    coin = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    coin.data[:] = 1
    truth = (coin - coin.multiply(m)).tocsr()
    truth.eliminate_zeros()
    return truth, m.tocsr()


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_evaluator_matches_reference_with_ties(batch_size):
    rng = np.random.default_rng(0)
    n_users, n_items, d = 60, 45, 4
    truth, exclude = random_split(rng, n_users, n_items, 0.1)
    # small-integer embeddings: many exact score ties, so tie-breaking is exercised
    user_emb = torch.from_numpy(rng.integers(-1, 2, (n_users, d)).astype(np.float32))
    item_emb = torch.from_numpy(rng.integers(-1, 2, (n_items, d)).astype(np.float32))
    scores = (user_emb @ item_emb.T).numpy()
    ks = [1, 5, 20, 45]
    ev = RankingEvaluator(truth, exclude, ks, "cpu", batch_size=batch_size)
    got = ev.evaluate(embedding_scorer(user_emb, item_emb))
    want = reference_metrics(scores, truth, exclude, ks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_evaluator_random_float_scores():
    rng = np.random.default_rng(1)
    truth, exclude = random_split(rng, 200, 120, 0.05)
    user_emb = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    item_emb = torch.randn(120, 8, generator=torch.Generator().manual_seed(1))
    ev = RankingEvaluator(truth, exclude, [20, 50], "cpu", batch_size=33)
    got = ev.evaluate(embedding_scorer(user_emb, item_emb))
    want = reference_metrics((user_emb @ item_emb.T).numpy(), truth, exclude, [20, 50])
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_evaluator_cuda_equals_cpu():
    rng = np.random.default_rng(2)
    truth, exclude = random_split(rng, 300, 200, 0.05)
    user_emb, item_emb = torch.randn(300, 16), torch.randn(200, 16)
    cpu = RankingEvaluator(truth, exclude, [20], "cpu").evaluate(embedding_scorer(user_emb, item_emb))
    gpu = RankingEvaluator(truth, exclude, [20], "cuda").evaluate(embedding_scorer(user_emb.cuda(), item_emb.cuda()))
    for key in cpu:
        assert gpu[key] == pytest.approx(cpu[key], abs=1e-6)


@pytest.mark.parametrize("dim", [8, 64, 67])
def test_fused_cpu_topk_scores_do_not_depend_on_the_batch(dim):
    """Every user's scores are bit-identical alone, in any batch size and at any position (no BLAS
    shape-dependent sums): random float embeddings, where summation order shows in the last bits."""
    from hqgnn.eval.cpu_topk import float_topk_cpu

    rng = np.random.default_rng(dim)
    n_users, n_items = 300, 2500
    ue = torch.from_numpy(rng.standard_normal((n_users, dim)).astype(np.float32))
    ie = torch.from_numpy(rng.standard_normal((n_items, dim)).astype(np.float32))
    none = torch.zeros(n_users + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    vals, ids = float_topk_cpu(ue, ie, torch.arange(n_users), *none, 20)
    for size in (1, 2, 3, 4, 5, 7, 129, 131):
        users = torch.from_numpy(rng.choice(n_users, size=size, replace=False))
        v, i = float_topk_cpu(ue, ie, users, *none, 20)
        assert torch.equal(i, ids[users])
        assert v.numpy().tobytes() == vals[users].numpy().tobytes(), size
    # and they are the float scores (to float32 rounding)
    ref = (ue.double() @ ie.double().T).topk(20, dim=1).values
    np.testing.assert_allclose(vals.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_items", [37, 3000])
def test_fused_cpu_topk_equals_reference_with_ties(n_items):
    from hqgnn.eval.cpu_topk import float_topk_cpu
    from hqgnn.eval.evaluator import exclusion_mask_fill
    from hqgnn.topk import stable_topk

    rng = np.random.default_rng(3)
    n_users = 150
    # integer-valued embeddings: exact float sums and many tied scores
    user_emb = torch.from_numpy(rng.integers(-2, 3, (n_users, 8)).astype(np.float32))
    item_emb = torch.from_numpy(rng.integers(-2, 3, (n_items, 8)).astype(np.float32))
    seen = sp.random(n_users, n_items, density=0.3, format="csr", random_state=4)
    seen.sort_indices()
    indptr = torch.from_numpy(seen.indptr.astype(np.int64))
    indices = torch.from_numpy(seen.indices.astype(np.int64))
    users = torch.from_numpy(rng.permutation(n_users)[:100])
    vals, ids = float_topk_cpu(user_emb, item_emb, users, indptr, indices, 50)
    scores = user_emb[users] @ item_emb.T
    exclusion_mask_fill(scores, users, indptr, indices)
    want_vals, want_ids = stable_topk(scores, 50)
    want_ids = torch.where(torch.isinf(want_vals), -1, want_ids)
    assert torch.equal(ids, want_ids)
    assert torch.equal(vals, want_vals)


def test_evaluate_embeddings_cpu_equals_scorer_path():
    rng = np.random.default_rng(5)
    truth, exclude = random_split(rng, 120, 90, 0.08)
    user_emb, item_emb = torch.randn(120, 16), torch.randn(90, 16)
    ev = RankingEvaluator(truth, exclude, [5, 20], "cpu", batch_size=17)
    fused = ev.evaluate_embeddings(user_emb, item_emb)
    plain = ev.evaluate(embedding_scorer(user_emb, item_emb))
    for key in plain:
        assert fused[key] == pytest.approx(plain[key], abs=1e-12), key


def unsorted_csr(m: sp.csr_matrix, seed: int = 0) -> sp.csr_matrix:
    """The same matrix with every row's column indices shuffled (a valid, unsorted CSR)."""
    rng = np.random.default_rng(seed)
    indices = m.indices.copy()
    for u in range(m.shape[0]):
        a, b = m.indptr[u], m.indptr[u + 1]
        indices[a:b] = rng.permutation(indices[a:b])[::-1]
    out = sp.csr_matrix((m.data, indices, m.indptr), shape=m.shape)
    out.has_sorted_indices = True  # a stale flag, as a hand-built matrix may carry
    return out


def test_unsorted_exclusion_rows_never_return_seen_items():
    """Regression: the fused CPU kernel scans sorted rows; with > 1,024 items (several item blocks) an
    unsorted exclusion CSR leaked seen items into the top-K. The evaluator sorts the rows."""
    rng = np.random.default_rng(3)
    n_users, n_items, d = 40, 3000, 8
    user_emb = torch.from_numpy(rng.standard_normal((n_users, d)).astype(np.float32))
    item_emb = torch.from_numpy(rng.standard_normal((n_items, d)).astype(np.float32))
    scores = (user_emb @ item_emb.T).numpy()
    # exclude each user's 60 best items, spread over every item block
    seen = np.argsort(-scores, axis=1, kind="stable")[:, :60]
    exclude = sp.csr_matrix((np.ones(seen.size), (np.repeat(np.arange(n_users), 60), seen.ravel())),
                            shape=(n_users, n_items))
    truth = sp.csr_matrix((np.ones(n_users), (np.arange(n_users), seen[:, 0])), shape=(n_users, n_items))
    bad = unsorted_csr(exclude)
    assert any(np.any(np.diff(bad.indices[bad.indptr[u]:bad.indptr[u + 1]]) < 0) for u in range(n_users))
    ev = RankingEvaluator(truth, bad, ks=[20], device="cpu")
    # the truth items are all excluded: every metric must be exactly 0
    assert all(v == 0.0 for v in ev.evaluate_embeddings(user_emb, item_emb).values())
    from hqgnn.eval.ranking import Ranker

    ranker = Ranker({"user_emb": user_emb, "item_emb": item_emb})
    _, ids = ranker.search(np.arange(n_users), 50, exclude=bad)
    for u in range(n_users):
        assert not set(ids[u].tolist()) & set(seen[u].tolist())
    want = reference_metrics(scores, truth, exclude, [20])
    assert ev.evaluate_embeddings(user_emb, item_emb) == pytest.approx(want, abs=0)


def test_fused_cpu_topk_sorts_unsorted_exclusion_rows():
    from hqgnn.eval.cpu_topk import float_topk_cpu

    rng = np.random.default_rng(4)
    ue = torch.from_numpy(rng.standard_normal((30, 8)).astype(np.float32))
    ie = torch.from_numpy(rng.standard_normal((2500, 8)).astype(np.float32))
    seen = np.argsort(-(ue @ ie.T).numpy(), axis=1, kind="stable")[:, :40]
    ex = unsorted_csr(sp.csr_matrix((np.ones(seen.size), (np.repeat(np.arange(30), 40), seen.ravel())),
                                    shape=(30, 2500)))
    _, ids = float_topk_cpu(ue, ie, torch.arange(30), torch.from_numpy(ex.indptr.astype(np.int64)),
                            torch.from_numpy(ex.indices.astype(np.int64)), 20)
    for u in range(30):
        assert not set(ids[u].tolist()) & set(seen[u].tolist())


def _panel_block(items: np.ndarray) -> np.ndarray:
    """(n, dim) items, n a multiple of 16 -> the kernel's (n / 16, dim, 16) panel layout."""
    n, dim = items.shape
    return np.ascontiguousarray(items.reshape(n // 16, 16, dim).transpose(0, 2, 1))


@pytest.mark.parametrize("dim", [8, 64, 67, 130])
def test_fused_cpu_block_scores_ir_equals_portable(dim):
    """The AVX2 IR tiles (4 x 16, 1 x 64, 1 x 16) and the portable numba loop give the same bits for
    every score: the same float32 recurrence, whatever the user count (groups of 4 + leftovers) and
    the panel count (groups of 4 + leftovers)."""
    from hqgnn.eval import cpu_topk as ct
    from hqgnn.eval import float_scores as fs

    if not ct.USE_IR:
        pytest.skip("no AVX2 + FMA: only the portable kernel runs here")
    rng = np.random.default_rng(dim)
    for n_items in (1024, 16 * 7):
        block = _panel_block(rng.standard_normal((n_items, dim)).astype(np.float32))
        for nb in list(range(1, 10)) + [129]:
            ublk = rng.standard_normal((nb, dim)).astype(np.float32)
            ir_s = np.full((nb, n_items), np.nan, dtype=np.float32)
            port = np.full((nb, n_items), np.nan, dtype=np.float32)
            fs._block_scores(ublk, block, ir_s, True)
            fs._block_scores(ublk, block, port, False)
            assert ir_s.tobytes() == port.tobytes(), (n_items, nb)


@pytest.mark.parametrize("dim", [8, 64, 67, 130])
def test_fused_cpu_block_scores_match_float64_reference(dim):
    """Scores are the float32 sum in d order: within the recursive-summation bound of the exact
    (float64) inner product, |s - x . y| <= gamma_D * sum_d |x_d y_d| (gamma_D ~ D 2^-24)."""
    from hqgnn.eval import cpu_topk as ct
    from hqgnn.eval import float_scores as fs

    rng = np.random.default_rng(100 + dim)
    items = rng.standard_normal((1024, dim)).astype(np.float32)
    ublk = rng.standard_normal((129, dim)).astype(np.float32)
    ref = ublk.astype(np.float64) @ items.astype(np.float64).T
    bound = 1.01 * dim * 2.0**-24 * (np.abs(ublk.astype(np.float64)) @ np.abs(items.astype(np.float64)).T)
    for use_ir in {False, ct.USE_IR}:
        scores = np.empty((129, 1024), dtype=np.float32)
        fs._block_scores(ublk, _panel_block(items), scores, use_ir)
        assert np.all(np.abs(scores - ref) <= bound), use_ir


def test_fused_cpu_scores_are_the_documented_recurrence():
    """s = madd(u_1, v_1, madd(u_0, v_0, 0)): with u_0 v_0 = -1 and u_1 = v_1 = 1 + 2^-12, a fused
    multiply-add keeps the 2^-24 of u_1 v_1 = 1 + 2^-11 + 2^-24 (exact); a rounded multiply (a tie,
    to even) loses it, and so does the other summation order. Every path gives the same value."""
    from hqgnn.eval import cpu_topk as ct
    from hqgnn.eval import float_scores as fs

    want = np.float32(2.0**-11 + 2.0**-24) if fs._FMA else np.float32(2.0**-11)
    x = np.float32(1 + 2.0**-12)
    ublk = np.tile(np.array([[-1.0, x]], dtype=np.float32), (5, 1))  # 4-user tile + a leftover user
    items = np.zeros((16 * 5, 2), dtype=np.float32)
    items[:, 0], items[:, 1] = 1.0, x
    for use_ir in {False, ct.USE_IR}:
        scores = np.empty((5, 16 * 5), dtype=np.float32)
        fs._block_scores(ublk, _panel_block(items), scores, use_ir)
        assert np.all(scores == want), use_ir
    vals, _ = ct.float_topk_cpu(torch.from_numpy(ublk), torch.from_numpy(items[:3]), torch.arange(5),
                                torch.zeros(6, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 3)
    assert np.all(vals.numpy() == want)


def test_fused_cpu_topk_ir_equals_portable_end_to_end(monkeypatch):
    """float_topk_cpu gives the same bits and ids through the IR kernels and the portable fallback."""
    from hqgnn.eval import cpu_topk as ct

    rng = np.random.default_rng(7)
    ue = torch.from_numpy(rng.standard_normal((261, 67)).astype(np.float32))
    ie = torch.from_numpy(rng.standard_normal((2100, 67)).astype(np.float32))
    seen = sp.random(261, 2100, density=0.05, format="csr", random_state=8)
    seen.sort_indices()
    ex = torch.from_numpy(seen.indptr.astype(np.int64)), torch.from_numpy(seen.indices.astype(np.int64))
    users = torch.from_numpy(rng.permutation(261)[:203])
    v1, i1 = ct.float_topk_cpu(ue, ie, users, *ex, 30)
    monkeypatch.setattr(ct, "USE_IR", False)
    v2, i2 = ct.float_topk_cpu(ue, ie, users, *ex, 30)
    assert torch.equal(i1, i2)
    assert v1.numpy().tobytes() == v2.numpy().tobytes()
