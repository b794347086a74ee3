"""Code formats beyond symmetric b-bit codes: float / b-bit queries, centering, ITQ rotation, float16
scales, distillation — trained, evaluated and served on exactly the same scores."""

import json

import numpy as np
import pytest
import torch

from hqgnn.cli import main
from hqgnn.config import RunConfig
from hqgnn.data import load_dataset
from hqgnn.eval import RankingEvaluator, served_scorer
from hqgnn.models import HQGNNModel as QuantizedRecommender
from hqgnn.quant.rotation import itq_rotation, sign_error
from hqgnn.recommender import Recommender
from hqgnn.run import load_run
from hqgnn.train.pipeline import run_training
from hqgnn.train.trainer import Trainer


def _cfg(**quant) -> RunConfig:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim = 16
    cfg.train.epochs, cfg.train.device, cfg.train.eval_every = 2, "cpu", 1
    for key, value in quant.items():
        setattr(cfg.quant, key, value)
    return cfg


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = _cfg()
    cfg.train.epochs = 4
    run_training(cfg, out, progress=False)
    return out


FORMATS = {
    "float_queries": dict(bits=1, estimator="ste", user_bits=0),
    "float_queries_centered_itq_fp16": dict(bits=1, estimator="ste", user_bits=0, center=True, rotation="itq",
                                            scale_dtype="float16"),
    "q4_queries_centered": dict(bits=1, estimator="ste", user_bits=4, center=True),
    "b4_float_queries_score_kd": dict(bits=4, estimator="gste", user_bits=0, distill="score"),
    "b1_rank_kd": dict(bits=1, estimator="ste", user_bits=0, distill="rank", distill_topk=5),
    "b1_layerwise_centered_itq": dict(bits=1, estimator="ste", user_bits=0, layerwise=True, center=True,
                                      rotation="itq", scale_dtype="float16"),
}


@pytest.fixture(scope="module", params=sorted(FORMATS))
def fmt_run(request, teacher, tmp_path_factory):
    cfg = _cfg(**FORMATS[request.param])
    cfg.train.init_from = str(teacher)
    out = tmp_path_factory.mktemp(request.param) / "run"
    run_training(cfg, out, progress=False)
    return request.param, out


def test_memory_counts_what_is_stored(fmt_run):
    name, out = fmt_run
    q = FORMATS[name]
    m = json.loads((out / "metrics.json").read_text())["memory"]
    d, bits = 16 * (4 if q.get("layerwise") else 1), q["bits"]  # layer-wise: 3 layers + E0 concatenated
    scale = 2 if q.get("scale_dtype") == "float16" else 4
    term = scale if q.get("center") and q["user_bits"] else 0
    assert m["bytes_per_item"] == bits * d / 8 + scale + term
    assert m["bytes_per_user"] == (4 * d if q["user_bits"] == 0 else q["user_bits"] * d / 8 + scale)
    tables = load_run(out).tables
    assert ("user_query" in tables) == (q["user_bits"] == 0)
    assert ("item_term" in tables) == bool(q.get("center") and q["user_bits"])
    if q.get("scale_dtype") == "float16":  # scored with exactly the stored (half-precision) scales
        s = tables["item_scale"]
        assert torch.equal(s, s.half().float())


def test_served_metrics_equal_training_metrics_exactly(fmt_run, capsys):
    _, out = fmt_run
    main(["evaluate", str(out), "--json", "--device", "cpu"])
    got = json.loads(capsys.readouterr().out)
    want = json.loads((out / "metrics.json").read_text())["test"]
    for key in ("recall@20", "ndcg@20", "recall@50", "ndcg@50"):
        assert got[key] == want[key]


def test_recommend_equals_brute_force_of_the_format(fmt_run):
    name, out = fmt_run
    run = load_run(out)
    t = {k: v.double() for k, v in run.tables.items()}
    users = np.arange(run.n_users)
    if "user_query" in t:
        want = (t["user_query"] @ t["item_codes"].T) * t["item_scale"]
    else:
        want = (t["user_codes"] @ t["item_codes"].T) * t["user_scale"][:, None] * t["item_scale"]
    if "item_term" in t:
        want = want + t["item_term"]
    want = want.numpy()
    want[run.seen.toarray() > 0] = -np.inf
    scores, ids = Recommender(run).recommend(users, 10)
    got = np.take_along_axis(want, ids, 1)
    kth = np.sort(want, 1)[:, -10]
    # every returned item scores at least the true 10th best (float32 vs float64 rounding aside)
    assert np.all(got >= kth[:, None] - 1e-4 * np.abs(kth[:, None]).clip(1))
    np.testing.assert_allclose(scores, got, rtol=1e-4, atol=1e-5)


def test_renumbered_serving_equals_the_run_numbering(fmt_run):
    """Recommender(renumber_items=True): same raw ids and scores, the index in its storage order
    without an order array (the run's id table absorbs the permutation)."""
    from hqgnn.index import build_index
    from hqgnn.index.asym_layout import scale_order_of

    name, out = fmt_run
    run = load_run(out)
    plain, renum = Recommender(run), Recommender(run, renumber_items=True)
    users = np.arange(run.n_users)
    s0, i0 = plain.recommend(users, 10)
    s1, i1 = renum.recommend(users, 10)
    np.testing.assert_array_equal(s0, s1)  # exact keys: the same scores in the same order
    raw0, raw1 = run.item_ids[i0], renum.run.item_ids[i1]
    untied = np.ones_like(s0, bool)  # items whose score no neighbour shares rank the same in any numbering
    untied[:, 1:] &= s0[:, 1:] != s0[:, :-1]
    untied[:, :-1] &= s0[:, :-1] != s0[:, 1:]
    assert untied.mean() > 0.5
    np.testing.assert_array_equal(raw0[untied], raw1[untied])
    # the renumbered seen items are the same raw items
    for u in (0, run.n_users // 2):
        assert set(run.item_ids[run.seen[u].indices]) == set(renum.run.item_ids[renum.run.seen[u].indices])
    t = renum.run.tables
    if "item_term" in t or t["item_scale"].numel() > 1:
        n = renum.run.n_items
        term = t.get("item_term")
        order = scale_order_of(t["item_scale"].float().numpy(), None if term is None else term.float().numpy(), n)
        assert order is not None and np.array_equal(order, np.arange(n))  # already in storage order
        assert renum.ranker.index.format.item_order == "none"
        assert plain.ranker.index.format.item_order == "scale"  # evaluation's Ranker keeps the order array instead
        ot = run.tables
        bare = build_index(ot["item_codes"].numpy(), run.format, scale=ot["item_scale"].float().numpy(),
                           term=None if term is None else ot["item_term"].float().numpy())  # run's numbering, no order
        assert renum.ranker.index.memory_bytes() == bare.memory_bytes()


def test_export_renumbered_items_move_with_their_ids(fmt_run, tmp_path):
    name, out = fmt_run
    run = load_run(out)
    main(["export", str(out), "--out", str(tmp_path / "plain.npz")])
    main(["export", str(out), "--out", str(tmp_path / "renum.npz"), "--renumber-items"])
    a, b = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "renum.npz")
    pos = {v: i for i, v in enumerate(a["item_ids"].tolist())}
    src = np.array([pos[v] for v in b["item_ids"].tolist()])
    assert sorted(src.tolist()) == list(range(run.n_items))
    for key in set(a.files) - {"item_ids"}:
        if key.startswith("item_") and a[key].ndim and a[key].shape[0] == run.n_items:
            np.testing.assert_array_equal(b[key], a[key][src])
        else:
            np.testing.assert_array_equal(b[key], a[key])


def test_served_score_is_model_score_up_to_a_per_user_constant(teacher):
    cfg = _cfg(bits=2, estimator="ste", user_bits=4, center=True)
    cfg.train.init_from = str(teacher)
    tr = Trainer(cfg, load_dataset(cfg.data), progress=False)
    m = tr.model.eval()
    with torch.no_grad():
        users, items = m.final(tr.adj)
        qu, qi = m.quantize_rows(users, items, torch.arange(m.n_users), torch.arange(m.n_items))
        model_scores = (qu @ qi.T).double()
        served = served_scorer({k: v for k, v in m.codes(tr.adj).items()})(torch.arange(m.n_users)).double()
    diff = model_scores - served
    # same ranking: the difference does not depend on the item (only float rounding of the term remains)
    assert (diff - diff[:, :1]).abs().max() < 1e-4 * model_scores.abs().max()


def test_itq_is_orthogonal_and_reduces_sign_error():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=gen) @ torch.randn(16, 16, generator=gen)  # correlated dims
    r = itq_rotation(x, iterations=30)
    assert torch.allclose(r @ r.T, torch.eye(16), atol=1e-5)
    assert sign_error(x, r) < sign_error(x) - 0.02


def test_itq_fold_keeps_float_scores(teacher):
    cfg = _cfg(bits=1, estimator="ste", user_bits=0, rotation="itq")
    cfg.train.init_from = str(teacher)
    rotated = Trainer(cfg, load_dataset(cfg.data), progress=False)
    plain_cfg = _cfg(bits=1, estimator="ste", user_bits=0)
    plain_cfg.train.init_from = str(teacher)
    plain = Trainer(plain_cfg, load_dataset(plain_cfg.data), progress=False)
    with torch.no_grad():
        ua, ia = rotated.model.final(rotated.adj)
        ub, ib = plain.model.final(plain.adj)
    assert not torch.allclose(ia, ib, atol=1e-3)  # the coordinates did change
    torch.testing.assert_close(ua @ ia.T, ub @ ib.T, atol=1e-4, rtol=1e-4)


def test_pca_warm_start_projects_a_wider_teacher(teacher, tmp_path):
    """train.init_projection=pca: a d = 8 student from the d = 16 teacher starts at the teacher's final
    embeddings times P (propagation is linear), P orthonormal and of the teacher's top directions; the
    same student distils from the wide teacher; without the option the width mismatch is refused."""
    from hqgnn.errors import HqgnnError
    from hqgnn.quant.rotation import pca_projection
    from safetensors.torch import load_file

    cfg = _cfg(bits=1, estimator="ste", user_bits=0, distill="score")
    cfg.model.dim = 8
    cfg.train.init_from = str(teacher)
    with pytest.raises(HqgnnError, match="init_projection=pca"):
        Trainer(cfg, load_dataset(cfg.data), progress=False)
    cfg.train.init_projection = "pca"
    tr = Trainer(cfg, load_dataset(cfg.data), progress=False)
    wide = load_file(str(teacher / "tables.safetensors"))
    p = pca_projection(wide["user_emb"], wide["item_emb"], 8)
    assert p.shape == (16, 8)
    torch.testing.assert_close(p.T @ p, torch.eye(8), atol=1e-5, rtol=0)
    with torch.no_grad():
        users, items = tr.model.final(tr.adj)
    torch.testing.assert_close(users, wide["user_emb"] @ p, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(items, wide["item_emb"] @ p, atol=1e-4, rtol=1e-4)
    # the top directions hold more of the teacher's scores than any other 8 of its coordinates
    s = wide["user_emb"] @ wide["item_emb"].T
    err_pca = (s - (wide["user_emb"] @ p) @ (wide["item_emb"] @ p).T).norm()
    err_first = (s - wide["user_emb"][:, :8] @ wide["item_emb"][:, :8].T).norm()
    assert err_pca < err_first
    assert tr.model.teacher_user.shape[1] == 16  # distillation from the wide teacher's scores
    assert tr.init_info["projection"] == "pca 16 -> 8"
    run_training(cfg, tmp_path / "run", progress=False)  # end to end: trains, writes, and says what it loaded
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["init_from"]["projection"] == "pca 16 -> 8"
    assert load_run(tmp_path / "run").tables["item_codes"].shape[1] == 8


def test_rank_distillation_targets_exclude_train_items(teacher):
    cfg = _cfg(bits=1, estimator="ste", user_bits=0, distill="rank", distill_topk=7)
    cfg.train.init_from = str(teacher)
    data = load_dataset(cfg.data)
    tr = Trainer(cfg, data, progress=False)
    top = tr.model.teacher_top.numpy()
    assert top.shape == (data.n_users, 7)
    train = data.matrix(data.train).toarray() > 0
    assert not np.take_along_axis(train, top, 1).any()


def test_distillation_needs_a_teacher():
    from hqgnn.errors import HqgnnError

    with pytest.raises(HqgnnError, match="teacher"):
        Trainer(_cfg(bits=1, estimator="ste", distill="score"), load_dataset(_cfg().data), progress=False)


def test_float_query_gste_estimates_delta_on_items_only(teacher):
    cfg = _cfg(bits=1, estimator="gste", user_bits=0)
    cfg.train.init_from = str(teacher)
    tr = Trainer(cfg, load_dataset(cfg.data), progress=False)
    est = tr.estimate_delta()
    assert est["delta"] > 0
    assert float(tr.model.item_quantizer.delta) == pytest.approx(est["delta"])
    assert not hasattr(tr.model, "user_quantizer")


def test_model_without_user_quantizer_serves_float_queries():
    from hqgnn.config import ModelConfig, QuantConfig

    m = QuantizedRecommender(5, 7, ModelConfig(dim=8, layers=0), QuantConfig(bits=1, estimator="ste", user_bits=0))
    codes = m.codes(None)
    assert set(codes) == {"item_codes", "item_scale", "user_query"}
    assert m.memory_report()["bytes_per_user"] == 32


def test_evaluator_on_served_scorer_matches_reference(fmt_run):
    _, out = fmt_run
    run = load_run(out)
    cfg = run.config
    data = load_dataset(cfg.data)
    ev = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), [20], "cpu")
    got = ev.evaluate(scorer=served_scorer(run.tables))
    assert got["recall@20"] == json.loads((out / "metrics.json").read_text())["test"]["recall@20"]


def test_served_memory_next_to_packed_size(fmt_run, teacher, tmp_path):
    name, out = fmt_run
    q = FORMATS[name]
    served = json.loads((out / "metrics.json").read_text())["memory"]["served_bytes_per_item"]
    term = 4 if q.get("center") and q["user_bits"] else 0
    d = 16 * (4 if q.get("layerwise") else 1)
    # CUDA: the asymmetric index's device copy; 1-bit codes as int32 words (32 dims each), else int8 codes
    # (d padded to 32), scales as float16 when exact (the float16 formats), terms as stored (float32 here)
    dev_codes = -(-d // 32) * 4 if q["bits"] == 1 else -(-d // 32) * 32
    dev_scale = 2 if q.get("scale_dtype") == "float16" else 4
    assert served["gpu_index"] == pytest.approx(dev_codes + dev_scale + (term and dev_scale), abs=0.05)
    # CPU: the asymmetric index holds no more than is stored: packed codes (1 bit: d / 8 bytes in
    # blocks of 32 items) + the scale (+ term) as stored (float16 where exact, else float32; a
    # constant once) + 4 B per per-chunk bound per 256 items; no storage order by default
    n = load_run(out).n_items
    scale = 2 if q.get("scale_dtype") == "float16" else 4
    stored = scale + (scale if term else 0)
    bounds = 12 * -(-n // 256) / n
    codes = -(-n // 32) * 32 * d / 8 / n if q["bits"] == 1 else q["bits"] * d / 8
    if q["bits"] == 1:
        assert codes <= served["cpu_index"] <= codes + stored + bounds + 1e-9
    else:
        assert served["cpu_index"] >= codes
    assert json.loads((teacher / "metrics.json").read_text())["memory"]["served_bytes_per_item"] == {"float32": 64}


def test_served_memory_of_symmetric_codes(teacher, tmp_path):
    cfg = _cfg(bits=1, estimator="ste")
    cfg.train.epochs = 1
    run_training(cfg, tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())["memory"]
    assert m["bytes_per_item"] == 16 / 8 + 4  # the bit-packed size
    # the one index: 16 sign bits + a float32 scale stored; the CPU copy pads items to 32-item blocks and
    # holds per-chunk scale bounds; symmetric codes are served on the GPU from one int8 per dimension
    # (CodeFormat.from_config: layout "int8", the faster copy), 16 dims padded to the 32-dim tile, + the scale
    served = m["served_bytes_per_item"]
    assert served["format_bytes"] == 2 + 4
    assert 2 + 4 <= served["cpu_index"] <= 2 + 4 + 1
    assert served["gpu_index"] == pytest.approx(32 + 4, abs=0.05)  # + the constant term, held once


@pytest.mark.parametrize("field, value", [("user_bits", 9), ("user_bits", -2), ("rotation", "pca"),
                                          ("scale_dtype", "bfloat16"), ("distill", "kl"), ("distill_topk", 0),
                                          ("distill_temperature", 0.0)])
def test_format_fields_are_validated(field, value):
    from hqgnn.errors import HqgnnError

    cfg = _cfg(bits=1, estimator="ste", **{field: value})
    with pytest.raises(HqgnnError, match=f"quant.{field}"):
        cfg.validate()


def test_faiss_export_reproduces_the_served_ranking(fmt_run, tmp_path):
    faiss = pytest.importorskip("faiss")
    _, out = fmt_run
    main(["export", str(out), "--out", str(tmp_path / "e.npz"), "--faiss", str(tmp_path / "idx")])
    run = load_run(out)
    t = run.tables
    index = faiss.read_index(str(tmp_path / "idx.dequantized_ip.faiss"))
    if "user_query" in t:
        q = t["user_query"].numpy()
    else:
        q = (t["user_codes"].float() * t["user_scale"].float().reshape(-1, 1)).numpy()
    if "item_term" in t:
        q = np.hstack([q, np.ones((len(q), 1), np.float32)])
    scores, _ = index.search(np.ascontiguousarray(q, dtype=np.float32), 10)
    served, _ = Recommender(run).recommend(np.arange(run.n_users), 10, exclude_seen=False)
    np.testing.assert_allclose(scores, served, rtol=1e-4, atol=1e-5)  # the same top-10 scores (ties aside)
    assert not (tmp_path / "idx.binary_flat.faiss").exists() or "user_query" not in t


def test_layerwise_codes_score_every_layer(teacher):
    cfg = _cfg(bits=1, estimator="ste", user_bits=0, layerwise=True, center=True)
    cfg.train.init_from = str(teacher)
    tr = Trainer(cfg, load_dataset(cfg.data), progress=False)
    m = tr.model.eval()
    with torch.no_grad():
        users, items = m.final(tr.adj)
        layers = m.encoder.layer_outputs(tr.adj)
        assert users.shape[1] == items.shape[1] == 4 * 16 == m.code_dim
        # the concatenation's inner product is the sum of the per-layer inner products
        n_u = m.n_users
        want = sum(e[:n_u] @ e[n_u:].T for e in layers)
        torch.testing.assert_close(users @ items.T, want, atol=1e-5, rtol=1e-5)
        qu, qi = m.quantize_rows(users, items, torch.arange(m.n_users), torch.arange(m.n_items))
        codes = m.codes(tr.adj)
        # every layer block of an item is t_l * s_i * sign(.): one scale per item, one weight per layer
        blocks = ((qi - items.mean(0, keepdim=True)) / codes["item_scale"].reshape(-1, 1)).reshape(m.n_items, 4, 16)
        assert torch.allclose(blocks.abs(), blocks.abs()[:1, :, :1].expand_as(blocks), rtol=1e-4)
        served = served_scorer(codes)(torch.arange(m.n_users)).double()
    diff = (qu @ qi.T).double() - served
    assert (diff - diff[:, :1]).abs().max() < 1e-4 * served.abs().max()  # same ranking as the model's score


def test_layerwise_needs_float_queries():
    from hqgnn.errors import HqgnnError

    with pytest.raises(HqgnnError, match="layerwise"):
        _cfg(bits=1, estimator="ste", user_bits=4, layerwise=True).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_ranking_equals_cpu_ranking(fmt_run):
    """The asymmetric index ranks every format on both devices: identical ids and scores."""
    from hqgnn.eval.ranking import Ranker

    name, out = fmt_run
    run = load_run(out)
    kw = dict(fmt=run.format)
    users = np.arange(run.n_users)
    seen = (run.seen.indptr, run.seen.indices)
    cpu = Ranker(run.tables, device="cpu", **kw).search(users, 20, exclude=seen)
    gpu = Ranker(run.tables, device="cuda", **kw).search(users, 20, exclude=seen)
    np.testing.assert_array_equal(cpu[1], gpu[1])
    np.testing.assert_array_equal(cpu[0], gpu[0])


def test_warm_start_is_epoch_zero_and_epochs_zero_is_post_hoc(teacher, tmp_path, monkeypatch):
    """A warm-started run evaluates its start (the teacher quantized by the run's quantizer) as epoch 0 and
    keeps it when training does not beat it on validation; train.epochs = 0 is post-hoc quantization."""
    from hqgnn.errors import HqgnnError
    from hqgnn.quant import EmbeddingQuantizer

    cfg = _cfg(bits=4, estimator="ste", user_bits=0)
    cfg.train.epochs = 0
    with pytest.raises(HqgnnError, match="train.epochs 0 .* needs train.init_from"):
        cfg.validate()
    cfg.train.init_from = str(teacher)
    run_training(cfg, tmp_path / "post", progress=False)
    m = json.loads((tmp_path / "post" / "metrics.json").read_text())
    assert (m["best_epoch"], m["epochs_run"]) == (0, 0) and m["val"] == m["warm_start_val"]
    post, wide = load_run(tmp_path / "post"), load_run(teacher)
    codes, _ = EmbeddingQuantizer(4, estimator="ste", scale="row").quantize(wide.tables["item_emb"])
    assert torch.equal(post.tables["item_codes"], codes.to(post.tables["item_codes"].dtype))
    # training that only hurts keeps the warm start: the served codes are the post-hoc ones
    def scramble(self, epoch):  # an "epoch" that shuffles the item rows: validation falls to chance
        with torch.no_grad():
            w = self.model.encoder.embedding.weight
            items = w[self.data.n_users :]
            items.copy_(items[torch.randperm(len(items), generator=torch.Generator().manual_seed(epoch))])
        return 0.5

    monkeypatch.setattr(Trainer, "train_epoch", scramble)
    cfg.train.epochs, cfg.train.eval_every = 2, 1
    run_training(cfg, tmp_path / "hurt", progress=False)
    m = json.loads((tmp_path / "hurt" / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and all(h["val_recall@20"] < m["warm_start_val"]["recall@20"] for h in m["history"])
    assert m["best_epoch"] == 0 and m["val"] == m["warm_start_val"]
    assert torch.equal(load_run(tmp_path / "hurt").tables["item_codes"], post.tables["item_codes"])
