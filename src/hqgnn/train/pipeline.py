"""One training run end to end: load data, train, evaluate on test, write the run directory."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import RunConfig, dump_config
from ..data import load_dataset
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
    cfg.validate()
    with distributed.process_group(cfg.train):
        return _run_training(cfg, Path(out_dir), resume, progress, on_epoch_end)


def _run_training(
    cfg: RunConfig, out_dir: Path, resume: bool, progress: bool, on_epoch_end: Callable[[int], None] | None
) -> dict[str, Any]:
    main = distributed.is_main()
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
    model = trainer.model
    with torch.no_grad():
        users, items = model.final(trainer.adj)
        tables = {"user_emb": users, "item_emb": items}
        if model.quantized:
            tables.update(model.codes(trainer.adj))
    epoch_times = [h["epoch_seconds"] for h in result.history if "epoch_seconds" in h]
    metrics: dict[str, Any] = {
        "test": result.test,
        "val": result.val,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,
        "epoch_seconds_mean": float(np.mean(epoch_times)) if epoch_times else None,
        "load_seconds": load_seconds,
        "memory": result.memory,
        "bits": cfg.quant.bits,
        "estimator": cfg.quant.estimator if cfg.quant.bits else "none",
        "device": device_name(trainer.device),
        "world_size": distributed.world_size(),
        "data": data.summary(),
        "history": result.history,
    }
    if not main:
        return metrics
    save_run(out_dir, cfg, metrics, model.state_dict(), tables, data.user_ids, data.item_ids, data.matrix(data.seen))
    if result.history:
        plot_curve(out_dir / CURVE, result.history, cfg.train.select_metric)
    log.info("test %s", "  ".join(f"{k} {v:.4f}" for k, v in result.test.items() if k.split("@")[0] in ("recall", "ndcg")))
    return metrics
