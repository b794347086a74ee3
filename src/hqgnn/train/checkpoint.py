"""Resumable training checkpoints in safetensors: weights, Adam state, RNG state and loop bookkeeping (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_path


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, slot in opt["state"].items():
        for name, value in slot.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{idx}.{name}"] = t.detach().cpu().contiguous()
    tensors["rng.generator"] = generator.get_state().cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"], default=_tensor_item)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _tensor_item(value: Any) -> Any:
    """A tensor lr (graphed training) is stored as its float value."""
    if torch.is_tensor(value):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore everything saved by :func:`save_checkpoint`; returns the loop bookkeeping dict."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return cast(dict[str, Any], json.loads(meta["state"]))
