"""Exact top-k on a torch device: the Triton two-phase search (threshold pass, fused candidate scan, exact select), or
the chunked float64 scan (torch alone).

The key is ``(ip * s_i) * s_u + t_i`` (integer queries) or ``dot64(x, c_i) * s_i + t_i`` (float queries):

* ``exact``: items in chunks, float64 keys (integer queries: the exact integer inner product by a
  float32 matmul, exact while |ip| < 2^24; float queries: a float64 matmul), running top-k merged
  with :func:`hqgnn.topk.stable_topk`. The fallback everywhere.
* ``two_phase`` (CUDA default): (1) one pass stores each (query, group of 1024 items) max float32
  key (of every group, or of the first ``threshold_fraction`` of them); the (k + #excluded)-th
  largest group max, lowered by twice the float32 error bound M (and,
  for float queries, twice the 8-bit quantization bound), is a lower bound of every true top-k
  item's approximate key; (2) a fused pass appends the ids of the items reaching it (~k per query)
  to a per-query buffer; (3) exact float64 keys of the candidates, sorted by (key desc, id asc).
  Rows whose buffer overflowed are redone with ``exact``. Float queries are quantized to 8 bits
  on the device (as on CPU) for passes 1-2 and re-scored with the float query in pass 3. On CUDA passes
  1-2 are one Triton kernel (int8 tensor-core dot + epilogue) and pass 3 another (float64 keys straight
  from the packed words of the candidates); the host waits once per search, for the number of buffer
  columns in use. The tests run both kernels in Triton's CPU interpreter; without Triton (the torch
  backend) the search is ``exact``.

Storage: 1-bit items are bit-packed (``packed=True``, default): d/32 int32 words per item,
word-major (W, n); the kernel expands a tile's words to the +-1 int8 operand in registers, and
the torch paths unpack only the rows they touch (candidates, or one chunk). Scales and terms are
float16 when exactly representable, one value when constant (see common.compact_values).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..common import Exclusion, compact_values
from ..packing import WORD, pack_words, unpack_words
from ..queries import float_query_err
from .topk import (
    LazyKernel,
    exclusion_rows,
    exclusion_slice,
    exclusion_tensors,
    float32_at_most,
    running_topk,
    sorted_candidates,
    top_candidates,
)

__all__ = ["AsymTorchSearcher", "triton_asym_available"]

_KERNEL = LazyKernel(lambda: _build_triton_kernel())  # noqa: PLW0108  (defined below)
T = torch.Tensor
Pairs = tuple[torch.Tensor, torch.Tensor] | None  # excluded (query row, item id) pairs on the device
TopK = tuple[torch.Tensor, torch.Tensor]


def triton_asym_available() -> bool:
    """True when CUDA and an importable Triton are both present (kernel built on first call).
    With TRITON_INTERPRET=1 the kernel is built for Triton's CPU interpreter (CPU tensors; tests)."""
    return _KERNEL.available()


# |float32 key - exact key| <= ~3 * 2^-24 * (|ip s_i s_u| + |t_i|) (three roundings, or fewer with
# FMA); M uses 2^-20 of the largest possible magnitude: a 16x safety factor.
_REL = 2.0**-20
_TINY = 1e-30


class AsymTorchSearcher:
    """Exact asymmetric top-k over integer item codes on a torch device (CPU or CUDA).

    codes (n, d) int8 (1-bit codes are +-1), d padded to d_pad, a multiple of 32 (the int8
    tensor-core tile). 1-bit items with ``packed`` (default): int32 words (d_pad/32, n), 4 d_pad/32
    bytes per item; otherwise int8 (n, d_pad). Scales and terms: float16 when exact, else float32,
    a single value when constant. ``device_bytes`` is exactly the bytes of those tensors.
    """

    tile = 128  # items per tile (= the Triton kernel's BN)
    group = 8  # tiles per max-group of the threshold pass
    # Triton launch shape: queries per program, warps per program, and the packed operand form.
    # Measured on an H200 (BENCHMARKS.md § 3b, benchmarks/asym_gpu_tiles.py): the 0/1 bit operand
    # (ip = 2 <q, bits> - sum q) is 1.20x the +-1 form; 128 / 256 queries or 8 warps per program are slower.
    block_q = 64
    warps = 4
    zero_one = True
    # threshold pass over the first ceil(f x groups) item groups only (at least k + #excluded of them):
    # the (k + e)-th largest group max of any subset of groups is still a lower bound of the true k-th
    # best key (k + e distinct items reach it), just a looser one, so pass 2 emits more candidates
    # (the buffer grows by 1 / f). 0.25 is 1.3-1.8 % faster than 1.0 in the same run and 0.125 is 20 %
    # slower (its candidate pass grows), on an H200 (BENCHMARKS.md § 3b, calls s6a / s6c).
    threshold_fraction = 0.25
    cap: int | None = None  # per-query candidate buffer; None: 4 (k + #excluded) + 256, power of 2

    def __init__(self, codes: np.ndarray, scales: np.ndarray, terms: np.ndarray, item_bits: int, device: str,
                 use_triton: bool = False, method: str | None = None, packed: bool = True) -> None:
        self.device = torch.device(device)
        self.n, self.dim = codes.shape
        self.dpad = dpad = max(WORD, -(-self.dim // WORD) * WORD)
        self.packed = bool(packed) and item_bits == 1
        self.codes: torch.Tensor | None = None  # int8 (n, dpad), unpacked path only
        self.words: torch.Tensor | None = None  # int32 (dpad / 32, n), packed 1-bit path only
        if self.packed:
            self.words = torch.from_numpy(pack_words(codes, dpad)).to(self.device)
        else:
            padded = np.zeros((self.n, dpad), np.int8)
            padded[:, : self.dim] = codes
            self.codes = torch.from_numpy(padded).to(self.device)
        # a single stored value is read with stride 0 (constant scale / no term: no per-item bytes)
        self.scales = torch.from_numpy(compact_values(scales)).to(self.device)
        self.terms = torch.from_numpy(compact_values(terms)).to(self.device)
        held = (self._items, self.scales, self.terms)
        self.device_bytes = int(sum(t.numel() * t.element_size() for t in held))
        self.cmax = 1 if item_bits == 1 else 2 ** (item_bits - 1)
        self.smax = float(np.abs(scales).max()) if scales.size else 0.0
        self.tmax = float(np.abs(terms).max()) if terms.size else 0.0
        self.use_triton = bool(use_triton)
        if self.use_triton and not triton_asym_available():
            raise RuntimeError("triton backend requested but Triton/CUDA is not available")
        # the two-phase search is the Triton kernels' (on CUDA, or in Triton's CPU interpreter for the tests)
        self.method = method or ("two_phase" if self.use_triton else "exact")
        if self.method not in ("exact", "two_phase") or (self.method == "two_phase" and not self.use_triton):
            raise ValueError(f"method must be 'exact', or 'two_phase' with Triton; got {self.method!r}")

    # --------------------------------------------------------------------------- search
    def search(self, q: np.ndarray | torch.Tensor, k: int, qs: np.ndarray | None, ex: Exclusion | None,
               float_queries: bool, method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q: int8 codes with scales qs, or float32 vectors (float_queries; a tensor on the device is used
        where it is). Returns float32 scores and int64 ids (B, k) on the device."""
        b = q.shape[0]
        xf = None
        if float_queries:
            q8, su, err, xf = self._float_query_codes(torch.as_tensor(q, dtype=torch.float32, device=self.device))
        else:
            q8 = torch.zeros((b, self.dpad), dtype=torch.int8, device=self.device)
            q8[:, : self.dim] = torch.as_tensor(q, device=self.device)
            su = torch.from_numpy(np.ascontiguousarray(qs, np.float64)).to(self.device)
            err = torch.zeros(b, dtype=torch.float64, device=self.device)
        exr = exclusion_tensors(ex, b, self.n, self.device)
        # k + #excluded per query, known on the host: no device round trip to size the threshold pass
        need = k + (np.diff(ex.indptr) if ex is not None else np.zeros(b, np.int64))
        if (method or self.method) == "exact":
            keys, ids = self._exact(q8, xf, su, k, exr)
        else:
            keys, ids = self._two_phase(q8, xf, su, err, k, exr, need)
        scores = keys.to(torch.float32)
        scores = torch.where(ids >= 0, scores, torch.full_like(scores, float("-inf")))
        return scores, ids

    def _float_query_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """On the device: the 8-bit codes (B, dpad) of float queries (max-abs scale Delta = max|x| / 127, 1 for a
        zero row), Delta as float64, the bound ``err`` on |s_i <x, c_i> + t_i - (s_i Delta <q, c_i> + t_i)|
        (s_i c_max ||x - Delta q||_1, plus float64 slack) and x zero-padded to dpad (float32)."""
        b = x.shape[0]
        xf = torch.zeros((b, self.dpad), dtype=torch.float32, device=self.device)
        xf[:, : self.dim] = x
        amax = xf.abs().amax(dim=1)
        delta = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        codes = torch.round(xf / delta[:, None]).clamp_(-127, 127)
        x64, d64 = xf.to(torch.float64), delta.to(torch.float64)
        resid = (x64 - d64[:, None] * codes.to(torch.float64)).abs().sum(dim=1)
        err = float_query_err(resid, x64.abs().sum(dim=1), d64, self.smax * self.cmax, 127, self.dim, self.tmax)
        return codes.to(torch.int8), d64, err, xf

    def _ip_dtype(self) -> torch.dtype:
        # integer inner products are exact in float32 while every partial sum is below 2^24
        max_ip = self.dim * 128 * self.cmax
        return torch.float32 if (self.device.type == "cuda" and max_ip < 2**24) else torch.float64

    @property
    def _items(self) -> torch.Tensor:
        """The device copy of the codes: the words (packed) or the int8 rows."""
        items = self.words if self.packed else self.codes
        assert items is not None
        return items

    def _keys64(self, q8: T, xf: T | None, su: T, cols: slice) -> torch.Tensor:
        """Exact float64 keys of the items ``cols`` -- the reference formula (``xf``: float64 queries)."""
        if xf is not None:
            dot = xf @ self._rows(cols).to(torch.float64).T
        else:
            dt = self._ip_dtype()
            dot = (q8.to(dt) @ self._rows(cols).to(dt).T).to(torch.float64)
        s = self._item_values(self.scales, cols, torch.float64)
        t = self._item_values(self.terms, cols, torch.float64)
        if xf is not None:
            return dot * s + t
        return (dot * s) * su[:, None] + t

    def _rows(self, idx: slice | torch.Tensor) -> torch.Tensor:
        """int8 codes (*, dpad) of items ``idx``: unpacked on the fly from the words when packed."""
        return unpack_words(self._items, idx) if self.packed else self._items[idx]

    def _item_values(self, vals: torch.Tensor, cols: slice, dtype: torch.dtype) -> torch.Tensor:
        """Scales / terms of ``cols`` shaped (1, m) to broadcast against (B, m) keys ((1, 1): one stored value)."""
        if vals.numel() == 1 and self.n != 1:
            return vals.to(dtype).view(1, 1)
        return vals[cols].to(dtype)[None, :]

    def host_codes(self) -> np.ndarray:
        """int8 (n, d) codes on the host, item order, rebuilt from the device a chunk at a time."""
        out = np.empty((self.n, self.dim), np.int8)
        step = max(1, (1 << 24) // self.dpad)
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            out[c0:c1] = self._rows(slice(c0, c1))[:, : self.dim].cpu().numpy()
        return out

    def host_values(self, which: str) -> np.ndarray:
        """float32 (n,) scales (``which='scales'``) or terms on the host, item order."""
        v = (self.scales if which == "scales" else self.terms).to(torch.float32).cpu().numpy()
        return np.full(self.n, v[0], np.float32) if v.size == 1 and self.n != 1 else v

    def _chunk_items(self, b: int) -> int:
        # the unpacked float chunk (items x dpad) stays below 64 MiB too
        return int(max(1024, min(self.n, (1 << 25) // max(b, 1), (1 << 24) // self.dpad)))

    def _exact(self, q8: T, xf: T | None, su: T, k: int, exr: Pairs, rows: T | None = None) -> TopK:
        """Chunked running top-k (float64 keys); ``rows`` restricts to a subset of the queries."""
        if rows is not None:
            exr = exclusion_rows(exr, rows, q8.shape[0])
            q8, su = q8[rows], su[rows]
            xf = None if xf is None else xf[rows]
        b = q8.shape[0]
        xf = None if xf is None else xf.to(torch.float64)  # once, not per chunk
        return running_topk(lambda c0, c1: self._keys64(q8, xf, su, slice(c0, c1)), self.n, b, k,
                            self._chunk_items(b), exr, self.device)

    # ------------------------------------------------------------------------ two-phase
    def _margin(self, su: torch.Tensor) -> torch.Tensor:
        """Per-query bound M (float64) on |float32 key - exact key| of the 8-bit/integer scan."""
        max_ip = float(self.dim * 128 * self.cmax)
        return _REL * (max_ip * self.smax * su.abs() + self.tmax) + _TINY

    def _two_phase(self, q8: T, xf: T | None, su: T, err: T, k: int, exr: Pairs, need: np.ndarray,
                   cap: int | None = None) -> TopK:
        b = q8.shape[0]
        ngroups = -(-self.n // (self.tile * self.group))
        need_max = int(need.max())
        tgroups = ngroups  # groups the threshold pass scans
        if self.threshold_fraction < 1.0:
            tgroups = min(ngroups, max(math.ceil(ngroups * self.threshold_fraction), need_max, 1))
        if cap is None:
            cap = self.cap
        if cap is None:
            spread = ngroups / tgroups  # a threshold from 1 / spread of the items admits ~spread x more
            cap = int(min(1 << 16, 2 ** math.ceil(math.log2(4 * need_max * spread + 256))))
        batch = max(1, min(b, (1 << 25) // max(ngroups, cap)))
        if batch < b:
            parts = []
            for r0 in range(0, b, batch):
                r1 = min(b, r0 + batch)
                parts.append(self._two_phase(q8[r0:r1], None if xf is None else xf[r0:r1], su[r0:r1], err[r0:r1],
                                             k, exclusion_slice(exr, r0, r1), need[r0:r1], cap))
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        su32 = su.to(torch.float32)
        gmax = self._group_max(q8, su32, tgroups)
        kk = min(tgroups, need_max)
        vals = torch.topk(gmax, kk, dim=1).values
        if need.min() == need_max:
            big_t = vals[:, kk - 1]
        else:
            rank = torch.from_numpy(np.minimum(need, kk) - 1).to(self.device)
            big_t = vals.gather(1, rank[:, None]).squeeze(1)
        # every true top-k item's float32 key is >= T - 2 M - 2 err (module docstring)
        thr = big_t.to(torch.float64) - 2 * self._margin(su) - 2 * err
        if need_max > tgroups:
            thr = torch.where(torch.from_numpy(need > tgroups).to(self.device), float("-inf"), thr)
        cand_ids, counts = self._collect(q8, su32, float32_at_most(thr), cap)
        most = int(counts.max())  # the one host sync: how many buffer columns are used, and any overflow
        keys, ids = self._select(q8, xf, su, cand_ids, counts, k, exr, min(cap, max(most, 1)))
        self.last_counts, self.last_cap = counts, cap  # diagnostics (benchmarks/asym_gpu_profile.py)
        if most > cap:
            over = torch.nonzero(counts > cap).flatten()
            ok, oi = self._exact(q8, xf, su, k, exr, rows=over)
            keys[over] = ok
            ids[over] = oi
        return keys, ids

    def _group_max(self, q8: T, su32: T, groups: int) -> torch.Tensor:
        """(B, groups) max float32 key of each of the first ``groups`` groups of tile x group items."""
        gmax = torch.empty((q8.shape[0], groups), dtype=torch.float32, device=self.device)
        _launch(self, q8, su32, None, 0, None, None, gmax=gmax, n_items=min(self.n, groups * self.tile * self.group))
        return gmax

    def _collect(self, q8: T, su32: T, thr32: T, cap: int) -> TopK:
        """Ids of every item whose float32 key reaches thr (per query, first ``cap`` kept; slots past a
        query's count are left unwritten)."""
        counts = torch.zeros(q8.shape[0], dtype=torch.int32, device=self.device)
        cand_ids = torch.empty((q8.shape[0], cap), dtype=torch.int32, device=self.device)
        _launch(self, q8, su32, thr32, cap, counts, cand_ids)
        return cand_ids, counts

    def _select(self, q8: T, xf: T | None, su: T, cand_ids: T, counts: T, k: int, exr: Pairs, used: int) -> TopK:
        """Exact float64 keys of the candidates in the first ``used`` slots, exclusions removed, (key desc,
        id asc) top-k."""
        ids_sorted, valid = sorted_candidates(cand_ids, counts, used, self.n)
        key = torch.empty(ids_sorted.shape, dtype=torch.float64, device=self.device)
        _rescore(self, q8 if xf is None else xf, su, ids_sorted, key)
        return top_candidates(key, ids_sorted.to(torch.int64), valid, k, exr, self.n)


# ---------------------------------------------------------------------------------- Triton
def _build_triton_kernel() -> tuple[Any, Any]:
    from .asym_triton import asym_rescore_kernel, asym_scan_kernel

    return asym_scan_kernel, asym_rescore_kernel


def _rescore(eng: AsymTorchSearcher, q: torch.Tensor, su: torch.Tensor, ids: torch.Tensor, key: torch.Tensor) -> None:
    """Exact float64 keys (B, m) of the sorted candidate ids (int32 (B, m), n = empty) into ``key``."""
    import triton

    b, m = ids.shape
    x = eng._items
    ss, ts = (0 if v.numel() == 1 and eng.n != 1 else 1 for v in (eng.scales, eng.terms))
    bc = 64
    _KERNEL.kernel[1][(b, triton.cdiv(m, bc))](
        q, x, eng.scales, eng.terms, su, ids, key, eng.n, m, q.stride(0), x.stride(0), ss, ts, D=eng.dpad, BC=bc,
        PACKED=eng.packed, FLOATQ=q.dtype != torch.int8, num_warps=4, enable_fp_fusion=False)


def _launch(eng: AsymTorchSearcher, q8: T, su32: T, thr32: T | None, cap: int, counts: T | None, cand_ids: T | None,
            gmax: T | None = None, n_items: int | None = None) -> None:
    """One launch of the scan kernel over the first ``n_items`` items (default all): group maxima into
    ``gmax``, or (``gmax`` None) candidate ids reaching ``thr32`` into ``cand_ids`` / ``counts``."""
    import triton

    b = q8.shape[0]
    d = eng.dpad
    n = eng.n if n_items is None else int(n_items)
    ngroups = triton.cdiv(n, eng.tile * eng.group)
    if ngroups > 65535:  # grid axis 1 limit
        raise ValueError("too many item groups for one launch; raise AsymTorchSearcher.group")
    emit = gmax is None
    dummy = su32
    x = eng._items
    bk = 32 if eng.packed or d % 64 else 64
    ss, ts = (0 if v.numel() == 1 and eng.n != 1 else 1 for v in (eng.scales, eng.terms))
    zero_one = bool(eng.packed and eng.zero_one)
    qsum = q8.sum(1, dtype=torch.int32) if zero_one else dummy
    bq = int(eng.block_q)
    _KERNEL.kernel[0][(triton.cdiv(b, bq), ngroups)](
        q8, x, eng.scales, eng.terms, su32, qsum, thr32 if emit else dummy, dummy if emit else gmax,
        counts if emit else dummy, cand_ids if emit else dummy, b, n, ngroups, cap, q8.stride(0),
        x.stride(0), ss, ts, D=d, BK=bk, BQ=bq, BN=eng.tile, TILES=eng.group, EMIT=emit,
        PACKED=eng.packed, ZERO_ONE=zero_one, num_warps=int(eng.warps))
