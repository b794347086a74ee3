"""GSTE's delta schedule: when to refresh delta and the Hutchinson estimate that refreshes it (the trainer only calls it)."""

from __future__ import annotations

from typing import Any

import torch

from ..config import QuantConfig
from ..device import all_reduce_sum, round_robin
from ..models.losses import bpr_from_tables
from .hessian import estimate_delta

__all__ = ["DeltaSchedule"]


class DeltaSchedule:
    """Refreshes the quantizers' GSTE delta from the Hessian trace every ``quant.delta_every`` epochs.

    Active only for GSTE with ``quant.delta < 0`` (a fixed delta needs no schedule). Its only state is
    the epoch number and the shared generator, so a resumed run re-estimates at the same epochs with
    the same random draws (the current delta itself lives in the quantizers' buffers, i.e. the checkpoint).
    """

    def __init__(self, qc: QuantConfig, quantized: bool) -> None:
        self.qc = qc
        self.active = quantized and qc.estimator == "gste" and qc.delta < 0

    def due(self, epoch: int) -> bool:
        """Whether to refresh before 0-based ``epoch``: at epoch 0, delta_every, 2 * delta_every, ..."""
        return self.active and epoch % max(1, self.qc.delta_every) == 0

    def refresh(self, model: Any, adj: torch.Tensor | None, sampler: Any, batch_size: int,
                generator: torch.Generator, device: torch.device) -> dict[str, float]:
        """Estimate delta and set it on ``model``'s quantizers; returns delta, trace, grad_std, probes.

        GSTE delta from the Hutchinson Hessian trace of the BPR loss (the training loss,
        :func:`hqgnn.models.losses.bpr`) w.r.t. the quantized embeddings, averaged over
        ``delta_batches`` mini-batches; trace, n and std(g) are taken over the rows the batch
        touches (its unique users and items), not the whole table. Each mini-batch draws from its own
        generator, seeded from the shared stream, so under torchrun the batches are dealt out to the
        ranks and the all-reduced mean is the same delta a single process gets, on every rank.
        """
        qc = self.qc
        with torch.no_grad():
            user_f, item_f = model.final(adj)
        results = []
        n_est = max(1, qc.delta_batches)
        seeds = torch.randint(2**62, (n_est,), device=device, generator=generator).tolist()
        for b in round_robin(n_est):
            gen = torch.Generator(device=device)
            gen.manual_seed(seeds[b])
            idx = torch.randint(len(sampler), (batch_size,), device=device, generator=gen)
            u, p = sampler.users[idx], sampler.items[idx]
            n = sampler.negatives(u, generator=gen)
            uu, u_inv = torch.unique(u, return_inverse=True)
            ii, i_inv = torch.unique(torch.cat([p, n]), return_inverse=True)
            p_inv, n_inv = i_inv[: len(p)], i_inv[len(p) :]
            with torch.no_grad():
                qu, qi = model.quantize_rows(user_f, item_f, uu, ii)

            def loss_fn(q: list[torch.Tensor]) -> torch.Tensor:
                return bpr_from_tables(q[0], q[1], u_inv, p_inv, n_inv)

            r = estimate_delta(loss_fn, [qu, qi], tol=qc.hutchinson_tol, max_probes=qc.hutchinson_max_probes,
                               generator=gen)
            r.update(delta_user=r["parts"][0]["delta"], delta_item=r["parts"][1]["delta"])
            results.append(r)
        keys = ["delta", "trace", "grad_std", "probes"] + (["delta_user", "delta_item"] if qc.separate_delta else [])
        rows = torch.tensor([[r[k] for k in keys] + [1.0] for r in results], dtype=torch.float64)
        # sum (and count) this rank's estimates, then over ranks: the mean over all delta_batches
        sums = all_reduce_sum(rows.reshape(-1, len(keys) + 1).sum(0).to(device)).cpu().tolist()
        out = {k: sums[i] / sums[-1] for i, k in enumerate(keys)}
        if getattr(model, "user_bits", model.bits):  # float queries (user_bits = 0) have no user quantizer
            model.user_quantizer.set_delta(out.get("delta_user", out["delta"]))
        model.item_quantizer.set_delta(out.get("delta_item", out["delta"]))
        return out
