"""Normalized adjacency and propagation against dense references."""

import numpy as np
import torch

from hqgnn.graph import normalized_adjacency, normalized_adjacency_scipy, propagate
from hqgnn.models import LightGCN


def dense_reference(pairs, n_users, n_items):
    n = n_users + n_items
    a = np.zeros((n, n))
    for u, i in pairs:
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-12)), 0)
    return inv[:, None] * a * inv[None, :]


def small_graph():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 7, 30), rng.integers(0, 9, 30)], 1), axis=0)
    pairs = np.concatenate([pairs, pairs[:3]])  # duplicates must count once
    return pairs, 8, 10  # user 7 and item 9 are isolated


def test_adjacency_equals_dense_reference():
    pairs, nu, ni = small_graph()
    got = normalized_adjacency_scipy(pairs, nu, ni).toarray()
    np.testing.assert_allclose(got, dense_reference(pairs, nu, ni), rtol=1e-6, atol=1e-7)
    assert np.all(got[7] == 0) and np.all(got[nu + 9] == 0)


def test_torch_adjacency_and_propagation_gradient():
    pairs, nu, ni = small_graph()
    adj = normalized_adjacency(pairs, nu, ni)
    dense = torch.from_numpy(dense_reference(pairs, nu, ni)).float()
    x = torch.randn(nu + ni, 5, requires_grad=True)
    y = propagate(adj, x)
    torch.testing.assert_close(y, dense @ x, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ w, rtol=1e-5, atol=1e-6)


def test_lightgcn_layer_mean_and_mf():
    pairs, nu, ni = small_graph()
    adj = normalized_adjacency(pairs, nu, ni)
    dense = torch.from_numpy(dense_reference(pairs, nu, ni)).float()
    model = LightGCN(nu, ni, dim=4, layers=3)
    e0 = model.embedding.weight.detach()
    want = (e0 + dense @ e0 + dense @ dense @ e0 + dense @ dense @ dense @ e0) / 4
    torch.testing.assert_close(model(adj).detach(), want, rtol=1e-5, atol=1e-6)
    mf = LightGCN(nu, ni, dim=4, layers=0)
    assert torch.equal(mf(None), mf.embedding.weight)
    users, items = model.split(model(adj))
    assert users.shape == (nu, 4) and items.shape == (ni, 4)
