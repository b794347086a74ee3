"""Top-K ranking metrics (LightGCN definitions), per user, from a hit matrix.

``hits`` is a (B, K') bool tensor: ``hits[u, r]`` says whether the item ranked r (0-based) for user u
is one of the user's held-out items; ``n_rel`` (B,) is the number of held-out items |test_u| >= 1.
Each function returns a (B,) float tensor; the evaluator macro-averages over users.
"""

from __future__ import annotations

import torch


def recall_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """hits in the top k / |test_u|."""
    return hits[:, :k].sum(1).double() / n_rel.double()


def precision_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """hits in the top k / k."""
    return hits[:, :k].sum(1).double() / k


def hit_rate_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """1 if any held-out item is in the top k."""
    return hits[:, :k].any(1).double()


def ndcg_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """DCG@k / IDCG@k with gain 1/log2(rank + 2); the ideal list has min(|test_u|, k) hits."""
    k = min(k, hits.shape[1])
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, device=hits.device, dtype=torch.float64))
    dcg = (hits[:, :k].double() * discounts).sum(1)
    ideal_cum = torch.cumsum(discounts, 0)
    n_ideal = n_rel.clamp(max=k).long()
    idcg = ideal_cum[n_ideal - 1]
    return dcg / idcg


METRICS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "precision": precision_at_k,
    "hit_rate": hit_rate_at_k,
}
