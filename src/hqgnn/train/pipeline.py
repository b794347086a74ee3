"""One training run end to end: load data, train, evaluate on test, write the run directory."""

from __future__ import annotations

import copy
import logging
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import RunConfig, dump_config
from ..data import load_dataset
from ..data.dataset import InteractionData
from ..errors import HqgnnError
from ..io import write_text
from ..run import CONFIG, CURVE, plot_curve, save_run
from . import distributed
from .trainer import Trainer

log = logging.getLogger("hqgnn.train")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_training(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train as ``cfg`` says and write ``out_dir``; returns the metrics dict that is also in metrics.json.

    Under torchrun this joins the process group first; every rank trains and returns the metrics,
    only rank 0 writes ``out_dir``.
    """
    with distributed.process_group(cfg.train):
        return _run_training(cfg, Path(out_dir), resume, progress, on_epoch_end)


def _run_training(
    cfg: RunConfig, out_dir: Path, resume: bool, progress: bool, on_epoch_end: Callable[[int], None] | None
) -> dict[str, Any]:
    main = distributed.is_main()
    _check_protocol(cfg)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_dataset(cfg.data)
    load_seconds = time.perf_counter() - t0
    log.info("data %s: %d users, %d items, %d train / %d val / %d test", data.name, data.n_users, data.n_items,
             len(data.train), len(data.val), len(data.test))
    if main:
        write_text(out_dir / CONFIG, dump_config(cfg))
    trainer = Trainer(cfg, data, progress=progress, on_epoch_end=on_epoch_end)
    result = trainer.fit(out_dir, resume=resume)
    selected, refit = result, None
    if cfg.train.refit:
        trainer, result, refit = _refit(cfg, data, out_dir, selected, resume, progress)
    model = trainer.model
    with torch.no_grad():
        users, items = model.final(trainer.adj)
        tables = {"user_emb": users, "item_emb": items}
        if model.quantized:
            tables.update(model.codes(trainer.adj))
    epoch_times = [h["epoch_seconds"] for h in selected.history if "epoch_seconds" in h]
    paper = cfg.train.protocol == "paper"
    metrics: dict[str, Any] = {
        "protocol": "paper (test-selected)" if paper else "validation+refit" if refit else "validation",
        "test": result.test,  # of the model this run directory serves (the refit model under validation+refit)
        "val": {} if paper else selected.val,
        "best_epoch": selected.best_epoch,
        "epochs_run": selected.epochs_run,
        "train_seconds": selected.train_seconds,
        "epoch_seconds_mean": float(np.mean(epoch_times)) if epoch_times else None,
        "load_seconds": load_seconds,
        "memory": result.memory,
        "bits": cfg.quant.bits,
        "estimator": cfg.quant.estimator if cfg.quant.bits else "none",
        "device": device_name(trainer.device),
        "world_size": distributed.world_size(),
        "data": data.summary(),
        "history": selected.history,
    }
    if paper:
        metrics["selected_on"] = "test"
        metrics["test_selected"] = selected.val  # == test: the epoch was chosen on these numbers
    if refit is not None:
        metrics["selected_test"] = selected.test
        metrics["refit"] = refit
    if not main:
        return metrics
    save_run(out_dir, cfg, metrics, model.state_dict(), tables, data.user_ids, data.item_ids, data.matrix(data.seen))
    if result.history:
        plot_curve(out_dir / CURVE, result.history, cfg.train.select_metric)
    log.info("test%s %s", " (paper protocol: epoch selected on test)" if paper else " (refit)" if refit else "",
             "  ".join(f"{k} {v:.4f}" for k, v in result.test.items() if k.split("@")[0] in ("recall", "ndcg")))
    return metrics


def _check_protocol(cfg: RunConfig) -> None:
    """Paper protocol: all of train.txt (no validation split); refit needs a validation split to refit on."""
    tc = cfg.train
    if tc.protocol not in ("validation", "paper"):
        raise HqgnnError(f"train.protocol must be validation or paper, got {tc.protocol!r}")
    if tc.protocol == "paper":
        if tc.refit:
            raise HqgnnError("train.refit needs train.protocol=validation (paper already trains on all of train)")
        if cfg.data.val_ratio:
            log.warning("paper protocol: data.val_ratio %.3g -> 0; the epoch is selected on TEST", cfg.data.val_ratio)
            cfg.data.val_ratio = 0.0
    elif tc.refit and cfg.data.val_ratio <= 0:
        raise HqgnnError("train.refit needs a validation split (data.val_ratio > 0)")


def _refit(cfg: RunConfig, data: InteractionData, out_dir: Path, selected: Any, resume: bool,
           progress: bool) -> tuple[Trainer, Any, dict[str, Any]]:
    """Retrain from the same init on train + validation for the selected number of epochs.

    Same seed, so the same initial weights; the graph and the BPR triples both use train +
    validation; the per-epoch learning rates of the selection run are replayed for epochs
    1..best_epoch (so a time-budget schedule is reproduced exactly); the last epoch is kept.
    Working files (checkpoint, best weights) go to ``out_dir/refit``.
    """
    rc = copy.deepcopy(cfg)
    epochs = max(1, selected.best_epoch)
    rc.train.refit, rc.train.epochs, rc.train.max_seconds = False, epochs, 0.0
    rc.train.patience, rc.train.eval_every = 0, epochs  # one "evaluation" at the end: the last epoch is kept
    full = InteractionData(data.name, data.n_users, data.n_items, data.seen, data.val[:0], data.test,
                           data.user_ids, data.item_ids)
    log.info("refit on train + validation (%d pairs) for %d epochs", len(full.train), epochs)
    trainer = Trainer(rc, full, progress=progress)
    trainer.lr_trace = [h["lr"] for h in selected.history[:epochs]]
    work = out_dir / "refit"
    result = trainer.fit(work, resume=resume and (work / "checkpoint.safetensors").exists())
    info = {"test": result.test, "epochs": epochs, "train_seconds": result.train_seconds,
            "train_pairs": int(len(full.train)), "lr_replayed_from_selection": True}
    return trainer, result, info
