"""Latency / accuracy trade-off: retrieval queries/s (1M items) against gowalla Recall@20, per bit width.

Reads benchmarks/results/{retrieval_cpu,retrieval_cuda,quant_table}.json, writes
benchmarks/results/tradeoff_<dataset>.png. Recall@20 is the STE row of the quantization table (the
1-bit mean over seeds); float32 is torch matmul+topk; FAISS points use the same Recall as the bit width
they serve (IndexBinaryFlat ranks by pure Hamming distance, so its real recall is at most the 1-bit one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(dataset: str = "gowalla") -> None:
    table = [r for r in json.loads((RESULTS / "quant_table.json").read_text()) if r["dataset"] == dataset]
    recall = {b: np.mean([r["recall@20"] for r in table if r["bits"] == b and r["estimator"] in ("ste", "none")])
              for b in (0, 1, 2, 4, 8)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, name in zip(axes, ("cpu", "cuda")):
        runs = json.loads((RESULTS / f"retrieval_{name}.json").read_text())["runs"]
        device = runs[0]["device"]
        for label, key, marker in (("hqgnn codes", "hqgnn", "o"), ("FAISS", "faiss", "^")):
            pts = [(r["qps"][key], recall[r["bits"]], r["bits"]) for r in runs if r["qps"].get(key)]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=60, label=label)
                for q, rc, b in pts:
                    ax.annotate(f"{b}-bit", (q, rc), textcoords="offset points", xytext=(5, 3), fontsize=8)
        f32 = np.median([r["qps"]["torch_float32"] for r in runs])
        ax.scatter([f32], [recall[0]], marker="*", s=150, color="black", label="torch float32")
        if name == "cuda":
            bf = np.median([r["qps"]["torch_bf16"] for r in runs])
            ax.scatter([bf], [recall[0]], marker="*", s=150, color="gray", label="torch bf16")
        ax.set_xscale("log")
        ax.set_xlabel("queries / s (1M items, d = 64, top-20, exact)")
        ax.set_title(device)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{dataset} Recall@20 (test)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"tradeoff_{dataset}.png", dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
