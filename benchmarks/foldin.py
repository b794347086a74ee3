"""Fold-in quality (issue 26) against a full retrain and popularity, and its CPU timing; one JSON per call.

Quality (per dataset; float and 1-bit runs trained as concurrent processes, the shipped recipes):

    python benchmarks/foldin.py --data gowalla,yelp2018 --data-dir DIR --work /tmp/fi --out fi.json

* users: 10% of the users with training pairs (seeded) lose every train / validation pair; a run is
  trained without them ("no_users") and one with everything ("full"). They are folded into no_users
  from their train items (each method scored on their VALIDATION items: the selection), then from
  train + validation, and scored on their test items; full and popularity are scored on the same users.
* items: the same for 10% of the items ("no_items"): folded in from their users; the metric is
  Recall / NDCG@20 over the users with test items among the held-out items, counting only those items
  as relevant (all items ranked, seen items masked).

``--tiny``: a synthetic data set on the CPU in seconds (the test). ``--timing``: CPU latency of one
user's fold-in and of 100,000 users at once (gowalla-sized random tables; no training).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

HERE = Path(__file__).resolve().parent
KS = (20,)


def _config(data: str, data_dir: str | None, bits: int, tiny: bool, max_seconds: float) -> Any:
    from hqgnn.config import RunConfig, load_config

    if tiny:
        cfg = RunConfig()
        cfg.data.synthetic_users, cfg.data.synthetic_items = 400, 300
        cfg.model.dim, cfg.train.epochs, cfg.train.device, cfg.train.lr = 16, 6, "cpu", 5e-3
    else:
        cfg = load_config(HERE.parent / "configs" / f"lightgcn_{data}.toml")
        cfg.data.source = data
        if data_dir:
            cfg.data.data_dir = data_dir
        cfg.train.max_seconds = max_seconds  # the cosine horizon too: all runs of a call share it
        # no refit on train + validation: it would double every run's time, and each side of the comparison
        # (fold-in into no_users / no_items, the full retrain) is then the validation-selected model alike
        cfg.train.refit = False
    if bits:
        cfg.quant.bits, cfg.quant.estimator = bits, "ste"
    return cfg.validate()


def _held_out(ds: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10% of the users with training pairs and 10% of the items with training pairs, seeded."""
    rng = np.random.default_rng(seed)
    users, items = np.unique(ds.train[:, 0]), np.unique(ds.train[:, 1])
    return (np.sort(rng.choice(users, max(1, len(users) // 10), replace=False)),
            np.sort(rng.choice(items, max(1, len(items) // 10), replace=False)))


def _without(ds: Any, col: int, ids: np.ndarray) -> Any:
    import dataclasses

    keep = lambda p: p[~np.isin(p[:, col], ids)]  # noqa: E731
    return dataclasses.replace(ds, train=keep(ds.train), val=keep(ds.val))


def child(args: argparse.Namespace) -> None:
    """Train one run (full / no_users / no_items) and save it under --work."""
    from hqgnn.data import load_dataset
    from hqgnn.run import save_run
    from hqgnn.train.pipeline import train_model

    cfg = _config(args.data, args.data_dir, args.bits, args.tiny, args.max_seconds)
    ds = load_dataset(cfg.data)
    held_users, held_items = _held_out(ds, args.seed)
    if args.child == "no_users":
        ds = _without(ds, 0, held_users)
    elif args.child == "no_items":
        ds = _without(ds, 1, held_items)
    out = Path(args.work) / f"{args.data}_{args.child}_b{args.bits}"
    work = Path(str(out) + ".work")
    trained = train_model(cfg, ds, work)
    save_run(out, cfg, trained.metrics, trained.model_state, trained.tables, ds.user_ids, ds.item_ids,
             ds.matrix(ds.seen), carry=False)


def _with_rows(run: Any, side: str, idx: np.ndarray, rows: dict[str, torch.Tensor]) -> Any:
    from hqgnn.run import TrainedRun

    tables = dict(run.tables)
    t_idx = torch.from_numpy(idx)
    for key, value in rows.items():
        t = tables[key].clone()
        t[t_idx] = value.to(t.dtype)
        tables[key] = t
    return TrainedRun(run.path, run.config, run.metrics, tables, run.user_ids, run.item_ids, run.seen)


def _metrics(run: Any, truth: sp.csr_matrix, exclude: sp.csr_matrix, device: str) -> dict[str, float]:
    from hqgnn.recommender import Recommender

    m = Recommender(run, device).evaluate(truth, KS, exclude=exclude)
    return {k: round(float(v), 5) for k, v in m.items() if k in ("recall@20", "ndcg@20")}


def _popularity(seen: sp.csr_matrix, truth: sp.csr_matrix, device: str) -> dict[str, float]:
    from hqgnn.eval import RankingEvaluator

    pop = torch.from_numpy(np.asarray(seen.sum(axis=0)).reshape(-1).astype(np.float32)).to(device)
    m = RankingEvaluator(truth, seen, KS, device).evaluate(lambda users: pop.expand(len(users), -1).clone())
    return {k: round(float(v), 5) for k, v in m.items() if k in ("recall@20", "ndcg@20")}


def _rows_of(m: sp.csr_matrix, keep: np.ndarray, n: int) -> sp.csr_matrix:
    """``m`` with only the rows in ``keep`` (the others emptied), same shape."""
    mask = np.zeros(n, bool)
    mask[keep] = True
    return sp.csr_matrix(sp.diags(mask.astype(np.float32)) @ m)


def evaluate_side(data: str, bits: int, side: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Validation per method, test for every method, the full retrain and popularity on one held-out side."""
    from hqgnn.data import load_dataset
    from hqgnn.foldin import METHODS, FoldIn, encode_rows
    from hqgnn.run import load_run

    cfg = _config(data, args.data_dir, bits, args.tiny, args.max_seconds)
    ds = load_dataset(cfg.data)
    held_users, held_items = _held_out(ds, args.seed)
    train, val, test, seen = (ds.matrix(p) for p in (ds.train, ds.val, ds.test, ds.seen))
    full = load_run(Path(args.work) / f"{data}_full_b{bits}")
    part = load_run(Path(args.work) / f"{data}_no_{side}s_b{bits}")
    if side == "user":
        held, n = held_users, ds.n_users
        truth = {"val": _rows_of(val, held, n), "test": _rows_of(test, held, n)}
        source = {"val": train[held], "test": seen[held]}
    else:
        held, n = held_items, ds.n_items
        cols = lambda m: sp.csr_matrix(m @ sp.diags(np.isin(np.arange(n), held).astype(np.float32)))  # noqa: E731
        truth = {"val": cols(val), "test": cols(test)}
        source = {"val": train.T.tocsr()[held], "test": seen.T.tocsr()[held]}
    exclude = {"val": train, "test": seen}
    out: dict[str, Any] = {"held_out": int(len(held)), "methods": {}}
    for method in METHODS:
        fi = FoldIn(part, method)
        row = {}
        for split in ("val", "test"):
            t0 = time.perf_counter()
            rows = encode_rows(part, side, fi.vectors(side, source[split]))
            secs = time.perf_counter() - t0
            row[split] = {**_metrics(_with_rows(part, side, held, rows), truth[split], exclude[split], device),
                          "fold_in_seconds": round(secs, 4)}
        out["methods"][method] = row
    chosen = max(METHODS, key=lambda m: (out["methods"][m]["val"]["recall@20"], -METHODS.index(m)))
    out["chosen_on_validation"] = chosen
    out["full_retrain"] = _metrics(full, truth["test"], seen, device)
    out["popularity"] = _popularity(seen, truth["test"], device)
    ref = out["full_retrain"]["recall@20"]
    out["ratio_to_full_retrain"] = {m: round(out["methods"][m]["test"]["recall@20"] / ref, 4) if ref else None
                                    for m in METHODS}
    return out


def quality(args: argparse.Namespace) -> dict[str, Any]:
    datasets = ["synthetic"] if args.tiny else args.data.split(",")
    bits_list = [int(b) for b in args.bits_list.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    procs = []
    n_procs = len(datasets) * 3 * len(bits_list)
    # each child gets its share of the cores: 12 torch processes with a thread per core each oversubscribe
    # the host many times over (data loading and evaluation then crawl while the card waits)
    share = str(max(1, (os.cpu_count() or 1) // n_procs))
    env = dict(os.environ, OMP_NUM_THREADS=share, NUMBA_NUM_THREADS=share, HQGNN_NUM_THREADS=share)
    for data in datasets:
        for name in ("full", "no_users", "no_items"):
            for bits in bits_list:
                cmd = [sys.executable, __file__, "--child", name, "--data", data, "--bits", str(bits), "--work",
                       str(work), "--seed", str(args.seed), "--max-seconds", str(args.max_seconds)]
                cmd += ["--tiny"] if args.tiny else []
                cmd += ["--data-dir", args.data_dir] if args.data_dir else []
                log = open(work / f"{data}_{name}_b{bits}.log", "w")
                procs.append((cmd, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    # a stopped parent (SIGTERM from a time limit) stops its trainings too: they would hold the card
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for cmd, p, log in procs:
            if p.wait():
                raise SystemExit(f"training failed ({' '.join(cmd[2:8])}): see {log.name} in {work}")
            log.close()
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                p.kill()
    train_s = time.time() - t0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict[str, Any] = {
        "protocol": f"10% of users / items held out (seed {args.seed}); methods selected on validation recall@20",
        "recipe": "tiny synthetic" if args.tiny else
        f"configs/lightgcn_<data>.toml with train.max_seconds={args.max_seconds:g} (shipped: 170), no refit, and "
        f"{len(procs)} trainings sharing one GPU concurrently; 1-bit = the same recipe with quant.bits=1 (STE)",
        "train_wall_seconds": round(train_s, 1),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "results": {},
    }
    for data in datasets:
        for bits in bits_list:
            key = f"{data}/{'float' if not bits else f'{bits}bit'}"
            result["results"][key] = {side: evaluate_side(data, bits, side, args, device) for side in ("user", "item")}
            _write(args.out, result)
    result["wall_seconds"] = round(time.time() - t0, 1)
    return result


def timing(args: argparse.Namespace) -> dict[str, Any]:
    """CPU latency: one user's fold-in (vectors + codes) and 100,000 users at once, on gowalla-sized tables."""
    from hqgnn.config import RunConfig
    from hqgnn.foldin import FoldIn, encode_rows
    from hqgnn.run import TrainedRun

    n_users, n_items, d, per_user = (2000, 1500, 64, 27) if args.tiny else (29858, 40981, 64, 27)
    batch = 2000 if args.tiny else 100_000
    rng = np.random.default_rng(0)
    nnz = n_users * per_user
    seen = sp.csr_matrix((np.ones(nnz, np.float32), (np.repeat(np.arange(n_users), per_user),
                                                     rng.integers(0, n_items, nnz))), shape=(n_users, n_items))
    seen.sum_duplicates()
    seen.data[:] = 1
    tables = {"user_emb": torch.randn(n_users, d) * 0.1, "item_emb": torch.randn(n_items, d) * 0.1}
    out: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores", "torch_threads": torch.get_num_threads(),
                           "sizes": {"users": n_users, "items": n_items, "dim": d, "items_per_new_user": per_user},
                           "rows": {}}
    rb = sp.csr_matrix((np.ones(batch * per_user, np.float32), (np.repeat(np.arange(batch), per_user),
                                                                 rng.integers(0, n_items, batch * per_user))),
                       shape=(batch, n_items))
    for fmt in ("float", "1bit"):
        cfg = RunConfig()
        cfg.model.dim = d
        t = dict(tables)
        if fmt == "1bit":
            cfg.quant.bits, cfg.quant.estimator = 1, "ste"
            t.update(user_scale=torch.ones(n_users), item_scale=torch.ones(n_items),
                     user_codes=torch.ones(n_users, d, dtype=torch.int8), item_codes=torch.ones(n_items, d, dtype=torch.int8))
        run = TrainedRun(Path("."), cfg, {}, t, np.arange(n_users), np.arange(n_items), seen)
        assert run.quantized == (fmt == "1bit")
        for method in ("propagate", "lstsq"):
            fi = FoldIn(run, method)
            t0 = time.perf_counter()
            fi.map("user") if method == "lstsq" else None
            setup = time.perf_counter() - t0
            one, many = [], []
            for rep in range(args.reps):  # one user, many times (median); the batch a few times
                r1 = rb[rep % batch]
                t0 = time.perf_counter()
                encode_rows(run, "user", fi.vectors("user", r1))
                one.append(time.perf_counter() - t0)
            for _ in range(3):
                t0 = time.perf_counter()
                encode_rows(run, "user", fi.vectors("user", rb))
                many.append(time.perf_counter() - t0)
            out["rows"][f"{fmt}/{method}"] = {"one_user_ms_median": round(1e3 * float(np.median(one)), 4),
                                             "one_user_ms_p90": round(1e3 * float(np.percentile(one, 90)), 4),
                                             f"batch_{batch}_users_s_median": round(float(np.median(many)), 3),
                                             "setup_s (map fit, once per run)": round(setup, 3)}
    return out


def _write(path: str, obj: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="gowalla,yelp2018")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", default="/tmp/hqgnn-foldin")
    ap.add_argument("--out", default=str(HERE / "results" / "foldin.json"))
    ap.add_argument("--bits-list", default="0,1", help="the runs' bits: 0 float, 1 one-bit codes")
    ap.add_argument("--max-seconds", type=float, default=110.0, help="training budget of each run (recipe: 170)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="synthetic data on the CPU (seconds)")
    ap.add_argument("--timing", action="store_true", help="CPU timing of the fold-in itself")
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bits", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    result = timing(args) if args.timing else quality(args)
    _write(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
