"""Learning-rate schedules (warm-up, cosine / linear / step decay), set in place so CUDA-graph replays see them."""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig
from ..errors import HqgnnError

SCHEDULES = ("constant", "cosine", "linear", "step")


def check_schedule(tc: TrainConfig) -> None:
    """One clear error for a bad schedule setting."""
    if tc.lr_schedule not in SCHEDULES:
        raise HqgnnError(f"train.lr_schedule must be one of {', '.join(SCHEDULES)}, got {tc.lr_schedule!r}")
    if tc.warmup_epochs < 0:
        raise HqgnnError(f"train.warmup_epochs must be >= 0, got {tc.warmup_epochs}")
    if not 0.0 <= tc.lr_min_ratio <= 1.0:
        raise HqgnnError(f"train.lr_min_ratio must be in [0, 1], got {tc.lr_min_ratio}")
    if tc.lr_schedule == "step" and tc.lr_step_epochs < 1:
        raise HqgnnError("train.lr_schedule=step needs train.lr_step_epochs >= 1")
    if tc.lr_schedule == "step" and not 0.0 < tc.lr_step_gamma <= 1.0:
        raise HqgnnError(f"train.lr_step_gamma must be in (0, 1], got {tc.lr_step_gamma}")


def progress(tc: TrainConfig, epoch: int, elapsed_seconds: float) -> float:
    """Fraction of the horizon done when 0-based ``epoch`` starts, in [0, 1].

    Horizon: the time budget when ``max_seconds > 0`` (the number of epochs that fit is unknown
    in advance, and concurrent runs make it vary), else ``epochs``; the last epoch gets progress 1.
    """
    if tc.max_seconds > 0:
        p = elapsed_seconds / tc.max_seconds
    else:
        p = epoch / max(1, tc.epochs - 1)
    return min(1.0, max(0.0, p))


def lr_factor(tc: TrainConfig, epoch: int, elapsed_seconds: float) -> float:
    """Multiplier of ``tc.lr`` for 0-based ``epoch``: warm-up (epochs) x decay (progress; step: epochs)."""
    warm = min(1.0, (epoch + 1) / tc.warmup_epochs) if tc.warmup_epochs > 0 else 1.0
    p = progress(tc, epoch, elapsed_seconds)
    lo = tc.lr_min_ratio
    if tc.lr_schedule == "cosine":
        decay = lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif tc.lr_schedule == "linear":
        decay = 1.0 - (1.0 - lo) * p
    elif tc.lr_schedule == "step":
        decay = tc.lr_step_gamma ** (epoch // tc.lr_step_epochs)
    else:
        decay = 1.0
    return warm * decay


def make_lr(value: float, device: torch.device, tensor: bool) -> float | torch.Tensor:
    """The optimizer's lr: a 1-element float32 tensor on the parameters' device when the step is graphed.

    The captured fused Adam kernel reads the lr from this tensor's memory at every replay, so
    :func:`set_lr` changing it in place changes the lr of the graphed step; a Python float would be
    baked into the graph at capture time.
    """
    return torch.tensor(value, dtype=torch.float32, device=device) if tensor else value


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's lr; tensor lrs in place (the CUDA graph holds their address)."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr) if torch.is_tensor(lr) else lr
