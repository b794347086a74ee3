"""Two-stage retrieval (HashGNN's protocol): top-C by the codes, re-ranked with the float embeddings.

For a finished 1-bit (or b-bit) run: test Recall/NDCG@20 and queries/s of (a) the codes alone,
(b) codes -> top-C -> float re-rank for several C, (c) the float embeddings alone (upper bound).

    python benchmarks/bench_rerank.py RUN_DIR [--candidates 50,100,200,500] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hqgnn.data import load_dataset
from hqgnn.eval import RankingEvaluator
from hqgnn.eval.cpu_topk import float_topk_cpu
from hqgnn.index import search_rerank
from hqgnn.recommender import Recommender
from hqgnn.run import load_run
from hqgnn.train.pipeline import device_name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--candidates", default="50,100,200,500")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    run = load_run(args.run)
    assert run.quantized, "needs a quantized run"
    data = load_dataset(run.config.data)
    ev = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), [20], "cpu")
    rec = Recommender(run)
    t = run.tables
    codes, scale = t["user_codes"].numpy(), t["user_scale"].numpy()
    uf, itf = t["user_emb"].numpy(), t["item_emb"].numpy()
    n_users = len(ev.users)

    def timed_eval(topk) -> dict:
        t0 = time.perf_counter()
        m = ev.evaluate(topk=topk, batch_size=n_users)
        return {"recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"], "qps": n_users / (time.perf_counter() - t0)}

    def codes_only(users, k):
        return torch.from_numpy(rec.recommend(users.numpy(), k)[1])

    rows = [{"method": "codes", **timed_eval(codes_only)}]
    for c in [int(x) for x in args.candidates.split(",")]:
        def rerank(users, k, c=c):
            u = users.numpy()
            _, ids = search_rerank(rec.index, codes[u], uf[u], itf, k, candidates=c,
                                             query_scales=scale[u] if scale.ndim else scale, exclude=run.seen[u])
            return torch.from_numpy(np.asarray(ids))
        rows.append({"method": f"codes top-{c} + float re-rank", "candidates": c, **timed_eval(rerank)})

    def float_only(users, k):
        return float_topk_cpu(torch.from_numpy(uf), torch.from_numpy(itf), users, ev.ex_indptr, ev.ex_indices, k)[1]

    rows.append({"method": "float embeddings (upper bound)", **timed_eval(float_only)})
    out = {"run": args.run, "bits": run.bits, "data": data.name, "device": device_name(torch.device("cpu")),
           "users": n_users, "items": run.n_items, "rows": rows}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
