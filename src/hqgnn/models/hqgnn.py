"""The recommender trained end to end: LightGCN encoder, optionally followed by b-bit quantizers (HQ-GNN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, QuantConfig
from .lightgcn import LightGCN


class QuantizedRecommender(nn.Module):
    """Scores are inner products of the final embeddings, quantized when ``quant.bits > 0``.

    With a quantizer, the BPR loss is computed on the dequantized codes, gradients reach the float
    encoder through the chosen estimator (STE or GSTE), and evaluation scores the integer codes —
    the exact codes that get exported and served.
    """

    def __init__(self, n_users: int, n_items: int, model: ModelConfig, quant: QuantConfig | None = None) -> None:
        super().__init__()
        self.encoder = LightGCN(n_users, n_items, model.dim, model.layers, model.init_std)
        self.n_users, self.n_items = n_users, n_items
        self.bits = 0 if quant is None else quant.bits
        if self.bits:
            from ..quant import EmbeddingQuantizer

            if quant.estimator not in ("ste", "gste"):
                raise ValueError(f"bits={quant.bits} needs estimator ste or gste, got {quant.estimator!r}")
            delta = max(0.0, quant.delta)
            kw = dict(estimator=quant.estimator, scale=quant.scale, learnable_scale=quant.learnable_scale, delta=delta)
            self.user_quantizer = EmbeddingQuantizer(quant.bits, num_rows=n_users, **kw)
            self.item_quantizer = EmbeddingQuantizer(quant.bits, num_rows=n_items, **kw)

    @property
    def quantized(self) -> bool:
        return self.bits > 0

    def final(self, adj: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous (float) user and item embeddings after propagation."""
        return self.encoder.split(self.encoder(adj))

    def quantize_rows(self, users: torch.Tensor, items: torch.Tensor, user_rows: torch.Tensor,
                      item_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize the given rows of the final tables (row scales are row-local, so a batch is exact)."""
        u, i = users[user_rows], items[item_rows]
        if self.quantized:
            u, i = self.user_quantizer(u, rows=user_rows), self.item_quantizer(i, rows=item_rows)
        return u, i

    def bpr_loss(
        self, adj: torch.Tensor | None, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, BPR part). L2 on the batch's layer-0 embeddings, LightGCN convention.

        ``neg`` is ``(batch,)`` or ``(batch, N)``: N negatives per positive, BPR and their L2 averaged over them.
        """
        user_f, item_f = self.final(adj)
        u, it = self.quantize_rows(user_f, item_f, users, torch.cat([pos, neg.reshape(-1)]))
        p, n = it[: len(pos)], it[len(pos) :].reshape(*neg.shape, -1)
        if neg.dim() == 2:
            u, p = u[:, None], p[:, None]
        bpr = F.softplus((u * (n - p)).sum(-1)).mean()
        e0 = self.encoder.embedding.weight
        n_neg = neg.shape[1] if neg.dim() == 2 else 1
        l2 = (e0[users].square().sum() + e0[self.n_users + pos].square().sum()
              + e0[self.n_users + neg].square().sum() / n_neg)
        return bpr + reg * 0.5 * l2 / len(users), bpr

    @torch.no_grad()
    def codes(self, adj: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Integer codes and scales of every user and item (quantized models only)."""
        assert self.quantized
        users, items = self.final(adj)
        user_codes, user_scale = self.user_quantizer.quantize(users)
        item_codes, item_scale = self.item_quantizer.quantize(items)
        return {"user_codes": user_codes, "user_scale": user_scale, "item_codes": item_codes, "item_scale": item_scale}

    def memory_report(self) -> dict[str, float]:
        """Bytes per user / item of what serving stores, and the ratio to float32."""
        d = self.encoder.dim
        if self.quantized:
            per_user = self.user_quantizer.bytes_per_row(d)
            per_item = self.item_quantizer.bytes_per_row(d)
        else:
            per_user = per_item = 4.0 * d
        total = per_user * self.n_users + per_item * self.n_items
        return {
            "bytes_per_user": per_user,
            "bytes_per_item": per_item,
            "total_bytes": total,
            "float32_total_bytes": 4.0 * d * (self.n_users + self.n_items),
            "ratio_to_float32": total / (4.0 * d * (self.n_users + self.n_items)),
        }


def bpr_from_tables(
    user_t: torch.Tensor, item_t: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """Mean of -log sigmoid(s_up - s_un) = softplus(s_un - s_up)."""
    u = user_t[users]
    diff = (u * (item_t[neg] - item_t[pos])).sum(-1)
    return F.softplus(diff).mean()
