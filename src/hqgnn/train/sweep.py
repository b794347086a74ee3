"""A hyperparameter sweep selected on the validation split only: a grid of training runs, the winner, its refit."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

from ..config import RunConfig, dump_config
from ..errors import HqgnnError
from ..io import write_json, write_text
from ..run import CONFIG, METRICS
from .pipeline import run_training
from .trainer import CHECKPOINT

log = logging.getLogger("hqgnn.train")

SWEEP, BEST_CONFIG, CANDIDATES, FINAL = "sweep.json", "best.toml", "candidates", "best"

# Fields a sweep may not vary, and why: every candidate must be measured on the same validation split
# with the same metric, and the selection is on validation (the sweep's own job, not the run's).
_FIXED_SECTIONS = {"data": "data.* settings change the validation split the candidates are compared on",
                   "eval": "eval.* settings change what is measured"}
_FIXED_FIELDS = {"train.select_metric": "candidates are compared on one metric",
                 "train.protocol": "a sweep selects on validation",
                 "train.refit": "the refit is of the winner only (--refit)",
                 "train.init_from": "a warm start is part of the base config"}


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns; ``summary`` is also written to ``out_dir/sweep.json``."""

    winner: str
    config: RunConfig  # the winner's resolved config (train.refit as requested)
    summary: dict[str, Any]
    final_metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json of the run the sweep reports on test


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["train.reg=1e-4,2e-4", ...]`` -> {"train.reg": ["1e-4", "2e-4"]}; one error line per mistake."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        options = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(options):
            raise HqgnnError(f"--grid expects section.field=v1,v2,..., got {item!r}")
        if key in grid:
            raise HqgnnError(f"--grid {key} is given twice; list all its values in one --grid")
        grid[key] = options
    if not grid:
        raise HqgnnError("a sweep needs at least one --grid section.field=v1,v2,...")
    return grid


def candidates(base: RunConfig, grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any], RunConfig]]:
    """Every point of the grid as (name, overrides, validated config), in grid order, all checked before
    any training starts (so a bad value fails at once, not after hours of the sweep)."""
    base.validate()
    if base.train.protocol != "validation":
        raise HqgnnError("a sweep selects on the validation split: it needs train.protocol=validation")
    if base.data.val_ratio <= 0:
        raise HqgnnError("a sweep selects on the validation split: it needs data.val_ratio > 0")
    for key in grid:
        why = _FIXED_SECTIONS.get(key.partition(".")[0]) or _FIXED_FIELDS.get(key)
        if why:
            raise HqgnnError(f"--grid {key}: not a sweep dimension ({why})")
        if not grid[key]:
            raise HqgnnError(f"--grid {key}: no values")
    if not grid:
        raise HqgnnError("a sweep needs at least one --grid section.field=v1,v2,...")
    out = []
    for i, values in enumerate(itertools.product(*grid.values())):
        overrides = dict(zip(grid, values))
        cfg = copy.deepcopy(base)
        cfg.train.refit = False
        for key, value in overrides.items():
            try:
                cfg.set(key, value)
            except HqgnnError as exc:
                raise HqgnnError(f"--grid {exc}") from None
        name = f"c{i:02d}_" + "_".join(f"{k.rpartition('.')[2]}={_slug(v)}" for k, v in overrides.items())
        cfg.validate(origin=f"--grid candidate {name}")
        typed = {k: getattr(getattr(cfg, k.partition(".")[0]), k.partition(".")[2]) for k in overrides}  # as run
        out.append((name, typed, cfg))
    return out


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "-", str(value))


def run_sweep(base: RunConfig, grid: dict[str, list[Any]], out_dir: str | Path, refit: bool = False,
              resume: bool = False, progress: bool = False,
              on_candidate: Callable[[str, dict[str, Any]], None] | None = None) -> SweepResult:
    """Train every grid point of ``base`` (validation protocol), pick the best by ``train.select_metric``
    on VALIDATION (ties: the first in grid order), and write ``out_dir``:

    ``candidates/<name>/`` one run directory per point; ``sweep.json`` every candidate's validation
    numbers, the winner, and test numbers of the winner only; ``best.toml`` the winner's config;
    with ``refit`` (or ``base.train.refit``), ``best/`` the winner retrained with ``train.refit=true`` (its own selection run, then
    train + validation for the selected epochs; it costs one more run) and the test numbers are its.
    ``resume`` keeps finished candidates and continues an interrupted one from its checkpoint.
    """
    out_dir = Path(out_dir)
    refit = bool(refit or base.train.refit)  # a base config that asks for the refit gets it, of the winner
    points = candidates(base, grid)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not resume:
        raise HqgnnError(f"{out_dir}: already holds files; pass --resume to continue that sweep or choose another --out")
    metric = base.train.select_metric
    rows = []
    for name, overrides, cfg in points:
        run_dir = out_dir / CANDIDATES / name
        metrics = _run_or_reuse(cfg, run_dir, resume, progress)
        row = {"name": name, "overrides": overrides, "val": metrics["val"], "best_epoch": metrics["best_epoch"],
               "epochs_run": metrics["epochs_run"], "train_seconds": metrics["train_seconds"],
               "run_dir": str(run_dir.relative_to(out_dir))}
        rows.append(row)
        log.info("sweep %s: val %s %.4f", name, metric, metrics["val"][metric])
        if on_candidate is not None:
            on_candidate(name, row)
    best = max(range(len(rows)), key=lambda i: (rows[i]["val"][metric], -i))  # the first of equals wins
    winner, _, win_cfg = points[best]
    win_cfg = copy.deepcopy(win_cfg)
    win_cfg.train.refit = bool(refit)
    write_text(out_dir / BEST_CONFIG, dump_config(win_cfg))
    if refit:
        final = _run_or_reuse(win_cfg, out_dir / FINAL, resume, progress)
        final_dir = FINAL
    else:
        final = json.loads((out_dir / CANDIDATES / winner / METRICS).read_text())
        final_dir = rows[best]["run_dir"]
    summary = {
        "select_metric": metric, "selected_on": "validation",
        "grid": {k: list(v) for k, v in grid.items()}, "candidates": rows, "winner": winner,
        "best_config": BEST_CONFIG,
        # test numbers of the selected model only: reading the losers' test numbers would select on test
        "final": {"run_dir": final_dir, "protocol": final["protocol"], "test": final["test"],
                  "best_epoch": final["best_epoch"], "train_seconds": final["train_seconds"],
                  **({"refit": {k: final["refit"][k] for k in ("epochs", "train_seconds")}} if refit else {})},
    }
    write_json(out_dir / SWEEP, summary)
    return SweepResult(winner, win_cfg, summary, final)


def _run_or_reuse(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """A finished run (its config equal to ``cfg``) is reused under ``resume``; one with a checkpoint continues."""
    if resume and (run_dir / METRICS).is_file():
        if (run_dir / CONFIG).read_text() != dump_config(cfg):
            raise HqgnnError(f"{run_dir / CONFIG}: this finished candidate was trained with another config; "
                             "--resume continues the same sweep only")
        return cast(dict[str, Any], json.loads((run_dir / METRICS).read_text()))
    again = resume and (run_dir / CHECKPOINT).is_file()
    return run_training(cfg, run_dir, resume=again, progress=progress)
