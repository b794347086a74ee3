"""Top-K recommendations and similar items from a finished run (the inference side), in row indices."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from .eval.ranking import Ranker, self_exclusion
from .run import TrainedRun


class Recommender:
    """Ranks a run's items for its users (codes x scales for quantized runs) and returns the top K.

    The inference counterpart of the trainable :class:`hqgnn.models.HQGNNModel`. It ranks through
    :class:`hqgnn.eval.ranking.Ranker`, the path training-time evaluation uses, so served lists and
    metrics equal the evaluated ones exactly. Seen items (train + validation) are excluded unless
    ``exclude_seen=False``; ties go to the lower item index.
    """

    def __init__(self, run: TrainedRun, device: str = "cpu") -> None:
        self.run = run
        self.device = torch.device(device)
        self.ranker = Ranker(run.tables, run.bits, self.device, symmetric=run.symmetric, user_bits=run.user_bits)
        self.index = self.ranker.index  # the code index of quantized runs (None for float runs)
        seen = run.seen.tocsr(copy=True)
        seen.has_sorted_indices = False
        seen.sort_indices()
        self.seen = seen

    @torch.no_grad()
    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices), each (len(users), k); slots beyond the available items hold -inf / -1."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        return self.ranker.search(users, k, exclude=self.seen[users] if exclude_seen else None)

    @torch.no_grad()
    def similar_items(self, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items with the largest inner product with each given item (the item itself excluded)."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        return self.ranker.search(items, k, exclude=self_exclusion(items), side="item")

    @torch.no_grad()
    def evaluate(self, truth: sp.csr_matrix, ks: Iterable[int] = (20, 50),
                 exclude: sp.csr_matrix | None = None) -> dict[str, float]:
        """Full-ranking metrics against ``truth`` (user x item CSR in the run's index space), ranked
        exactly as :meth:`recommend` serves (``exclude``, default the run's seen items, masked)."""
        from .eval import RankingEvaluator

        ev = RankingEvaluator(truth, self.seen if exclude is None else exclude, ks, self.device)
        return ev.evaluate_ranker(self.ranker)
