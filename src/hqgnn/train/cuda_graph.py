"""A whole training step (forward, backward, fused Adam) captured once as a CUDA graph and replayed per batch.

At batch 2048 a LightGCN step is ~1 ms of GPU work but ~2 ms of Python and kernel launches; replaying
a graph removes the launch cost. The capture follows PyTorch's whole-network recipe: warm up on a
side stream, capture with ``torch.cuda.graph``, feed batches by copying into static index tensors.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from ..models import HQGNNModel

log = logging.getLogger("hqgnn.train")


class GraphedStep:
    """Replays ``loss = model.bpr_loss(...); loss.backward(); optimizer.step()`` for fixed-size batches.

    The optimizer must be built with ``capturable=True``. Warm-up steps change weights and Adam
    state, so both are snapshotted before and copied back (in place, so the graph keeps pointing at
    the same tensors) after the capture.
    """

    def __init__(self, model: HQGNNModel, optimizer: torch.optim.Optimizer, adj: torch.Tensor | None,
                 reg: float, example: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        self.batch_size = len(example[0])
        self.static = cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple(t.clone() for t in example))
        params = [p for p in model.parameters()]
        saved_params = [p.detach().clone() for p in params]
        saved_opt = {id(t): t.clone() for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)}

        def step() -> torch.Tensor:
            loss, _ = model.bpr_loss(adj, *self.static, reg)
            loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
            optimizer.step()
            return loss.detach()

        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch's Stream.__new__ is unannotated
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(3):
                    optimizer.zero_grad(set_to_none=True)
                    step()
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = step()
        finally:
            with torch.no_grad():
                for p, saved in zip(params, saved_params):
                    p.copy_(saved)
                for st in optimizer.state.values():
                    for key, t in st.items():
                        if torch.is_tensor(t):
                            # state created during warm-up (first use) restarts from zero
                            t.copy_(saved_opt[id(t)]) if id(t) in saved_opt else t.zero_()

    def __call__(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        for static, new in zip(self.static, (users, pos, neg)):
            static.copy_(new)
        self.graph.replay()
        return self.loss
