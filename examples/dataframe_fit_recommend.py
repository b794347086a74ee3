"""DataFrame -> fit -> recommend -> evaluate -> save -> load, with the Python API (about 20 s on a laptop CPU).

    python examples/dataframe_fit_recommend.py [OUT_DIR]

The interactions are synthetic (hqgnn's seeded generator) with string ids, as a real log would have; replace
`logs` with your own DataFrame of (user, item) rows.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from hqgnn import HQGNN
from hqgnn.data.synthetic import make_synthetic


def main(out_dir: Path) -> None:
    pairs = make_synthetic(n_users=600, n_items=400, mean_activity=20, seed=7)  # (n, 2) int64 user, item
    logs = pd.DataFrame({"uid": [f"user-{u}" for u in pairs[:, 0]], "sku": [f"sku-{i}" for i in pairs[:, 1]]})
    test = logs.groupby("uid").tail(1)  # one held-out interaction per user, never seen by fit
    train = logs.drop(test.index)

    # bits=1: 1-bit codes trained with GSTE; every keyword is a config field (see `hqgnn config`)
    model = HQGNN(dim=32, bits=1, epochs=20, lr=5e-3, eval_every=5, sampling="user", device="cpu", seed=1)
    model.fit(train, user_col="uid", item_col="sku")

    items, scores = model.recommend(["user-0", "user-1"], k=5)  # (2, 5) arrays of sku ids, best first
    for user, row, s in zip(["user-0", "user-1"], items, scores):
        print(user, "->", ", ".join(f"{i} ({v:.3f})" for i, v in zip(row, s)))
    # held-out pairs whose item never occurs in train cannot be scored: evaluate() drops them with a warning
    metrics = model.evaluate(test, user_col="uid", item_col="sku", ks=(10, 20))
    print("held-out:", {k: round(v, 4) for k, v in metrics.items() if k.startswith(("recall", "ndcg"))})

    path = model.save(out_dir / "notebook-run")  # a run directory: `hqgnn serve` / `hqgnn recommend` read it
    again, _ = HQGNN.load(path, device="cpu").recommend(["user-0", "user-1"], k=5)
    assert (again == items).all(), "a loaded model must recommend what the saved one did"
    print(f"saved to {path}; the loaded model recommends the same items")
    print("memory per item:", model.metrics["memory"].get("bytes_per_item"), "bytes")
    assert np.isfinite(scores).all()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
