"""The CodeIndex base class: argument checking, backend dispatch (numba / torch / triton), save & load."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .common import (
    DeviceLike,
    Exclusion,
    ItemScale,
    ScaleLike,
    empty_exclusion_arrays,
    normalize_exclusion,
    normalize_query_scale,
    to_numpy,
    unpermute,
)
from .format import CodeFormat
from .packing import as_int8_codes, check_code_range
from .queries import split_queries

__all__ = ["BACKENDS", "CodeIndex", "SearchResult"]

BACKENDS = ("auto", "numba", "torch", "triton")

SearchResult = tuple[Any, Any]  # (scores float32 (B, k), ids int64 (B, k)): numpy on CPU, torch on CUDA


def _device_str(device: DeviceLike) -> str:
    s = str(device)
    if s.startswith("cuda"):
        return s if ":" in s else "cuda"
    if s != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}")
    return s


_KINDS: dict[str, type] = {}


def resolve_backend(device: str, backend: str) -> str:
    """The concrete backend for ``device`` ("cpu" / "cuda[:i]"): "auto" is numba on CPU and Triton (else
    torch) on CUDA; numba needs the CPU and Triton a CUDA device. Shared by every index kind."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device == "cpu":
            return "numba"
        from .gpu.sym import triton_available

        return "triton" if triton_available() else "torch"
    if backend == "numba" and device != "cpu":
        raise ValueError("the numba backend runs on CPU only")
    if backend == "triton" and device == "cpu":
        raise ValueError("the triton backend needs a CUDA device")
    return backend


class CodeIndex:
    """Exact top-k over integer item codes; subclasses store the packed codes for one bit width.

    ``search`` returns ``(scores, ids)``: float32 and int64 arrays of shape (B, k), sorted by score
    descending with ties broken by lower item id; slots beyond the eligible items hold id -1 and
    score -inf. On ``device='cpu'`` they are numpy arrays; on CUDA they are torch tensors on that
    device (so results stay on the GPU for a following re-rank or serving step).
    """

    bits: int
    n: int
    dim: int
    device: str
    backend: str
    _scale: ItemScale

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.__name__] = cls  # the "kind" saved in an index's metadata -> its class, for load()

    # ------------------------------------------------------------------ subclass hooks
    def _search_numba(self, qc: np.ndarray, k: int, qs: np.ndarray, ex: Exclusion | None, mode: str):
        raise NotImplementedError

    def _packed_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _packed_code_bytes(self) -> int:
        raise NotImplementedError

    def codes(self) -> np.ndarray:
        """The item codes as an int8 (n, d) array (unpacked from storage)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------- common
    def _setup(self, device: DeviceLike, backend: str) -> None:
        self.device = _device_str(device)
        self.backend = backend = resolve_backend(self.device, backend)
        self.threads: int | None = None  # CPU threads for search; None = all cores (HQGNN_NUM_THREADS)
        self._torch_engine = None
        if backend in ("torch", "triton"):
            self._torch_engine = self._make_torch_engine()

    def _make_torch_engine(self):
        from .gpu.sym import TorchCodeSearcher

        s = self._scale
        original = ItemScale(self._unpermute(s.values), 1, True, True) if s.per_row else s
        return TorchCodeSearcher(self.codes(), original, self.bits, self.device,
                                 use_triton=self.backend == "triton")

    @property
    def item_scale(self) -> np.ndarray | float | None:
        """Per-row scales (float32 (n,)), the per-tensor scale (float), or None."""
        if not self._scale.given:
            return None
        return self._unpermute(self._scale.values) if self._scale.per_row else float(self._scale.values[0])

    @property
    def bytes_per_item(self) -> float:
        """Bytes held per item by this index's search copy: packed codes (incl. the kernels'
        padding of d and n) + 4 for a per-row float32 scale + 4 for the int32 storage order the
        CPU copy keeps when it sorts items by scale. A CUDA index searches int8 codes (d padded to
        a multiple of 32, one byte per dim at every bit width) + scales on the GPU and reports
        those; its packed host copy (what ``save`` writes) is not counted."""
        scale = 4 if self._scale.per_row else 0
        if self._torch_engine is not None:
            return self._torch_engine.code_bytes / max(self.n, 1) + scale
        order = self._order.itemsize if self._order is not None else 0
        return self._packed_code_bytes() / max(self.n, 1) + scale + order

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={self.n}, dim={self.dim}, bits={self.bits}, device={self.device!r}, "
                f"backend={self.backend!r}, bytes_per_item={self.bytes_per_item:.1f})")

    @property
    def format(self) -> CodeFormat:
        """The code format (as given to :func:`hqgnn.index.build_index`, else derived from the codes)."""
        fmt = getattr(self, "_format", None)
        if fmt is None:
            kind = "row" if self._scale.per_row else ("tensor" if self._scale.given else "none")
            fmt = CodeFormat(dim=self.dim, item_bits=self.bits, query_bits=self.bits, scale=kind)
        return fmt

    def memory_bytes(self) -> int:
        """Bytes this index holds for search (see :attr:`bytes_per_item`)."""
        return int(round(self.bytes_per_item * self.n))

    def search(self, queries: Any, k: int, exclude: Any = None, mode: str = "scaled") -> SearchResult:
        """Exact top-k items for each query.

        queries: (B, d) integer codes of the items' bit width (scales 1), a
            :class:`hqgnn.index.QueryCodes` (codes and (B,) or scalar scales), or float vectors that
            the format encodes (:func:`hqgnn.index.encode_queries`); the score is
            ``s_u * s_i * <c_u, c_i>`` (the dequantized inner product).
        exclude: seen items per query, ``(indptr, indices)`` CSR over item ids (or a scipy CSR
            matrix of shape (B, n)); excluded items are never returned.
        mode: "scaled" (the score above) or, for 1-bit codes, "hamming": rank by smallest Hamming
            distance only (scales ignored) -- the task of FAISS ``IndexBinaryFlat``; the returned
            score is then ``d - 2 * hamming``.
        """
        if mode not in ("scaled", "hamming"):
            raise ValueError(f"mode must be 'scaled' or 'hamming', got {mode!r}")
        if mode == "hamming" and self.bits != 1:
            raise ValueError("mode='hamming' needs 1-bit codes")
        k = int(k)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        query_codes, query_scales = split_queries(queries, self.format)
        qc = to_numpy(query_codes)  # codes are tiny; validation and packing happen on the host
        if qc.ndim == 1:
            qc = qc[None, :]
        qc = as_int8_codes(qc, "query_codes")
        if qc.shape[1] != self.dim:
            raise ValueError(f"query_codes have dim {qc.shape[1]}, the index has dim {self.dim}")
        check_code_range(qc, self.bits, "query_codes")
        b = qc.shape[0]
        qs = normalize_query_scale(query_scales, b)
        ex = normalize_exclusion(exclude, b, self.n)
        if k == 0 or b == 0 or self.n == 0:
            return self._empty_result(b, k)
        if self._torch_engine is not None:
            scores, ids = self._torch_engine.search(qc, k, qs, ex, mode)
            if self.device == "cpu":
                return scores.numpy(), ids.numpy()
            return scores, ids
        return self._search_numba(qc, k, qs, ex, mode)

    def search_rerank(self, query_codes: Any, query_float: Any, item_float: Any, k: int,
                      candidates: int = 100, query_scales: Any = None, exclude: Any = None,
                      mode: str = "scaled") -> SearchResult:
        """Two-stage retrieval: top-``candidates`` by the codes, exact float re-rank (see
        :func:`hqgnn.index.rerank.search_rerank`)."""
        from .rerank import search_rerank

        return search_rerank(self, query_codes, query_float, item_float, k, candidates=candidates,
                             query_scales=query_scales, exclude=exclude, mode=mode)

    def _empty_result(self, b: int, k: int) -> SearchResult:
        scores = np.full((b, k), -np.inf, np.float32)
        ids = np.full((b, k), -1, np.int64)
        if self.device != "cpu":
            import torch

            return torch.from_numpy(scores).to(self.device), torch.from_numpy(ids).to(self.device)
        return scores, ids

    # ----------------------------------------------------------------- helpers for numba paths
    # With per-row scales the CPU copy stores items sorted by scale (descending): every chunk then
    # spans a narrow scale range, so the kernels' chunk bounds prune almost everything (measured
    # +47% q/s at 4 bits, +65% at 8 bits with random scales). ``_order[p]`` is the original id of
    # stored row p (None = identity); ties are still broken by original id.
    _order: np.ndarray | None = None
    _inv_order_cache: np.ndarray | None = None

    def _oid(self) -> np.ndarray:
        return self._order if self._order is not None else np.zeros(0, np.int32)

    def _ex_arrays(self, ex: Exclusion | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """Exclusion CSR in storage positions (sorted per query), as the kernels scan them."""
        if ex is None or ex.nnz == 0:
            p, i = empty_exclusion_arrays()
            return p, i, False
        indptr, indices = ex.indptr, ex.indices
        ok = (indices >= 0) & (indices < self.n)
        if not ok.all():  # ids outside the index cannot be returned anyway
            rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))[ok]
            indices = indices[ok]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=indptr.size - 1))]).astype(np.int64)
        if self._order is not None:
            if self._inv_order_cache is None:
                inv = np.empty(self.n, np.int64)
                inv[self._order] = np.arange(self.n, dtype=np.int64)
                self._inv_order_cache = inv
            pos = self._inv_order_cache[indices]
            rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
            indices = pos[np.lexsort((pos, rows))]
        return np.ascontiguousarray(indptr), np.ascontiguousarray(indices), True

    def _unpermute(self, stored: np.ndarray) -> np.ndarray:
        return unpermute(stored, self._order)

    @staticmethod
    def _scale_order(values: np.ndarray) -> np.ndarray:
        """Storage order for per-row scales: descending, stable (equal scales keep id order)."""
        order = np.argsort(-values.astype(np.float64), kind="stable")
        return order.astype(np.int32 if values.size < 2**31 else np.int64)

    def _threads(self) -> int:
        from .cpu.sym import default_threads

        t = getattr(self, "threads", None)
        return default_threads() if t is None else max(1, int(t))

    # --------------------------------------------------------------------- persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "code_format": self.format.to_dict(),
            "kind": type(self).__name__,
            "bits": self.bits,
            "n": self.n,
            "dim": self.dim,
            "scale": "row" if self._scale.per_row else ("tensor" if self._scale.given else "none"),
            "tensor_scale": float(self._scale.values[0]) if not self._scale.per_row else None,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the packed codes (+ per-row scales) as .npy files in directory ``path`` (or one
        .npz when ``path`` ends in .npz). No pickle; the directory form is memory-mappable."""
        from .io import write_index_files

        arrays = dict(self._packed_arrays())
        if self._scale.per_row:
            arrays["scales"] = self._scale.values  # storage order, like the codes
        if self._order is not None:
            arrays["order"] = self._order
        write_index_files(path, self._meta(), arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], mmap: bool = True, device: DeviceLike = "cpu",
             backend: str = "auto") -> "CodeIndex":
        """Open an index written by :meth:`save`. With ``mmap`` (directory form) the codes are
        memory-mapped read-only and searched in place, nothing is copied."""
        from .io import read_index_files

        meta, arrays = read_index_files(path, mmap=mmap)
        # subclasses register themselves (__init_subclass__), so the base never imports them
        kind = _KINDS.get(meta.get("kind"))
        if kind is None:
            raise ValueError(f"{path}: unknown index kind {meta.get('kind')!r}")
        if cls is not CodeIndex and not issubclass(kind, cls):
            raise ValueError(f"{path}: holds a {meta['kind']}, not a {cls.__name__}")
        if meta["scale"] == "row":
            scale = arrays["scales"]
        elif meta["scale"] == "tensor":
            scale = meta["tensor_scale"]
        else:
            scale = None
        return kind._from_packed(arrays, meta, scale, device, backend)

    @classmethod
    def _from_packed(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], scale: ScaleLike, device: DeviceLike,
                     backend: str) -> "CodeIndex":
        raise NotImplementedError


def keys_to_scores(keys: np.ndarray, ids: np.ndarray, qs_abs: np.ndarray) -> np.ndarray:
    """Scaled-mode float64 keys (sign of the query scale folded in) -> float32 scores s_u * key."""
    with np.errstate(invalid="ignore"):
        scores = (keys * qs_abs.astype(np.float64)[:, None]).astype(np.float32)
    scores[ids < 0] = -np.inf
    return scores
