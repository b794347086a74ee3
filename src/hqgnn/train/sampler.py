"""Vectorized BPR triple sampling on the training device: every positive once per epoch, uniform negatives."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


class BPRSampler:
    """Each epoch: as many BPR triples as training pairs, each with one uniform negative.

    ``mode="edge"``: a seeded permutation of the training pairs (every positive once per epoch).
    ``mode="user"``: users drawn uniformly (among users with training items), then one of their
    positives uniformly — LightGCN's sampler; it weighs users equally, like the user-averaged metrics.

    ``negatives > 1``: each triple gets that many uniform negatives, ``neg`` has shape ``(batch, negatives)``
    (``(batch,)`` for one, as before), so the shapes stay fixed for CUDA-graph replays.

    Negatives that are positives of the same user are resampled (vectorized rounds; the few left
    after ``max_rounds`` stay, as in most LightGCN implementations the collision rate is ~density).
    """

    def __init__(
        self,
        pairs: np.ndarray,
        n_users: int,
        n_items: int,
        device: torch.device,
        generator: torch.Generator,
        max_rounds: int = 8,
        mode: str = "edge",
        negatives: int = 1,
    ) -> None:
        self.mode = mode
        self.n_negatives = negatives
        self.n_items = n_items
        self.device = device
        self.generator = generator
        self.max_rounds = max_rounds
        self.users = torch.from_numpy(pairs[:, 0].astype(np.int64)).to(device)
        self.items = torch.from_numpy(pairs[:, 1].astype(np.int64)).to(device)
        self.keys = torch.sort(self.users * n_items + self.items).values  # sorted by user, then item
        degree = torch.bincount(self.users, minlength=n_users)
        self.indptr = torch.cumsum(degree, 0) - degree
        self.degree = degree
        self.active_users = torch.nonzero(degree).squeeze(1)

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        found = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        return self.keys[found] == keys

    def negatives(self, users: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform negatives for ``users``, from ``generator`` (default: the sampler's own stream)."""
        gen = self.generator if generator is None else generator
        neg = torch.randint(self.n_items, users.shape, device=self.device, generator=gen)
        for _ in range(self.max_rounds):
            bad = self.is_positive(users, neg)
            n_bad = int(bad.sum())
            if n_bad == 0:
                break
            neg[bad] = torch.randint(self.n_items, (n_bad,), device=self.device, generator=gen)
        return neg

    def epoch(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.users)
        if self.mode == "user":
            pick = torch.randint(len(self.active_users), (n,), device=self.device, generator=self.generator)
            users = self.active_users[pick]
            offset = (torch.rand(n, device=self.device, generator=self.generator) * self.degree[users]).long()
            offset = torch.minimum(offset, self.degree[users] - 1)
            pos = self.keys[self.indptr[users] + offset] - users * self.n_items
        else:
            perm = torch.randperm(n, device=self.device, generator=self.generator)
            users, pos = self.users[perm], self.items[perm]
        neg = self.negatives(users if self.n_negatives == 1 else users[:, None].expand(-1, self.n_negatives))
        for start in range(0, len(users), batch_size):
            end = start + batch_size
            yield users[start:end], pos[start:end], neg[start:end]

    def n_batches(self, batch_size: int) -> int:
        return (len(self.users) + batch_size - 1) // batch_size
