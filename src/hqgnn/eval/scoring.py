"""Score functions of every served format: floats, symmetric codes, float or b-bit queries against item codes."""

from __future__ import annotations

from typing import Callable

import torch

Scorer = Callable[[torch.Tensor], torch.Tensor]  # user indices (B,) -> scores (B, n_items)


def embedding_scorer(user_emb: torch.Tensor, item_emb: torch.Tensor) -> Scorer:
    """Inner-product scores from float embeddings."""
    item_t = item_emb.t().contiguous()
    return lambda users: user_emb[users] @ item_t


def code_scorer(
    user_codes: torch.Tensor, user_scale: torch.Tensor, item_codes: torch.Tensor, item_scale: torch.Tensor
) -> Scorer:
    """Scores from integer codes: <c_u, c_i> (exact in float32 for |c| <= 128, d <= 1024) * s_u * s_i.

    This is the formula the retrieval engine uses, so model selection sees what serving returns.
    """
    item_t = item_codes.float().t().contiguous()
    s_i = item_scale.float().reshape(1, -1) if item_scale.numel() > 1 else item_scale.float().reshape(1, 1)
    s_u = user_scale.float()

    def score(users: torch.Tensor) -> torch.Tensor:
        dots = user_codes[users].float() @ item_t
        su = s_u[users].reshape(-1, 1) if s_u.numel() > 1 else s_u.reshape(1, 1)
        return dots * su * s_i

    return score


def asymmetric_scorer(
    user_query: torch.Tensor, item_codes: torch.Tensor, item_scale: torch.Tensor, item_term: torch.Tensor | None = None
) -> Scorer:
    """Float queries against item codes: s_i * <x_u, c_i> + t_i (the asymmetric code format)."""
    item_t = item_codes.float().t().contiguous()
    s_i = item_scale.float().reshape(1, -1) if item_scale.numel() > 1 else item_scale.float().reshape(1, 1)
    t_i = None if item_term is None else item_term.float().reshape(1, -1)
    q = user_query.float()

    def score(users: torch.Tensor) -> torch.Tensor:
        out = (q[users] @ item_t) * s_i
        return out if t_i is None else out + t_i

    return score


def served_scorer(tables: dict[str, torch.Tensor]) -> Scorer:
    """The scorer of whatever code format ``tables`` hold (a run's tables.safetensors or a model's codes()):
    float queries (``user_query``) or user codes, against item codes, plus ``item_term`` where stored."""
    if "user_query" in tables:
        return asymmetric_scorer(tables["user_query"], tables["item_codes"], tables["item_scale"], tables.get("item_term"))
    base = code_scorer(tables["user_codes"], tables["user_scale"], tables["item_codes"], tables["item_scale"])
    if "item_term" not in tables:
        return base
    t_i = tables["item_term"].float().reshape(1, -1)
    return lambda users: base(users) + t_i
