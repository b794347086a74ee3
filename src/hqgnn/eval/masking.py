"""Masking seen items in a dense (B, n_items) score block: the torch side of the one masking path."""

from __future__ import annotations

import torch

__all__ = ["exclusion_mask_fill"]


def _rows_of(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch position, column) of every stored entry in the given CSR rows, vectorized."""
    starts, ends = indptr[users], indptr[users + 1]
    lengths = ends - starts
    pos = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    within = torch.arange(int(lengths.sum()), device=users.device) - offsets[pos]
    return pos, indices[starts[pos] + within]


def exclusion_mask_fill(
    scores: torch.Tensor, users: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """Set the scores of each user's seen items (CSR rows) to -inf, in place."""
    pos, cols = _rows_of(indptr, indices, users)
    scores[pos, cols] = float("-inf")
    return scores
