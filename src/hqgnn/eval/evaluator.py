"""Batched full-ranking evaluation on the model's device: score all items, mask seen ones, top-K, metrics."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..progress import Heartbeat
from ..topk import stable_topk
from .masking import _rows_of as _rows_of, exclusion_mask_fill as exclusion_mask_fill  # re-exported
from .metrics import METRICS
from .scoring import (  # the scorers: re-exported
    Scorer,
    asymmetric_scorer as asymmetric_scorer,
    code_scorer as code_scorer,
    embedding_scorer as embedding_scorer,
    served_scorer as served_scorer,
)

if TYPE_CHECKING:
    from .ranking import Ranker

log = logging.getLogger("hqgnn.eval")
CPU_EVAL_BATCH = 8192  # users per CPU ranking call: both threads busy, and progress between calls


def _terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())

TopK = Callable[[torch.Tensor, int], torch.Tensor]  # (user indices, k) -> item ids (B, k), seen items excluded


def _csr_to_device(m: sp.csr_matrix, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(m.indptr.astype(np.int64)).to(device),
        torch.from_numpy(m.indices.astype(np.int64)).to(device),
    )


class RankingEvaluator:
    """Recall / NDCG / Precision / HitRate @K over all items for every user with held-out items.

    ``truth`` holds the held-out interactions, ``exclude`` the interactions to mask (train at
    validation time; train + validation at test time). Ties are broken by lower item index.
    ``max_users > 0``: only a seeded uniform sample of that many of those users is ranked (sampled
    users, every item still ranked: the metrics are unbiased estimates of the full ones).
    """

    def __init__(
        self,
        truth: sp.csr_matrix,
        exclude: sp.csr_matrix,
        ks: Iterable[int] = (20, 50),
        device: str | torch.device = "cpu",
        batch_size: int = 0,
        distributed: bool = False,
        max_users: int = 0,
        seed: int = 2020,
    ) -> None:
        self.device = torch.device(device)
        # under torch.distributed: each rank ranks a contiguous block of users, metric sums are all-reduced
        self.distributed = distributed
        self.ks = sorted(set(int(k) for k in ks))
        self.n_users, self.n_items = truth.shape
        n_rel = np.diff(truth.indptr)
        users = np.flatnonzero(n_rel > 0)
        if 0 < max_users < len(users):  # a seeded uniform sample (sorted): metrics are its user averages
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = torch.from_numpy(users).to(self.device)
        self.n_rel = torch.from_numpy(n_rel).to(self.device)
        truth = truth.tocsr(copy=True)
        truth.sort_indices()
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), n_rel)
        # sorted (user * n_items + item) keys: membership of a top-K id is one searchsorted
        self.truth_keys = torch.from_numpy(rows * self.n_items + truth.indices.astype(np.int64)).to(self.device)
        # sorted rows: the fused CPU kernels scan each row forwards (an unsorted row would leak seen items)
        exclude = exclude.tocsr(copy=True)
        exclude.has_sorted_indices = False  # recheck: a hand-built matrix may carry a stale "sorted" flag
        exclude.sort_indices()
        self.exclude = exclude
        self.ex_indptr, self.ex_indices = _csr_to_device(exclude, self.device)
        if batch_size <= 0:
            # keep the (B, n_items) score block around 1 GiB on GPU, 64 MiB on CPU
            budget = (1 << 28) if self.device.type == "cuda" else (1 << 24)
            batch_size = max(64, budget // max(1, self.n_items))
        self.batch_size = batch_size

    def masked_topk(self, scorer: Scorer) -> TopK:
        def topk(users: torch.Tensor, k: int) -> torch.Tensor:
            scores = scorer(users)
            exclusion_mask_fill(scores, users, self.ex_indptr, self.ex_indices)
            return stable_topk(scores, k)[1]

        return topk

    @torch.no_grad()
    def evaluate_embeddings(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> dict[str, float]:
        """Metrics of inner-product scoring, ranked by :class:`hqgnn.eval.ranking.Ranker` (as served)."""
        from .ranking import Ranker

        return self.evaluate_ranker(Ranker({"user_emb": user_emb, "item_emb": item_emb}, None, self.device))

    @torch.no_grad()
    def evaluate_ranker(self, ranker: Ranker) -> dict[str, float]:
        """Metrics of the top-K a :class:`hqgnn.eval.ranking.Ranker` returns (the serving path), this
        evaluator's exclusion masked. On CPU the kernels keep only (users x K): all users in one call."""

        def topk(users: torch.Tensor, k: int) -> torch.Tensor:
            u = users.cpu().numpy()
            ids = ranker.search(u, k, exclude=self.exclude[u])[1]
            return torch.from_numpy(ids).to(users.device)

        # CPU: the kernels keep only (users x K), so batches are large (threads split each batch); still
        # several, so that long evaluations show progress
        batch = max(1, min(len(self.users), CPU_EVAL_BATCH)) if self.device.type == "cpu" else None
        return self.evaluate(topk=topk, batch_size=batch)

    @torch.no_grad()
    def evaluate(self, scorer: Scorer | None = None, topk: TopK | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """Macro-averaged metrics; pass a ``scorer`` (scores are masked here) or a ready ``topk``."""
        batch_size = batch_size or self.batch_size
        if topk is None:
            assert scorer is not None
            topk = self.masked_topk(scorer)
        kmax = max(self.ks)
        sums = {f"{name}@{k}": torch.zeros((), dtype=torch.float64, device=self.device) for name in METRICS for k in self.ks}
        mine = self.users
        if self.distributed:
            from ..device import shard

            mine = shard(self.users)
        beat = Heartbeat("evaluation users", len(mine), log)
        bar = tqdm(total=len(mine), desc="evaluation", unit="user", leave=False, mininterval=1.0,
                   disable=len(mine) <= batch_size or not _terminal())  # a bar only where it can show
        for start in range(0, len(mine), batch_size):
            users = mine[start : start + batch_size]
            ids = topk(users, kmax)
            keys = users.reshape(-1, 1) * self.n_items + ids.clamp(min=0)
            found = torch.searchsorted(self.truth_keys, keys).clamp(max=len(self.truth_keys) - 1)
            hits = (self.truth_keys[found] == keys) & (ids >= 0)
            n_rel = self.n_rel[users]
            for name, fn in METRICS.items():
                for k in self.ks:
                    sums[f"{name}@{k}"] += fn(hits, n_rel, k).sum()
            bar.update(len(users))
            beat.tick(start + len(users))
        bar.close()
        n = max(1, len(self.users))
        if self.distributed:
            from ..device import all_reduce_sum

            keys = list(sums)
            total = all_reduce_sum(torch.stack([*sums.values(), torch.tensor(float(len(mine)), dtype=torch.float64,
                                                                               device=self.device)]))
            sums, n = dict(zip(keys, total[:-1])), max(1, int(round(float(total[-1]))))
        return {key: float(v) / n for key, v in sums.items()}
