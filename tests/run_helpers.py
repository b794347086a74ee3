"""Shared by the tests: small synthetic run configurations, the popularity floor a model must beat, the
in-process CLI runner, and a subprocess runner for Triton's CPU interpreter."""

from typing import Any

import numpy as np
import torch

from hqgnn.config import RunConfig
from hqgnn.data import load_dataset
from hqgnn.eval import RankingEvaluator


def small_config(users: int, items: int, dim: int, epochs: int, eval_every: int, batch_size: int,
                 **train) -> RunConfig:
    """A CPU run on a synthetic data set of ``users`` x ``items``, lr 5e-3; ``train`` sets other train.* fields."""
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = users, items
    cfg.model.dim = dim
    cfg.train.epochs, cfg.train.eval_every, cfg.train.batch_size, cfg.train.lr = epochs, eval_every, batch_size, 5e-3
    cfg.train.device = "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def popularity_metrics(cfg: RunConfig) -> dict:
    """Test metrics @20 of ranking every user's unseen items by train popularity."""
    data = load_dataset(cfg.data)
    pop = torch.from_numpy(np.bincount(data.seen[:, 1], minlength=data.n_items).astype(np.float32))
    ev = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), [20], "cpu")
    return ev.evaluate(lambda users: pop.expand(len(users), -1).clone())


def run_in_triton_interpreter(code: str, timeout: int = 1800):
    """Run ``code`` in a fresh Python with TRITON_INTERPRET=1 (it must be set before triton is imported,
    so this process's Triton, used by the CUDA tests, stays compiled), the tests folder and src/ on the
    path. Returns the CompletedProcess (stdout / stderr captured)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([str(here), str(here.parent / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


def run_cli(args: list[str], capsys: Any) -> tuple[int, str, str]:
    """``hqgnn ARGS`` in this process: (exit status, stdout, stderr) of this call only."""
    from hqgnn.cli import main

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
