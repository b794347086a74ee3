"""AsymCodeIndex, the one code index: exact top-k of s_u s_i <c_u, c_i> + t_i (code queries) or s_i <x_u, c_i> + t_i.

Items: b-bit integer codes (1 bit = {-1,+1}; b >= 2 symmetric in [-2^(b-1), 2^(b-1)-1]), a float32
scale s_i and an optional float32 additive term t_i (per item or per tensor; held as float16 when every
value is exactly a float16, so keys are unchanged). Queries: integer codes of
``query_bits`` bits (2..8; 1-bit {-1, +1} queries are exact 2-bit codes) with per-query scales s_u, or
float vectors (``query_bits=0``). Every :class:`~hqgnn.index.CodeFormat` is served by this class, built
by :func:`hqgnn.index.build_index` / :func:`hqgnn.index.load_index`. Rotation and centering are applied once per query by :func:`hqgnn.index.queries.prepare_queries`.

Exactness (CPU):
* integer queries: <c_u, c_i> is computed exactly in int16/int32 by the SIMD kernels and every ranking
  key is the float64 value ``(ip * s_i) * s_u + t_i`` -- the same operations, in the same order, as
  :func:`hqgnn.index.reference.reference_asym_scores`, so keys are bit-identical and ids match the float64 brute force.
* float queries: the query is quantized to codes in [-119, 119] (max-abs scale Delta; on 1-bit items the
  codes are split into two 4-bit planes, the second looked up only where the first cannot prune, see
  cpu.asym.lut_task); the integer search returns
  the top K' by the approximate key (Delta * ip) * s_i + t_i, whose error is at most
  err = max|s_i| * max|c_i| * ||x - Delta q||_1 (+ a float64 rounding margin). The K' candidates are
  re-scored in float64 (dot(x, c_i) * s_i + t_i) and sorted; if the K'-th approximate key + err is below
  the k-th best exact key among them, no other item can reach the top k; otherwise K' doubles for that query.
  This equals the float64 brute force whenever float64 evaluates the dot products exactly (always for
  float32 queries whose entries span less than 2^(29 - log2 d) in magnitude; otherwise the brute force
  itself depends on its summation order).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .asym_float import search_float, to_scores
from .asym_layout import (LUT1, chunk_bounds, compact_record, gather_rows, host_layout, lut_planes, meta_only,
                          query_planes)
from .common import (
    BACKENDS,
    ArrayLike,
    DeviceLike,
    Exclusion,
    ItemScale,
    ScaleLike,
    normalize_exclusion,
    normalize_item_scale,
    normalize_item_term,
    normalize_query_scale,
    to_numpy,
    unpermute,
)
from . import cpu as K
from .cpu import asym as KA
from .cpu.lut1 import lut1_cols
from .cpu.select import kernel_values
from .format import LAYOUTS, CodeFormat
from .packing import INT8, NIBBLE, as_int8_codes, check_code_range, code_range, padded_dim
from .queries import split_queries

__all__ = ["AsymCodeIndex", "device_str", "resolve_backend"]


_CHUNK = 256  # items per selection chunk (multiple of 32): 8 queries x 256 int32 scores stay in L1


def device_str(device: DeviceLike) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:i"`` (anything else is refused)."""
    s = str(device)
    if s.startswith("cuda"):
        return s if ":" in s else "cuda"
    if s != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}")
    return s


def resolve_backend(device: str, backend: str) -> str:
    """The concrete backend for ``device``: "auto" is numba on the CPU and Triton (else torch) on CUDA;
    numba needs the CPU and Triton a CUDA device (or its CPU interpreter)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device == "cpu":
            return "numba"
        from .gpu.asym import triton_asym_available

        return "triton" if triton_asym_available() else "torch"
    if backend == "numba" and device != "cpu":
        raise ValueError("the numba backend runs on CPU only")
    if backend == "triton" and device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("the triton backend needs a CUDA device (or TRITON_INTERPRET=1: its CPU interpreter)")
    return backend


class AsymCodeIndex:
    """Exact asymmetric top-k over packed item codes (see the module docstring for the score).

    Storage (CPU): 1-bit items as bit bytes in 32-item blocks (``d/8`` bytes per item, d padded to a
    multiple of 16) for the ``vpshufb`` fast-scan kernel; 2..4-bit items as nibbles (d/2 bytes);
    5..8-bit items as int8 (d bytes); plus 2 bytes per item for a per-row scale and 2 for a per-row
    term when every value is exactly a float16 (else 4 each; a constant column is held once), and
    12 bytes per 256-item chunk for the per-chunk bounds. ``item_order="scale"`` (opt-in) stores
    items sorted by scale, which tightens the per-chunk bounds, for 4 more bytes per item (the int32
    order; BENCHMARKS.md § 3b measures what it buys). ``memory_bytes()`` reports exactly what is held.

    On a torch device (``backend`` torch / triton), ``gpu_layout="packed"`` (default) keeps 1-bit codes
    bit-packed (the stored bytes); ``"int8"`` holds one int8 per dimension, faster (6.5x torch bf16
    against 5.4x on an H200 at 10,000 queries, BENCHMARKS.md § 3b) for d - d/8 more bytes per item.

    ``search`` returns ``(scores float32 (B, k), ids int64 (B, k))`` sorted by score descending, ties
    to the lower item id, id -1 / score -inf beyond the eligible items; torch tensors on CUDA.
    """

    _format: CodeFormat | None = None  # set by build_index / load_index; else derived from the index
    # host layout: packed codes and per-chunk bounds (None when the device copy is the only one)
    _packed: Any
    _cb: Any

    def __init__(self, item_codes: ArrayLike, item_scale: ScaleLike = None, item_bits: int = 1, item_term: ScaleLike = None,
                 query_bits: int = 4, device: DeviceLike = "cpu", backend: str = "auto", item_order: str = "none",
                 gpu_layout: str = "packed") -> None:
        item_bits = int(item_bits)
        code_range(item_bits)  # validates 1..8
        codes = as_int8_codes(item_codes, "item_codes")
        check_code_range(codes, item_bits, "item_codes")
        n = codes.shape[0]
        scale = normalize_item_scale(item_scale, n)
        term = normalize_item_term(item_term, n)
        packed, layout, s_rec, t_rec, order = host_layout(codes, scale, term, item_bits, item_order)
        self._init(packed, layout, n, codes.shape[1], item_bits, query_bits, s_rec, t_rec, order, device, backend,
                   codes, gpu_layout)

    @classmethod
    def restore(cls, saved: tuple[Any, ...], device: DeviceLike, backend: str, gpu_layout: str) -> AsymCodeIndex:
        """The index of ``saved`` (the arrays :func:`hqgnn.index.io.read_asym_index` returns) on ``device``."""
        self = cls.__new__(cls)
        init: Any = self._init  # (``saved`` is its leading arguments)
        init(*saved, device, backend, gpu_layout=gpu_layout)
        return self

    def _init(self, packed: np.ndarray, layout: str, n: int, dim: int, item_bits: int, query_bits: int, scale: ItemScale,
              term: ItemScale, order: np.ndarray | None, device: DeviceLike, backend: str, codes: np.ndarray | None = None,
              gpu_layout: str = "packed") -> None:
        if gpu_layout not in LAYOUTS:  # the device copy: bit-packed 1-bit words or one int8 per dimension
            raise ValueError(f"gpu_layout must be one of {LAYOUTS}, got {gpu_layout!r}")
        query_bits = int(query_bits)
        if query_bits != 0 and not 2 <= query_bits <= 8:
            raise ValueError(f"query_bits must be 0 (float queries) or 2..8, got {query_bits}")
        self.n, self.dim = int(n), int(dim)
        self.item_bits, self.query_bits = int(item_bits), query_bits
        self._layout = layout
        self._packed = packed
        self._scale = compact_record(scale)  # storage order; float16 / one value where exact
        self._term = compact_record(term)  # storage order
        self._has_term = bool(term.given)
        self._order = None if order is None else np.asarray(order)
        if self._order is not None and self._order.shape != (self.n,):
            raise ValueError(f"order must have shape ({self.n},), got {self._order.shape}")
        if layout == LUT1:
            self._ngp = lut1_cols(dim) // 2  # kernel steps of 16 dims
            want = -(-max(n, 1) // KA.LUT_BLOCK) * self._ngp * 2 * KA.LUT_BLOCK
        elif layout == NIBBLE:
            self._ngp = padded_dim(dim, 4) // 4
            want = -(-max(n, 1) // 16) * self._ngp * 32
        elif layout == INT8:
            self._ngp = padded_dim(dim, 2) // 2
            want = -(-max(n, 1) // 16) * 16 * self._ngp * 2
        else:
            raise ValueError(f"unknown layout {layout!r}")
        if packed.size != want:
            raise ValueError(f"packed codes have {packed.size} bytes, expected {want} for n={n}, dim={dim}")
        self._inv_order_cache: np.ndarray | None = None
        self.threads: int | None = None  # CPU threads for search; None = all cores (HQGNN_NUM_THREADS)
        self.use_simd: bool | None = None  # None: AVX2 kernels when available; False: portable numba
        self.device = device_str(device)
        self.backend = backend = resolve_backend(self.device, backend)
        self._gpu = None
        if backend in ("torch", "triton"):
            from .gpu.asym import AsymTorchSearcher

            full = self.codes() if codes is None else codes
            self._gpu = AsymTorchSearcher(full, self.item_scale_dense(), self.item_term_dense(), self.item_bits,
                                          self.device, use_triton=backend == "triton", packed=gpu_layout == "packed")
            # the device copy is the only one: save / codes() rebuild the host layout from it
            self._packed, self._order = None, None
            self._scale, self._term = (meta_only(r) for r in (self._scale, self._term))
            self._cb = None
        else:
            # held, not cached lazily: the kernels' per-chunk bounds are part of memory_bytes()
            self._cb = chunk_bounds(self._scale, self._term, self.n, _CHUNK)

    # ----------------------------------------------------------------------------- properties
    def __repr__(self) -> str:
        return (f"AsymCodeIndex(n={self.n}, dim={self.dim}, item_bits={self.item_bits}, query_bits={self.query_bits}, "
                f"device={self.device!r}, backend={self.backend!r}, memory_bytes={self.memory_bytes()})")

    def _unpermute(self, stored: np.ndarray) -> np.ndarray:
        return unpermute(stored, self._order)

    def item_scale_dense(self) -> np.ndarray:
        """float32 (n,) item scales in item order (1.0 when none were given)."""
        if self._gpu is not None:
            return self._gpu.host_values("scales")
        return self._unpermute(self._scale.dense(self.n).astype(np.float32, copy=False))

    def item_term_dense(self) -> np.ndarray:
        """float32 (n,) item terms in item order (0.0 when none were given)."""
        if self._gpu is not None:
            return self._gpu.host_values("terms")
        return self._unpermute(self._term.dense(self.n).astype(np.float32, copy=False))

    def codes(self) -> np.ndarray:
        """The item codes as int8 (n, d), item order (unpacked from storage, or from the device)."""
        if self._gpu is not None:
            return self._gpu.host_codes()
        return self._unpermute(gather_rows(self._packed, self._layout, self.n, self.dim, self._ngp, None))

    def memory_bytes(self) -> int:
        """Bytes this index holds for search (CPU): packed codes (with the kernels' padding) +
        per-row scales and terms (float16 or float32) + their per-chunk bounds + the storage order
        when one was asked for (int32) and the lazily built inverse of it (int32) once an exclusion
        or float query has needed it). With a torch/Triton backend only
        the device copy is held (AsymTorchSearcher.device_bytes: bit-packed 1-bit codes or int8
        codes padded to 32 dims, float16/float32 per-row scales and terms); nothing per item on the host."""
        if self._gpu is not None:
            return self._gpu.device_bytes
        host = int(self._packed.nbytes)
        cmax, cmin, tmax = self._cb
        for rec, bounds in ((self._scale, (cmax, cmin)), (self._term, (tmax,))):
            if rec.per_row:  # per-tensor values and their single bounds are O(1), not counted
                host += int(rec.values.nbytes) + sum(int(b.nbytes) for b in bounds)
        if self._order is not None:
            host += int(self._order.nbytes)
            host += int(self._inv_order_cache.nbytes) if self._inv_order_cache is not None else 0
        return host

    # ------------------------------------------------------------------------------- search
    @property
    def format(self) -> CodeFormat:
        """The code format (as given to :func:`hqgnn.index.build_index`, else derived from the index)."""
        fmt = self._format
        if fmt is None:
            s = self._scale if self._gpu is None else None
            kind = "row" if (s is None or s.per_row) else ("tensor" if s.given else "none")
            half = s is not None and s.values.dtype == np.float16
            fmt = CodeFormat(dim=self.dim, item_bits=self.item_bits, query_bits=self.query_bits, scale=kind,
                             scale_dtype="float16" if half else "float32", term=self._has_term,
                             item_order="none" if self._order is None else "scale")
        return fmt

    def search(self, queries: Any, k: int, exclude: Any = None) -> tuple[Any, Any]:
        """Exact top-k. ``queries``: int codes (B, d) of ``query_bits`` bits (scales 1), a
        :class:`hqgnn.index.QueryCodes` (codes and scales: None = 1, a scalar or (B,)), or float32
        (B, d): used as they are when ``query_bits == 0``, else encoded by the format.
        ``exclude``: seen items per query as ``(indptr, indices)`` CSR or a scipy CSR matrix."""
        k = int(k)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if self.query_bits == 0 and not isinstance(queries, tuple):
            # float queries already on this index's device stay there (no host round trip)
            on_device = self._gpu is not None and getattr(getattr(queries, "device", None), "type", None) == "cuda"
            queries, query_scales = (queries if on_device else to_numpy(queries)), None
        else:
            queries, query_scales = split_queries(queries, self.format)
        q: Any = queries if hasattr(queries, "is_cuda") else to_numpy(queries)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (B, {self.dim}), got {q.shape}")
        b = q.shape[0]
        if self.query_bits == 0:
            if query_scales is not None:
                raise ValueError("float queries (query_bits=0) take no query_scales")
            if not (q.is_floating_point() if hasattr(q, "is_cuda") else q.dtype.kind == "f"):
                raise ValueError(f"this index takes float queries (query_bits=0), got dtype {q.dtype}")
            if hasattr(q, "is_cuda"):
                if not bool(q.isfinite().all()):
                    raise ValueError("queries must be finite")
            else:
                q = np.ascontiguousarray(q, dtype=np.float32)
                if not np.all(np.isfinite(q)):
                    raise ValueError("queries must be finite")
            qs = None
        else:
            q = as_int8_codes(q, "queries")
            check_code_range(q, self.format.query_bits or self.query_bits, "queries")  # 1 bit: exactly +-1
            qs = normalize_query_scale(query_scales, b)
        ex = normalize_exclusion(exclude, b, self.n)
        if k == 0 or b == 0 or self.n == 0:
            return self._empty(b, k)
        if self._gpu is not None:
            s, i = self._gpu.search(q, k, qs, ex, float_queries=self.query_bits == 0)
            if self.device == "cpu":
                return s.numpy(), i.numpy()
            return s, i
        if self.query_bits == 0:
            return search_float(self, q, k, ex)
        assert qs is not None  # code queries always have scales (1 when none were given)
        keys, ids = self._search_int(q, qs, k, ex)
        return to_scores(keys, ids), ids

    def _empty(self, b: int, k: int) -> tuple[Any, Any]:
        s = np.full((b, k), -np.inf, np.float32)
        i = np.full((b, k), -1, np.int64)
        if self.device != "cpu":
            import torch

            return torch.from_numpy(s).to(self.device), torch.from_numpy(i).to(self.device)
        return s, i

    def _super_chunks(self) -> int:
        """Chunks per super-chunk: ~256 KiB of packed codes, which stay in L2 while every 8-query
        group of a task sweeps them."""
        per_chunk = self._packed.nbytes / max(1, -(-self.n // _CHUNK))
        return max(1, int((256 << 10) // max(per_chunk, 1)))

    def _use_simd(self) -> bool:
        if self.use_simd is False:
            return False
        return KA.HAVE_LUT_SIMD if self._layout == LUT1 and self.dim <= KA.LUT_MAX_DIM else (
            K.HAVE_AVX2 and self._layout != LUT1)

    def _search_int(self, qc: np.ndarray, qs: np.ndarray, k: int, ex: Exclusion | None) -> tuple[np.ndarray, np.ndarray]:
        """float64 keys and ids (B, k) of integer queries (codes int8, scales float32)."""
        b = qc.shape[0]
        cmax, cmin, tmax = self._cb
        ex_ptr, ex_idx, has_ex = self._ex_arrays(ex)
        nch = -(-self.n // _CHUNK)
        threads = self._threads()
        n_ranges = K.choose_ranges(b, nch, threads)
        out_keys = np.empty((n_ranges, b, k), np.float64)
        out_ids = np.empty((n_ranges, b, k), np.int64)
        items = self._packed.reshape(-1).view(np.uint8)
        oid = self._order if self._order is not None else np.zeros(0, np.int32)
        tail = (np.ascontiguousarray(qs, np.float32), kernel_values(self._scale.values), self._scale.stride,
                kernel_values(self._term.values), self._term.stride, cmax, cmin, tmax, oid, ex_ptr, ex_idx, has_ex,
                n_ranges, _CHUNK, self._super_chunks(), out_keys, out_ids)
        task: Any
        head: tuple[Any, ...]
        if self._layout == LUT1:
            qa, qb, nplanes, ma, mb, qadd, bmin, bmax = lut_planes(self._ngp, qc)
            # the kernel's per-chunk minimum matters only for a negative item or query scale (see _bound)
            need_min = bool(cmin.size and cmin.min() < 0) or bool(qs.size and np.min(qs) < 0)
            task, head = KA.lut_task, (self._use_simd(), need_min, items, self._ngp, self.n, k, qa, qb, nplanes,
                                       ma, mb, qadd, bmin, bmax)
        else:
            qa, qb, nplanes, ma, mb, qadd = query_planes(self._layout, self._ngp, qc)
            kind = KA.KIND_NIBBLE if self._layout == NIBBLE else KA.KIND_INT8
            task, head = KA.asym_task, (kind, self._use_simd(), items, self._ngp, self.n, k, qa, qb, nplanes, ma,
                                        mb, np.ascontiguousarray(qadd, np.int64))
        K.run_tasks(task, K.n_tasks(b, n_ranges), head + tail, threads)
        return K.merge_ranges(out_keys, out_ids, k)

    def _inv_order(self) -> np.ndarray:
        if self._inv_order_cache is None:
            order: Any = self._order
            inv = np.empty(self.n, order.dtype)  # int32 like the order: half the int64 bytes
            inv[order] = np.arange(self.n, dtype=order.dtype)
            self._inv_order_cache = inv
        return self._inv_order_cache

    def _ex_arrays(self, ex: Exclusion | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """Exclusion CSR in storage positions (sorted per query), as the kernel scans them."""
        if ex is None or ex.nnz == 0:
            return np.zeros(1, np.int64), np.zeros(1, np.int64), False
        indptr, indices = ex.indptr, ex.indices
        rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        ok = (indices >= 0) & (indices < self.n)  # ids outside the index cannot be returned anyway
        rows, indices = rows[ok], indices[ok]
        if self._order is not None:
            indices = self._inv_order()[indices].astype(np.int64)
        o = np.lexsort((indices, rows))
        indices = indices[o]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=indptr.size - 1))]).astype(np.int64)
        return np.ascontiguousarray(indptr), np.ascontiguousarray(indices, dtype=np.int64), True

    def _threads(self) -> int:
        t = self.threads
        return K.default_threads() if t is None else max(1, int(t))

    # ---------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write packed codes, scales, terms and order as .npy files in directory ``path`` (or one
        .npz when it ends in .npz); memory-mappable, no pickle (see hqgnn.index.io)."""
        from .io import save_asym_index

        save_asym_index(self, path)
