"""Scale plan (issue 27): memory and step-time model of full-graph training, sharded plans to 1B users, serving.

Usage (repo root)::

    python benchmarks/scale_plan.py --measured benchmarks/results/scale_cpu.json --out benchmarks/results/scale_plan.json

The model (docs/scale.md explains every term) is checked against the measured ladder rungs given
with ``--measured`` (a JSON list of scale_ladder.py records, or one record): predicted device bytes
of a float epoch vs the measured peak (GPU: ``max_memory_allocated``; CPU: the epoch's peak RSS
minus the RSS before training), and the step time fitted on the measured rungs of one device.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

GIB = float(1 << 30)
F32 = 4


def full_graph_bytes(users: int, items: int, train: int, dim: int = 64, layers: int = 3, bits: int = 0,
                     test: int = 0) -> dict[str, float]:
    """Device bytes of one-GPU full-graph LightGCN training (hqgnn's Trainer), by component."""
    n = users + items
    table = F32 * n * dim
    out = {
        "embedding": table,
        "gradient": table,
        "adam_state": 2 * table,
        # the symmetric SpMM saves no E^(l) for backward (it needs only A): the final table, the running
        # sum and the gradient buffers of the backward pass, ~L + 1 tables at the peak (checked on the rungs)
        "activations": (layers + 1) * table,
        "quantizer": (2 * table) if bits else 0.0,  # dequantized copies of the final tables (STE/GSTE)
        "adjacency": 2 * train * (4 + 4) + 4 * (n + 1),  # int32 CSR + float32 values, symmetric
        "sampler": 3 * 8 * train + 3 * 8 * users + 5 * 8 * train,  # users/items/keys + one epoch's triples
        "evaluator": 8 * (train + test) + 16 * users,  # exclusion CSR + truth keys on the device
    }
    out["total"] = sum(out.values())
    return out


def step_flops(users: int, items: int, train: int, dim: int, layers: int) -> tuple[float, float]:
    """(sparse gather-FMAs, dense table elements) touched by one full-graph training step."""
    return 2 * layers * 2 * train * dim, 8.0 * (users + items) * dim  # fwd + bwd SpMM; Adam + grad passes


def fit_step_model(points: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Least-squares (a, b) >= 0 of ``seconds = a * sparse + b * dense`` through measured (sparse, dense, s)."""
    if len(points) == 1:
        s, d, t = points[0]
        return t / s, 0.0
    sxx = sum(s * s for s, _, _ in points)
    syy = sum(d * d for _, d, _ in points)
    sxy = sum(s * d for s, d, _ in points)
    sxt = sum(s * t for s, _, t in points)
    syt = sum(d * t for _, d, t in points)
    det = sxx * syy - sxy * sxy
    a, b = (sxt * syy - syt * sxy) / det, (syt * sxx - sxt * sxy) / det
    if a < 0 or b < 0:  # collinear / noisy points: sparse term only
        return sum(t for _, _, t in points) / sum(s for s, _, _ in points), 0.0
    return a, b


# A rough H100 prior until GPU rungs are measured: SpMM streams ~1 TB/s of gathered 256 B rows, dense at ~2 TB/s.
H100_PRIOR = (F32 / 1.0e12, F32 / 2.0e12)


def sharded_plan(users: int, items: int, inter_per_user: float, dim: int, gpus: int, gpu_gib: float,
                 fanout: tuple[int, ...], batch_per_gpu: int, optimizer: str) -> dict[str, Any]:
    """TorchRec row-wise sharded tables + sampled L-hop subgraphs: per-GPU memory and per-step traffic."""
    n = users + items
    state_per_row = {"adam": 2 * dim * F32, "rowwise_adagrad": F32, "sgd": 0}[optimizer]
    table_b = n * (dim * F32 + state_per_row)
    per_gpu_table = table_b / gpus
    # rows of one triple's subgraph: each of (user, pos, neg) and its sampled neighbours, per layer
    rows_per_seed = sum(math.prod(fanout[:k]) for k in range(len(fanout) + 1))
    rows = 3 * batch_per_gpu * rows_per_seed
    act_b = rows * dim * F32 * (2 * len(fanout) + 3)  # a subgraph's layers are gathered rows: all kept
    remote = (gpus - 1) / gpus  # row-wise sharding: a row is local with probability 1 / gpus
    comm_b = 2 * rows * dim * F32 * remote  # rows forward (all-to-all) + their gradients backward
    return {"gpus": gpus, "optimizer": optimizer, "table_and_state_gib": table_b / GIB,
            "per_gpu_table_gib": per_gpu_table / GIB, "per_gpu_activations_gib": act_b / GIB,
            "per_gpu_total_gib": (per_gpu_table + act_b) / GIB, "fits": (per_gpu_table + act_b) / GIB < 0.85 * gpu_gib,
            "rows_per_step_per_gpu": rows, "comm_per_step_per_gpu_gib": comm_b / GIB,
            "edges": users * inter_per_user}


def serving_bytes(users: int, items: int, dim: int, bits: int, scale_bytes: int = 2) -> dict[str, float]:
    """Codes (bit-packed) + per-row scales of both tables: what serving from codes holds."""
    per_row = math.ceil(dim * bits / 8) + scale_bytes
    return {"bytes_per_row": per_row, "users_gib": users * per_row / GIB, "items_gib": items * per_row / GIB,
            "float32_gib": (users + items) * dim * F32 / GIB}


def check(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Model vs measurement for each measured rung (memory), and the step-time fit per device."""
    rows = []
    by_device: dict[str, list[tuple[float, float, float]]] = {}
    for r in records:
        load, cfg = r["load"], r["train_config"]
        mem = full_graph_bytes(load["users"], load["items"], load["train"], cfg["dim"], cfg["layers"], 0, load["test"])
        qmem = full_graph_bytes(load["users"], load["items"], load["train"], cfg["dim"], cfg["layers"], 1, load["test"])
        ep = r.get("float_epoch", {})
        measured, qat = _measured(ep, load), _measured(r.get("qat1_epoch", {}), load)
        sparse, dense = step_flops(load["users"], load["items"], load["train"], cfg["dim"], cfg["layers"])
        step_s = ep.get("seconds", 0.0) / max(1, ep.get("steps", 1))
        by_device.setdefault(r["device"], []).append((sparse, dense, step_s))
        rows.append({"rung": r["rung"], "device": r["device"], "predicted_gib": round(mem["total"] / GIB, 3),
                     "measured_gib": round(measured, 3), "ratio": round(measured / max(1e-9, mem["total"] / GIB), 3),
                     "qat_predicted_gib": round(qmem["total"] / GIB, 3), "qat_measured_gib": round(qat, 3),
                     "step_seconds": round(step_s, 4), "sparse": sparse, "dense": dense})
    for row in rows:
        a, b = fit_step_model(by_device[row["device"]])
        pred = a * row["sparse"] + b * row["dense"]
        row.update(step_model=(a, b), predicted_step_seconds=round(pred, 4))
    return rows


def _measured(epoch: dict[str, Any], load: dict[str, Any]) -> float:
    """GPU: the epoch's max_memory_allocated; CPU: its peak RSS over the RSS once the data was loaded."""
    if "peak_gpu_gib" in epoch:
        return float(epoch["peak_gpu_gib"])
    return float(epoch.get("peak_rss_gib", 0.0)) - float(load["peak_rss_gib"]) if epoch else 0.0


def ladder(step_model: tuple[float, float], steps_per_epoch: int, dim: int = 64, layers: int = 3) -> list[dict[str, Any]]:
    """The four rungs on one GPU: memory (float / QAT), and epoch time at ``steps_per_epoch`` steps."""
    out = []
    for n in (1_000_000, 10_000_000, 30_000_000, 100_000_000):
        users, items, train = n // 10, n // 50, int(0.8 * n)
        f = full_graph_bytes(users, items, train, dim, layers, 0, n - train)
        q = full_graph_bytes(users, items, train, dim, layers, 1, n - train)
        sparse, dense = step_flops(users, items, train, dim, layers)
        step = step_model[0] * sparse + step_model[1] * dense
        out.append({"interactions": n, "users": users, "items": items, "float_gib": round(f["total"] / GIB, 2),
                    "qat_gib": round(q["total"] / GIB, 2), "batch_size": max(2048, train // steps_per_epoch),
                    "step_seconds": round(step, 4), "epoch_seconds": round(step * steps_per_epoch, 1),
                    "breakdown_gib": {k: round(v / GIB, 2) for k, v in q.items()}})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measured", nargs="*", default=[], help="scale_ladder JSON files (a record or a list)")
    p.add_argument("--out", default="", help="JSON file to write")
    p.add_argument("--steps-per-epoch", type=int, default=500)
    p.add_argument("--gpu-gib", type=float, default=80.0)
    args = p.parse_args(argv)
    records: list[dict[str, Any]] = []
    for path in args.measured:
        raw = json.loads(Path(path).read_text())
        records += raw if isinstance(raw, list) else [raw]
    checked = check(records) if records else []
    gpu_fit = [c["step_model"] for c in checked if "H100" in c["device"] or "H200" in c["device"]]
    model = tuple(gpu_fit[-1]) if gpu_fit else H100_PRIOR
    plans = []
    for users, items in ((100_000_000, 5_000_000), (300_000_000, 10_000_000), (1_000_000_000, 20_000_000)):
        for gpus, opt in ((8, "adam"), (8, "rowwise_adagrad"), (16, "adam"), (32, "adam")):
            plans.append({"users": users, "items": items,
                          **sharded_plan(users, items, 10, 64, gpus, args.gpu_gib, (10, 5, 2), 4096, opt)})
    result = {"check": checked, "one_gpu_ladder": ladder(model, args.steps_per_epoch),
              "step_model": {"source": "measured GPU rungs" if gpu_fit else "H100 prior (to be measured)",
                             "seconds_per_sparse_fma": model[0], "seconds_per_dense_element": model[1]},
              "sharded": plans,
              "serving": {f"{u // 1_000_000}M_users": serving_bytes(u, i, 64, 1)
                          for u, i in ((100_000_000, 5_000_000), (1_000_000_000, 20_000_000))}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for row in checked:
        print(f"check {row['rung']:>11,} on {row['device'][:30]}: memory predicted {row['predicted_gib']:.2f} GiB, "
              f"measured {row['measured_gib']:.2f} GiB (QAT {row['qat_predicted_gib']:.2f} / {row['qat_measured_gib']:.2f}); step {row['step_seconds']:.3f}s, model {row['predicted_step_seconds']:.3f}s")
    for row in result["one_gpu_ladder"]:
        print(f"1 GPU {row['interactions']:>11,}: float {row['float_gib']:6.1f} GiB, QAT {row['qat_gib']:6.1f} GiB, "
              f"batch {row['batch_size']:,}, epoch {row['epoch_seconds']:.0f}s ({result['step_model']['source']})")
    return result


if __name__ == "__main__":
    main()
