"""LR schedules, N negatives, refit on train + validation, the paper protocol and the fp_quality rows."""

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import run_helpers
from hqgnn.config import RunConfig, TrainConfig, load_config
from hqgnn.data import load_dataset
from hqgnn.errors import HqgnnError
from hqgnn.eval import RankingEvaluator
from hqgnn.graph import normalized_adjacency
from hqgnn.models import HQGNNModel as QuantizedRecommender
from hqgnn.run import load_run
from hqgnn.train.checkpoint import load_checkpoint, save_checkpoint
from hqgnn.train.pipeline import run_training
from hqgnn.train.sampler import BPRSampler
from hqgnn.train.schedule import check_schedule, lr_factor, set_lr
from hqgnn.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def small_config(**train) -> RunConfig:
    return run_helpers.small_config(400, 300, 16, **{"epochs": 4, "eval_every": 2, "batch_size": 1024, **train})


def _popularity_recall(cfg: RunConfig) -> float:
    return run_helpers.popularity_metrics(cfg)["recall@20"]


# -- schedules ----------------------------------------------------------------------------------
def test_schedules_match_hand_computed_values():
    tc = TrainConfig(epochs=11, lr_schedule="cosine", warmup_epochs=2, lr_min_ratio=0.1)
    # epoch 0: half warmed up, progress 0; epoch 5: progress 0.5 -> halfway between 1 and 0.1
    assert lr_factor(tc, 0, 0.0) == pytest.approx(0.5)
    assert lr_factor(tc, 5, 0.0) == pytest.approx(0.55)
    assert lr_factor(tc, 10, 0.0) == pytest.approx(0.1)  # the last epoch reaches lr_min_ratio
    assert lr_factor(tc, 3, 0.0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    lin = TrainConfig(epochs=5, lr_schedule="linear")
    assert [lr_factor(lin, e, 0.0) for e in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    step = TrainConfig(epochs=100, lr_schedule="step", lr_step_epochs=3, lr_step_gamma=0.5)
    assert [lr_factor(step, e, 0.0) for e in range(7)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    assert lr_factor(TrainConfig(), 7, 0.0) == 1.0
    # a time budget is the horizon: progress = seconds spent / max_seconds, whatever the epoch
    timed = TrainConfig(epochs=10**6, max_seconds=100.0, lr_schedule="linear")
    assert lr_factor(timed, 3, 25.0) == pytest.approx(0.75)
    assert lr_factor(timed, 3, 250.0) == pytest.approx(0.0)


@pytest.mark.parametrize("field,value", [("lr_schedule", "exp"), ("warmup_epochs", -1.0), ("lr_min_ratio", 2.0),
                                         ("lr_step_epochs", 0)])
def test_bad_schedule_settings_are_rejected(field, value):
    tc = TrainConfig(lr_schedule="step", lr_step_epochs=2)
    setattr(tc, field, value)
    with pytest.raises(HqgnnError):
        check_schedule(tc)


def test_training_follows_the_schedule(tmp_path):
    cfg = small_config(epochs=5, lr_schedule="cosine", warmup_epochs=2, lr_min_ratio=0.0)
    data = load_dataset(cfg.data)
    seen: list[float] = []
    trainer: Trainer

    def record(epoch: int) -> None:
        seen.append(trainer.optimizer.param_groups[0]["lr"])

    trainer = Trainer(cfg, data, progress=False, on_epoch_end=record)
    result = trainer.fit(tmp_path / "run")
    expected = [cfg.train.lr * lr_factor(cfg.train, e, 0.0) for e in range(5)]
    assert seen == pytest.approx(expected)  # what Adam used during each epoch
    assert [h["lr"] for h in result.history] == pytest.approx(expected)
    assert seen[-1] == 0.0 and seen[0] == pytest.approx(cfg.train.lr / 2)


def test_lr_zero_leaves_the_weights_unchanged():
    # validation refuses train.lr = 0, so the lr is set on the optimizer the way the schedule sets it
    cfg = small_config(epochs=2)
    trainer = Trainer(cfg, load_dataset(cfg.data), progress=False)
    set_lr(trainer.optimizer, 0.0)
    before = trainer.model.encoder.embedding.weight.detach().clone()
    trainer.train_epoch(1)
    torch.testing.assert_close(trainer.model.encoder.embedding.weight.detach(), before, rtol=0, atol=0)
    set_lr(trainer.optimizer, 1e-2)  # and a non-zero lr does move them
    trainer.train_epoch(2)
    assert not torch.equal(trainer.model.encoder.embedding.weight.detach(), before)


def test_checkpoint_keeps_a_tensor_lr(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01), foreach=False)
    set_lr(opt, 0.25)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(0)
    save_checkpoint(tmp_path / "c.safetensors", model, opt, gen, {"epoch": 1})
    opt2 = torch.optim.Adam(model.parameters(), lr=0.5, foreach=False)
    assert load_checkpoint(tmp_path / "c.safetensors", model, opt2, gen) == {"epoch": 1}
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.25)


# -- negatives ----------------------------------------------------------------------------------
def test_sampler_draws_n_negatives_that_avoid_positives():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 30, 900), rng.integers(0, 50, 900)], 1), axis=0)
    sampler = BPRSampler(pairs, 30, 50, torch.device("cpu"), torch.Generator().manual_seed(0), max_rounds=60,
                         mode="user", negatives=5)
    users, pos, neg = (torch.cat(t) for t in zip(*sampler.epoch(128)))
    assert neg.shape == (len(pairs), 5) and users.shape == (len(pairs),)
    seen = set(map(tuple, pairs.tolist()))
    assert not any((u, n) in seen for u, row in zip(users.tolist(), neg.tolist()) for n in row)
    assert len(set(neg[:, 0].tolist()) | set(neg[:, 4].tolist())) > 40  # every column is random, not a copy


def test_bpr_loss_averages_over_negatives():
    torch.manual_seed(0)
    cfg = RunConfig().model
    cfg.dim, cfg.layers = 8, 2
    model = QuantizedRecommender(20, 30, cfg)
    pairs = np.stack([np.arange(40) % 20, np.arange(40) % 30], 1)
    adj = normalized_adjacency(pairs, 20, 30, torch.device("cpu"))
    users, pos = torch.tensor([0, 3, 7]), torch.tensor([1, 2, 5])
    neg = torch.tensor([[4, 9], [8, 0], [11, 29]])
    reg = 0.3
    total, bpr = model.bpr_loss(adj, users, pos, neg, reg)
    # reference: loop over the negatives, one BPR term each, averaged; L2 with the negatives' share averaged
    uf, itf = model.final(adj)
    e0 = model.encoder.embedding.weight
    terms = [F.softplus(uf[u] @ (itf[n] - itf[p])) for u, p, row in zip(users, pos, neg) for n in row]
    ref_bpr = torch.stack(terms).mean()
    l2 = sum(e0[u].square().sum() + e0[20 + p].square().sum() + e0[20 + row].square().sum() / 2
             for u, p, row in zip(users, pos, neg))
    torch.testing.assert_close(bpr, ref_bpr)
    torch.testing.assert_close(total, ref_bpr + reg * 0.5 * l2 / 3)
    # one negative as a (B, 1) column is the classic 1-D loss
    a = model.bpr_loss(adj, users, pos, neg[:, :1], reg)[0]
    b = model.bpr_loss(adj, users, pos, neg[:, 0], reg)[0]
    torch.testing.assert_close(a, b)


def test_training_with_negatives_and_a_schedule_learns(tmp_path):
    cfg = small_config(epochs=4, negatives=4, lr_schedule="linear", warmup_epochs=1, sampling="user")
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    assert metrics["test"]["recall@20"] > _popularity_recall(cfg)


# -- objectives ---------------------------------------------------------------------------------
def test_sampled_softmax_matches_a_hand_computed_case():
    from hqgnn.models.losses import sampled_softmax

    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    shared = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    t = 0.5
    # row 0: pos 2/t = 4, negatives 1/t = 2 and 0; row 1: pos 2/t = 4, negatives 2/t = 4 and -2/t = -4
    ref = ((math.log(math.exp(4) + math.exp(2) + math.exp(0)) - 4)
           + (math.log(math.exp(4) + math.exp(4) + math.exp(-4)) - 4)) / 2
    assert sampled_softmax(u, p, shared, t).item() == pytest.approx(ref, rel=1e-6)


def test_softmax_objective_scores_every_row_against_all_sampled_negatives():
    torch.manual_seed(0)
    cfg = RunConfig().model
    cfg.dim, cfg.layers, cfg.normalize = 8, 2, True
    model = QuantizedRecommender(20, 30, cfg)
    model.set_objective("softmax", 0.2)
    pairs = np.stack([np.arange(40) % 20, np.arange(40) % 30], 1)
    adj = normalized_adjacency(pairs, 20, 30, torch.device("cpu"))
    users, pos = torch.tensor([0, 3, 7]), torch.tensor([1, 2, 5])
    neg = torch.tensor([[4, 9], [8, 0], [11, 29]])
    _, part = model.bpr_loss(adj, users, pos, neg, 0.0)
    uf, itf = model.final(adj)
    torch.testing.assert_close(uf.norm(dim=1), torch.ones(20))  # model.normalize: unit rows
    torch.testing.assert_close(itf.norm(dim=1), torch.ones(30))
    pool = neg.reshape(-1)  # all six sampled items are every row's negatives
    ref = torch.stack([torch.logsumexp(torch.cat([(uf[u] @ itf[p])[None], itf[pool] @ uf[u]]) / 0.2, 0)
                       - (uf[u] @ itf[p]) / 0.2 for u, p in zip(users, pos)]).mean()
    torch.testing.assert_close(part, ref)


def test_softmax_training_learns_and_writes_cosine_tables(tmp_path):
    cfg = small_config(epochs=4, loss="softmax", temperature=0.2, negatives=2, sampling="user")
    cfg.model.normalize = True
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    assert metrics["test"]["recall@20"] > _popularity_recall(cfg)
    run = load_run(tmp_path / "run")
    assert run.config.train.loss == "softmax" and run.config.model.normalize
    norms = np.linalg.norm(np.asarray(run.tables["item_emb"], dtype=np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_bad_objective_settings_are_one_clear_error():
    with pytest.raises(HqgnnError, match="train.loss"):
        RunConfig.from_dict({"train": {"loss": "hinge"}})
    with pytest.raises(HqgnnError, match="train.temperature"):
        RunConfig.from_dict({"train": {"temperature": 0.0}})


# -- refit and protocols ------------------------------------------------------------------------
def test_refit_retrains_on_train_plus_validation_and_is_served(tmp_path):
    cfg = small_config(epochs=4, eval_every=1, lr_schedule="cosine", warmup_epochs=1, refit=True)
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    data = load_dataset(cfg.data)
    assert metrics["protocol"] == "validation+refit"
    ref = metrics["refit"]
    assert ref["epochs"] == metrics["best_epoch"] and ref["train_seconds"] > 0
    assert ref["train_pairs"] == len(data.train) + len(data.val)
    assert metrics["test"] == ref["test"] and metrics["selected_test"] != ref["test"]
    # the run directory serves the refit model: its tables score to the refit's test metrics
    run = load_run(tmp_path / "run")
    ev = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), cfg.eval.ks, "cpu")
    again = ev.evaluate_embeddings(run.tables["user_emb"], run.tables["item_emb"])
    for k in ("recall@20", "ndcg@20"):
        assert again[k] == pytest.approx(ref["test"][k], abs=1e-6)
    # the refit replays the selection's per-epoch lrs
    refit_hist = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert len(refit_hist) == metrics["epochs_run"]
    # the refit's test curve yields the paper-protocol number: its best epoch by test, labelled so; the
    # curve's last point is the refit model itself
    paper = ref["paper"]
    assert paper["selected_on"] == "test" and 1 <= paper["epoch"] <= ref["epochs"]
    assert paper["test"]["recall@20"] >= ref["test"]["recall@20"] - 1e-12
    assert paper["train_seconds"] <= ref["train_seconds"] + 1e-6


def test_refit_test_curve_is_best_by_test_and_its_last_point_is_the_refit_model(tmp_path, monkeypatch):
    from hqgnn.train import pipeline

    curves = {}
    real_fit = Trainer.fit

    def spy(self, run_dir, resume=False):
        result = real_fit(self, run_dir, resume)
        curves[Path(run_dir).name] = result.history
        return result

    monkeypatch.setattr(pipeline.Trainer, "fit", spy)
    cfg = small_config(epochs=6, eval_every=2, lr_schedule="linear", refit=True, patience=0)
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    refit = curves["refit"]
    points = [(h["epoch"], h["test_curve_recall@20"]) for h in refit if "test_curve_recall@20" in h]
    n = metrics["refit"]["epochs"]
    assert [e for e, _ in points] == sorted({e for e in range(2, n + 1, 2)} | {n})  # every eval_every, and the last
    assert points[-1][1] == pytest.approx(metrics["refit"]["test"]["recall@20"], abs=1e-9)
    assert metrics["refit"]["paper"]["test"]["recall@20"] == max(r for _, r in points)
    assert not any("test_curve_recall@20" in h for h in curves["run"])  # the selection run never sees test


def test_refit_starts_from_the_same_init_on_the_larger_graph():
    cfg = small_config()
    data = load_dataset(cfg.data)
    a = Trainer(cfg, data, progress=False)
    full = copy.copy(data)
    full.train, full.val = data.seen, data.val[:0]
    b = Trainer(cfg, full, progress=False)
    torch.testing.assert_close(a.model.encoder.embedding.weight, b.model.encoder.embedding.weight, rtol=0, atol=0)
    assert b.adj._nnz() == a.adj._nnz() + 2 * len(data.val)  # validation edges are in the refit graph


def test_refit_replays_the_selection_lrs(tmp_path, monkeypatch):
    from hqgnn.train import pipeline

    replayed = {}
    real_fit = Trainer.fit

    def spy(self, run_dir, resume=False):
        result = real_fit(self, run_dir, resume)
        replayed[Path(run_dir).name] = [h["lr"] for h in result.history]
        return result

    monkeypatch.setattr(pipeline.Trainer, "fit", spy)
    cfg = small_config(epochs=5, eval_every=1, lr_schedule="linear", refit=True, patience=0)
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    best = metrics["best_epoch"]
    assert replayed["refit"] == pytest.approx(replayed["run"][:best])


def test_paper_protocol_selects_on_test_and_says_so(tmp_path):
    cfg = small_config(epochs=4, protocol="paper")
    metrics = run_training(cfg, tmp_path / "p", progress=False)
    assert metrics["protocol"] == "paper (test-selected)" and metrics["selected_on"] == "test"
    assert metrics["data"]["val"] == 0 and metrics["val"] == {}
    assert metrics["test_selected"]["recall@20"] == pytest.approx(metrics["test"]["recall@20"])
    curve = [h["test_selected_recall@20"] for h in metrics["history"] if "test_selected_recall@20" in h]
    assert max(curve) == pytest.approx(metrics["test"]["recall@20"])  # the best test epoch is what is kept
    assert not any(k.startswith("val_") for h in metrics["history"] for k in h)


@pytest.mark.parametrize("change", [{"protocol": "paper", "refit": True}, {"protocol": "papers"}, {"negatives": 0}])
def test_bad_protocol_settings_are_rejected(tmp_path, change):
    cfg = small_config(**change)
    with pytest.raises(HqgnnError):
        run_training(cfg, tmp_path / "x", progress=False)


def test_refit_without_validation_split_is_rejected(tmp_path):
    cfg = small_config(refit=True)
    cfg.data.val_ratio = 0.0
    with pytest.raises(HqgnnError, match="val_ratio"):
        run_training(cfg, tmp_path / "x", progress=False)


# -- fp_quality rows ----------------------------------------------------------------------------
def _fp_quality():
    spec = importlib.util.spec_from_file_location("fp_quality", REPO / "benchmarks" / "fp_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fp_quality_rows_label_every_protocol():
    fq = _fp_quality()
    for name, overrides in fq.CONFIGS.items():  # every candidate is a valid configuration
        nested: dict = {}
        for key, value in {**fq.COMMON, **overrides}.items():
            section, field = key.split(".")
            nested.setdefault(section, {})[field] = value
        RunConfig.from_dict(nested, origin=name)
    test = {"recall@20": 0.2, "ndcg@20": 0.1, "recall@50": 0.3, "ndcg@50": 0.15}
    job = {"dataset": "gowalla", "name": "cos16k_n4", "concurrent_runs": 3,
           "config": {"model.dim": 64, "train.max_seconds": 180.0}}
    common = {"device": "H200", "best_epoch": 10, "epochs_run": 12, "train_seconds": 170.0}
    refit = fq.rows_of(job, {**common, "protocol": "validation+refit", "val": {"recall@20": 0.21}, "test": test,
                             "selected_test": dict(test, **{"recall@20": 0.19}),
                             "refit": {"test": test, "train_seconds": 150.0, "epochs": 10}})
    assert [r["protocol"] for r in refit] == ["validation", "validation+refit"]
    with_curve = fq.rows_of(job, {**common, "protocol": "validation+refit", "val": {"recall@20": 0.21}, "test": test,
                                  "selected_test": test, "refit": {"test": test, "train_seconds": 150.0, "epochs": 10,
                                                                   "paper": {"test": dict(test, **{"recall@20": 0.25}),
                                                                             "epoch": 8, "train_seconds": 120.0,
                                                                             "selected_on": "test"}}})
    assert [r["protocol"] for r in with_curve] == ["validation", "validation+refit", "paper"]
    assert with_curve[2]["recall@20"] == 0.25 and with_curve[2]["selected_on"] == "test"
    assert with_curve[2]["val_recall@20"] is None and with_curve[2]["train_seconds"] == 120.0
    assert refit[0]["recall@20"] == 0.19 and refit[1]["recall@20"] == 0.2
    assert refit[1]["train_seconds"] == 150.0 and refit[1]["selection_seconds"] == 170.0
    assert all(r["val_recall@20"] == 0.21 and r["concurrent_runs"] == 3 for r in refit)
    paper = fq.rows_of(job, {**common, "protocol": "paper (test-selected)", "val": {}, "test": test})
    assert paper[0]["protocol"] == "paper" and paper[0]["selected_on"] == "test" and paper[0]["val_recall@20"] is None
    keys = {"dataset", "protocol", "dim", "recall@20", "ndcg@20", "recall@50", "ndcg@50", "train_seconds", "device",
            "config", "concurrent_runs", "best_epoch", "val_recall@20"}
    assert all(keys <= r.keys() for r in refit + paper)


def test_fp_quality_protocol_overrides():
    fq = _fp_quality()
    args = type("A", (), {"seconds": 180.0, "eval_every": 10, "device": "cuda", "dim": 64, "set": ["train.reg=1e-5"]})()
    paper = fq.job_overrides("base", args, "paper")
    assert paper["train.protocol"] == "paper" and paper["data.val_ratio"] == 0.0
    assert fq.job_overrides("base", args, "refit")["train.refit"] is True
    v = fq.job_overrides("cos16k_n4", args, "validation")
    assert v["train.max_seconds"] == 180.0 and v["train.negatives"] == 4 and "train.protocol" not in v
    assert v["train.reg"] == "1e-5"
    cfg = RunConfig()
    for key, value in v.items():  # every override names a real config field of the right type
        cfg.set(key, str(value))


# -- CUDA graphs --------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_graphed_step_reads_an_in_place_lr_change():
    from hqgnn.train.cuda_graph import GraphedStep
    from hqgnn.train.schedule import make_lr

    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = RunConfig().model
    cfg.dim, cfg.layers = 16, 2
    n_u, n_i = 50, 70
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, n_u, 600), rng.integers(0, n_i, 600)], 1), axis=0)
    adj = normalized_adjacency(pairs, n_u, n_i, dev)
    graphed = QuantizedRecommender(n_u, n_i, cfg).to(dev)
    eager = copy.deepcopy(graphed)
    opt_g = torch.optim.Adam(graphed.parameters(), lr=make_lr(1e-2, dev, tensor=True), fused=True, capturable=True)
    opt_e = torch.optim.Adam(eager.parameters(), lr=1e-2, fused=True)
    gen = torch.Generator(device=dev).manual_seed(0)

    def batch():
        idx = torch.randint(len(pairs), (64,), device=dev, generator=gen)
        p = torch.from_numpy(pairs).to(dev)[idx]
        return p[:, 0], p[:, 1], torch.randint(n_i, (64, 3), device=dev, generator=gen)

    step = GraphedStep(graphed, opt_g, adj, 1e-4, batch())
    for lr in (1e-2, 3e-3, 0.0, 5e-2):
        set_lr(opt_g, lr)
        set_lr(opt_e, lr)
        u, p, n = batch()
        before = graphed.encoder.embedding.weight.detach().clone()
        step(u, p, n)
        loss, _ = eager.bpr_loss(adj, u, p, n, 1e-4)
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        opt_e.step()
        torch.testing.assert_close(graphed.encoder.embedding.weight, eager.encoder.embedding.weight,
                                   rtol=1e-4, atol=1e-5)  # a wrong lr moves weights by ~1e-3
        if lr == 0.0:
            torch.testing.assert_close(graphed.encoder.embedding.weight, before, rtol=0, atol=0)


# -- the float recipes as TOML presets ------------------------------------------------------------
PRESETS = {"lightgcn_gowalla.toml": "cos16k_n4", "lightgcn_yelp2018.toml": "cos16k_n8_reg2e-4"}


@pytest.mark.parametrize("preset, candidate", PRESETS.items())
def test_recipe_preset_is_the_measured_candidate(preset, candidate):
    """configs/*.toml must stay what benchmarks/fp_quality.py ran for the goal rows (BENCHMARKS section 1):
    the shared fields, the candidate's overrides, the 170 s budget, validation every 10 epochs, the refit."""
    fq = _fp_quality()
    measured = RunConfig()
    for key, value in {**fq.COMMON, **fq.CONFIGS[candidate], "train.max_seconds": 170.0, "train.eval_every": 10,
                       "train.refit": True}.items():
        measured.set(key, value)
    assert load_config(REPO / "configs" / preset).to_dict() == measured.validate().to_dict()


def test_recipe_preset_trains_from_the_cli(tmp_path):
    """The preset runs end to end (synthetic data, a 1 s budget so the test is fast): selection, refit, metrics."""
    from hqgnn.cli import main

    out = tmp_path / "run"
    main(["train", "--config", str(REPO / "configs" / "lightgcn_yelp2018.toml"), "--device", "cpu", "--out", str(out),
          "--set", "train.max_seconds=1", "--set", "train.eval_every=1", "--set", "model.dim=8"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "validation+refit" and metrics["refit"]["epochs"] == metrics["best_epoch"]
    assert "negatives = 8" in (out / "config.toml").read_text()


def test_frontier_teacher_config_shares_the_split_with_the_qat_runs(tmp_path):
    """frontier.py --teacher-config: the teacher trains with the preset (never its refit) and every QAT run gets
    the preset's [data] fields, so QAT is selected on the validation split the teacher never trained on."""
    spec = importlib.util.spec_from_file_location("frontier", REPO / "benchmarks" / "frontier.py")
    fr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fr)
    preset = REPO / "configs" / "lightgcn_yelp2018.toml"
    args = type("A", (), {"data": "yelp2018", "data_dir": "D", "batch_size": 8192, "val_ratio": 0.1, "device": "cuda",
                          "set": ["train.seed=3"], "work": str(tmp_path / "w"), "teacher_config": str(preset)})()
    f = fr.Frontier(args)
    sets = [f.common[i + 1] for i, a in enumerate(f.common) if a == "--set"]
    # the preset's split settings come after the frontier's own val_ratio, so they win
    assert sets.index("data.val_ratio=0.05") > sets.index("data.val_ratio=0.1")
    assert "data.val_min_per_user=1" in sets and sets[-1] == "train.seed=3"
    t = f.teacher_args
    assert t[t.index("--config") + 1] == str(preset) and "train.refit=false" in t and "train.seed=3" in t
    cfg = load_config(preset)
    for item in sets:  # every override is a real field the CLI accepts
        key, _, value = item.partition("=")
        cfg.set(key, value)
    assert cfg.data.val_ratio == 0.05


def test_frontier_rows_of_a_call_under_another_dataset_name_are_an_error():
    """frontier.py's plot and --summary select a call's rows by dataset: post-hoc rows once carried the loader's
    name while the others carried --data, and were left out without a word. Now the mismatch is an error."""
    spec = importlib.util.spec_from_file_location("frontier", REPO / "benchmarks" / "frontier.py")
    fr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fr)
    rows = [{"dataset": "/data/mine", "call": "c1", "family": "float"},
            {"dataset": "/data/mine", "call": "c1", "family": "qat"},
            {"dataset": "other", "call": "c2", "family": "float"}]
    assert fr.select_rows(rows, "/data/mine", "c1") == rows[:2]
    assert fr.select_rows(rows, "/data/mine") == rows[:2]  # every call of one dataset
    with pytest.raises(ValueError, match="mine"):
        fr.select_rows(rows + [{"dataset": "mine", "call": "c1", "family": "posthoc"}], "/data/mine", "c1")


def test_frontier_reports_whether_each_rows_teacher_converged(tmp_path):
    """Issue 28's fair budgets: every post-hoc / QAT row says whether its teacher's best validation epoch fell well
    before its last (else a compressor wins by the teacher's missing epochs), and the summary flags the rows."""
    spec = importlib.util.spec_from_file_location("frontier", REPO / "benchmarks" / "frontier.py")
    fr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fr)
    for name, best, ran in (("plateau", 12, 40), ("rising", 40, 40)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"best_epoch": best, "epochs_run": ran}))
    assert fr.teacher_fit(tmp_path / "plateau") == {"teacher_best_epoch": 12, "teacher_epochs_run": 40,
                                                    "teacher_converged": True}
    assert fr.teacher_fit(tmp_path / "rising")["teacher_converged"] is False
    assert fr.teacher_fit(tmp_path / "missing") == {"teacher_converged": None}
    row = {"dataset": "d", "call": "c", "item_bytes": 8, "user_bytes": 8, "recall@20": 0.1, "ndcg@20": 0.1,
           "recall@50": 0.2, "ndcg@50": 0.2, "teacher_dim": 64}
    rows = [dict(row, method="float32_d64", family="float"),
            dict(row, method="pq8", family="posthoc", **fr.teacher_fit(tmp_path / "rising"))]
    table = fr.summary(rows, "d", "c")
    assert "pq8 (teacher not converged)" in table and "float32_d64 (teacher" not in table
