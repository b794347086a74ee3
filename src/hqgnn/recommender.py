"""Top-K recommendations and similar items from a finished run, in the user's own ids."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from .eval.evaluator import code_scorer, embedding_scorer, exclusion_mask_fill
from .run import TrainedRun
from .topk import stable_topk


class Recommender:
    """Scores a run's users against all items (codes x scales for quantized runs) and returns the top K.

    Seen items (train + validation) are excluded unless ``exclude_seen=False``; ties go to the lower
    item index, exactly like the evaluator, so served lists equal the evaluated ones.
    """

    def __init__(self, run: TrainedRun, device: str = "cpu") -> None:
        self.run = run
        self.device = torch.device(device)
        t = {k: v.to(self.device) for k, v in run.tables.items()}
        self.index = None
        if run.quantized:
            from .index import build_code_index

            # the retrieval engine serves quantized runs straight from the packed item codes
            self.index = build_code_index(run.tables["item_codes"].numpy(), run.tables["item_scale"].numpy(),
                                          run.bits, device=str(self.device))
            self._user_codes = run.tables["user_codes"].numpy()
            self._user_scale = run.tables["user_scale"].numpy()
            self._user_scorer = code_scorer(t["user_codes"], t["user_scale"], t["item_codes"], t["item_scale"])
            self._item_scorer = code_scorer(t["item_codes"], t["item_scale"], t["item_codes"], t["item_scale"])
        else:
            self._user_scorer = embedding_scorer(t["user_emb"], t["item_emb"])
            self._item_scorer = embedding_scorer(t["item_emb"], t["item_emb"])
        self.indptr = torch.from_numpy(run.seen.indptr.astype(np.int64)).to(self.device)
        self.indices = torch.from_numpy(run.seen.indices.astype(np.int64)).to(self.device)

    @torch.no_grad()
    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices), each (len(users), k); slots beyond the available items hold -1 / -inf."""
        if self.index is not None:
            users = np.asarray(users, dtype=np.int64)
            scale = self._user_scale[users] if self._user_scale.ndim else self._user_scale
            exclude = self.run.seen[users] if exclude_seen else None
            scores, ids = self.index.search(self._user_codes[users], k, query_scales=scale, exclude=exclude)
            return _numpy(scores), _numpy(ids)
        u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
        scores = self._user_scorer(u)
        if exclude_seen:
            exclusion_mask_fill(scores, u, self.indptr, self.indices)
        return self._top(scores, k)

    @torch.no_grad()
    def similar_items(self, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items with the largest inner product with each given item (the item itself excluded)."""
        it = torch.as_tensor(np.asarray(items, dtype=np.int64), device=self.device)
        scores = self._item_scorer(it)
        scores[torch.arange(len(it), device=self.device), it] = float("-inf")
        return self._top(scores, k)

    @torch.no_grad()
    def evaluate(self, truth: sp.csr_matrix, ks: Iterable[int] = (20, 50),
                 exclude: sp.csr_matrix | None = None) -> dict[str, float]:
        """Full-ranking metrics against ``truth`` (user x item CSR in the run's index space), ranked
        exactly as :meth:`recommend` serves (``exclude``, default the run's seen items, masked)."""
        from .eval import RankingEvaluator

        ev = RankingEvaluator(truth, self.run.seen if exclude is None else exclude, ks, self.device)
        if self.index is not None:  # rank with the retrieval engine, exactly as `recommend` and `serve` do
            def engine_topk(users: torch.Tensor, kmax: int) -> torch.Tensor:
                return torch.from_numpy(self.recommend(users.cpu().numpy(), kmax)[1]).to(users.device)

            return ev.evaluate(topk=engine_topk)
        return ev.evaluate(scorer=self._user_scorer)

    def _top(self, scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        vals, ids = stable_topk(scores, min(k, scores.shape[1]))
        vals, ids = vals.cpu().numpy(), ids.cpu().numpy()
        ids = np.where(np.isneginf(vals), -1, ids)
        if ids.shape[1] < k:  # fewer items than k: pad
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
        return vals, ids


def _numpy(x: object) -> np.ndarray:
    return x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
