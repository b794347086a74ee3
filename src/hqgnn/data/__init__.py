"""Data entry point: dispatch a data source to its loader, carve validation, and report dataset statistics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import HqgnnError
from .dataset import InteractionData
from .lightgcn_format import load_lightgcn_dir, parse_file, write_lightgcn_dir
from .logs import dedupe, kcore, load_log, log_format, read_log
from .registry import DATASETS, cache_dir, register_dataset, resolve_dataset
from .split import holdout_validation, split_leave_last, split_random
from .synthetic import make_synthetic, synthetic_dataset

__all__ = [
    "DATASETS",
    "InteractionData",
    "cache_dir",
    "dataset_stats",
    "dedupe",
    "holdout_validation",
    "kcore",
    "load_dataset",
    "load_lightgcn_dir",
    "load_log",
    "log_format",
    "make_synthetic",
    "parse_file",
    "read_log",
    "register_dataset",
    "resolve_dataset",
    "split_leave_last",
    "split_random",
    "synthetic_dataset",
    "write_lightgcn_dir",
]

FORMATS = ("auto", "lightgcn", "csv", "tsv", "parquet")


def _load(cfg: DataConfig) -> tuple[InteractionData, dict[str, Any]]:
    """Load ``cfg.source`` (no validation split yet) and the loader's counts (duplicates removed, ...)."""
    if cfg.format not in FORMATS:
        raise HqgnnError(f"data.format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    source = cfg.source
    if source == "synthetic":
        return synthetic_dataset(cfg)
    if source in DATASETS:
        return load_lightgcn_dir(resolve_dataset(source, cfg), name=source), {}
    path = Path(source).expanduser()
    if path.is_dir():
        if cfg.format not in ("auto", "lightgcn"):
            raise HqgnnError(f"{path}: a directory is read as LightGCN format, but data.format is {cfg.format!r}")
        return load_lightgcn_dir(path), {}
    if path.is_file():
        if cfg.format == "lightgcn":
            raise HqgnnError(f"{path}: LightGCN data is a directory with train.txt and test.txt, not a file")
        return load_log(path, cfg, cfg.format)
    known = ", ".join(sorted(DATASETS))
    raise HqgnnError(
        f"data source {source!r} is not 'synthetic', a known dataset ({known}), an existing directory or a file"
    )


def _load_split(cfg: DataConfig) -> tuple[InteractionData, dict[str, Any]]:
    data, notes = _load(cfg)
    train, val = holdout_validation(data.train, cfg.val_ratio, cfg.seed)
    return dataclasses.replace(data, train=train, val=val), notes


def load_dataset(cfg: DataConfig) -> InteractionData:
    """Load the data named by ``cfg.source`` and carve the validation split from train.

    ``cfg.source`` is ``"synthetic"`` (the seeded generator), a registered name (``gowalla``,
    ``yelp2018``: local copy or hash-verified download), an existing directory (LightGCN format,
    already split; ``cfg.split`` does not apply) or a file (CSV / TSV / Parquet log, format from
    ``cfg.format`` or the extension, split with ``cfg.split``). Anything else is a one-line
    :class:`HqgnnError`. Validation: :func:`holdout_validation` with ``cfg.val_ratio`` and ``cfg.seed``.
    """
    return _load_split(cfg)[0]


def dataset_stats(source: str, cfg: DataConfig | None = None) -> dict[str, Any]:
    """Statistics for ``hqgnn data stats``: :meth:`InteractionData.summary` plus the loader's counts.

    Keys: name, users, items, interactions, train, val, test, density, cold_users, cold_items
    (no train or validation interaction), and for logs rows_read, duplicates_removed, kcore_removed,
    test_dropped_cold_items, items_dropped (synthetic data reports the last two). ``cfg`` supplies
    the other settings (columns, split, seed...); its ``source`` is replaced by ``source``.
    """
    cfg = dataclasses.replace(cfg or DataConfig(), source=source)
    data, notes = _load_split(cfg)
    return {**data.summary(), **notes}
