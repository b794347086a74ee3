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

    ``renumber_items`` (serving): for code runs with per-item scales / terms on the CPU,
    the items are renumbered once into the code index's storage order (scale buckets, then term;
    ``hqgnn.index.asym_layout.storage_order``), so the index gets that order's tight per-chunk
    bounds without holding an order array: ``self.run`` is the renumbered run, whose id table
    absorbs the permutation. Item indices in and out (``recommend``, ``similar_items``,
    ``evaluate``'s matrices) are then in ``self.run``'s numbering; map them with
    ``self.run.item_ids`` / ``self.run.item_index``. Raw ids and scores are unchanged; of two
    exactly tied items, the one first in the storage order ranks first. Other runs: unchanged.
    """

    def __init__(self, run: TrainedRun, device: str = "cpu", renumber_items: bool = False) -> None:
        self.device = torch.device(device)
        if renumber_items:
            run = storage_numbered(run, self.device)
        self.run = run
        # renumbered tables are already in the index's storage order: no order array on top
        self.ranker = Ranker(run.tables, run.format, self.device, item_order="none" if renumber_items else "scale")
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


def storage_numbered(run: TrainedRun, device: torch.device = torch.device("cpu")) -> TrainedRun:
    """``run`` renumbered into the asymmetric CPU index's storage order (itself when that changes nothing)."""
    fmt = run.format
    if device.type != "cpu" or fmt is None:
        return run  # the GPU searcher and float runs use no storage order
    from .index.asym_layout import scale_order_of

    term = run.tables.get("item_term")
    order = scale_order_of(run.tables["item_scale"].float().numpy(), None if term is None else term.float().numpy(),
                           run.n_items)
    return run if order is None else run.with_item_order(order)
