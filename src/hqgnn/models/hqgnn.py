"""The recommender trained end to end: LightGCN encoder, optionally followed by b-bit quantizers (HQ-GNN)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QUANT_ESTIMATORS, ModelConfig, QuantConfig
from .lightgcn import LightGCN
from .losses import bpr, bpr_from_tables, sampled_softmax  # noqa: F401  (bpr_from_tables: re-exported)


class HQGNNModel(nn.Module):
    """The trainable model (:class:`hqgnn.recommender.Recommender` is the inference side).

    Scores are inner products of the final embeddings, quantized when ``quant.bits > 0``.

    With a quantizer, the BPR loss is computed on the dequantized codes, gradients reach the float
    encoder through the chosen estimator (STE or GSTE), and evaluation scores the integer codes —
    the exact codes that get exported and served.
    """

    # buffers registered by set_teacher (declared for mypy, which would see Tensor | Module; not set here)
    teacher_user: torch.Tensor
    teacher_item: torch.Tensor
    teacher_top: torch.Tensor
    teacher_top_weight: torch.Tensor

    def __init__(self, n_users: int, n_items: int, model: ModelConfig, quant: QuantConfig | None = None) -> None:
        super().__init__()
        self.encoder = LightGCN(n_users, n_items, model.dim, model.layers, model.init_std)
        self.n_users, self.n_items = n_users, n_items
        self.normalize = model.normalize
        self.objective, self.temperature = "bpr", 1.0  # set_objective: the trainer's train.loss
        self.bits = 0 if quant is None else quant.bits
        self.user_bits = 0
        self.center = False
        self.layerwise = False
        self.distill = "none"
        if self.bits:
            from ..quant import EmbeddingQuantizer

            assert quant is not None  # self.bits > 0 only with a QuantConfig
            if quant.estimator not in QUANT_ESTIMATORS:
                raise ValueError(f"bits={quant.bits} needs estimator {' or '.join(QUANT_ESTIMATORS)}, "
                                 f"got {quant.estimator!r}")
            delta = max(0.0, quant.delta)
            kw: dict[str, Any] = dict(estimator=quant.estimator, scale=quant.scale,
                                      learnable_scale=quant.learnable_scale, delta=delta, scale_dtype=quant.scale_dtype)
            self.user_bits = quant.bits if quant.user_bits < 0 else quant.user_bits
            self.center = quant.center
            self.layerwise = quant.layerwise
            self.scale_dtype = quant.scale_dtype
            # float queries (user_bits = 0) keep no user quantizer: only the item table is compressed
            if self.user_bits:
                self.user_quantizer = EmbeddingQuantizer(self.user_bits, num_rows=n_users, **kw)
            self.item_quantizer = EmbeddingQuantizer(quant.bits, num_rows=n_items, **kw)
            self.distill = quant.distill
            self.distill_weight = quant.distill_weight
            self.distill_temperature = quant.distill_temperature

    @property
    def symmetric(self) -> bool:
        """Both sides b-bit codes of the same width, no centering: the format of the original code engine."""
        return self.quantized and self.user_bits == self.bits and not self.center

    def set_teacher(self, user_emb: torch.Tensor, item_emb: torch.Tensor, top_items: torch.Tensor | None) -> None:
        """Frozen float teacher tables (and, for rank distillation, its top items per user) on the model's device."""
        # non-persistent: the teacher is re-read from its run directory, never stored in this run's weights
        self.register_buffer("teacher_user", user_emb.detach().float(), persistent=False)
        self.register_buffer("teacher_item", item_emb.detach().float(), persistent=False)
        if top_items is not None:
            self.register_buffer("teacher_top", top_items.long(), persistent=False)
            r = top_items.shape[1]
            # BiGeaR-style rank weights: the teacher's first items count most
            w = torch.exp(-torch.arange(r, dtype=torch.float32, device=top_items.device) / max(1.0, r / 2))
            self.register_buffer("teacher_top_weight", w / w.sum(), persistent=False)

    @property
    def quantized(self) -> bool:
        return self.bits > 0

    def set_objective(self, loss: str, temperature: float) -> None:
        """``bpr`` or ``softmax`` (sampled softmax over the batch's negatives, scores / ``temperature``)."""
        self.objective, self.temperature = loss, temperature

    def final(self, adj: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous (float) user and item embeddings after propagation; with layer-wise codes the
        concatenation [E^(0), ..., E^(K)] (BiGeaR), whose inner product sums the per-layer ones."""
        out = torch.cat(self.encoder.layer_outputs(adj), dim=1) if self.layerwise else self.encoder(adj)
        if self.normalize:  # cosine scores: every row on the unit sphere, before any quantizer
            out = F.normalize(out, dim=1)
        return self.encoder.split(out)

    @property
    def code_dim(self) -> int:
        """Entries per code row: d, or (K + 1) * d with layer-wise codes."""
        return self.encoder.dim * (self.encoder.layers + 1 if self.layerwise else 1)

    def _layer_weights(self, items: torch.Tensor) -> torch.Tensor | None:
        """Layer-wise codes: per-entry (1, (K + 1) d) weights t_l = mean |E^(l)| of the item table (detached).

        Each layer block is coded as t_l * s_i * sign(x / t_l), so layers of different magnitude share one
        per-item scale s_i; t_l is per table and goes to the (float) query at serving time."""
        if not self.layerwise:
            return None
        blocks = items.detach().reshape(items.shape[0], -1, self.encoder.dim)
        t = blocks.abs().mean(dim=(0, 2)).clamp_min(1e-12)
        return t.repeat_interleave(self.encoder.dim).reshape(1, -1)

    def quantize_rows(self, users: torch.Tensor, items: torch.Tensor, user_rows: torch.Tensor,
                      item_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The given rows of the user and item tables as the model scores them (<u, i> is the model's score).

        Row scales are row-local, so a batch is exact; with centering, the centres are the means of the
        whole tables (detached), and the quantized offsets are added back, so the score keeps the terms
        that serving drops as per-user constants.
        """
        u, i = users[user_rows], items[item_rows]
        if not self.quantized:
            return u, i
        w = self._layer_weights(items)
        if w is not None:  # layer-wise: float queries (validated), items coded per layer block
            mu_i = items.detach().mean(0, keepdim=True) if self.center else torch.zeros_like(w)
            return u, self.item_quantizer((i - mu_i) / w, rows=item_rows) * w + mu_i
        if self.center:
            mu_i = items.detach().mean(0, keepdim=True)
            i = self.item_quantizer(i - mu_i, rows=item_rows) + mu_i
            if self.user_bits:
                mu_u = users.detach().mean(0, keepdim=True)
                u = self.user_quantizer(u - mu_u, rows=user_rows) + mu_u
            return u, i
        i = self.item_quantizer(i, rows=item_rows)
        if self.user_bits:
            u = self.user_quantizer(u, rows=user_rows)
        return u, i

    def bpr_loss(
        self, adj: torch.Tensor | None, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, ranking part: BPR or sampled softmax, see :meth:`set_objective`). L2 on the batch's
        layer-0 embeddings, LightGCN convention; plus the distillation term when a teacher is set.

        ``neg`` is ``(batch,)`` or ``(batch, N)``: N negatives per positive, BPR and their L2 averaged over them.
        """
        user_f, item_f = self.final(adj)
        neg_flat = neg.reshape(-1)
        extra = self._distill_items(users, neg_flat)
        rows = torch.cat([pos, neg_flat] + ([extra.reshape(-1)] if extra is not None else []))
        u, it = self.quantize_rows(user_f, item_f, users, rows)
        b, m = len(pos), len(neg_flat)
        p, n = it[:b], it[b : b + m].reshape(*neg.shape, -1)
        if self.objective == "softmax":
            loss_bpr = sampled_softmax(u, p, n.reshape(-1, n.shape[-1]), self.temperature)
        else:
            loss_bpr = bpr(u[:, None], p[:, None], n) if neg.dim() == 2 else bpr(u, p, n)
        e0 = self.encoder.embedding.weight
        n_neg = neg.shape[1] if neg.dim() == 2 else 1
        l2 = (e0[users].square().sum() + e0[self.n_users + pos].square().sum()
              + e0[self.n_users + neg].square().sum() / n_neg)
        loss = loss_bpr + reg * 0.5 * l2 / len(users)
        if extra is not None:
            first_neg = n[:, 0] if neg.dim() == 2 else n
            loss = loss + self.distill_weight * self._distill_loss(u, p, first_neg, it[b + m :], users, pos, extra)
        return loss, loss_bpr

    def _distill_items(self, users: torch.Tensor, neg: torch.Tensor) -> torch.Tensor | None:
        """Extra item rows the distillation term scores: the teacher's top items (rank) or shared in-batch
        candidates (score); None without distillation."""
        if self.distill == "none" or not hasattr(self, "teacher_user"):
            return None
        if self.distill == "rank":
            return self.teacher_top[users]  # (B, R)
        return neg[: min(len(neg), _SCORE_CANDIDATES)]  # (m,) candidates shared by the batch

    def _distill_loss(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, extra_q: torch.Tensor,
                      users: torch.Tensor, pos: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        if self.distill == "rank":
            # BPR of each teacher top item against the sampled negative, weighted by the teacher's rank
            top = extra_q.reshape(*extra.shape, -1)  # (B, R, d)
            s_top = (u.unsqueeze(1) * top).sum(-1)
            s_neg = (u * n).sum(-1, keepdim=True)
            return (F.softplus(s_neg - s_top) * self.teacher_top_weight).sum(-1).mean()
        # score distillation: KL(teacher || student) of the softmax over [own positive, shared candidates]
        t = self.distill_temperature
        tu = self.teacher_user[users]
        t_logits = torch.cat([(tu * self.teacher_item[pos]).sum(-1, keepdim=True), tu @ self.teacher_item[extra].T], 1)
        s_logits = torch.cat([(u * p).sum(-1, keepdim=True), u @ extra_q.T], 1)
        log_ps = F.log_softmax(s_logits / t, dim=1)
        log_pt = F.log_softmax(t_logits / t, dim=1)
        return F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean") * t * t

    @torch.no_grad()
    def codes(self, adj: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """What serving stores: integer codes and scales of every item, and per user either codes and
        scales or (float queries) the float vector; ``item_term`` where centering leaves a per-item term.

        Scores: ``s_u * s_i * <c_u, c_i> + t_i`` (quantized users) or ``s_i * <x_u, c_i> + t_i`` (float
        users); per-user constants (<x_u, mu_i>, ...) are dropped, they do not change a user's ranking.
        """
        assert self.quantized
        users, items = self.final(adj)
        w = self._layer_weights(items)
        if self.center:
            mu_i = items.mean(0, keepdim=True)
            items = items - mu_i
        if w is not None:  # the per-layer weights move to the float query: <x_u * t, s_i c_i>
            items, users = items / w, users * w
        item_codes, item_scale = self.item_quantizer.quantize(items)
        out = {"item_codes": item_codes, "item_scale": item_scale}
        if self.user_bits:
            if self.center:
                mu_u = users.mean(0, keepdim=True)
                users = users - mu_u
                # <mu_u, Q(i - mu_i)>: the one cross term that varies per item
                term = self.item_quantizer.dequantize(item_codes, item_scale) @ mu_u.reshape(-1)
                out["item_term"] = _round_to(term, self.scale_dtype)
            out["user_codes"], out["user_scale"] = self.user_quantizer.quantize(users)
        else:
            out["user_query"] = users.float().contiguous()
        return out

    def memory_report(self) -> dict[str, float]:
        """Bytes per user / item of what serving stores (bit-packed codes + scales + per-item terms), and
        the ratio to float32."""
        d = self.code_dim
        if self.quantized:
            from ..quant.quantizer import SCALE_DTYPES

            per_item = self.item_quantizer.bytes_per_row(d)
            if self.center and self.user_bits:
                per_item += SCALE_DTYPES[self.scale_dtype]
            per_user = self.user_quantizer.bytes_per_row(d) if self.user_bits else 4.0 * d
        else:
            per_user = per_item = 4.0 * d
        total = per_user * self.n_users + per_item * self.n_items
        return {
            "bytes_per_user": per_user,
            "bytes_per_item": per_item,
            "total_bytes": total,
            # against the float model this encoder is (d entries per row, also for layer-wise codes)
            "float32_total_bytes": 4.0 * self.encoder.dim * (self.n_users + self.n_items),
            "ratio_to_float32": total / (4.0 * self.encoder.dim * (self.n_users + self.n_items)),
        }


def _round_to(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """x as stored (float16 values held in float32), so scoring uses exactly the stored numbers."""
    return x.to(torch.float16).to(torch.float32) if dtype == "float16" else x.to(torch.float32)


# shared in-batch candidates per step for score distillation (B x m logits)
_SCORE_CANDIDATES = 1024


def __getattr__(name: str) -> object:
    if name == "QuantizedRecommender":  # the old name of HQGNNModel (too close to recommender.Recommender)
        import warnings

        warnings.warn("hqgnn.models.QuantizedRecommender is now HQGNNModel", DeprecationWarning, stacklevel=2)
        return HQGNNModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
