"""Devices and this process's place in a torch.distributed job: a leaf module that train and eval both use.

Rank helpers, the contiguous / round-robin sharding of work, and the few collectives (sum, any,
broadcast) that fall back to no-ops when no process group is active. Setting the group up, DDP and
failure handling stay in :mod:`hqgnn.train.distributed`.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from .errors import HqgnnError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a clear error for the rest."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HqgnnError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise HqgnnError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


def check_device(name: str) -> None:
    """Refuse a device this machine does not have (``cuda`` without a GPU, ``cuda:3`` on a 2-GPU box) up front,
    before any data is loaded, with one line. Not part of :meth:`RunConfig.validate`: a run trained on a GPU
    must still load (its config says ``cuda``) on a machine without one."""
    if not name.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise HqgnnError(f"train.device {name}: this machine has no CUDA GPU that torch can use "
                         "(use --device cpu or auto)")
    _, _, idx = name.partition(":")
    if idx and int(idx) >= torch.cuda.device_count():
        raise HqgnnError(f"train.device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


# -- where am I ----------------------------------------------------------------------------------
def launched() -> bool:
    """True when started by torchrun (or anything else that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's global rank from the environment (0 when not launched distributed); usable before init."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0 (or not distributed): the one process that writes files and logs."""
    return rank() == 0


def _where() -> str:
    if is_active():
        return f"rank {rank()} of {world_size()}"
    return f"rank {env_rank()} of {os.environ.get('WORLD_SIZE', '1')}"


def local_device(device: torch.device) -> torch.device:
    """On CUDA under a process group each rank trains on its own GPU: cuda:LOCAL_RANK."""
    if is_active() and device.type == "cuda":
        lr = local_rank()
        if lr >= torch.cuda.device_count():
            raise HqgnnError(f"{_where()}: LOCAL_RANK {lr} but only {torch.cuda.device_count()} CUDA devices visible")
        torch.cuda.set_device(lr)
        return torch.device("cuda", lr)
    return device


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- sharding ------------------------------------------------------------------------------------
def shard_bounds(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """[lo, hi) of rank r's contiguous share of n items; shares differ by at most one, in rank order."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return n * r // w, n * (r + 1) // w


def shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of t along dim 0 (all of t when not distributed)."""
    lo, hi = shard_bounds(len(t))
    return t[lo:hi]


def round_robin(n: int) -> range:
    """This rank's items of 0..n-1 when they are dealt out one at a time."""
    return range(rank(), n, world_size())


# -- collectives -----------------------------------------------------------------------------------
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of t over ranks (t itself when not distributed), on t's device."""
    if not is_active():
        return t
    buf = t.detach().to(_comm_device()).contiguous().clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when flag is true on any (for decisions that must agree, e.g. a time budget)."""
    if not is_active():
        return flag
    buf = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return bool(buf.item() > 0)


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank src's parameters and buffers into every rank's module, in place."""
    if not is_active():
        return
    dev = _comm_device()
    for t in module.state_dict().values():
        if not torch.is_tensor(t):
            continue
        buf = t.to(dev).contiguous().clone() if t.device != dev else t.contiguous().clone()
        dist.broadcast(buf, src)
        t.copy_(buf.to(t.device))


