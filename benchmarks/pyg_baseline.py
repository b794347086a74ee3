"""Baseline: PyTorch Geometric's LightGCN with the training loop of PyG's LightGCN example, timed per epoch.

Same data and the same training edges as hqgnn: the LightGCN split, minus the per-user validation
split hqgnn carves from train.txt (``--val-ratio`` and ``--seed`` feed the same ``DataConfig``, so the
edges are identical; default 0.05 = the benchmark recipe; 0 = all of train.txt), 3 layers, d = 64,
Adam 1e-3, one uniform negative per positive, ``recommendation_loss`` (BPR + L2 on the touched nodes).
Prints one JSON line.
Needs torch_geometric (installed on the GPU image).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch_geometric.nn import LightGCN

from hqgnn.config import DataConfig
from hqgnn.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--val-ratio", type=float, default=0.05, help="as hqgnn's data.val_ratio (benchmark recipe: 0.05)")
    ap.add_argument("--seed", type=int, default=DataConfig.seed, help="as hqgnn's data.seed")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset(DataConfig(source=args.data, data_dir=args.data_dir, val_ratio=args.val_ratio, seed=args.seed))
    nu, ni = data.n_users, data.n_items
    pairs = torch.from_numpy(data.train).to(device)
    label_index = torch.stack([pairs[:, 0], pairs[:, 1] + nu])  # user -> item edges used as labels
    edge_index = torch.cat([label_index, label_index.flip(0)], 1)  # message passing in both directions
    model = LightGCN(num_nodes=nu + ni, embedding_dim=64, num_layers=3).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(range(label_index.size(1)), shuffle=True, batch_size=args.batch_size)
    times = []
    for _ in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for idx in loader:
            pos = label_index[:, idx]
            neg = torch.stack([pos[0], torch.randint(nu, nu + ni, (idx.numel(),), device=device)])
            eli = torch.cat([pos, neg], 1)
            opt.zero_grad()
            pos_rank, neg_rank = model(edge_index, eli).chunk(2)
            loss = model.recommendation_loss(pos_rank, neg_rank, node_id=eli.unique())
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(json.dumps({"baseline": "pyg_lightgcn_example_loop", "device": name, "batch_size": args.batch_size,
                      "val_ratio": args.val_ratio, "train_edges": int(len(data.train)),
                      "epoch_seconds": times, "epoch_seconds_median": float(np.median(times))}))


if __name__ == "__main__":
    main()
