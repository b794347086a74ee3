"""Where a training step's time goes on the GPU: propagation variants, a full step, a profiler table."""

from __future__ import annotations

import argparse
import time

import torch

from hqgnn.config import RunConfig
from hqgnn.data import load_dataset
from hqgnn.graph import normalized_adjacency
from hqgnn.train.trainer import Trainer


def bench(fn, n=50) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=".data")
    ap.add_argument("--batch-size", type=int, default=2048)
    args = ap.parse_args()
    cfg = RunConfig()
    cfg.data.source, cfg.data.data_dir = "gowalla", args.data_dir
    cfg.train.batch_size, cfg.train.device = args.batch_size, "cuda"
    data = load_dataset(cfg.data)
    x = torch.randn(data.n_users + data.n_items, 64, device="cuda")
    for name, dt in (("csr_int32", torch.int32), ("csr_int64", torch.int64)):
        adj = normalized_adjacency(data.train, data.n_users, data.n_items, "cuda", index_dtype=dt)
        print(f"spmm {name}: {bench(lambda: adj @ x):.3f} ms")
        print(f"spmm {name} bf16: {bench(lambda: adj.to(torch.bfloat16) @ x.bfloat16()) if False else float('nan'):.3f} ms")
    coo = adj.to_sparse_coo()
    print(f"spmm coo: {bench(lambda: torch.sparse.mm(coo, x)):.3f} ms")
    trainer = Trainer(cfg, data, progress=False)
    batches = list(trainer.sampler.epoch(args.batch_size))[:60]
    it = iter(batches * 10)

    def step():
        u, p, n = next(it)
        loss, _ = trainer.model.bpr_loss(trainer.adj, u, p, n, 1e-4)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    print(f"train step: {bench(step, 100):.3f} ms")
    print(f"full epoch estimate: {bench(step, 100) * trainer.sampler.n_batches(args.batch_size) / 1e3:.3f} s")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18))


if __name__ == "__main__":
    main()
