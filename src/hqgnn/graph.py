"""The user-item bipartite graph: symmetric-normalized adjacency D^-1/2 A D^-1/2 as a torch sparse matrix."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency_scipy(pairs: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """(n_users + n_items)^2 CSR matrix of the bipartite graph, normalized by D^-1/2 on both sides.

    Items sit after users (node id n_users + i). Duplicate pairs count once; isolated nodes get
    all-zero rows (their degree is 0, so no division).
    """
    n = n_users + n_items
    users = pairs[:, 0].astype(np.int64)
    items = pairs[:, 1].astype(np.int64) + n_users
    rows = np.concatenate([users, items])
    cols = np.concatenate([items, users])
    adj = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    deg = np.asarray(adj.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(deg > 0, deg**-0.5, 0.0).astype(np.float32)
    # D^-1/2 A D^-1/2 on the CSR arrays directly: value (r, c) *= d_r^-1/2 * d_c^-1/2
    row_of = np.repeat(np.arange(n), np.diff(adj.indptr))
    adj.data *= inv_sqrt[row_of] * inv_sqrt[adj.indices]
    adj.sort_indices()
    return adj


def csr_index_dtype(nnz: int, n_nodes: int, preferred: torch.dtype = torch.int32) -> torch.dtype:
    """``preferred`` unless an entry count (crow values) or a node id (col values) would not fit int32."""
    if max(nnz, n_nodes) >= 2**31 - 1:
        return torch.int64
    return preferred


def normalized_adjacency(
    pairs: np.ndarray,
    n_users: int,
    n_items: int,
    device: str | torch.device = "cpu",
    index_dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """The normalized adjacency as a torch sparse CSR tensor on ``device`` (built once, no dense n x n).

    32-bit indices by default (cuSPARSE's fast path); 64-bit is used automatically past 2^31 entries or nodes.
    """
    index_dtype = csr_index_dtype(pairs.shape[0] * 2, n_users + n_items, index_dtype)
    adj = normalized_adjacency_scipy(pairs, n_users, n_items)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use, and it is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(adj.indptr.astype(np.int64)).to(index_dtype),
            torch.from_numpy(adj.indices.astype(np.int64)).to(index_dtype),
            torch.from_numpy(adj.data),
            size=adj.shape,
            device=device,
        )


class _SymmetricSpMM(torch.autograd.Function):
    """A @ X for a symmetric sparse A; the backward is A @ G again (A^T = A), so no transpose is built."""

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ grad.contiguous()


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One propagation step A @ X, differentiable in X."""
    # Function.apply is unannotated in torch; a local annotation states its type (never evaluated at run time)
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _SymmetricSpMM.apply
    return apply(adj, x)
