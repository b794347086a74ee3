"""``hqgnn train --nproc N``: re-run the same command under torchrun on this node (kept free of torch imports,
so the launcher starts at once; the distributed training itself lives in :mod:`hqgnn.train.distributed`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .errors import HqgnnError


def strip_nproc(args: list[str]) -> list[str]:
    """args without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m hqgnn <args minus --nproc>``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "hqgnn", *strip_nproc(args)]


def relaunch(nproc: int, args: list[str]) -> int:
    """Run ``hqgnn <args>`` (minus --nproc) under torchrun on this node; returns torchrun's exit code."""
    if nproc < 1:
        raise HqgnnError(f"--nproc must be >= 1, got {nproc}")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise HqgnnError("--nproc starts torchrun itself: drop it when already running under torchrun")
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])  # the folder holding the hqgnn package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return subprocess.call(torchrun_command(nproc, args), env=env)
