"""LightGCN encoder: K rounds of normalized-adjacency propagation, final embedding = mean over layers."""

from __future__ import annotations

import torch
from torch import nn

from ..graph import propagate


class LightGCN(nn.Module):
    """He et al., SIGIR 2020. ``layers = 0`` is plain matrix factorization.

    The graph is passed to ``forward`` (like PyG's ``edge_index``) so the same module serves any
    adjacency built by :func:`hqgnn.graph.normalized_adjacency`; users are rows ``0..n_users-1``,
    items follow.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3, init_std: float = 0.1) -> None:
        super().__init__()
        if layers < 0:
            raise ValueError("layers must be >= 0")
        self.n_users, self.n_items, self.dim, self.layers = n_users, n_items, dim, layers
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self, adj: torch.Tensor | None) -> torch.Tensor:
        """Final (n_users + n_items, dim) embeddings: mean of E^(0..K)."""
        x = self.embedding.weight
        if self.layers == 0:
            return x
        assert adj is not None, "LightGCN with layers > 0 needs the adjacency"
        out = x
        for _ in range(self.layers):
            x = propagate(adj, x)
            out = out + x
        return out / (self.layers + 1)

    def layer_outputs(self, adj: torch.Tensor | None) -> list[torch.Tensor]:
        """E^(0), ..., E^(K): the embeddings after each round of propagation (their mean is ``forward``)."""
        x = self.embedding.weight
        outs = [x]
        for _ in range(self.layers):
            assert adj is not None, "LightGCN with layers > 0 needs the adjacency"
            x = propagate(adj, x)
            outs.append(x)
        return outs

    def split(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return emb[: self.n_users], emb[self.n_users :]
