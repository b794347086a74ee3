"""Orthogonal maps before quantization: ITQ rotation (Gong & Lazebnik, CVPR 2011) for sign codes, PCA projection from a wider run."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def itq_rotation(x: Tensor, iterations: int = 50, seed: int = 0) -> Tensor:
    """Orthogonal R (d, d) that reduces ||sign(V R) - V R||^2 for V = x - mean(x), by ITQ's alternation.

    Each step fixes B = sign(V R) and solves the orthogonal Procrustes problem R = argmin ||B - V R||
    (R = U W^T from the SVD of V^T B = U S W^T); neither step can raise the objective. Starts from a
    seeded random orthogonal matrix, as ITQ does. Runs in float64 on x's device.
    """
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"expected a non-empty 2-D (rows x dim) tensor, got shape {tuple(x.shape)}")
    v = (x - x.mean(0, keepdim=True)).to(torch.float64)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    r: Tensor
    r, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=gen, dtype=torch.float64))
    r = r.to(v.device)
    for _ in range(iterations):
        b = torch.where(v @ r >= 0, 1.0, -1.0).to(torch.float64)
        u, _, wt = torch.linalg.svd(v.T @ b)
        r = u @ wt
    return r.to(torch.float32)


def sign_error(x: Tensor, rotation: Tensor | None = None) -> float:
    """||s * sign(v) - v||^2 / ||v||^2 with v = (x - mean) R and s the per-row mean |v| (the 1-bit error)."""
    v = x - x.mean(0, keepdim=True)
    if rotation is not None:
        v = v @ rotation
    q = v.abs().mean(1, keepdim=True) * torch.where(v >= 0, 1.0, -1.0)
    return float((q - v).square().sum() / v.square().sum().clamp_min(1e-30))


def pca_projection(users: Tensor, items: Tensor, dim: int) -> Tensor:
    """(D, dim) orthonormal columns: the top-``dim`` eigenvectors of the final embeddings' second moments,
    users' and items' averaged (U^T U / n_u + I^T I / n_i), largest first.

    LightGCN's propagation is linear and acts on rows, so projecting a wide run's layer-0 table by P
    projects every final embedding by P: a narrower student starts from the scores u P P^T i, the wide
    teacher's restricted to the subspace that holds most of both sides' energy (``train.init_projection``)."""
    u, i = users.double(), items.double()
    m = u.T @ u / max(len(u), 1) + i.T @ i / max(len(i), 1)
    vecs: Tensor
    _, vecs = torch.linalg.eigh(m)  # ascending eigenvalues
    return vecs[:, -dim:].flip(1).float().contiguous()
