"""Training benchmark: epoch time, test-metric curve against training time, time to a Recall@20 target.

The test split is evaluated here only to draw the curve (model selection still uses validation);
the time spent on these extra test evaluations is excluded from the training clock.

    python benchmarks/bench_train.py --data gowalla --data-dir DIR --out results/x.json \
        --set train.batch_size=2048 --set train.lr=1e-3 --set train.max_seconds=180 --test-every 5
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from hqgnn.config import RunConfig, load_config
from hqgnn.data import load_dataset
from hqgnn.io import write_json
from hqgnn.train.pipeline import device_name
from hqgnn.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--out", required=True, help="JSON result file")
    ap.add_argument("--run-dir", default="", help="run directory for checkpoints (default: next to --out)")
    ap.add_argument("--set", action="append", default=[], help="section.field=value")
    ap.add_argument("--test-every", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.175)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg: RunConfig = load_config(args.config)
    cfg.data.source, cfg.data.data_dir = args.data, args.data_dir
    for item in args.set:
        key, _, value = item.partition("=")
        cfg.set(key, value)
    data = load_dataset(cfg.data)
    curve: list[dict] = []
    excluded = [0.0]
    t_start = [0.0]

    trainer: Trainer

    def on_epoch_end(epoch: int) -> None:
        if epoch % args.test_every:
            return
        t0 = time.perf_counter()
        m = trainer.evaluate("test")
        now = time.perf_counter()
        curve.append({"epoch": epoch, "train_seconds": now - t_start[0] - excluded[0] - (now - t0),
                      "recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"]})
        excluded[0] += time.perf_counter() - t0
        logging.info("epoch %d  test recall@20 %.4f  ndcg@20 %.4f  (%.1fs training)", epoch, m["recall@20"],
                     m["ndcg@20"], curve[-1]["train_seconds"])

    trainer = Trainer(cfg, data, progress=False, on_epoch_end=on_epoch_end)
    run_dir = Path(args.run_dir or (Path(args.out).with_suffix("") ))
    t_start[0] = time.perf_counter()
    result = trainer.fit(run_dir)
    hit = next((c for c in curve if c["recall@20"] >= args.target), None)
    epoch_times = [h["epoch_seconds"] for h in result.history]
    out = {
        "label": args.label,
        "data": args.data,
        "device": device_name(trainer.device),
        "torch": torch.__version__,
        "config": cfg.to_dict(),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "epoch_seconds_median": sorted(epoch_times)[len(epoch_times) // 2] if epoch_times else None,
        "epoch_seconds_first": epoch_times[0] if epoch_times else None,
        "train_seconds": result.train_seconds - excluded[0],
        "target": args.target,
        "seconds_to_target": None if hit is None else hit["train_seconds"],
        "epoch_to_target": None if hit is None else hit["epoch"],
        "best_test_on_curve": max((c["recall@20"] for c in curve), default=None),
        "test": result.test,
        "val": result.val,
        "memory": result.memory,
        "curve": curve,
        "history": result.history,
    }
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("label", "device", "epoch_seconds_median", "seconds_to_target",
                                          "best_epoch", "train_seconds")} | {"test": result.test}))


if __name__ == "__main__":
    main()
