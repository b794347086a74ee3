"""Data entry point: dispatch a data source to its loader, carve validation, and report dataset statistics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

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
    "load_dataset_with_counts",
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
    train, val = holdout_validation(data.train, cfg.val_ratio, cfg.seed, cfg.val_min_per_user)
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


def load_dataset_with_counts(cfg: DataConfig) -> tuple[InteractionData, dict[str, Any]]:
    """:func:`load_dataset` plus what the loader did: rows read, blank lines skipped, duplicates
    removed, rows dropped by the k-core filter, ignored columns (logs), cold users / items (all data).

    These go into metrics.json (``data_counts``) and are printed by ``hqgnn train`` even with ``-q``.
    """
    data, notes = _load_split(cfg)
    summary = data.summary()
    return data, {**notes, "cold_users": summary["cold_users"], "cold_items": summary["cold_items"]}


def dataset_stats(source: str, cfg: DataConfig | None = None) -> dict[str, Any]:
    """The data's own counts for ``hqgnn data stats``, apart from any split (no train / validation carving).

    Keys: name, rows_read, duplicates_removed, users, items, interactions (distinct pairs), density,
    and min / median / mean / max interactions per user and per item. Logs add blank_lines_skipped,
    ignored_columns and, with a k-core filter set, kcore_removed (users / items / interactions are
    then counted after it). LightGCN directories are split already: they add train, test and
    cold_users / cold_items (no train interaction). ``cfg`` supplies the other settings (columns,
    separator, format, synthetic sizes ...); its ``source`` is replaced by ``source``.
    """
    cfg = dataclasses.replace(cfg or DataConfig(), source=source)
    if cfg.format not in FORMATS:
        raise HqgnnError(f"data.format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if source == "synthetic":
        pairs = make_synthetic(cfg.synthetic_users, cfg.synthetic_items, cfg.synthetic_communities,
                               cfg.synthetic_mean_activity, cfg.seed)
        return {"name": "synthetic", **_pair_stats(pairs, cfg.synthetic_users, cfg.synthetic_items)}
    path = Path(source).expanduser()
    if source in DATASETS or path.is_dir():
        data, _ = _load(cfg)
        stats = {"name": data.name, **_pair_stats(np.concatenate([data.train, data.test]), data.n_users, data.n_items)}
        has_train_u = np.bincount(data.train[:, 0], minlength=data.n_users) > 0
        has_train_i = np.bincount(data.train[:, 1], minlength=data.n_items) > 0
        stats.update(train=int(len(data.train)), test=int(len(data.test)),
                     cold_users=int((~has_train_u).sum()), cold_items=int((~has_train_i).sum()))
        return stats
    if not path.is_file():
        _load(cfg)  # raises the loader's one-line error for an unknown source
    if cfg.format == "lightgcn":
        raise HqgnnError(f"{path}: LightGCN data is a directory with train.txt and test.txt, not a file")
    raw = read_log(path, cfg, cfg.format)
    keep = dedupe(raw.users, raw.items, raw.times)
    users, items = raw.users[keep], raw.items[keep]
    stats = {"name": path.name, "rows_read": len(raw.users), "blank_lines_skipped": raw.blank_lines,
             "ignored_columns": list(raw.ignored_columns)}
    n_users, n_items = len(raw.user_ids), len(raw.item_ids)
    if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:
        core = kcore(users, items, cfg.min_user_interactions, cfg.min_item_interactions)
        stats["kcore_removed"] = int((~core).sum())
        users, items = users[core], items[core]
        _, users = np.unique(users, return_inverse=True)
        _, items = np.unique(items, return_inverse=True)
        n_users, n_items = int(users.max()) + 1 if len(users) else 0, int(items.max()) + 1 if len(items) else 0
    pairs = np.column_stack([users, items]).astype(np.int64)
    stats.update(_pair_stats(pairs, n_users, n_items))
    stats.update(rows_read=len(raw.users), duplicates_removed=len(raw.users) - len(keep))  # not the k-core's
    return stats


def _pair_stats(pairs: np.ndarray, n_users: int, n_items: int, rows: int | None = None) -> dict[str, Any]:
    """Counts of a set of (user, item) rows: duplicates, distinct interactions, density, per-user / per-item spread."""
    n_rows = len(pairs) if rows is None else rows
    distinct = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    per_user = np.bincount(distinct[:, 0], minlength=n_users) if n_users else np.zeros(1, np.int64)
    per_item = np.bincount(distinct[:, 1], minlength=n_items) if n_items else np.zeros(1, np.int64)
    out: dict[str, Any] = {"rows_read": int(n_rows), "duplicates_removed": int(n_rows - len(distinct)),
                           "users": int(n_users), "items": int(n_items), "interactions": int(len(distinct)),
                           "density": len(distinct) / max(1, n_users * n_items)}
    for name, counts in (("user", per_user), ("item", per_item)):
        out[f"interactions_per_{name}_min"] = int(counts.min())
        out[f"interactions_per_{name}_median"] = float(np.median(counts))
        out[f"interactions_per_{name}_mean"] = float(counts.mean())
        out[f"interactions_per_{name}_max"] = int(counts.max())
    return out
