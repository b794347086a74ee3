"""Crash tests: kill -9 at seeded points of train / overwrite / resume / save, in real child processes.

A child runs one operation and SIGKILLs itself at its N-th durability event (an ``os.replace`` /
``os.rename`` / ``os.fsync`` / ``os.link`` or directory exchange; N drawn over the operation's whole
event count, measured by an uninterrupted child), which covers checkpoints mid-training as well as
every step of writing and swapping a run directory. Afterwards the directory must be the old run or
the new one (never a mix), or, for a new run, no finished run at all; finishing the job afterwards
(``--resume`` from a checkpoint, or training again into the same ``--out``) must end with exactly the
metrics and answers of an uninterrupted run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import answer_of, tiny_config

from hqgnn.errors import HqgnnError

OPS = ("new", "overwrite", "resume", "save")
TRIALS_PER_OP = 8  # 32 kills in the default run


def _child(op: str, target: str, kill_at: int, src: str, count_file: str) -> None:
    """Run ``op`` on ``target``; SIGKILL this process at its ``kill_at``-th durability event (0: never)."""
    import hqgnn.io as hio

    counter = [0]

    def wrap(fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            counter[0] += 1
            if counter[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return inner

    for name in ("replace", "rename", "fsync", "link"):
        setattr(os, name, wrap(getattr(os, name)))
    hio._exchange = wrap(hio._exchange)
    do_op(op, Path(target), Path(src))
    if count_file:
        Path(count_file).write_text(str(counter[0]))


def do_op(op: str, target: Path, src: Path) -> None:
    from hqgnn import HQGNN
    from hqgnn.train.pipeline import run_training

    if op == "new":
        run_training(tiny_config(), target, progress=False)
    elif op == "finish-new":  # a killed new run that kept a checkpoint: continue it
        run_training(tiny_config(), target, progress=False, resume=True)
    elif op == "overwrite":
        run_training(tiny_config(seed=7), target, progress=False, overwrite=True)
    elif op == "resume":
        cfg = tiny_config()
        cfg.train.epochs = 4
        run_training(cfg, target, progress=False, resume=True)
    elif op == "save":
        HQGNN.load(src).save(target, overwrite=True)


def comparable(metrics: dict[str, Any]) -> Any:
    return metrics["test"], [{k: v for k, v in h.items() if "seconds" not in k} for h in metrics["history"]]


def state_of(d: Path) -> tuple[Any, Any] | None:
    """(answers, comparable metrics) of a finished run at ``d``; None when ``d`` holds no finished run."""
    try:
        answers = answer_of(d)
    except HqgnnError:
        return None
    return answers, comparable(json.loads((d / "metrics.json").read_text()))


class World:
    """The reference runs, each made by an uninterrupted child (same process setup as the killed ones)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ctx = multiprocessing.get_context("forkserver")
        # imported once in the fork server, so each killed child starts in milliseconds
        self.ctx.set_forkserver_preload(["hqgnn.train.pipeline", "hqgnn.estimator", "hqgnn.recommender",
                                         "reliability_helpers", "matplotlib.pyplot", "torch._dynamo", "test_crash"])
        self.old = root / "old"  # a finished 2-epoch run (seed 2020): what overwrite / save replace, resume extends
        self.spawn("new", self.old)
        self.events: dict[str, int] = {}
        self.want: dict[str, Any] = {}
        self.src = self.old  # the run HQGNN.save writes (loaded from here) ...
        self.other = root / "other"  # ... over this one (seed 7)
        self.spawn("overwrite", self.other, count=None)
        for op in OPS:
            d = self.fresh(op, "ref")
            self.events[op] = self.spawn(op, d, count=True)
            self.want[op] = state_of(d)
            assert self.want[op] is not None, op

    def fresh(self, op: str, name: str) -> Path:
        """The starting point of ``op``: nothing (new), the old run (overwrite, resume) or the other run (save)."""
        d = self.root / op / name
        shutil.rmtree(d.parent, ignore_errors=True)
        d.parent.mkdir(parents=True)
        if op in ("overwrite", "resume"):
            shutil.copytree(self.old, d)
        elif op == "save":
            shutil.copytree(self.other, d)
        return d

    def spawn(self, op: str, target: Path, kill_at: int = 0, count: bool | None = None) -> int:
        count_file = str(target.parent / f".{target.name}.events") if count else ""
        p = self.ctx.Process(target=_child, args=(op, str(target), kill_at, str(self.old), count_file))
        p.start()
        p.join(120)
        if kill_at:
            assert p.exitcode in (-signal.SIGKILL, 0), p.exitcode
        else:
            assert p.exitcode == 0, (op, p.exitcode)
        return int(Path(count_file).read_text()) if count else 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("crash"))


def before_state(world: World, op: str) -> Any:
    return {"new": None, "overwrite": state_of(world.old), "resume": state_of(world.old),
            "save": state_of(world.other)}[op]


@pytest.mark.parametrize("trial", range(len(OPS) * TRIALS_PER_OP))
def test_kill_9_leaves_the_old_run_or_the_new_one(world: World, trial: int) -> None:
    op = OPS[trial % len(OPS)]
    rng = random.Random(1000 + trial)
    kill_at = rng.randint(1, world.events[op])
    d = world.fresh(op, f"t{trial}")
    world.spawn(op, d, kill_at=kill_at)
    after = state_of(d) if d.exists() else None
    old, new = before_state(world, op), world.want[op]
    assert after in (old, new), f"{op} killed at event {kill_at}/{world.events[op]}: a mix of two runs"
    if op == "new" and after is None and d.exists():
        assert not (d / "manifest.json").exists()  # an unfinished run never looks finished
    # finish the job: the result equals an uninterrupted run's
    if after != new:
        if op == "new" and (d / "checkpoint.safetensors").exists():
            world.spawn("finish-new", d)
        else:
            world.spawn(op, d)  # a new run into what a killed one left (a stub must not block it)
        assert not list(d.parent.glob(f".{d.name}.staging-*"))  # the next writer cleared the killed one's staging
    assert state_of(d) == new, f"{op} killed at event {kill_at}: finishing it did not give the uninterrupted result"


def test_the_crash_trials_cover_every_step(world: World) -> None:
    assert len(OPS) * TRIALS_PER_OP >= 30
    for op in OPS:
        assert world.events[op] >= 10, (op, world.events[op])  # enough kill points to draw from
