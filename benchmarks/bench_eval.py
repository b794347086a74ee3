"""Full-ranking evaluation time over all test users (scores, masking, top-K, metrics), float and 1-bit codes.

Embeddings are random: the time does not depend on their values. Prints / writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hqgnn.config import DataConfig
from hqgnn.data import load_dataset
from hqgnn.eval import RankingEvaluator, code_scorer
from hqgnn.io import write_json
from hqgnn.train.pipeline import device_name


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    data = load_dataset(DataConfig(source=args.data, data_dir=args.data_dir))
    ev = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), [20, 50], device)
    g = torch.Generator().manual_seed(0)
    users = torch.randn(data.n_users, 64, generator=g).to(device)
    items = torch.randn(data.n_items, 64, generator=g).to(device)
    float_times = timed(lambda: ev.evaluate_embeddings(users, items), device, args.repeats)
    codes = code_scorer(torch.sign(users).to(torch.int8), users.abs().mean(1), torch.sign(items).to(torch.int8),
                        items.abs().mean(1))
    code_times = timed(lambda: ev.evaluate(codes), device, args.repeats)
    result = {
        "data": args.data, "device": device_name(device), "users_evaluated": int(len(ev.users)),
        "items": data.n_items, "batch_size": ev.batch_size, "ks": [20, 50],
        "float32_seconds_median": float(np.median(float_times)), "float32_seconds": float_times,
        "codes_1bit_seconds_median": float(np.median(code_times)), "codes_1bit_seconds": code_times,
    }
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
