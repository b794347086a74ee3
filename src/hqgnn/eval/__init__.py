"""Full-ranking evaluation: metrics and the batched evaluator."""

from .evaluator import RankingEvaluator, exclusion_mask_fill, embedding_scorer, code_scorer
from .metrics import hit_rate_at_k, ndcg_at_k, precision_at_k, recall_at_k

__all__ = [
    "RankingEvaluator",
    "embedding_scorer",
    "code_scorer",
    "exclusion_mask_fill",
    "recall_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "hit_rate_at_k",
]
