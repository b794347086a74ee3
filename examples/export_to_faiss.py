"""`hqgnn export RUN --out F.npz --faiss PREFIX`, then search the exported FAISS index (about 15 s on a laptop CPU).

    python examples/export_to_faiss.py [OUT_DIR]

For a quantized run, PREFIX.dequantized_ip.faiss is an exact inner-product index over the dequantized item codes
(codes x scale): its top-K equals what `hqgnn recommend --include-seen` serves, up to float ties. The export's
`item_ids` map FAISS rows back to your item ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np

HQGNN = [sys.executable, "-m", "hqgnn"]  # the `hqgnn` command of this Python environment
K = 10


def main(out_dir: Path) -> None:
    run = out_dir / "run"
    subprocess.run([*HQGNN, "train", "--out", str(run), "--epochs", "10", "--eval-every", "5", "--dim", "32",
                    "--bits", "1", "--device", "cpu", "-q", "--set", "data.synthetic_users=500",
                    "--set", "data.synthetic_items=300", "--set", "train.lr=5e-3"], check=True)
    subprocess.run([*HQGNN, "export", str(run), "--out", str(out_dir / "emb.npz"), "--faiss",
                    str(out_dir / "items")], check=True)

    emb = np.load(out_dir / "emb.npz")  # no pickle: ids are int64 or unicode arrays
    index = faiss.read_index(str(out_dir / "items.dequantized_ip.faiss"))
    # the queries as the run scores them: the user's codes times its scale (float32, as FAISS wants)
    queries = (emb["user_codes"].astype(np.float32) * emb["user_scale"].reshape(-1, 1)).astype(np.float32)
    if "item_term" in emb.files:  # runs with a per-item term store it as one more dimension (query side: 1)
        queries = np.hstack([queries, np.ones((len(queries), 1), np.float32)])
    scores, rows = index.search(queries[:3], K)
    for u in range(3):
        print(f"user {emb['user_ids'][u]} -> items {emb['item_ids'][rows[u]].tolist()}")

    # the same top-K from the run itself (seen items included, as the FAISS index knows nothing of them)
    served = subprocess.run([*HQGNN, "recommend", str(run), "--user", str(emb["user_ids"][0]), "-k", str(K),
                             "--include-seen", "--json"], check=True, capture_output=True, text=True)
    served_scores = np.array([r["score"] for r in json.loads(served.stdout)["items"]])
    np.testing.assert_allclose(scores[0], served_scores, rtol=1e-4, atol=1e-5)  # ids may swap only on exact ties
    print(f"FAISS top-{K} scores equal `hqgnn recommend --include-seen` for user {emb['user_ids'][0]}")
    print("index files:", sorted(p.name for p in out_dir.glob("items.*")))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
