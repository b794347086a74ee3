"""A run directory: what training writes (config, metrics, weights, tables, id maps) and how it is read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from .config import RunConfig, dump_config, load_config
from .errors import HqgnnError
from .index.format import CodeFormat
from .io import atomic_path, save_npz, write_json, write_text

CONFIG, METRICS, MODEL, TABLES, IDS, SEEN, CURVE, FORMAT = (
    "config.toml", "metrics.json", "model.safetensors", "tables.safetensors", "ids.npz", "seen.npz", "curve.png",
    "format.json",
)


def save_run(
    run_dir: str | Path,
    cfg: RunConfig,
    metrics: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    tables: dict[str, torch.Tensor],
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    seen: sp.csr_matrix,
) -> None:
    """Write every file of a finished run, each atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG, dump_config(cfg))
    for name, tensors in ((MODEL, model_state), (TABLES, tables)):
        with atomic_path(run_dir / name) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    if cfg.quant.bits:  # the code format, written next to the codes (docs/index.md)
        fmt = CodeFormat.from_config(cfg.quant, dim=int(tables["item_codes"].shape[1]), term="item_term" in tables)
        write_json(run_dir / FORMAT, fmt.to_dict())
    save_npz(run_dir / IDS, user_ids=user_ids, item_ids=item_ids)
    save_npz(run_dir / SEEN, indptr=seen.indptr.astype(np.int64), indices=seen.indices.astype(np.int64),
             shape=np.asarray(seen.shape, dtype=np.int64))
    write_json(run_dir / METRICS, metrics)


def plot_curve(path: str | Path, history: list[dict[str, Any]], metric: str) -> None:
    """Training loss and validation metric per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["loss"] for h in history], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("BPR loss", color="tab:blue")
    ev = [(h["epoch"], h[f"val_{metric}"]) for h in history if f"val_{metric}" in h]
    if ev:
        ax2 = ax.twinx()
        ax2.plot(*zip(*ev), color="tab:red", marker="o", ms=3, label=f"val {metric}")
        ax2.set_ylabel(f"validation {metric}", color="tab:red")
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
        return TrainedRun(self.path, self.config, self.metrics, tables, self.user_ids, self.item_ids[order], seen)


def load_run(run_dir: str | Path) -> TrainedRun:
    run_dir = Path(run_dir)
    for name in (CONFIG, METRICS, TABLES, IDS, SEEN):
        if not (run_dir / name).exists():
            raise HqgnnError(f"{run_dir / name}: missing — is {run_dir} a finished hqgnn run directory?")
    cfg = load_config(run_dir / CONFIG)
    metrics = json.loads((run_dir / METRICS).read_text())
    tables = load_file(str(run_dir / TABLES))
    with np.load(run_dir / IDS, allow_pickle=False) as ids:
        user_ids, item_ids = ids["user_ids"], ids["item_ids"]
    with np.load(run_dir / SEEN, allow_pickle=False) as s:
        seen = sp.csr_matrix((np.ones(len(s["indices"]), np.float32), s["indices"], s["indptr"]), shape=tuple(s["shape"]))
    return TrainedRun(run_dir, cfg, metrics, tables, user_ids, item_ids, seen)
