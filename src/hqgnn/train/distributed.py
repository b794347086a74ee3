"""Data-parallel training over torch.distributed: process group setup, rank helpers, sharding, all-reduces.

Every rank holds the whole graph, both embedding tables and the Adam state; the *work* is split:

* each global BPR batch (``train.batch_size`` triples, generated identically on every rank from the
  shared seed) is cut into contiguous per-rank slices; each rank's loss is scaled so that the gradient
  DistributedDataParallel averages equals the gradient of the mean over the whole global batch, also
  when the last batch does not split evenly;
* the GSTE delta mini-batches are dealt round-robin and their estimates summed with an all-reduce;
* evaluation users are cut into contiguous per-rank blocks and the metric sums all-reduced.

So a W-rank run follows the same trajectory as a 1-process run with the same global batch and seed
(up to float summation order). Only rank 0 writes the run directory.

Launch with ``torchrun --nproc-per-node N -m hqgnn train ...`` (or ``hqgnn train --nproc N``); the
process group is set up from the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables torchrun sets.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..config import TrainConfig
from ..device import (  # noqa: F401  re-exported: the rank helpers and collectives live in the leaf module
    _comm_device as _comm_device,
    _where as _where,
    all_reduce_sum as all_reduce_sum,
    any_rank as any_rank,
    broadcast_module as broadcast_module,
    env_rank as env_rank,
    is_active as is_active,
    is_main as is_main,
    launched as launched,
    local_device as local_device,
    local_rank as local_rank,
    rank as rank,
    resolve_device as resolve_device,
    round_robin as round_robin,
    shard as shard,
    shard_bounds as shard_bounds,
    world_size as world_size,
)
from ..errors import HqgnnError

if TYPE_CHECKING:
    from ..models import HQGNNModel


class DistributedError(HqgnnError):
    """A collective failed: a peer rank died, hung past ``train.dist_timeout_s``, or the group broke."""


# -- process group -------------------------------------------------------------------------------
def choose_backend(name: str, device_name: str) -> str:
    """auto: nccl when training on CUDA, else gloo."""
    if name not in ("auto", "nccl", "gloo"):
        raise HqgnnError(f"train.dist_backend must be auto, nccl or gloo, got {name!r}")
    if name != "auto":
        return name
    return "nccl" if resolve_device(device_name).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(tc: TrainConfig) -> Iterator[None]:
    """Join the process group torchrun describes (no-op when not launched, or already joined).

    Collectives time out after ``tc.dist_timeout_s``; a failed collective (peer dead, hung or
    unreachable) is re-raised as one clear :class:`DistributedError` naming this rank. The group is
    destroyed on success; after a failure the process is expected to exit (torchrun then stops the others).
    """
    if not launched() or is_active():
        yield
        return
    backend = choose_backend(tc.dist_backend, tc.device)
    if not tc.dist_timeout_s > 0:
        raise HqgnnError(f"train.dist_timeout_s must be > 0, got {tc.dist_timeout_s}")
    timeout = timedelta(seconds=tc.dist_timeout_s)
    if backend == "nccl":
        # a timed-out or failed NCCL collective aborts the communicator and ends the process instead of hanging
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        if local_rank() < torch.cuda.device_count():
            torch.cuda.set_device(local_rank())
    try:
        dist.init_process_group(backend, timeout=timeout)
    except Exception as exc:
        raise DistributedError(f"{_where()}: could not join the {backend} process group: {_first_line(exc)}") from exc
    try:
        yield
    except HqgnnError:
        raise
    except Exception as exc:
        if is_collective_failure(exc):
            raise DistributedError(describe_failure(exc, tc.dist_timeout_s)) from exc
        raise
    dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # drop the C++ source location gloo / c10d put in front: "[.../unbound_buffer.cc:78] Timed out ..."
    return re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", lines[0]) if lines else type(exc).__name__


_MARKERS = ("timed out", "timeout", "connection closed", "connection reset", "broken pipe", "gloo", "nccl",
            "socket", "peer", "process group", "processgroup", "c10d", "watchdog")


def is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _MARKERS)


def describe_failure(exc: BaseException, timeout_s: float) -> str:
    text = str(exc).lower()
    if "timed out" in text or "timeout" in text:
        what = f"a collective timed out after {timeout_s:g}s (a peer rank hung or died)"
    else:
        what = "a collective failed (a peer rank died or the connection broke)"
    return f"{_where()}: distributed training aborted: {what}: {_first_line(exc)}"


# -- the data-parallel step --------------------------------------------------------------------------
class ShardedBPRLoss(nn.Module):
    """forward(global batch) -> this rank's share of the global mean BPR (+ L2) loss, scaled for DDP.

    Rank r takes the r-th contiguous slice (n_r of the N triples) and returns mean_r * n_r * W / N.
    DDP averages gradients over W ranks, so the result is the gradient of the mean over all N triples,
    also when N does not split evenly (the last batch of an epoch). A rank whose slice is empty (N < W)
    returns 0 * (loss of the whole batch), keeping every parameter in the graph for DDP.
    Summing the returned values over ranks and dividing by W gives the global batch loss.
    """

    def __init__(self, model: HQGNNModel, adj: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.adj = adj  # a plain attribute: replicated, never synchronised

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float) -> torch.Tensor:
        n, w = len(users), world_size()
        lo, hi = shard_bounds(n, rank(), w)
        if hi > lo:
            loss, _ = self.model.bpr_loss(self.adj, users[lo:hi], pos[lo:hi], neg[lo:hi], reg)
            return loss * ((hi - lo) * w / n)
        loss, _ = self.model.bpr_loss(self.adj, users, pos, neg, reg)
        return loss * 0.0


def wrap_model(model: HQGNNModel, adj: torch.Tensor | None, device: torch.device) -> nn.Module:
    """DDP around :class:`ShardedBPRLoss`: gradients of the embedding table (and learnable scales)
    are all-reduced in buckets during backward. DDP broadcasts rank 0's weights once here."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # buffers (the GSTE delta) are set identically on every rank: no per-step broadcast needed
    # (newer torch renamed broadcast_buffers to forward_sync_buffers and warns on the old name)
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync: dict[str, Any] = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    # gradients as views into the all-reduce buckets: no second table-sized gradient copy per rank
    return DistributedDataParallel(ShardedBPRLoss(model, adj), device_ids=ids, gradient_as_bucket_view=True,
                                   **no_sync)
