"""End-to-end training on the synthetic data: beats popularity, resumes exactly, quantized runs work."""

import json

import numpy as np
import pytest
import torch

import run_helpers
from hqgnn.config import RunConfig
from hqgnn.run import load_run
from hqgnn.train.pipeline import run_training
from hqgnn.train.sampler import BPRSampler
from run_helpers import popularity_metrics


def small_config(**train) -> RunConfig:
    return run_helpers.small_config(600, 400, 32, **{"epochs": 20, "eval_every": 5, "batch_size": 1024, **train})


def test_lightgcn_beats_popularity(tmp_path):
    cfg = small_config()
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    pop = popularity_metrics(cfg)
    assert metrics["test"]["recall@20"] > 1.3 * pop["recall@20"], (metrics["test"], pop)
    for name in ("config.toml", "metrics.json", "model.safetensors", "tables.safetensors", "ids.npz", "curve.png"):
        assert (tmp_path / "run" / name).exists(), name
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"recall@20", "ndcg@20", "recall@50", "ndcg@50"} <= on_disk["test"].keys()
    assert on_disk["best_epoch"] >= 5 and on_disk["train_seconds"] > 0


def test_resume_equals_uninterrupted(tmp_path):
    cfg = small_config(epochs=6, eval_every=2)
    full = run_training(cfg, tmp_path / "full", progress=False)

    def crash(epoch: int) -> None:
        if epoch == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", progress=False, on_epoch_end=crash)
    resumed = run_training(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed["best_epoch"] == full["best_epoch"]
    for key, value in full["test"].items():
        assert resumed["test"][key] == pytest.approx(value, abs=1e-9), key
    a, b = load_run(tmp_path / "full").tables, load_run(tmp_path / "cut").tables
    torch.testing.assert_close(a["item_emb"], b["item_emb"], rtol=0, atol=1e-6)


def test_sampler_negatives_avoid_positives():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 50, 2000), rng.integers(0, 60, 2000)], 1), axis=0)
    gen = torch.Generator().manual_seed(0)
    sampler = BPRSampler(pairs, 50, 60, torch.device("cpu"), gen, max_rounds=50)
    seen = set(map(tuple, pairs.tolist()))
    batches = list(sampler.epoch(256))
    users = torch.cat([b[0] for b in batches])
    pos = torch.cat([b[1] for b in batches])
    neg = torch.cat([b[2] for b in batches])
    assert len(users) == len(pairs)  # every positive once per epoch
    assert sorted(zip(users.tolist(), pos.tolist())) == sorted(seen)
    assert not any((u, n) in seen for u, n in zip(users.tolist(), neg.tolist()))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("estimator", ["ste", "gste"])
def test_quantized_training_end_to_end(tmp_path, bits, estimator):
    cfg = small_config(epochs=4, eval_every=2)
    cfg.quant.bits, cfg.quant.estimator = bits, estimator
    cfg.quant.delta_batches = 1
    metrics = run_training(cfg, tmp_path / "q", progress=False)
    assert metrics["bits"] == bits and metrics["estimator"] == estimator
    assert metrics["test"]["recall@20"] > 0
    assert metrics["memory"]["bytes_per_item"] == pytest.approx(bits * 32 / 8 + 4)
    run = load_run(tmp_path / "q")
    codes = run.tables["item_codes"]
    assert codes.dtype == torch.int8
    lo, hi = (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert int(codes.min()) >= lo and int(codes.max()) <= hi
    if estimator == "gste":
        deltas = [h["gste_delta"] for h in metrics["history"] if "gste_delta" in h]
        assert deltas and all(d >= 0 for d in deltas)


def test_user_sampler_draws_positives_of_uniform_users():
    rng = np.random.default_rng(1)
    pairs = np.unique(np.stack([rng.integers(0, 40, 3000), rng.integers(0, 70, 3000)], 1), axis=0)
    sampler = BPRSampler(pairs, 41, 70, torch.device("cpu"), torch.Generator().manual_seed(0), mode="user")
    seen = set(map(tuple, pairs.tolist()))
    users, pos, _ = (torch.cat(t) for t in zip(*sampler.epoch(500)))
    assert all((u, p) in seen for u, p in zip(users.tolist(), pos.tolist()))
    counts = np.bincount(users.numpy(), minlength=41)
    assert counts[40] == 0  # user 40 has no training items
    assert counts[:40].min() > 0.6 * counts[:40].mean()  # uniform over users, not over pairs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("bits", [0, 1])
def test_cuda_graph_step_matches_eager(tmp_path, bits):
    results = {}
    for graph in (False, True):
        cfg = small_config(epochs=3, eval_every=3, device="cuda", batch_size=500)
        cfg.train.cuda_graph = graph
        cfg.quant.bits, cfg.quant.estimator, cfg.quant.delta = bits, ("ste" if bits else "none"), 0.0
        results[graph] = run_training(cfg, tmp_path / f"g{graph}", progress=False)
    # graph mode drops each epoch's partial last batch, so compare loosely: same quality, same shape
    assert results[True]["test"]["recall@20"] == pytest.approx(results[False]["test"]["recall@20"], abs=0.03)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    """With an lr too small to move any ranking, the first evaluation is the best and every later one is not:
    patience 2 with an evaluation every epoch must stop after epoch 3 (it once never stopped with eval_every=1)."""
    cfg = run_helpers.small_config(120, 80, 8, epochs=10, eval_every=1, batch_size=256, patience=2, lr=1e-12)
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] == 1
