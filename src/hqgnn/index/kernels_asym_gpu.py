"""Torch (any device) and Triton (CUDA) exact asymmetric top-k: threshold pass, fused candidate scan, exact select.

Mirrors :mod:`hqgnn.index.kernels_gpu` with the asymmetric key ``(ip * s_i) * s_u + t_i``:

* ``exact``: items in chunks, float64 keys (integer queries: the exact integer inner product by a
  float32 matmul, exact while |ip| < 2^24; float queries: a float64 matmul), running top-k merged
  with :func:`hqgnn.topk.stable_topk`. The fallback everywhere.
* ``two_phase`` (CUDA default): (1) one pass stores each (query, group of 1024 items) max float32
  key; the (k + #excluded)-th largest group max, lowered by twice the float32 error bound M (and,
  for float queries, twice the 8-bit quantization bound), is a lower bound of every true top-k
  item's approximate key; (2) a fused pass appends the ids of the items reaching it (~k per query)
  to a per-query buffer; (3) exact float64 keys of the candidates, sorted by (key desc, id asc).
  Rows whose buffer overflowed are redone with ``exact``. Float queries are quantized to 8 bits
  (as on CPU) for passes 1-2 and re-scored with the float query in pass 3. On CUDA passes 1-2 are
  one Triton kernel (int8 tensor-core dot + epilogue); the torch version runs anywhere and the
  tests check the algorithm with it on CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..topk import stable_topk
from .common import Exclusion

__all__ = ["AsymTorchSearcher", "triton_asym_available"]

_KERNEL: object | None = None
_CHECKED = False


def triton_asym_available() -> bool:
    """True when CUDA and an importable Triton are both present (kernel built on first call)."""
    global _KERNEL, _CHECKED
    if not _CHECKED:
        _CHECKED = True
        if torch.cuda.is_available():
            try:
                _KERNEL = _build_triton_kernel()
            except Exception:  # pragma: no cover - depends on the machine
                _KERNEL = None
    return _KERNEL is not None


# |float32 key - exact key| <= ~3 * 2^-24 * (|ip s_i s_u| + |t_i|) (three roundings, or fewer with
# FMA); M uses 2^-20 of the largest possible magnitude: a 16x safety factor.
_REL = 2.0**-20
_TINY = 1e-30


class AsymTorchSearcher:
    """Exact asymmetric top-k over int8 item codes on a torch device (CPU or CUDA).

    codes (n, d) int8 (1-bit codes are +-1) are stored as int8 (n, d_pad), d padded to a multiple
    of 32 (the int8 tensor-core tile), with float32 scales and terms; ``device_bytes`` reports them.
    """

    tile = 128  # items per tile (= the Triton kernel's BN)
    group = 8  # tiles per max-group of the threshold pass
    cap: int | None = None  # per-query candidate buffer; None: 4 (k + #excluded) + 256, power of 2

    def __init__(self, codes: np.ndarray, scales: np.ndarray, terms: np.ndarray, item_bits: int, device: str,
                 use_triton: bool = False, method: str | None = None) -> None:
        self.device = torch.device(device)
        self.n, self.dim = codes.shape
        dpad = max(32, -(-self.dim // 32) * 32)
        padded = np.zeros((self.n, dpad), np.int8)
        padded[:, : self.dim] = codes
        self.codes = torch.from_numpy(padded).to(self.device)
        self.scales = torch.from_numpy(np.ascontiguousarray(scales, np.float32)).to(self.device)
        self.terms = torch.from_numpy(np.ascontiguousarray(terms, np.float32)).to(self.device)
        self.device_bytes = int(self.n * dpad + 8 * self.n)
        self.cmax = 1 if item_bits == 1 else 2 ** (item_bits - 1)
        self.smax = float(np.abs(scales).max()) if scales.size else 0.0
        self.tmax = float(np.abs(terms).max()) if terms.size else 0.0
        self.use_triton = bool(use_triton)
        if self.use_triton and not triton_asym_available():
            raise RuntimeError("triton backend requested but Triton/CUDA is not available")
        self.method = method or ("two_phase" if self.device.type == "cuda" else "exact")
        if self.method not in ("exact", "two_phase"):
            raise ValueError(f"method must be 'exact' or 'two_phase', got {self.method!r}")

    # --------------------------------------------------------------------------- search
    def search(self, q: np.ndarray, k: int, qs: np.ndarray | None, ex: Exclusion | None, float_queries: bool,
               method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q: int8 codes with scales qs, or float32 vectors (float_queries). Returns float32
        scores and int64 ids (B, k) on the device."""
        from .queries import quantize_float_queries

        b = q.shape[0]
        dpad = self.codes.shape[1]
        xf = None
        if float_queries:
            qc, delta, resid = quantize_float_queries(q)
            x1 = np.abs(q.astype(np.float64)).sum(axis=1)
            err = self.smax * self.cmax * resid * (1 + 2.0**-30) + 2.0**-30 * (
                self.smax * self.cmax * (x1 + delta.astype(np.float64) * 127 * self.dim) + self.tmax)
            su = delta.astype(np.float64)
            xpad = np.zeros((b, dpad), np.float64)
            xpad[:, : self.dim] = q
            xf = torch.from_numpy(xpad).to(self.device)
        else:
            qc, su, err = q, qs.astype(np.float64), np.zeros(b)
        qpad = np.zeros((b, dpad), np.int8)
        qpad[:, : self.dim] = qc
        q8 = torch.from_numpy(qpad).to(self.device)
        su_t = torch.from_numpy(np.ascontiguousarray(su)).to(self.device)
        err_t = torch.from_numpy(np.ascontiguousarray(err, np.float64)).to(self.device)
        exr = self._exclusion_tensors(ex, b)
        if (method or self.method) == "exact":
            keys, ids = self._exact(q8, xf, su_t, k, exr)
        else:
            keys, ids = self._two_phase(q8, xf, su_t, err_t, k, exr)
        scores = keys.to(torch.float32)
        scores = torch.where(ids >= 0, scores, torch.full_like(scores, float("-inf")))
        return scores, ids

    def _exclusion_tensors(self, ex: Exclusion | None, b: int):
        """(rows, cols) of excluded pairs, sorted by column, on the device."""
        if ex is None or ex.nnz == 0:
            return None
        rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(ex.indptr))
        cols = ex.indices
        ok = (cols >= 0) & (cols < self.n)
        rows, cols = rows[ok], cols[ok]
        order = np.argsort(cols, kind="stable")
        return torch.from_numpy(rows[order]).to(self.device), torch.from_numpy(cols[order]).to(self.device)

    def _ip_dtype(self) -> torch.dtype:
        # integer inner products are exact in float32 while every partial sum is below 2^24
        max_ip = self.dim * 128 * self.cmax
        return torch.float32 if (self.device.type == "cuda" and max_ip < 2**24) else torch.float64

    def _keys64(self, q8, xf, su, cols) -> torch.Tensor:
        """Exact float64 keys of items ``cols`` (a slice, or (B, m) ids) -- the reference formula."""
        if isinstance(cols, slice):
            if xf is not None:
                dot = xf @ self.codes[cols].to(torch.float64).T
            else:
                dt = self._ip_dtype()
                dot = (q8.to(dt) @ self.codes[cols].to(dt).T).to(torch.float64)
            s = self.scales[cols].to(torch.float64)[None, :]
            t = self.terms[cols].to(torch.float64)[None, :]
        else:
            c = self.codes[cols].to(torch.float64)  # (B, m, d): only a few candidates per query
            vec = xf if xf is not None else q8.to(torch.float64)
            dot = torch.bmm(c, vec[:, :, None]).squeeze(2)
            s = self.scales[cols].to(torch.float64)
            t = self.terms[cols].to(torch.float64)
        if xf is not None:
            return dot * s + t
        return (dot * s) * su[:, None] + t

    def _chunk_items(self, b: int) -> int:
        return int(max(1024, min(self.n, (1 << 25) // max(b, 1))))

    def _exact(self, q8, xf, su, k, exr, rows: torch.Tensor | None = None):
        """Chunked running top-k (float64 keys); ``rows`` restricts to a subset of the queries."""
        if rows is not None:
            if exr is not None:
                remap = torch.full((q8.shape[0],), -1, dtype=torch.int64, device=self.device)
                remap[rows] = torch.arange(rows.numel(), device=self.device)
                r2 = remap[exr[0]]
                keep = r2 >= 0
                exr = (r2[keep], exr[1][keep])
            q8, su = q8[rows], su[rows]
            xf = None if xf is None else xf[rows]
        b = q8.shape[0]
        run_k = torch.empty((b, 0), dtype=torch.float64, device=self.device)
        run_i = torch.empty((b, 0), dtype=torch.int64, device=self.device)
        step = self._chunk_items(b)
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            key = self._keys64(q8, xf, su, slice(c0, c1))
            if exr is not None:
                lo = int(torch.searchsorted(exr[1], c0).item())
                hi = int(torch.searchsorted(exr[1], c1).item())
                if hi > lo:
                    key[exr[0][lo:hi], exr[1][lo:hi] - c0] = float("-inf")
            ids = torch.arange(c0, c1, device=self.device).expand(b, -1)
            cand_k = torch.cat([run_k, key], 1)  # running entries first: lower ids win ties
            cand_i = torch.cat([run_i, ids], 1)
            v, pos = stable_topk(cand_k, min(k, cand_k.shape[1]))
            run_k, run_i = v, cand_i.gather(1, pos)
        run_i = torch.where(torch.isneginf(run_k), torch.full_like(run_i, -1), run_i)
        if run_k.shape[1] < k:
            pad = k - run_k.shape[1]
            run_k = torch.cat([run_k, torch.full((b, pad), float("-inf"), dtype=torch.float64, device=self.device)], 1)
            run_i = torch.cat([run_i, torch.full((b, pad), -1, dtype=torch.int64, device=self.device)], 1)
        return run_k, run_i

    # ------------------------------------------------------------------------ two-phase
    def _margin(self, su: torch.Tensor) -> torch.Tensor:
        """Per-query bound M (float64) on |float32 key - exact key| of the 8-bit/integer scan."""
        max_ip = float(self.dim * 128 * self.cmax)
        return _REL * (max_ip * self.smax * su.abs() + self.tmax) + _TINY

    def _two_phase(self, q8, xf, su, err, k, exr, cap: int | None = None):
        b = q8.shape[0]
        if exr is not None:
            ex_count = torch.bincount(exr[0], minlength=b)[:b]
        else:
            ex_count = torch.zeros(b, dtype=torch.int64, device=self.device)
        if cap is None:
            cap = self.cap
        if cap is None:
            e_max = int(ex_count.max().item()) if exr is not None else 0
            cap = int(min(1 << 16, 2 ** math.ceil(math.log2(4 * (k + e_max) + 256))))
        ngroups = -(-self.n // (self.tile * self.group))
        batch = max(1, min(b, (1 << 25) // max(ngroups, cap)))
        if batch < b:
            parts = []
            for r0 in range(0, b, batch):
                r1 = min(b, r0 + batch)
                sub = None
                if exr is not None:
                    sel = (exr[0] >= r0) & (exr[0] < r1)
                    sub = (exr[0][sel] - r0, exr[1][sel])
                parts.append(self._two_phase(q8[r0:r1], None if xf is None else xf[r0:r1], su[r0:r1], err[r0:r1],
                                             k, sub, cap))
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        su32 = su.to(torch.float32)
        gmax = self._group_max(q8, su32)
        need = (k + ex_count).to(torch.int64)
        kk = int(min(ngroups, int(need.max().item())))
        vals = torch.topk(gmax, kk, dim=1).values
        big_t = vals.gather(1, (need.clamp(max=kk) - 1)[:, None]).squeeze(1).to(torch.float64)
        # every true top-k item's float32 key is >= T - 2 M - 2 err (module docstring)
        thr = big_t - 2 * self._margin(su) - 2 * err
        thr = torch.where(need > ngroups, torch.full_like(thr, float("-inf")), thr)
        thr32 = thr.to(torch.float32)
        fix = thr32.to(torch.float64) > thr  # round down, never up
        thr32[fix] = torch.nextafter(thr32[fix], torch.full_like(thr32[fix], float("-inf")))
        cand_ids, counts = self._collect(q8, su32, thr32, cap)
        keys, ids = self._select(q8, xf, su, cand_ids, counts, k, exr, cap)
        over = torch.nonzero(counts > cap).flatten()
        if over.numel():
            ok, oi = self._exact(q8, xf, su, k, exr, rows=over)
            keys[over] = ok
            ids[over] = oi
        return keys, ids

    def _keys32(self, q8, su32, c0: int, c1: int) -> torch.Tensor:
        """float32 keys as the fused kernel computes them: fl(fl(fl(ip) * s_i) * s_u) + t_i."""
        dt = self._ip_dtype()
        ip = (q8.to(dt) @ self.codes[c0:c1].to(dt).T).to(torch.float32)
        return (ip * self.scales[c0:c1][None, :]) * su32[:, None] + self.terms[c0:c1][None, :]

    def _group_max(self, q8, su32) -> torch.Tensor:
        b = q8.shape[0]
        g = self.tile * self.group
        ngroups = -(-self.n // g)
        if self.use_triton:
            gmax = torch.empty((b, ngroups), dtype=torch.float32, device=self.device)
            _launch(self, q8, su32, None, 0, None, None, gmax=gmax)
            return gmax
        step = max(g, (self._chunk_items(b) // g) * g)
        out = []
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            key = self._keys32(q8, su32, c0, c1)
            pad = (-(c1 - c0)) % g
            if pad:
                key = torch.cat([key, torch.full((b, pad), float("-inf"), device=self.device)], 1)
            out.append(key.view(b, -1, g).amax(-1))
        return torch.cat(out, 1)

    def _collect(self, q8, su32, thr32, cap):
        """Ids of every item whose float32 key reaches thr (per query, first ``cap`` kept)."""
        b = q8.shape[0]
        counts = torch.zeros(b, dtype=torch.int32, device=self.device)
        cand_ids = torch.full((b, cap), -1, dtype=torch.int32, device=self.device)
        if self.use_triton:
            _launch(self, q8, su32, thr32, cap, counts, cand_ids)
            return cand_ids, counts
        step = self._chunk_items(b)
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            key = self._keys32(q8, su32, c0, c1)
            r, c = torch.nonzero(key >= thr32[:, None], as_tuple=True)
            if r.numel() == 0:
                continue
            first = torch.searchsorted(r, r, right=False)
            slot = counts[r].to(torch.int64) + (torch.arange(r.numel(), device=self.device) - first)
            ok = slot < cap
            cand_ids[r[ok], slot[ok]] = (c[ok] + c0).to(torch.int32)
            counts += torch.bincount(r, minlength=b).to(torch.int32)
        return cand_ids, counts

    def _select(self, q8, xf, su, cand_ids, counts, k, exr, cap):
        """Exact float64 keys of the candidates, exclusions removed, (key desc, id asc) top-k."""
        b = cand_ids.shape[0]
        used = max(1, min(cap, int(counts.max().item()) if counts.numel() else 1))
        ids64 = cand_ids[:, :used].to(torch.int64)
        ids_sorted, _ = torch.sort(torch.where(ids64 >= 0, ids64, torch.full_like(ids64, self.n)), dim=1)
        valid = ids_sorted < self.n
        safe = torch.where(valid, ids_sorted, torch.zeros_like(ids_sorted))
        key = self._keys64(q8, xf, su, safe)
        key = torch.where(valid, key, torch.full_like(key, float("-inf")))
        if exr is not None and exr[0].numel():
            ex_code = torch.sort(exr[0] * self.n + exr[1]).values
            code = torch.arange(b, device=self.device)[:, None] * self.n + safe
            pos = torch.searchsorted(ex_code, code.reshape(-1)).clamp_max(ex_code.numel() - 1)
            hit = (ex_code[pos] == code.reshape(-1)).view(b, -1) & valid
            key = torch.where(hit, torch.full_like(key, float("-inf")), key)
        v, order = torch.sort(key, dim=1, descending=True, stable=True)  # ids sorted: ties by id
        kk = min(k, used)
        v = v[:, :kk]
        out_i = ids_sorted.gather(1, order[:, :kk])
        out_i = torch.where(torch.isneginf(v), torch.full_like(out_i, -1), out_i)
        if kk < k:
            v = torch.cat([v, torch.full((b, k - kk), float("-inf"), dtype=v.dtype, device=v.device)], 1)
            out_i = torch.cat([out_i, torch.full((b, k - kk), -1, dtype=out_i.dtype, device=v.device)], 1)
        return v, out_i


# ---------------------------------------------------------------------------------- Triton
def _build_triton_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _asym_scan_kernel(Q, X, S, T, SU, THR, GMAX, CNT, OUT_ID, B, N, ngroups, cap, stride_q, stride_x,
                          D: tl.constexpr, BK: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr,
                          TILES: tl.constexpr, EMIT: tl.constexpr):
        """Program (i, j) = queries [BQ i, BQ i + BQ) x group j of TILES tiles of BN items.
        key = fl(fl(fl(<q, x>) * s_i) * s_u) + t_i from an exact int8 tensor-core dot. EMIT=False:
        store each (query, group) max key in GMAX; EMIT=True: append the id of every item whose key
        reaches THR[query] to the query's buffer (same structure as kernels_gpu._scan_kernel)."""
        pid_q = tl.program_id(0)
        pid_n = tl.program_id(1)
        rq = pid_q * BQ + tl.arange(0, BQ)
        qmask = rq < B
        rd = tl.arange(0, BK)
        cols = tl.arange(0, BN)
        su = tl.load(SU + rq, mask=qmask, other=0.0)
        if EMIT:
            thr = tl.load(THR + rq, mask=qmask, other=float("inf"))
        else:
            gmax = tl.full([BQ], float("-inf"), dtype=tl.float32)
        for t in range(TILES):
            tile = pid_n * TILES + t
            rn = tile * BN + cols
            nmask = rn < N
            ip = tl.zeros([BQ, BN], dtype=tl.int32)
            for k0 in tl.static_range(0, D, BK):
                q = tl.load(Q + rq[:, None] * stride_q + (k0 + rd)[None, :], mask=qmask[:, None], other=0)
                x = tl.load(X + rn[:, None] * stride_x + (k0 + rd)[None, :], mask=nmask[:, None], other=0)
                ip += tl.dot(q, tl.trans(x), out_dtype=tl.int32)  # int8 x int8 -> exact int32
            s = tl.load(S + rn, mask=nmask, other=0.0)
            tt = tl.load(T + rn, mask=nmask, other=0.0)
            key = (ip.to(tl.float32) * s[None, :]) * su[:, None] + tt[None, :]
            if EMIT:
                hit = ((key >= thr[:, None]) & nmask[None, :]).to(tl.int32)
                rowcnt = tl.sum(hit, axis=1)
                while tl.max(rowcnt, axis=0) > 0:  # hits are rare: one per row per round
                    pos = tl.argmax(hit, axis=1, tie_break_left=True)
                    has = rowcnt > 0
                    slot = tl.atomic_add(CNT + rq, 1, mask=has, sem="relaxed")
                    tl.store(OUT_ID + rq * cap + slot, tile * BN + pos, mask=has & (slot < cap))
                    hit = tl.where(cols[None, :] == pos[:, None], 0, hit)
                    rowcnt -= has.to(tl.int32)
            else:
                gmax = tl.maximum(gmax, tl.max(tl.where(nmask[None, :], key, float("-inf")), axis=1))
        if not EMIT:
            tl.store(GMAX + rq * ngroups + pid_n, gmax, mask=qmask)

    return _asym_scan_kernel


_BQ, _WARPS = 64, 4


def _launch(eng: AsymTorchSearcher, q8, su32, thr32, cap, counts, cand_ids, gmax: torch.Tensor | None = None) -> None:
    import triton

    b = q8.shape[0]
    d = eng.codes.shape[1]
    ngroups = triton.cdiv(eng.n, eng.tile * eng.group)
    if ngroups > 65535:  # grid axis 1 limit
        raise ValueError("too many item groups for one launch; raise AsymTorchSearcher.group")
    emit = gmax is None
    dummy = su32
    _KERNEL[(triton.cdiv(b, _BQ), ngroups)](
        q8, eng.codes, eng.scales, eng.terms, su32, thr32 if emit else dummy, dummy if emit else gmax,
        counts if emit else dummy, cand_ids if emit else dummy, b, eng.n, ngroups, cap, q8.stride(0),
        eng.codes.stride(0), D=d, BK=64 if d % 64 == 0 else 32, BQ=_BQ, BN=eng.tile, TILES=eng.group, EMIT=emit,
        num_warps=_WARPS)
