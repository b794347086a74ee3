"""Training objectives: BPR (also GSTE's Hessian estimate, so the two never drift apart) and sampled softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bpr", "bpr_from_tables", "sampled_softmax"]


def bpr(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(<u, p> - <u, n>) = softplus(<u, n - p>) over the rows of (B, d) user,
    positive-item and negative-item embeddings."""
    return F.softplus((u * (n - p)).sum(-1)).mean()


def bpr_from_tables(
    user_t: torch.Tensor, item_t: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """:func:`bpr` of the rows ``users`` / ``pos`` / ``neg`` of the given user and item tables."""
    return bpr(user_t[users], item_t[pos], item_t[neg])


def sampled_softmax(u: torch.Tensor, p: torch.Tensor, shared: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of -log softmax of <u, p> / t among <u, p> / t and <u, n> / t for every row n of
    ``shared`` (M, d): each positive against all of the batch's sampled negatives (one matrix product)."""
    pos = (u * p).sum(-1, keepdim=True) / temperature
    neg = (u @ shared.T) / temperature
    return (torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1) - pos.squeeze(1)).mean()
