"""The in-memory interaction dataset every loader returns: contiguous ids, train/val/test pairs, raw-id maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class InteractionData:
    """Implicit feedback split into train / validation / test.

    Pairs are ``(n, 2)`` int64 arrays of ``(user, item)`` with contiguous 0-based indices.
    ``val`` is carved out of the original training data (model selection only); at test time
    both ``train`` and ``val`` items are masked. ``user_ids[u]`` / ``item_ids[i]`` give the
    user's own ids (int64 or unicode arrays, never objects, so they save without pickle).
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        """All interactions known at test time (train + validation)."""
        return np.concatenate([self.train, self.val]) if len(self.val) else self.train

    def matrix(self, pairs: np.ndarray) -> sp.csr_matrix:
        """Binary user x item CSR matrix of ``pairs`` (sorted indices)."""
        m = sp.csr_matrix(
            (np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])),
            shape=(self.n_users, self.n_items),
        )
        m.sum_duplicates()
        m.sort_indices()
        return m

    def summary(self) -> dict[str, float | int | str]:
        n_inter = len(self.train) + len(self.val) + len(self.test)
        seen_users = np.unique(self.seen[:, 0]) if len(self.seen) else np.empty(0, np.int64)
        seen_items = np.unique(self.seen[:, 1]) if len(self.seen) else np.empty(0, np.int64)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": int(n_inter),
            "train": int(len(self.train)),
            "val": int(len(self.val)),
            "test": int(len(self.test)),
            "density": n_inter / max(1, self.n_users * self.n_items),
            "cold_users": int(self.n_users - len(seen_users)),
            "cold_items": int(self.n_items - len(seen_items)),
        }
