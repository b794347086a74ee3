"""Scale ladder (issue 27): generate or reuse a rung, load, train float and 1-bit QAT, evaluate, index, one JSON.

Usage (repo root)::

    PYTHONPATH=src python benchmarks/scale_ladder.py --interactions 10M --data /tmp/scale/r10m \\
        --device cpu --out benchmarks/results/scale_cpu_10m.json

Every phase records its wall time, the peak host RSS during the phase (a sampling thread reading
/proc/self/statm every 10 ms) and, on CUDA, ``torch.cuda.max_memory_allocated`` of the phase.
Evaluation ranks every item for a seeded sample of ``--eval-users`` users (``eval.max_users``).
"Planted" precision@K: the share of a user's top-K (train items excluded) that lie in the user's
planted primary or secondary community, for the model, a popularity ranking and random items.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")
GIB = float(1 << 30)


class Phase:
    """Wall time, peak host RSS (sampled) and peak CUDA memory of a ``with`` block."""

    def __init__(self, name: str, device: torch.device, record: dict[str, Any]) -> None:
        self.name, self.device, self.record = name, device, record
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> dict[str, Any]:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.peak = self.rss()
        self.out: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self.out

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        self.out.update(seconds=round(seconds, 3), peak_rss_gib=round(self.peak / GIB, 3))
        if self.device.type == "cuda":
            self.out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
        self.record[self.name] = {**self.record.get(self.name, {}), **self.out}
        print(f"[scale] {self.name}: {json.dumps(self.out)}", file=sys.stderr, flush=True)


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def planted_share(ids: np.ndarray, users: np.ndarray, user_comm: np.ndarray, item_comm: np.ndarray) -> float:
    """Mean over users of the share of their (valid) top-K ids in their primary or secondary community."""
    comm = item_comm[np.maximum(ids, 0)]
    uc = np.asarray(user_comm[users])
    hit = ((comm == uc[:, :1]) | (comm == uc[:, 1:2])) & (ids >= 0)
    return float((hit.sum(1) / np.maximum(1, (ids >= 0).sum(1))).mean())


def top_ids(ranker: Any, users: np.ndarray, exclude: Any, k: int, batch: int) -> np.ndarray:
    """Top-k item ids of ``users`` (exclusion rows of a scipy CSR), in bounded batches."""
    return np.concatenate([ranker.search(users[s], k, exclude=exclude[users[s]])[1]
                           for s in batches(len(users), batch)])


def planted(rec: dict[str, Any], name: str, ranker: Any, ev: Any, user_comm: np.ndarray, item_comm: np.ndarray,
            k: int, batch: int) -> None:
    users = ev.users.cpu().numpy()
    ids = top_ids(ranker, users, ev.exclude, k, batch)
    rec.setdefault("planted", {})[f"{name}_precision@{k}"] = round(planted_share(ids, users, user_comm, item_comm), 4)


def run_rung(args: argparse.Namespace) -> dict[str, Any]:
    from hqgnn.config import RunConfig
    from hqgnn.data import load_lightgcn_dir
    from hqgnn.data.synth_scale import SynthSpec, generate, load_planted
    from hqgnn.eval.ranking import Ranker
    from hqgnn.index.format import CodeFormat
    from hqgnn.train.trainer import Trainer

    device = torch.device(args.device)
    spec = SynthSpec.for_interactions(args.interactions, seed=args.seed)
    rec: dict[str, Any] = {"rung": args.interactions, "device": device_label(device),
                           "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                    "torch": torch.__version__, "threads": torch.get_num_threads()}}
    data_dir = Path(args.data)
    if not (data_dir / "synth.json").exists():
        with Phase("generate", device, rec):
            generate(data_dir, spec, progress=True, workers=args.gen_workers)
    rec["synth"] = json.loads((data_dir / "synth.json").read_text())
    with Phase("load", device, rec) as out:
        data = load_lightgcn_dir(data_dir)
        out.update(users=data.n_users, items=data.n_items, train=len(data.train), test=len(data.test))
    user_comm, item_comm = load_planted(data_dir)
    bs = args.batch_size or max(2048, len(data.train) // args.steps_per_epoch)
    rec["train_config"] = {"dim": args.dim, "layers": args.layers, "batch_size": bs, "lr": args.lr,
                           "epochs": args.epochs, "eval_users": args.eval_users}
    k = 20
    for bits in args.bits:
        tag = "float" if bits == 0 else f"qat{bits}"
        cfg = RunConfig()
        cfg.model.dim, cfg.model.layers = args.dim, args.layers
        cfg.train.device, cfg.train.batch_size, cfg.train.lr, cfg.train.epochs = args.device, bs, args.lr, args.epochs
        cfg.train.seed, cfg.eval.ks, cfg.eval.max_users = args.seed, [20], args.eval_users
        cfg.train.cuda_graph = not args.no_cuda_graph
        cfg.quant.bits = bits
        if bits:
            cfg.quant.delta_batches, cfg.quant.hutchinson_max_probes = args.delta_batches, args.max_probes
        with Phase(f"{tag}_setup", device, rec):
            trainer = Trainer(cfg, data, progress=False)
        if bits:
            with Phase(f"{tag}_delta", device, rec) as out:
                out.update({kk: round(float(v), 6) for kk, v in trainer.estimate_delta().items()})
        epochs = []
        for epoch in range(args.epochs):
            with Phase(f"{tag}_epoch", device, rec) as out:
                trainer.model.train()
                out["loss"] = round(trainer.train_epoch(epoch + 1), 5)
                out["steps"] = trainer.sampler.n_batches(bs)
            epochs.append(rec[f"{tag}_epoch"]["seconds"])
        rec[f"{tag}_epoch"]["all_epoch_seconds"] = epochs
        with Phase(f"{tag}_eval", device, rec) as out:  # first call: includes kernel compilation (numba / Triton)
            out.update(users=len(trainer.test_eval.users), **trainer.evaluate("test"))
        t0 = time.perf_counter()
        trainer.evaluate("test")
        rec[f"{tag}_eval"]["seconds_warm"] = round(time.perf_counter() - t0, 3)
        trainer.model.eval()
        eval_batch = 8192 if device.type == "cpu" else max(64, (1 << 28) // max(1, data.n_items))
        with torch.no_grad():
            if bits:
                tables = {kk: v.detach() for kk, v in trainer.model.codes(trainer.adj).items()}
                fmt = CodeFormat.from_config(cfg.quant, dim=int(tables["item_codes"].shape[1]),
                                             term="item_term" in tables)
                with Phase(f"{tag}_index_build", device, rec) as out:
                    ranker = Ranker(tables, fmt, device)
                q = trainer.test_eval.users.cpu().numpy()[: args.search_queries]
                with Phase(f"{tag}_search", device, rec) as out:
                    top_ids(ranker, q, trainer.test_eval.exclude, k, eval_batch)
                rec[f"{tag}_search"].update(queries=len(q), k=k,
                                            qps=round(len(q) / max(1e-9, rec[f"{tag}_search"]["seconds"]), 1))
            else:
                users_t, items_t = trainer.model.final(trainer.adj)
                ranker = Ranker({"user_emb": users_t.detach(), "item_emb": items_t.detach()}, None, device)
            with Phase(f"{tag}_planted", device, rec):
                planted(rec, tag, ranker, trainer.test_eval, user_comm, item_comm, k, eval_batch)
                if bits == args.bits[0]:
                    baselines(rec, data, trainer.test_eval, user_comm, item_comm, device, k, eval_batch)
        del trainer, ranker
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rec["peak_rss_gib_process"] = round(max(v.get("peak_rss_gib", 0) for v in rec.values() if isinstance(v, dict)), 3)
    return rec


def baselines(rec: dict[str, Any], data: Any, ev: Any, user_comm: np.ndarray, item_comm: np.ndarray,
              device: torch.device, k: int, batch: int) -> None:
    """Popularity ranking (train degree, as a 1-d float model) and uniformly random items, same users."""
    from hqgnn.eval.ranking import Ranker

    deg = np.bincount(data.train[:, 1], minlength=data.n_items).astype(np.float32)
    pop = Ranker({"user_emb": torch.ones(data.n_users, 1), "item_emb": torch.from_numpy(deg)[:, None]}, None, device)
    planted(rec, "popularity", pop, ev, user_comm, item_comm, k, batch)
    rec.setdefault("popularity_eval", {}).update(ev.evaluate_ranker(pop))
    users = ev.users.cpu().numpy()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, data.n_items, (len(users), k))
    rec["planted"][f"random_precision@{k}"] = round(planted_share(ids, users, user_comm, item_comm), 4)


def device_label(device: torch.device) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_common import device_name

    return device_name(str(device), torch.get_num_threads())


def count(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interactions", type=count, required=True, help="rung size: 1M, 10M, 30M, 100M")
    p.add_argument("--data", required=True, help="rung directory (generated there when it has no synth.json)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bits", type=lambda s: [int(b) for b in s.split(",")], default=[0, 1],
                   help="comma list: 0 = float, 1 = 1-bit QAT")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=0, help="0: train pairs / --steps-per-epoch (>= 2048)")
    p.add_argument("--steps-per-epoch", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--eval-users", type=int, default=10_000)
    p.add_argument("--search-queries", type=int, default=10_000)
    p.add_argument("--delta-batches", type=int, default=1)
    p.add_argument("--max-probes", type=int, default=8)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--gen-workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)),
                   help="processes generating a missing rung (the bytes do not depend on it)")
    p.add_argument("--no-cuda-graph", action="store_true")
    args = p.parse_args(argv)
    rec = run_rung(args)
    from hqgnn.io import write_json

    write_json(Path(args.out), rec)  # atomic: a killed run leaves no half-written JSON
    return rec


if __name__ == "__main__":
    main()

