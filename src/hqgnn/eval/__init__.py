"""Full-ranking evaluation: metrics and the batched evaluator."""

from .evaluator import (
    RankingEvaluator,
    asymmetric_scorer,
    code_scorer,
    embedding_scorer,
    exclusion_mask_fill,
    served_scorer,
)
from .metrics import hit_rate_at_k, ndcg_at_k, precision_at_k, recall_at_k

__all__ = [
    "RankingEvaluator",
    "embedding_scorer",
    "code_scorer",
    "asymmetric_scorer",
    "served_scorer",
    "exclusion_mask_fill",
    "recall_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "hit_rate_at_k",
]
