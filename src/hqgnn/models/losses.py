"""The BPR loss: one function for training and for GSTE's Hessian estimate, so the two never drift apart."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bpr", "bpr_from_tables"]


def bpr(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(<u, p> - <u, n>) = softplus(<u, n - p>) over the rows of (B, d) user,
    positive-item and negative-item embeddings."""
    return F.softplus((u * (n - p)).sum(-1)).mean()


def bpr_from_tables(
    user_t: torch.Tensor, item_t: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """:func:`bpr` of the rows ``users`` / ``pos`` / ``neg`` of the given user and item tables."""
    return bpr(user_t[users], item_t[pos], item_t[neg])
