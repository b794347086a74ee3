"""Full-precision LightGCN quality in a fixed training budget: N configurations at once on one device.

Each configuration is a subprocess of ``python -m hqgnn train`` with ``train.max_seconds`` set; rows
go to ``benchmarks/results/fp_quality.json`` (appended) and, when $OUT is set, to
``$OUT/fp_quality_<dataset>.json``; one JSON line is printed per finished row.

    # candidates, all at once (winner by val_recall@20 only; concurrent runs slow each other down, so
    # --share-budget gives each of N runs N x --seconds of wall time; at most 3 fit one 10-minute call)
    python benchmarks/fp_quality.py --sweep --data gowalla --data-dir DIR --configs base,sm8k_t01,sm8k_t02 --share-budget
    # one configuration under validation, validation+refit and paper (test-selected) protocols, solo
    python benchmarks/fp_quality.py --final cos16k_n4 --data gowalla,yelp2018 --data-dir DIR --parallel 1
    # rows that came back from the GPU machine's $OUT -> benchmarks/results/fp_quality.json
    python benchmarks/fp_quality.py --merge fp_quality_gowalla.json fp_quality_yelp2018.json
    # CPU smoke test
    python benchmarks/fp_quality.py --sweep --data synthetic --seconds 10 --device cpu --max-configs 2 --eval-every 2

Protocols: "validation" = the model selected on the validation split (data.val_ratio), tested once;
"validation+refit" = the same run, retrained on train + validation for the selected epoch count
(``train.refit``; its train_seconds is the refit's own, selection_seconds the selection run's);
"paper" = all of train.txt, the epoch selected on TEST, as published tables do (never a goal number):
by default read off the refit run (train + validation = all of train.txt), which ranks test every
--eval-every epochs for this row only (that time is not counted); ``--protocols paper`` trains a
separate test-selected run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from hqgnn.io import write_json  # noqa: E402

# shared by every candidate: d = 64, 3 layers, LightGCN's user sampler, a 5 % validation split that
# covers every user (without val_min_per_user, 19 % of gowalla's users had no validation pair: BENCHMARKS
# section 1), no early stop (a decaying lr is best near the end of the budget)
COMMON = {"model.dim": 64, "model.layers": 3, "train.sampling": "user", "data.val_ratio": 0.05,
          "data.val_min_per_user": 1, "train.patience": 0, "train.epochs": 1_000_000}


def _cos(batch: int, lr: float, warmup: int, negatives: int = 1, **extra) -> dict:
    cfg = {"train.batch_size": batch, "train.lr": lr, "train.lr_schedule": "cosine", "train.warmup_epochs": warmup,
           "train.lr_min_ratio": 0.0, "train.negatives": negatives}
    cfg.update(extra)
    return cfg


# Why these: a LightGCN step propagates the whole graph, so its cost hardly depends on the batch size
# or the number of negatives; larger batches (with a scaled lr and a warm-up) and more negatives buy
# more signal per second; decaying the lr to ~0 over the budget lets the fast phase settle.
CONFIGS: dict[str, dict] = {
    "base": {"train.batch_size": 8192, "train.lr": 5e-3},  # today's recipe (BENCHMARKS.md section 1)
    "cos8k": _cos(8192, 5e-3, 5),
    "cos8k_n4": _cos(8192, 5e-3, 5, 4),
    "cos16k": _cos(16384, 1e-2, 10),
    "cos16k_n4": _cos(16384, 1e-2, 10, 4),
    "cos16k_n8": _cos(16384, 1e-2, 10, 8),
    "cos16k_n4_lr5e-3": _cos(16384, 5e-3, 5, 4),
    "cos16k_n4_reg3e-5": _cos(16384, 1e-2, 10, 4, **{"train.reg": 3e-5}),
    "cos16k_n4_reg2e-4": _cos(16384, 1e-2, 10, 4, **{"train.reg": 2e-4}),
    "cos32k_n4": _cos(32768, 2e-2, 20, 4),
    # session 6 (call s6e, yelp2018): L2 2e-4 beat 1e-4 and 3e-5 on validation by a wide margin
    "cos16k_n8_reg2e-4": _cos(16384, 1e-2, 10, 8, **{"train.reg": 2e-4}),
    "cos16k_n8_reg4e-4": _cos(16384, 1e-2, 10, 8, **{"train.reg": 4e-4}),
    "cos16k_n8_reg8e-4": _cos(16384, 1e-2, 10, 8, **{"train.reg": 8e-4}),
    # sampled softmax over the batch's 8192 shared negatives, cosine scores (README "Training objectives")
    "sm8k_t01": _cos(8192, 5e-3, 5, **{"train.loss": "softmax", "train.temperature": 0.1, "model.normalize": True}),
    "sm8k_t02": _cos(8192, 5e-3, 5, **{"train.loss": "softmax", "train.temperature": 0.2, "model.normalize": True}),
    "sm8k_t01_lr1e-2": _cos(8192, 1e-2, 5, **{"train.loss": "softmax", "train.temperature": 0.1,
                                               "model.normalize": True}),
}


def job_overrides(name: str, args: argparse.Namespace, protocol: str) -> dict:
    cfg = dict(COMMON)
    cfg.update(CONFIGS[name])
    cfg.update({"train.max_seconds": args.seconds, "train.eval_every": args.eval_every, "train.device": args.device,
                "model.dim": args.dim})
    for item in args.set:  # extra overrides for every run (e.g. a smaller synthetic data set)
        key, _, value = item.partition("=")
        cfg[key.strip()] = value.strip()
    if protocol == "refit":
        cfg["train.refit"] = True
    elif protocol == "paper":
        cfg["train.protocol"], cfg["data.val_ratio"] = "paper", 0.0
    return cfg


def start(job: dict, runs: Path, args: argparse.Namespace) -> subprocess.Popen:
    out = runs / f"{job['dataset']}_{job['name']}_{job['protocol']}"
    cmd = [sys.executable, "-m", "hqgnn", "train", "--data", job["dataset"], "--out", str(out)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    for key, value in job["config"].items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    # N processes share the host's cores: do not let each start a thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, job["concurrent_runs"]))))
    job["run_dir"], job["log"] = out, runs / f"{out.name}.log"
    job["t0"] = time.time()
    return subprocess.Popen(cmd, stdout=open(job["log"], "w"), stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def rows_of(job: dict, metrics: dict) -> list[dict]:
    """One row per protocol the run measured (a refit run measures validation and validation+refit)."""
    base = {"dataset": job["dataset"], "dim": job["config"]["model.dim"], "device": metrics["device"],
            "config_name": job["name"], "config": job["config"], "concurrent_runs": job["concurrent_runs"],
            "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
            "epoch_seconds_mean": metrics.get("epoch_seconds_mean"),
            "val_recall@20": metrics["val"].get("recall@20"), "budget_seconds": job["config"]["train.max_seconds"]}

    def row(protocol: str, test: dict, seconds: float, **extra) -> dict:
        r = {"protocol": protocol, **{k: test[k] for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")},
             "train_seconds": seconds}
        return {**base, **r, **extra}

    if metrics["protocol"].startswith("paper"):
        # the epoch was chosen on test: no validation number exists, and the label says so
        return [row("paper", metrics["test"], metrics["train_seconds"], selected_on="test",
                    **{"val_recall@20": None})]
    if metrics["protocol"] == "validation+refit":
        ref = metrics["refit"]
        rows = [row("validation", metrics["selected_test"], metrics["train_seconds"]),
                row("validation+refit", ref["test"], ref["train_seconds"], selection_seconds=metrics["train_seconds"],
                    refit_epochs=ref["epochs"])]
        paper = ref.get("paper")
        if paper:  # the refit's own curve, its epoch picked on test: the published tables' protocol
            rows.append(row("paper", paper["test"], paper["train_seconds"], selected_on="test",
                            derived_from="validation+refit curve", paper_epoch=paper["epoch"],
                            **{"val_recall@20": None}))
        return rows
    return [row("validation", metrics["test"], metrics["train_seconds"])]


def run_jobs(jobs: list[dict], args: argparse.Namespace) -> list[dict]:
    # a fresh folder per call: `hqgnn train --out` never meets an old run directory
    if args.runs_dir:
        Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="fp_quality_", dir=args.runs_dir or None))
    parallel = max(1, args.parallel or len(jobs))
    pending, running, rows = list(jobs), [], []
    timeout = args.seconds * (parallel if args.share_budget else 1) * 3 + 600  # refit trains twice; + load, eval
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            job["concurrent_runs"] = min(parallel, len(running) + 1 + len(pending))
            if args.share_budget:
                # N runs time-share one GPU: N budgets of wall time give each about one budget of the device
                job["config"]["train.max_seconds"] = args.seconds * parallel
            job["proc"] = start(job, runs, args)
            running.append(job)
        time.sleep(0.5)
        for job in list(running):
            code = job["proc"].poll()
            if code is None and time.time() - job["t0"] > timeout:
                job["proc"].kill()
                code = job["proc"].wait()
            if code is None:
                continue
            running.remove(job)
            if os.environ.get("OUT") and job["log"].exists():  # the logs come back with the rows
                (Path(os.environ["OUT"]) / "logs").mkdir(parents=True, exist_ok=True)
                shutil.copy(job["log"], Path(os.environ["OUT"]) / "logs" / job["log"].name)
            metrics_path = job["run_dir"] / "metrics.json"
            if code != 0 or not metrics_path.exists():
                tail = job["log"].read_text()[-1500:] if job["log"].exists() else ""
                print(json.dumps({"failed": job["name"], "dataset": job["dataset"], "exit": code, "log_tail": tail}),
                      flush=True)
                continue
            for r in rows_of(job, json.loads(metrics_path.read_text())):
                rows.append(r)
                print(json.dumps(r), flush=True)
            save(rows, args)
    return rows


def save(rows: list[dict], args: argparse.Namespace) -> None:
    """$OUT/fp_quality_<dataset>.json (this call's rows) and the results file (appended once, at the end)."""
    out = os.environ.get("OUT")
    if out:
        for ds in {r["dataset"] for r in rows}:
            write_json(Path(out) / f"fp_quality_{ds}.json", [r for r in rows if r["dataset"] == ds])


def append_results(rows: list[dict], path: Path) -> None:
    old = json.loads(path.read_text()) if path.exists() else []
    write_json(path, old + [dict(r, recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sweep", action="store_true", help="run the candidate configurations (validation protocol)")
    mode.add_argument("--final", metavar="NAME", help="NAME or dataset:NAME,dataset:NAME - validation, "
                      "validation+refit and paper protocols")
    mode.add_argument("--list", action="store_true", help="print the candidate configurations")
    mode.add_argument("--merge", nargs="+", metavar="ROWS.json", help="append rows files (from $OUT) to --results")
    ap.add_argument("--data", default="gowalla", help="comma-separated datasets")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--seconds", type=float, default=180.0, help="training budget per run (train.max_seconds)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=10, help="epochs between validations")
    ap.add_argument("--configs", default="", help="sweep only these names (comma-separated)")
    ap.add_argument("--max-configs", type=int, default=10, help="sweep the first N candidates")
    ap.add_argument("--parallel", type=int, default=0, help="runs at once (0 = all)")
    ap.add_argument("--share-budget", action="store_true", help="sweep: each of N concurrent runs gets N x --seconds "
                    "of wall time (about --seconds of the shared GPU each); the time goal is only claimed by a solo run")
    ap.add_argument("--protocols", default="refit", help="--final: refit (= validation, validation+refit and "
                    "paper rows: the refit's curve, its epoch picked on test) and/or paper (a separate test-selected "
                    "run with its own time-budget schedule), or validation alone")
    ap.add_argument("--set", action="append", default=[], help="extra section.field=value for every run")
    ap.add_argument("--runs-dir", default="", help="a fresh folder for run directories and logs is made in here "
                    "(default: the system temp dir)")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "fp_quality.json"))
    args = ap.parse_args()
    if args.list:
        print(json.dumps({"common": COMMON, "configs": CONFIGS}, indent=1))
        return
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())]
        append_results(rows, Path(args.results))
        print(json.dumps({"merged": len(rows), "into": args.results}))
        return
    datasets = [d for d in args.data.split(",") if d]
    jobs: list[dict] = []
    if args.sweep:
        names = [n for n in args.configs.split(",") if n] or list(CONFIGS)[: args.max_configs]
        for n in names:
            if n not in CONFIGS:
                sys.exit(f"error: unknown configuration {n!r} (known: {', '.join(CONFIGS)})")
        jobs = [{"dataset": ds, "name": n, "protocol": "validation", "config": job_overrides(n, args, "validation")}
                for ds in datasets for n in names]
    else:
        protocols = [p for p in args.protocols.split(",") if p]
        if not protocols or set(protocols) - {"refit", "paper", "validation"}:
            sys.exit(f"error: --protocols takes refit, paper and/or validation, got {args.protocols!r}")
        chosen = dict(p.split(":", 1) if ":" in p else (None, p) for p in args.final.split(","))
        for ds in datasets:
            name = chosen.get(ds, chosen.get(None))
            if name not in CONFIGS:
                sys.exit(f"error: no known configuration for {ds} in --final {args.final!r} "
                         f"(known: {', '.join(CONFIGS)})")
            # the refit run also yields the plain validation row (the model it selected, tested once)
            jobs += [{"dataset": ds, "name": name, "protocol": p, "config": job_overrides(name, args, p)}
                     for p in protocols]
    rows = run_jobs(jobs, args)
    if rows:
        append_results(rows, Path(args.results))
    if args.sweep:  # the winner by validation only
        for ds in datasets:
            cand = [r for r in rows if r["dataset"] == ds and r["val_recall@20"] is not None]
            if cand:
                best = max(cand, key=lambda r: r["val_recall@20"])
                print(json.dumps({"winner_by_val_recall@20": best["config_name"], "dataset": ds,
                                  "val_recall@20": best["val_recall@20"], "concurrent_runs": best["concurrent_runs"]}),
                      flush=True)
    if len(rows) < sum(2 if j["protocol"] == "refit" else 1 for j in jobs):
        sys.exit(1)


if __name__ == "__main__":
    main()
