"""A run directory: what training writes (config, metrics, weights, tables, id maps) and how it is read back."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

from .config import RunConfig, dump_config
from .errors import HqgnnError
from .io import atomic_path, built_dir, link_or_copy, save_npz, write_json, write_text
from .index.format import CodeFormat
from .manifest import (
    FORMAT_VERSION,
    MANIFEST,
    RunCheckError,
    build_manifest,
    check_ids,
    check_manifest_against,
    check_seen,
    check_tables,
    config_format,
    parse_npz,
    parse_tables,
    read_manifest,
    read_verified,
)

CONFIG, METRICS, MODEL, TABLES, IDS, SEEN, CURVE, FORMAT = (
    "config.toml", "metrics.json", "model.safetensors", "tables.safetensors", "ids.npz", "seen.npz", "curve.png",
    "format.json",
)
# what --resume continues from: carried over (hard links) when a finished run is written or replaced
RESUMABLE = ("checkpoint.safetensors", "best.safetensors", "refit")


def save_run(
    run_dir: str | Path,
    cfg: RunConfig,
    metrics: dict[str, Any],
    model_state: dict[str, torch.Tensor] | None,
    tables: dict[str, torch.Tensor],
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    seen: sp.csr_matrix,
    *,
    history_metric: str | None = None,
    carry_from: str | Path | None = None,
    carry: bool = True,
    model_from: str | Path | None = None,
) -> None:
    """Write a finished run and put it at ``run_dir`` in one step (the old content, if any, is replaced whole).

    Every file is written into a staging folder beside ``run_dir`` (fsynced), ``manifest.json`` last,
    then the folder replaces ``run_dir`` (:func:`hqgnn.io.built_dir`): a reader or a crash sees the
    old run or the new one, never a mix (no stale metrics.json next to new tables). The resumable
    state (checkpoints, the refit's working folder) of ``carry_from`` (default ``run_dir``) is
    hard-linked into the new folder, so ``--resume`` keeps working (``carry=False``: none, e.g. ``HQGNN.save``,
    whose model is not that checkpoint's). ``history_metric``: also draw
    ``curve.png`` from ``metrics["history"]``. ``model_from``: the model.safetensors of another (verified)
    run, hard-linked in place of writing ``model_state`` (a grown run's weights are its source's, unchanged:
    no read, parse and rewrite of them). The caller holds the directory's lock.
    """
    if (model_state is None) == (model_from is None):
        raise ValueError("give exactly one of model_state and model_from")
    run_dir = Path(run_dir)
    carry_from = run_dir if carry_from is None else Path(carry_from)
    with built_dir(run_dir) as staging:
        metrics = {**metrics, "run_format": FORMAT_VERSION}  # says a manifest.json belongs next to it
        write_text(staging / CONFIG, dump_config(cfg))
        for name, tensors in ((MODEL, model_state), (TABLES, tables)):
            if tensors is None:  # model_from
                link_or_copy(Path(model_from or ""), staging / name)
                continue
            with atomic_path(staging / name) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        save_npz(staging / IDS, user_ids=user_ids, item_ids=item_ids)
        save_npz(staging / SEEN, indptr=seen.indptr.astype(np.int64), indices=seen.indices.astype(np.int64),
                 shape=np.asarray(seen.shape, dtype=np.int64))
        write_json(staging / METRICS, metrics)
        if cfg.quant.bits:  # the code format, written next to the codes (hqgnn.index.CodeFormat)
            fmt = CodeFormat.from_config(cfg.quant, dim=int(tables["item_codes"].shape[1]),
                                         term="item_term" in tables)
            write_json(staging / FORMAT, fmt.to_dict())
        if history_metric and metrics.get("history"):
            plot_curve(staging / CURVE, metrics["history"], history_metric)
        for name in RESUMABLE if carry else ():
            if (carry_from / name).exists():
                link_or_copy(carry_from / name, staging / name)
        shapes = {k: list(v.shape) for k, v in tables.items()}
        write_json(staging / MANIFEST, build_manifest(staging, config_format(cfg), shapes, len(user_ids),
                                                      len(item_ids)))


def plot_curve(path: str | Path, history: list[dict[str, Any]], metric: str) -> None:
    """Training loss and validation metric per epoch, as a PNG: both in one legend, the selected (best
    validation) epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ep = [h["epoch"] for h in history]
    handles = ax.plot(ep, [h["loss"] for h in history], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    ev = [(h["epoch"], h[f"val_{metric}"]) for h in history if f"val_{metric}" in h]
    if ev:
        ax2 = ax.twinx()
        handles += ax2.plot(*zip(*ev), color="tab:red", marker="o", ms=3, label=f"validation {metric}")
        ax2.set_ylabel(f"validation {metric}", color="tab:red")
        best_epoch, best = max(ev, key=lambda e: (e[1], -e[0]))  # the first of equal bests, as selection picks
        handles.append(ax2.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch {best_epoch}"))
        ax2.plot([best_epoch], [best], marker="*", ms=12, color="tab:red")
        ax2.annotate(f"{best:.4f}", (best_epoch, best), xytext=(6, -12), textcoords="offset points", fontsize=8)
    ax.legend(handles=handles, loc="center right", fontsize=8)
    ax.set_title("hqgnn training curve")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


@dataclass
class TrainedRun:
    """A finished run loaded for evaluation, recommendation, export or serving."""

    path: Path
    config: RunConfig
    metrics: dict[str, Any]
    tables: dict[str, torch.Tensor]
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: sp.csr_matrix
    manifest: dict[str, Any] | None = None  # the verified manifest.json (None: a run written before manifests)

    @property
    def quantized(self) -> bool:
        return "item_codes" in self.tables

    @property
    def format(self) -> CodeFormat | None:
        """The code format of a quantized run (None for a float run): from its ``[quant]`` config, checked
        against the tables it stored (a run whose tables disagree with its config is refused)."""
        if not self.quantized:
            return None
        try:
            fmt = CodeFormat.from_config(self.config.quant, dim=int(self.tables["item_codes"].shape[1]),
                                         term="item_term" in self.tables)
        except ValueError as exc:
            raise HqgnnError(f"{self.path / CONFIG}: {exc}") from None
        if fmt.float_queries != ("user_query" in self.tables):
            stored = "float queries" if "user_query" in self.tables else "user codes"
            raise HqgnnError(f"{self.path / CONFIG}: [quant] says {fmt.query_bits}-bit queries, but "
                             f"{self.path / TABLES} holds {stored}")
        return fmt

    @property
    def bits(self) -> int:
        return self.config.quant.bits if self.quantized else 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _lookup(self, ids: np.ndarray, raw: Any, what: str) -> int:
        key = str(raw)
        if not hasattr(self, "_maps"):
            self._maps: dict[str, dict[str, int]] = {}
        if what not in self._maps:
            self._maps[what] = {str(v): i for i, v in enumerate(ids.tolist())}
        try:
            return self._maps[what][key]
        except KeyError:
            raise KeyError(f"unknown {what} {raw!r}") from None

    def rows(self, side: str, ids: np.ndarray) -> np.ndarray:
        """int64 rows of ``side`` ("user" / "item") ids of the run's kind, -1 where unknown. The index over the
        run's ids is built once per run (the service asks on every request)."""
        import pandas as pd

        if len(ids) == 0:
            return np.empty(0, np.int64)
        cache: dict[str, Any] = self.__dict__.setdefault("_row_index", {})
        if side not in cache:
            cache[side] = pd.Index(self.user_ids if side == "user" else self.item_ids)
        return np.asarray(cache[side].get_indexer(ids), dtype=np.int64)

    def user_index(self, raw: Any) -> int:
        return self._lookup(self.user_ids, raw, "user")

    def item_index(self, raw: Any) -> int:
        return self._lookup(self.item_ids, raw, "item")

    def with_item_order(self, order: np.ndarray) -> "TrainedRun":
        """The same run with its items renumbered: new item j is old item ``order[j]``.

        Every per-item table row, the id table and the seen columns move together, so raw ids,
        scores and recommendations are unchanged; only the numbering (and so which of two exactly
        tied items comes first) follows the new order. The permutation itself is not kept: the id
        table absorbs it (a code index can then hold items in its storage order without an order array).
        """
        n = self.n_items
        order = np.asarray(order, dtype=np.int64)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise ValueError(f"order must be a permutation of the {n} items")
        idx = torch.from_numpy(order)
        tables = {k: (v[idx] if k.startswith("item_") and v.ndim and v.shape[0] == n else v)
                  for k, v in self.tables.items()}
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        seen = self.seen.tocsr()
        seen = sp.csr_matrix((seen.data, inverse[seen.indices], seen.indptr), shape=seen.shape)
        seen.sort_indices()
        return TrainedRun(self.path, self.config, self.metrics, tables, self.user_ids, self.item_ids[order], seen,
                          manifest=self.manifest)


def load_run(run_dir: str | Path) -> TrainedRun:
    """Read a finished run, verified: the manifest (sizes, sha256, code format, shapes) and the cross-file
    invariants (see :mod:`hqgnn.manifest`). Any problem is one :class:`RunCheckError` line naming the file.

    A run written before manifests (its metrics.json has no ``run_format``) loads with the cross-file
    checks only; one whose metrics.json says a manifest was written but has none is refused.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunCheckError(run_dir, "", "missing (no such run directory)" if not run_dir.exists() else "not a directory")
    man = read_manifest(run_dir)
    for name in (CONFIG, METRICS, TABLES, IDS, SEEN):
        if not (run_dir / name).exists():
            raise RunCheckError(run_dir, name, "missing (is this a finished hqgnn run directory?)")
    if man is not None:  # every listed file: the manifest's size and sha256 (a file of another run differs)
        for name in man["files"]:
            if name not in (CONFIG, METRICS, TABLES, IDS, SEEN):
                read_verified(run_dir, name, man)
    cfg = _parse_config(run_dir, read_verified(run_dir, CONFIG, man))
    metrics = _parse_metrics(run_dir, read_verified(run_dir, METRICS, man))
    if man is None and metrics.get("run_format") is not None:
        raise RunCheckError(run_dir, MANIFEST, "missing, but metrics.json says this run was written with one "
                                               "(deleted or lost: the run cannot be verified)")
    tables = parse_tables(run_dir, TABLES, read_verified(run_dir, TABLES, man))
    ids = parse_npz(run_dir, IDS, read_verified(run_dir, IDS, man), ("user_ids", "item_ids"))
    user_ids, item_ids = ids["user_ids"], ids["item_ids"]
    check_ids(run_dir, IDS, user_ids, "user_ids")
    check_ids(run_dir, IDS, item_ids, "item_ids")
    n_users, n_items = len(user_ids), len(item_ids)
    s = parse_npz(run_dir, SEEN, read_verified(run_dir, SEEN, man), ("indptr", "indices", "shape"))
    check_seen(run_dir, SEEN, s, n_users, n_items)
    fmt = config_format(cfg)
    check_tables(run_dir, TABLES, tables, fmt, n_users, n_items, CONFIG)
    if man is not None:
        check_manifest_against(run_dir, man, fmt, tables, n_users, n_items)
    seen = sp.csr_matrix((np.ones(len(s["indices"]), np.float32), s["indices"].astype(np.int64),
                          s["indptr"].astype(np.int64)), shape=(n_users, n_items))
    return TrainedRun(run_dir, cfg, metrics, tables, user_ids, item_ids, seen, manifest=man)


def load_model_state(run_dir: str | Path, manifest: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """model.safetensors of a run (verified against ``manifest``); {} when the run has none."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL).exists():
        if manifest is not None and MODEL in manifest["files"]:
            raise RunCheckError(run_dir, MODEL, "missing, but the manifest lists it")
        return {}
    return parse_tables(run_dir, MODEL, read_verified(run_dir, MODEL, manifest))


def _parse_config(run_dir: Path, data: bytes) -> RunConfig:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunCheckError(run_dir, CONFIG, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunCheckError(run_dir, CONFIG, f"invalid TOML ({exc})") from None
    try:
        return RunConfig.from_dict(raw, origin="config")
    except HqgnnError as exc:
        raise RunCheckError(run_dir, CONFIG, str(exc).removeprefix("config: ")) from None


def _parse_metrics(run_dir: Path, data: bytes) -> dict[str, Any]:
    try:
        metrics = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise RunCheckError(run_dir, METRICS, f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(metrics, dict):
        raise RunCheckError(run_dir, METRICS, f"expected a JSON object, got {type(metrics).__name__}")
    return metrics


def check_run(run_dir: str | Path) -> dict[str, Any]:
    """``hqgnn check``: every check :func:`load_run` does, plus the weights; returns a summary (raises on a problem)."""
    run = load_run(run_dir)
    state = load_model_state(run.path, run.manifest)
    return {"run": str(run.path), "manifest": run.manifest is not None, "users": run.n_users, "items": run.n_items,
            "code_format": config_format(run.config), "weights": len(state),
            "files": sorted(run.manifest["files"]) if run.manifest else []}
