"""Checkpoints and resume: written at every evaluation; a quantized GSTE run resumed mid delta-interval is exact."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from hqgnn.config import RunConfig
from hqgnn.models.losses import bpr_from_tables
from hqgnn.run import load_run
from hqgnn.train.pipeline import run_training


class Interrupt(Exception):
    pass


def gste_config() -> RunConfig:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 150, 100
    cfg.model.dim, cfg.model.layers = 8, 2
    cfg.quant.bits, cfg.quant.estimator = 1, "gste"
    cfg.quant.delta_every, cfg.quant.delta_batches, cfg.quant.hutchinson_max_probes = 3, 2, 6
    cfg.train.epochs, cfg.train.eval_every, cfg.train.patience = 5, 1, 0
    cfg.train.batch_size, cfg.train.lr, cfg.train.device = 256, 5e-3, "cpu"
    return cfg


def stop_after(epoch: int):
    def hook(e: int) -> None:
        if e == epoch:
            raise Interrupt

    return hook


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]


def test_gste_run_resumed_mid_delta_interval_equals_an_uninterrupted_one(tmp_path):
    """delta is estimated before epochs 1 and 4; the run stops after epoch 2 and resumes at epoch 3."""
    cfg = gste_config()
    run_training(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupt):
        run_training(gste_config(), tmp_path / "cut", progress=False, on_epoch_end=stop_after(2))
    with safe_open(str(tmp_path / "cut" / "checkpoint.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()["state"])["epoch"] == 2
    run_training(gste_config(), tmp_path / "cut", resume=True, progress=False)
    a, b = load_run(tmp_path / "whole"), load_run(tmp_path / "cut")
    assert comparable(b.metrics["history"]) == comparable(a.metrics["history"])
    assert [h["epoch"] for h in a.metrics["history"] if "gste_delta" in h] == [1, 4]
    assert a.metrics["test"] == b.metrics["test"]
    for name, t in a.tables.items():
        assert torch.equal(b.tables[name], t), name


def test_checkpoint_at_every_evaluation_without_a_validation_split(tmp_path):
    cfg = gste_config()
    cfg.quant.bits, cfg.quant.estimator = 0, "none"
    cfg.data.val_ratio, cfg.train.eval_every, cfg.train.epochs = 0.0, 2, 4
    epochs = []

    def hook(e: int) -> None:
        path = tmp_path / "r" / "checkpoint.safetensors"
        if path.exists():
            with safe_open(str(path), framework="pt") as fh:
                epochs.append((e, json.loads(fh.metadata()["state"])["epoch"]))

    run_training(cfg, tmp_path / "r", progress=False, on_epoch_end=hook)
    assert epochs == [(2, 2), (3, 2), (4, 4)]


def test_the_hessian_estimate_differentiates_the_training_loss():
    """The BPR of the delta estimate is the BPR part of the training loss (one function serves both)."""
    from hqgnn.data import load_dataset
    from hqgnn.train import Trainer

    cfg = gste_config()
    data = load_dataset(cfg.data)
    tr = Trainer(cfg, data, progress=False)
    g = torch.Generator().manual_seed(0)
    nu, ni = data.n_users, data.n_items
    u = torch.randint(nu, (64,), generator=g)
    p, n = torch.randint(ni, (64,), generator=g), torch.randint(ni, (64,), generator=g)
    _, want = tr.model.bpr_loss(tr.adj, u, p, n, 0.0)
    with torch.no_grad():
        users, items = tr.model.final(tr.adj)
        qu, qi = tr.model.quantize_rows(users, items, torch.arange(nu), torch.arange(ni))
    torch.testing.assert_close(bpr_from_tables(qu, qi, u, p, n), want.detach(), rtol=1e-6, atol=0)
