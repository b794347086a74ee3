"""The one scoring + seen-item masking path: top-K over all items from a model's tables.

Training-time evaluation, ``hqgnn evaluate``, ``recommend``, ``similar_items`` and ``serve`` all rank
through :class:`Ranker`, so the metrics of training and of serving agree exactly:

* quantized tables, every code format (code or float queries, item scales and terms): the one code
  index (:func:`hqgnn.index.build_index`; exact, equal to a float64 brute force, ties to the lower item
  id; numba on CPU, Triton on CUDA);
* float tables: the fused blocked CPU top-K (:mod:`hqgnn.eval.cpu_topk`) on CPU, a GEMM + exact
  stable top-K on CUDA.

Seen items are given per query as CSR rows and normalised once, by
:func:`hqgnn.index.common.normalize_exclusion` (validated, rows sorted: the fused CPU kernels scan
sorted rows), whichever kernel then applies them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..index.common import Exclusion, normalize_exclusion, subset_exclusion
from ..index.api import Index, QueryCodes, build_index
from ..index.format import CodeFormat
from ..topk import stable_topk
from .masking import exclusion_mask_fill

# float32 scores a dense path (a float run on a GPU, an item scorer) materialises at once: larger query batches
# are searched in row slices, so memory follows the answer, not the batch (1 GiB)
SCORE_ELEMENTS = 1 << 28

__all__ = ["Ranker", "self_exclusion"]


def self_exclusion(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR that excludes, for query r, the item ``rows[r]`` itself (similar items)."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.arange(len(rows) + 1, dtype=np.int64), rows.copy()


class Ranker:
    """Top-``k`` items for user (or item) rows of a model's tables, seen items excluded.

    ``tables``: ``user_emb`` / ``item_emb`` (float, ``fmt=None``) or the code tables of ``fmt``
    (``item_codes`` / ``item_scale`` [/ ``item_term``] and ``user_codes`` / ``user_scale`` or
    ``user_query``: the run's tables.safetensors, or the trainer's current codes), ranked by the
    one :class:`hqgnn.index.Index` of that format.

    ``item_order``: the asymmetric CPU index's storage order. ``"scale"`` (default: evaluation, where
    speed matters more than 4 B per item; ~3x the users/s on real gowalla codes, BENCHMARKS § 3b) or
    ``"none"`` (tables already renumbered into that order, as ``Recommender(renumber_items=True)``
    serves them). Rankings are identical either way: the index is exact with ties to the lower id.
    """

    def __init__(self, tables: dict[str, torch.Tensor], fmt: CodeFormat | None = None,
                 device: str | torch.device = "cpu", item_order: str = "scale") -> None:
        self.device = torch.device(device)
        self.format = fmt
        self.index: Index | None = None
        self.scorers: dict[str, Callable[[], Any]] | None = None
        if fmt is None:  # float tables
            dev = self.device
            self.emb = {"user": tables["user_emb"].detach().float().to(dev),
                        "item": tables["item_emb"].detach().float().to(dev)}
            self.n_items = len(self.emb["item"])
            self._item_t = self.emb["item"].t().contiguous() if dev.type != "cpu" else None
            self._item_blocks: np.ndarray | None = None  # the CPU kernels' packed copy, built on first search
            return
        t = {k: v.detach().cpu() for k, v in tables.items()}
        term = t.get("item_term")
        fmt = fmt.replace(item_order=item_order)
        self.index = build_index(t["item_codes"].numpy(), fmt, scale=t["item_scale"].float().numpy(),
                                 term=None if term is None else term.float().numpy(), device=str(self.device))
        self.n_items = len(t["item_codes"])
        if fmt.float_queries:
            self.queries = {"user": t["user_query"].float().numpy()}
            self.query_scales: dict[str, np.ndarray | None] = {"user": None}
        else:
            self.queries = {"user": t["user_codes"].numpy()}
            self.query_scales = {"user": t["user_scale"].float().numpy()}
        if fmt.symmetric:  # item-to-item: item codes are queries of the same width
            self.queries["item"] = t["item_codes"].numpy()
            self.query_scales["item"] = t["item_scale"].float().numpy()
        else:
            # item-to-item similarity of other formats scores dequantized item codes; that scorer holds
            # a float copy of the item codes, so it is built on first use only
            from .scoring import code_scorer

            d = {k: v.to(self.device) for k, v in t.items() if k in ("item_codes", "item_scale")}
            self._built: dict[str, Any] = {}
            self.scorers = {"item": lambda: code_scorer(d["item_codes"], d["item_scale"], d["item_codes"],
                                                        d["item_scale"])}

    def with_user_rows(self, rows: dict[str, torch.Tensor], shared_scale: torch.Tensor | None = None) -> Ranker:
        """A ranker over the same items (the index and its copies shared) whose user table is ``rows``, the
        encoded rows of other users (:func:`hqgnn.foldin.encode_rows`: ``user_emb`` for a float run, else
        ``user_query`` or ``user_codes`` with ``user_scale``, or the run's per-tensor ``shared_scale``)."""
        import copy

        out = copy.copy(self)
        if self.index is None:
            out.emb = {**self.emb, "user": rows["user_emb"].detach().float().to(self.device)}
        elif "user_query" in rows:
            out.queries = {**self.queries, "user": rows["user_query"].float().numpy()}
            out.query_scales = {**self.query_scales, "user": None}
        else:
            scale = rows["user_scale"] if "user_scale" in rows else shared_scale
            if scale is None:
                raise ValueError("coded user rows need their user_scale (or the run's shared one)")
            out.queries = {**self.queries, "user": rows["user_codes"].numpy()}
            out.query_scales = {**self.query_scales, "user": scale.float().numpy()}
        return out

    @torch.no_grad()
    def search(self, rows: Any, k: int, exclude: Any = None, side: str = "user") -> tuple[np.ndarray, np.ndarray]:
        """``(scores, item ids)`` as numpy arrays (float32, int64), each (len(rows), k), best first.

        ``rows``: indices into the ``side`` table ("user", or "item" for item-to-item). ``exclude``:
        CSR rows (scipy matrix of len(rows) rows, or ``(indptr, indices)``), one per query, or None.
        Slots beyond the eligible items hold score -inf and id -1.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        b, k = len(rows), int(k)
        ex = normalize_exclusion(exclude, b, self.n_items)
        if self.index is None:
            if self.device.type == "cpu":  # the blocked CPU kernel holds no (rows x items) scores
                return self._float_search(rows, k, ex, side)
            return self._sliced(self._float_search, rows, k, ex, side)
        if self.scorers is not None and side == "item":
            return self._sliced(self._scored_search, rows, k, ex, side)
        scale = self.query_scales[side]
        qs = None if scale is None else (scale[rows] if scale.ndim else scale)
        scores, ids = self.index.search(QueryCodes(self.queries[side][rows], qs), k,
                                        exclude=None if ex is None else (ex.indptr, ex.indices))
        return _pad(_numpy(scores).astype(np.float32, copy=False), _numpy(ids).astype(np.int64, copy=False), k)

    def _sliced(self, search: Callable[..., tuple[np.ndarray, np.ndarray]], rows: np.ndarray, k: int,
                ex: Exclusion | None, side: str) -> tuple[np.ndarray, np.ndarray]:
        """``search`` over row slices of at most SCORE_ELEMENTS scores each (one call when they fit)."""
        step = max(1, SCORE_ELEMENTS // max(self.n_items, 1))
        if len(rows) <= step:
            return search(rows, k, ex, side)
        parts = [search(rows[r0 : r0 + step], k, subset_exclusion(ex, np.arange(r0, min(len(rows), r0 + step))), side)
                 for r0 in range(0, len(rows), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _scored_search(self, rows: np.ndarray, k: int, ex: Exclusion | None, side: str) -> tuple[np.ndarray, np.ndarray]:
        dev = self.device
        if side not in self._built:
            assert self.scorers is not None  # only called when scorers are set (see search)
            self._built[side] = self.scorers[side]()
        scores = self._built[side](torch.from_numpy(rows).to(dev))
        if ex is not None:
            exclusion_mask_fill(scores, torch.arange(len(rows), device=dev), torch.from_numpy(ex.indptr).to(dev),
                                torch.from_numpy(ex.indices).to(dev))
        vals, ids = stable_topk(scores, min(k, self.n_items))
        return _pad(vals.cpu().numpy(), ids.cpu().numpy(), k)

    def _float_search(self, rows: np.ndarray, k: int, ex: Exclusion | None, side: str) -> tuple[np.ndarray, np.ndarray]:
        q = self.emb[side][torch.from_numpy(rows).to(self.device)]
        b = len(rows)
        kk = min(k, self.n_items)
        if ex is None:
            indptr, indices = np.zeros(b + 1, np.int64), np.zeros(0, np.int64)
        else:
            indptr, indices = ex.indptr, ex.indices
        if self.device.type == "cpu":
            from .cpu_topk import float_topk_cpu, pack_items

            if self._item_blocks is None:  # packed once per table, not per batch
                self._item_blocks = pack_items(self.emb["item"])
            scores, ids = float_topk_cpu(q, self.emb["item"], torch.arange(b), torch.from_numpy(indptr),
                                         torch.from_numpy(indices), kk, item_blocks=self._item_blocks)
            return _pad(scores.numpy(), ids.numpy(), k)
        assert self._item_t is not None  # set for every non-CPU device
        scores = q @ self._item_t
        dev = self.device
        exclusion_mask_fill(scores, torch.arange(b, device=dev), torch.from_numpy(indptr).to(dev),
                            torch.from_numpy(indices).to(dev))
        vals, ids = stable_topk(scores, kk)
        vals_np, ids_np = vals.cpu().numpy(), ids.cpu().numpy()
        return _pad(vals_np, np.where(np.isneginf(vals_np), -1, ids_np), k)


def _numpy(x: Any) -> np.ndarray:
    return x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.where(np.isneginf(scores), -1, ids)
    if ids.shape[1] < k:  # fewer items than k
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return scores, ids
