"""The HQ-GNN table: full precision vs 1/2/4/8-bit codes trained with STE and GSTE, same budget per row.

Every row starts from the same full-precision teacher (trained first) and then trains the same number
of epochs in its own configuration (the full-precision row simply continues training). The rows run
concurrently on one GPU. Rows go to benchmarks/results/quant_table.json (rows of other datasets are
kept), a plot to benchmarks/results/quant_<dataset>.png.

    python benchmarks/quant_table.py --data gowalla --data-dir DIR --work /tmp/qt --teacher-seconds 150 --epochs 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROWS = [(0, "none", 0)] + [(1, est, seed) for est in ("ste", "gste") for seed in (0, 1, 2)] + [
    (bits, est, 0) for bits in (2, 4, 8) for est in ("ste", "gste")
]
HERE = Path(__file__).resolve().parent


def hqgnn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "hqgnn", "train", "-q", *args], stdout=fh, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--work", required=True)
    ap.add_argument("--teacher-seconds", type=float, default=150)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--results", default=str(HERE / "results" / "quant_table.json"))
    ap.add_argument("--set", action="append", default=[], help="extra section.field=value for every run")
    ap.add_argument("--rows", default="", help="instead of the full table: bits:estimator:seed[:delta],... "
                    "(delta fixes the GSTE delta by hand)")
    ap.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, "--data-dir", args.data_dir, "--batch-size", str(args.batch_size),
              "--lr", str(args.lr), "--patience", "0", "--set", "train.sampling=user", "--set", "data.val_ratio=0.05"]
    for item in args.set:
        common += ["--set", item]
    teacher = work / "teacher"
    t0 = time.time()
    p = hqgnn([*common, "--out", str(teacher), "--epochs", "100000", "--eval-every", "20",
               "--set", f"train.max_seconds={args.teacher_seconds}"], work / "teacher.log")
    if p.wait():
        sys.exit(f"teacher failed, see {work / 'teacher.log'}")
    print(f"teacher done in {time.time() - t0:.0f}s", flush=True)
    procs = {}
    specs = [tuple(r.split(":")) for r in args.rows.split(",")] if args.rows else ROWS
    for spec in specs:
        bits, est, seed = int(spec[0]), spec[1], int(spec[2])
        delta = float(spec[3]) if len(spec) > 3 else None
        name = f"b{bits}_{est}_s{seed}" + ("" if delta is None else f"_d{delta:g}")
        row_args = [*common, "--out", str(work / name), "--init-from", str(teacher), "--epochs", str(args.epochs),
                    "--eval-every", "5", "--bits", str(bits), "--estimator", est, "--set", f"train.seed={seed}"]
        if delta is not None:
            row_args += ["--delta", str(delta)]
        procs[name] = (hqgnn(row_args, work / f"{name}.log"), bits, est, seed, delta)
    rows = []
    for name, (proc, bits, est, seed, delta) in procs.items():
        if proc.wait():
            print(f"{name} failed:\n" + (work / f"{name}.log").read_text()[-2000:], flush=True)
            continue
        m = json.loads((work / name / "metrics.json").read_text())
        rows.append({"dataset": args.data, "bits": bits, "estimator": est, "seed": seed,
                     **{k: m["test"][k] for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")},
                     "bytes_per_item": m["memory"]["bytes_per_item"], "train_seconds": m["train_seconds"],
                     "best_epoch": m["best_epoch"], "epochs": args.epochs, "device": m["device"],
                     "concurrent_runs": len(specs), "delta_fixed": delta,
                     "gste_delta_last": next((h["gste_delta"] for h in reversed(m["history"]) if "gste_delta" in h), None)})
        print(json.dumps(rows[-1]), flush=True)
    path = Path(args.results)
    old = json.loads(path.read_text()) if path.exists() else []
    merged = [r for r in old if r["dataset"] != args.data] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    if args.plot:
        plot(merged, args.data, path.parent / f"quant_{args.data}.png")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"quant_{args.data}.json").write_text(json.dumps(rows, indent=1))


def plot(rows: list[dict], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in rows if r["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(6, 4))
    for est, marker in (("ste", "o"), ("gste", "s")):
        pts = sorted({r["bits"] for r in rows if r["estimator"] == est})
        xs = [np.mean([r["bytes_per_item"] for r in rows if r["estimator"] == est and r["bits"] == b]) for b in pts]
        ys = [np.mean([r["recall@20"] for r in rows if r["estimator"] == est and r["bits"] == b]) for b in pts]
        ax.plot(xs, ys, marker=marker, label=est.upper())
    fp = [r for r in rows if r["bits"] == 0]
    if fp:
        ax.scatter([fp[0]["bytes_per_item"]], [fp[0]["recall@20"]], color="black", marker="*", s=120, label="float32")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per item (codes + scale)")
    ax.set_ylabel("Recall@20 (test)")
    ax.set_title(f"{dataset}: accuracy vs memory")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
