"""Data-parallel training on CPU (gloo, 2 processes): same results as one process, rank 0 writes, failures end the job.

Processes are started the two ways users start them, ``hqgnn train --nproc 2`` (which re-runs itself
under torchrun) and ``torchrun -m hqgnn train``, and as hand-made ranks (RANK / WORLD_SIZE / MASTER_*
set by the test, as torchrun would) so each rank can get its own --out folder: rank 1 must write nothing.
Every process start costs a few seconds of imports, so the scenarios share launches where they can.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hqgnn
import run_helpers
from hqgnn.config import RunConfig, dump_config
from hqgnn.launch import torchrun_command
from hqgnn.run import load_run
from hqgnn.train import distributed
from hqgnn.train.pipeline import run_training

SRC = str(Path(hqgnn.__file__).resolve().parents[1])
FAULT_SITE = str(Path(__file__).resolve().parent / "fault_site")
RUN_FILES = {"config.toml", "metrics.json", "model.safetensors", "tables.safetensors", "ids.npz", "seen.npz",
             "curve.png", "checkpoint.safetensors", "best.safetensors", "manifest.json"}


def small_config(**train) -> RunConfig:
    # 3417 training pairs; batch 512: 6 full batches + one of 345, shards of 172 and 173
    return run_helpers.small_config(300, 200, 16, **{"epochs": 3, "eval_every": 1, "batch_size": 512, "patience": 0,
                                                     **train})


def quantized_config() -> RunConfig:
    # 3417 = 2 * 1708 + 1: the last batch has a single triple, so rank 0's shard is empty
    cfg = small_config(batch_size=1708)
    cfg.quant.bits, cfg.quant.estimator = 1, "gste"
    cfg.quant.delta_batches, cfg.quant.delta_every, cfg.quant.hutchinson_max_probes = 3, 2, 10
    return cfg


def child_env(**extra: str) -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("HQGNN_TEST")}
    # tests/fault_site/sitecustomize.py: the test-only fault injection ($HQGNN_TEST_KILL_*), not in the trainer
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, FAULT_SITE, env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(cfg: RunConfig, path: Path) -> Path:
    path.write_text(dump_config(cfg))
    return path


def start_ranks(config: Path, outs: list[Path], *args: str, **env: str) -> list[subprocess.Popen]:
    """One `python -m hqgnn train` per rank, the process group described by env vars as torchrun would."""
    port, world = str(free_port()), str(len(outs))
    procs = []
    for rank, out in enumerate(outs):
        e = child_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=world, MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port, **env)
        cmd = [sys.executable, "-m", "hqgnn", "train", "--config", str(config), "--out", str(out), "-q", *args]
        procs.append(subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def assert_same_run(single: Path, multi: Path, atol: float = 1e-4) -> None:
    a, b = load_run(single), load_run(multi)
    assert b.metrics["world_size"] == 2 and a.metrics["world_size"] == 1
    for key, value in a.metrics["test"].items():
        assert b.metrics["test"][key] == pytest.approx(value, abs=1e-4), key
    assert b.metrics["best_epoch"] == a.metrics["best_epoch"]
    for ha, hb in zip(a.metrics["history"], b.metrics["history"], strict=True):
        assert hb["loss"] == pytest.approx(ha["loss"], abs=1e-5)
        if "gste_delta" in ha:
            assert hb["gste_delta"] == pytest.approx(ha["gste_delta"], rel=1e-6)
    for name, t in a.tables.items():
        torch.testing.assert_close(b.tables[name], t, rtol=0, atol=atol, msg=name)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """small_config() trained in this process, not distributed."""
    out = tmp_path_factory.mktemp("reference") / "one"
    run_training(small_config(), out, progress=False)
    return out


def test_two_ranks_gste_delta_agrees(tmp_path):
    """1-bit GSTE: the Hessian-trace delta is the one-process delta on every rank; rank 1 writes nothing."""
    cfg = quantized_config()
    run_training(cfg, tmp_path / "one", progress=False)
    config = write_config(cfg, tmp_path / "cfg.toml")
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    procs = start_ranks(config, outs)
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert not outs[1].exists()  # rank 1 wrote no file, not even its --out folder
    assert {p.name for p in outs[0].iterdir()} == RUN_FILES | {"format.json"}  # a code run also writes its format
    assert_same_run(tmp_path / "one", outs[0])
    history = json.loads((outs[0] / "metrics.json").read_text())["history"]
    assert sum("gste_delta" in h for h in history) == 2  # epochs 1 and 3


def test_killed_rank_fails_the_job_and_resumed_run_equals_one_process(tmp_path, reference_run):
    """Rank 1 dies at epoch 2 of `hqgnn train --nproc 2`: the job ends non-zero within the timeout, naming
    rank 1, and writes no results. `torchrun -m hqgnn train --resume` (every rank loads rank 0's epoch-1
    checkpoint) then finishes, and the 2-rank run equals the one-process run; only rank 0 wrote files.

    (One pair of launches for both checks keeps this file within a minute on 2 cores; the GSTE test above
    is the uninterrupted 2-rank run.)
    """
    config = write_config(small_config(dist_timeout_s=20.0), tmp_path / "cfg.toml")
    out = tmp_path / "run"
    env = child_env(HQGNN_TEST_KILL_RANK="1", HQGNN_TEST_KILL_EPOCH="2")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "hqgnn", "train", "--nproc", "2", "--config", str(config),
                          "--out", str(out), "-q"], env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert res.returncode != 0
    assert elapsed < 60, elapsed
    assert "rank 1 exits at epoch 2" in res.stderr
    # torchrun's failure summary ("rank      : 1 (local_rank: 1)") or our own line from rank 0
    assert re.search(r"\brank\s*:\s*1\b", res.stderr) or "rank 0 of 2: distributed training aborted" in res.stderr, \
        res.stderr[-3000:]
    assert not (out / "metrics.json").exists()
    assert (out / "checkpoint.safetensors").exists()  # written after epoch 1

    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "hqgnn", "train", "--resume", "--out", str(out), "-q"],
                         env=child_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_run(reference_run, out)
    # rank 0 wrote every file exactly once, and nothing else (no leftover temp files)
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert res.stdout.count("test metrics") == 1  # the table is printed by rank 0 only


def test_hung_rank_times_out_with_one_clear_line(tmp_path):
    """Rank 1 stalls: rank 0's collective times out after train.dist_timeout_s and it exits with one error line."""
    config = write_config(small_config(dist_timeout_s=5.0), tmp_path / "cfg.toml")
    procs = start_ranks(config, [tmp_path / "r0", tmp_path / "r1"], HQGNN_TEST_KILL_RANK="1",
                        HQGNN_TEST_KILL_EPOCH="2", HQGNN_TEST_KILL_MODE="hang")
    try:
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    assert elapsed < 60, elapsed
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert "rank 0 of 2" in lines[0] and "timed out after 5s" in lines[0], lines[0]
    assert "Traceback" not in err


# -- in-process pieces ------------------------------------------------------------------------------------
def test_shards_partition_every_batch():
    for n in (0, 1, 7, 345, 512):
        for w in (1, 2, 3, 8):
            bounds = [distributed.shard_bounds(n, r, w) for r in range(w)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


@pytest.mark.parametrize("n", [345, 1])
def test_scaled_shard_losses_average_to_the_global_gradient(monkeypatch, n):
    """DDP averages gradients over ranks: the scaled shard losses must give the full-batch gradient (uneven N too)."""
    from hqgnn.models import HQGNNModel

    cfg = small_config()
    cfg.model.layers = 0  # matrix factorization: no graph needed here
    torch.manual_seed(0)
    model = HQGNNModel(30, 20, cfg.model)
    users, pos, neg = torch.randint(30, (n,)), torch.randint(20, (n,)), torch.randint(20, (n,))
    loss, _ = model.bpr_loss(None, users, pos, neg, 1e-2)
    want = torch.autograd.grad(loss, model.encoder.embedding.weight)[0]
    world = 2
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    grads, losses = [], []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        share = distributed.ShardedBPRLoss(model, None)(users, pos, neg, 1e-2)
        losses.append(share.detach())
        grads.append(torch.autograd.grad(share, model.encoder.embedding.weight)[0])
    torch.testing.assert_close(sum(grads) / world, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sum(losses) / world, loss.detach(), rtol=1e-6, atol=1e-7)


def test_nproc_is_stripped_for_torchrun():
    cmd = torchrun_command(4, ["train", "--nproc", "4", "--epochs", "2", "--nproc=4", "-q"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "hqgnn",
                       "train", "--epochs", "2", "-q"]


def test_two_ranks_schedule_negatives_and_refit_equal_one_process(tmp_path):
    """Cosine warm-up schedule, 3 negatives per positive and the refit: two ranks give the one-process run."""
    cfg = small_config(lr_schedule="cosine", warmup_epochs=2, negatives=3, refit=True)
    run_training(cfg, tmp_path / "one", progress=False)
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    procs = start_ranks(write_config(cfg, tmp_path / "cfg.toml"), outs)
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
    assert_same_run(tmp_path / "one", outs[0])
    metrics = json.loads((outs[0] / "metrics.json").read_text())
    assert metrics["protocol"] == "validation+refit"
    assert metrics["refit"]["test"] == pytest.approx(load_run(tmp_path / "one").metrics["refit"]["test"], abs=1e-4)
