"""Torch (any device) and Triton (CUDA) exact top-k over integer codes: threshold, fused candidate scan, exact select.

Two methods, both exact (same order and scores as the float64 reference):

* ``exact``: items in chunks; integer inner products by matmul (float32 on CUDA -- exact, see
  ``_ip``), float64 keys, a running top-k merged with :func:`hqgnn.topk.stable_topk`. Simple and
  device-agnostic; it is the torch backend on CPU and the fallback everywhere.
* ``two_phase`` (CUDA default): (1) the k-th best key of a sample of items is a lower bound of the
  true k-th best, lowered by a float32 safety margin; (2) one fused pass over all items keeps only
  items whose float32 key reaches that bound -- appended with atomics to a small per-query buffer
  together with their exact int32 inner product, so the (B, n) score matrix never exists in memory;
  (3) exact float64 keys of the candidates, sorted by (key desc, id asc). Queries whose buffer
  overflowed (heavy ties, adversarial data) are redone with ``exact``. Phase (2) is a Triton kernel
  on CUDA (int8 tensor-core dot + epilogue); a torch version of it runs anywhere (tests use it
  on CPU to check the algorithm).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..topk import stable_topk
from .common import Exclusion, ItemScale

__all__ = ["TorchCodeSearcher", "triton_available"]

_TRITON: object | None = None
_TRITON_CHECKED = False


def triton_available() -> bool:
    """True when CUDA and an importable Triton are both present."""
    global _TRITON, _TRITON_CHECKED
    if not _TRITON_CHECKED:
        _TRITON_CHECKED = True
        if torch.cuda.is_available():
            try:
                import triton  # noqa: F401

                _TRITON = _build_triton_kernel()
            except Exception:  # pragma: no cover - depends on the machine
                _TRITON = None
    return _TRITON is not None


# float32 keys of the fused pass can be off by a few ulps (product rounding); the threshold is
# lowered by this relative margin so no true top-k item is ever filtered out.
_MARGIN = 2.0**-18
_TINY = 1e-30


class TorchCodeSearcher:
    """Exact top-k over int8 codes on a torch device (CPU or CUDA).

    codes: (n, d) int8 item codes (1-bit codes are +-1). Stored on the device as int8 (n, d_pad),
    d padded to a multiple of 32 with zeros (the int8 tensor-core tile); ``code_bytes`` reports it.
    """

    def __init__(self, codes: np.ndarray, scale: ItemScale, bits: int, device: str, use_triton: bool = False,
                 method: str | None = None) -> None:
        self.device = torch.device(device)
        self.n, self.dim = codes.shape
        self.bits = bits
        dpad = max(32, -(-self.dim // 32) * 32)
        padded = np.zeros((self.n, dpad), np.int8)
        padded[:, : self.dim] = codes
        self.codes = torch.from_numpy(padded).to(self.device)
        self.code_bytes = int(self.n * dpad)
        self.scale_given = scale.given
        if scale.per_row:
            self.scales: torch.Tensor | None = torch.from_numpy(np.ascontiguousarray(scale.values)).to(self.device)
            self.tensor_scale = 1.0
        else:
            self.scales = None
            self.tensor_scale = float(scale.values[0])
        lo = -1 if bits == 1 else -(2 ** (bits - 1))
        self.max_abs_ip = self.dim * lo * lo  # bound on |<c_u, c_i>|
        self.use_triton = bool(use_triton)
        if self.use_triton and not triton_available():
            raise RuntimeError("triton backend requested but Triton/CUDA is not available")
        if method is None:
            method = "two_phase" if self.device.type == "cuda" else "exact"
        if method not in ("exact", "two_phase"):
            raise ValueError(f"method must be 'exact' or 'two_phase', got {method!r}")
        self.method = method

    # ------------------------------------------------------------------------- helpers
    def _fdtype(self) -> torch.dtype:
        """Matmul dtype for integer inner products: float32 on CUDA when |ip| < 2^24 (every product
        and partial sum is an integer below 2^24, so float32 -- and TF32/bf16 inputs, which hold
        |code| <= 128 exactly -- give the exact integer); float64 otherwise and on CPU."""
        if self.device.type == "cuda" and self.max_abs_ip < 2**24:
            return torch.float32
        return torch.float64

    def _ip(self, qf: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        # converted per chunk: no float copy of all codes is kept (the index stays int8-sized)
        return qf @ self.codes[c0:c1].to(qf.dtype).T

    def _keys64(self, ip: torch.Tensor, cols: torch.Tensor | slice, qsign: torch.Tensor, mode: str) -> torch.Tensor:
        """Exact float64 ranking keys from integer inner products (see reference_scores)."""
        key = ip.to(torch.float64)
        if mode == "hamming":
            return key
        if self.scales is not None:
            s = self.scales[cols].to(torch.float64)
            key = key * (s if s.dim() == key.dim() else s[None, :])
        else:
            key = key * self.tensor_scale
        return key * qsign[:, None]

    def _scores(self, keys: torch.Tensor, ids: torch.Tensor, qabs: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "hamming":
            scores = keys.to(torch.float32)
        else:
            scores = (keys * qabs[:, None]).to(torch.float32)
        return torch.where(ids >= 0, scores, torch.full_like(scores, float("-inf")))

    def _exclusion_tensors(self, ex: Exclusion | None, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows, cols) of excluded pairs, sorted by column, on the device."""
        if ex is None or ex.nnz == 0:
            return None
        rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(ex.indptr))
        cols = ex.indices
        ok = (cols >= 0) & (cols < self.n)
        rows, cols = rows[ok], cols[ok]
        order = np.argsort(cols, kind="stable")
        return (torch.from_numpy(rows[order]).to(self.device), torch.from_numpy(cols[order]).to(self.device))

    # --------------------------------------------------------------------------- search
    def search(self, qc: np.ndarray, k: int, qs: np.ndarray, ex: Exclusion | None, mode: str,
               method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b = qc.shape[0]
        dpad = self.codes.shape[1]
        qpad = np.zeros((b, dpad), np.int8)
        qpad[:, : self.dim] = qc
        q8 = torch.from_numpy(qpad).to(self.device)
        qs_t = torch.from_numpy(qs.astype(np.float64)).to(self.device)
        qsign = torch.sign(qs_t)
        qabs = qs_t.abs()
        exr = self._exclusion_tensors(ex, b)
        method = method or self.method
        if method == "exact":
            keys, ids = self._exact(q8, k, qsign, exr, mode)
        else:
            keys, ids = self._two_phase(q8, k, qsign, exr, mode)
        return self._scores(keys, ids, qabs, mode), ids

    def _chunk_items(self, b: int) -> int:
        # keep one (B, chunk) float64 key block around 256 MiB
        return int(max(1024, min(self.n, (1 << 25) // max(b, 1))))

    def _exact(self, q8: torch.Tensor, k: int, qsign: torch.Tensor, exr, mode: str,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunked running top-k; ``rows`` restricts to a subset of the queries (overflow redo)."""
        if rows is not None:
            if exr is not None:
                # keep only exclusions of the selected rows, renumbered 0..len(rows)-1
                remap = torch.full((q8.shape[0],), -1, dtype=torch.int64, device=self.device)
                remap[rows] = torch.arange(rows.numel(), device=self.device)
                r2 = remap[exr[0]]
                keep = r2 >= 0
                exr = (r2[keep], exr[1][keep])
            q8 = q8[rows]
            qsign = qsign[rows]
        b = q8.shape[0]
        qf = q8.to(self._fdtype())
        run_k = torch.empty((b, 0), dtype=torch.float64, device=self.device)
        run_i = torch.empty((b, 0), dtype=torch.int64, device=self.device)
        step = self._chunk_items(b)
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            key = self._keys64(self._ip(qf, c0, c1), slice(c0, c1), qsign, mode)
            if exr is not None:
                lo = int(torch.searchsorted(exr[1], c0).item())
                hi = int(torch.searchsorted(exr[1], c1).item())
                if hi > lo:
                    key[exr[0][lo:hi], exr[1][lo:hi] - c0] = float("-inf")
            ids = torch.arange(c0, c1, device=self.device).expand(b, -1)
            # running entries first: they have lower ids, so column order = id order on ties
            cand_k = torch.cat([run_k, key], 1)
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
    _SAMPLE = 32768

    def _two_phase(self, q8: torch.Tensor, k: int, qsign: torch.Tensor, exr, mode: str,
                   sample: int | None = None, cap: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b = q8.shape[0]
        ns = min(self.n, sample or self._SAMPLE)
        if cap is None:
            expect = k * self.n / max(ns, 1)  # candidates per query for i.i.d. scores
            cap = int(min(8192, max(256, 2 ** math.ceil(math.log2(4 * expect + 64)))))
        batch = max(1, min(b, (1 << 24) // cap))  # bounds the candidate buffers (~128 MiB)
        if batch < b:
            parts = []
            for r0 in range(0, b, batch):
                r1 = min(b, r0 + batch)
                sub = None
                if exr is not None:
                    sel = (exr[0] >= r0) & (exr[0] < r1)
                    sub = (exr[0][sel] - r0, exr[1][sel])
                parts.append(self._two_phase(q8[r0:r1], k, qsign[r0:r1], sub, mode, sample, cap))
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        thr = self._sample_threshold(q8, k, qsign, exr, mode, ns)
        cand_ids, cand_ip, counts = self._collect(q8, thr, qsign, mode, cap)
        keys, ids = self._select(cand_ids, cand_ip, counts, k, qsign, exr, mode, cap)
        over = torch.nonzero(counts > cap).flatten()
        if over.numel():
            ok, oi = self._exact(q8, k, qsign, exr, mode, rows=over)
            keys[over] = ok
            ids[over] = oi
        return keys, ids

    def _keys32(self, ip32: torch.Tensor, c0: int, c1: int, qsign: torch.Tensor, mode: str) -> torch.Tensor:
        """float32 keys as the fused kernel computes them: fl(fl(ip * s_i) * sign_u)."""
        key = ip32
        if mode == "hamming":
            return key
        if self.scales is not None:
            key = key * self.scales[c0:c1][None, :]
        else:
            key = key * torch.tensor(self.tensor_scale, dtype=torch.float32, device=self.device)
        return key * qsign.to(torch.float32)[:, None]

    def _sample_threshold(self, q8, k, qsign, exr, mode, ns) -> torch.Tensor:
        """float32 per-query lower bound on the true k-th best key (-inf: no bound)."""
        b = q8.shape[0]
        kk = min(k, ns)
        thr = torch.empty(b, dtype=torch.float64, device=self.device)
        rows_per = max(1, (1 << 27) // max(ns, 1))
        qf = q8.to(self._fdtype())
        for r0 in range(0, b, rows_per):
            r1 = min(b, r0 + rows_per)
            ip = self._ip(qf[r0:r1], 0, ns).to(torch.float32)
            key = self._keys32(ip, 0, ns, qsign[r0:r1], mode)
            if exr is not None:
                sel = (exr[1] < ns) & (exr[0] >= r0) & (exr[0] < r1)
                key[exr[0][sel] - r0, exr[1][sel]] = float("-inf")
            thr[r0:r1] = torch.topk(key, kk, dim=1).values[:, kk - 1].to(torch.float64)
        if ns < k:
            thr.fill_(float("-inf"))  # the sample has fewer than k items: no bound
        # at least k sample items have float32 key >= thr, so their exact keys -- and the true
        # k-th best -- are >= thr minus a few ulps; lower by a safe margin, round down to float32
        thr = thr - thr.abs() * _MARGIN - _TINY
        thr32 = thr.to(torch.float32)
        fix = thr32.to(torch.float64) > thr
        thr32[fix] = torch.nextafter(thr32[fix], torch.full_like(thr32[fix], float("-inf")))
        return thr32

    def _collect(self, q8, thr32, qsign, mode, cap):
        """Phase 2: ids and exact int32 inner products of every item with float32 key >= thr."""
        b = q8.shape[0]
        counts = torch.zeros(b, dtype=torch.int32, device=self.device)
        cand_ids = torch.full((b, cap), -1, dtype=torch.int32, device=self.device)
        cand_ip = torch.zeros((b, cap), dtype=torch.int32, device=self.device)
        if self.use_triton:
            _launch_triton(self, q8, thr32, qsign, mode, cap, counts, cand_ids, cand_ip)
            return cand_ids, cand_ip, counts
        # torch emulation of the fused kernel (same float32 keys, same buffers, order by id)
        qf = q8.to(self._fdtype())
        step = self._chunk_items(b)
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            ip = self._ip(qf, c0, c1)
            key = self._keys32(ip.to(torch.float32), c0, c1, qsign, mode)
            hit = key >= thr32[:, None]
            r, c = torch.nonzero(hit, as_tuple=True)
            if r.numel() == 0:
                continue
            # slot = running count + rank within this chunk's hits of the same row
            first = torch.searchsorted(r, r, right=False)
            slot = counts[r].to(torch.int64) + (torch.arange(r.numel(), device=self.device) - first)
            ok = slot < cap
            cand_ids[r[ok], slot[ok]] = (c[ok] + c0).to(torch.int32)
            cand_ip[r[ok], slot[ok]] = ip[r[ok], c[ok]].to(torch.int32)
            counts += torch.bincount(r, minlength=b).to(torch.int32)
        return cand_ids, cand_ip, counts

    def _select(self, cand_ids, cand_ip, counts, k, qsign, exr, mode, cap):
        """Phase 3: exact keys of the candidates, exclusions removed, (key desc, id asc) top-k."""
        b = cand_ids.shape[0]
        valid = cand_ids >= 0
        ids64 = cand_ids.to(torch.int64)
        # order candidates by id (atomics appended them in any order) so ties resolve by id
        sort_key = torch.where(valid, ids64, torch.full_like(ids64, self.n))
        sort_key, perm = torch.sort(sort_key, dim=1)
        ip = cand_ip.gather(1, perm)
        valid = sort_key < self.n
        safe_ids = torch.where(valid, sort_key, torch.zeros_like(sort_key))
        if mode == "hamming":
            key = ip.to(torch.float64)
        else:
            key = self._keys64(ip, safe_ids, qsign, mode)
        key = torch.where(valid, key, torch.full_like(key, float("-inf")))
        if exr is not None and exr[0].numel():
            # excluded (row, id) pairs: membership by binary search on row * n + id
            ex_code = torch.sort(exr[0] * self.n + exr[1]).values
            code = torch.arange(b, device=self.device)[:, None] * self.n + safe_ids
            pos = torch.searchsorted(ex_code, code.reshape(-1)).clamp_max(ex_code.numel() - 1)
            hit = (ex_code[pos] == code.reshape(-1)).view(b, -1) & valid
            key = torch.where(hit, torch.full_like(key, float("-inf")), key)
        kk = min(k, cap)
        v, pos = stable_topk(key, kk)
        out_i = sort_key.gather(1, pos)
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
    def _cand_kernel(Q, X, S, QMUL, THR, CNT, OUT_ID, OUT_IP, B, N, cap, stride_q, stride_x,
                     HAS_SCALE: tl.constexpr, D: tl.constexpr, BK: tl.constexpr, BQ: tl.constexpr,
                     BN: tl.constexpr, TILES: tl.constexpr):
        # axis 0 (fastest) walks query blocks, so programs running together share item tiles in L2
        pid_q = tl.program_id(0)
        pid_n = tl.program_id(1)
        rq = pid_q * BQ + tl.arange(0, BQ)
        qmask = rq < B
        rd = tl.arange(0, BK)
        thr = tl.load(THR + rq, mask=qmask, other=float("inf"))
        qm = tl.load(QMUL + rq, mask=qmask, other=0.0)
        for t in range(TILES):
            rn = (pid_n * TILES + t) * BN + tl.arange(0, BN)
            nmask = rn < N
            ip = tl.zeros([BQ, BN], dtype=tl.int32)
            for k0 in tl.static_range(0, D, BK):
                q = tl.load(Q + rq[:, None] * stride_q + (k0 + rd)[None, :], mask=qmask[:, None], other=0)
                x = tl.load(X + rn[:, None] * stride_x + (k0 + rd)[None, :], mask=nmask[:, None], other=0)
                ip += tl.dot(q, tl.trans(x), out_dtype=tl.int32)  # int8 x int8 -> exact int32 (tensor cores)
            key = ip.to(tl.float32)
            if HAS_SCALE:
                s = tl.load(S + rn, mask=nmask, other=0.0)
                key = key * s[None, :]
            key = key * qm[:, None]
            hit = (key >= thr[:, None]) & nmask[None, :] & qmask[:, None]
            # hits are rare (~k n / sample per query): one atomic per hit reserves its slot
            slot = tl.atomic_add(CNT + rq[:, None] + tl.zeros([BQ, BN], dtype=tl.int32), 1, mask=hit,
                                 sem="relaxed")
            ok = hit & (slot < cap)
            dst = rq[:, None] * cap + slot
            tl.store(OUT_ID + dst, (rn[None, :] + tl.zeros([BQ, BN], dtype=tl.int32)), mask=ok)
            tl.store(OUT_IP + dst, ip, mask=ok)

    return _cand_kernel


_BQ, _BN, _TILES = 64, 128, 8


def _launch_triton(eng: TorchCodeSearcher, q8, thr32, qsign, mode, cap, counts, cand_ids, cand_ip) -> None:
    import triton

    kern = _TRITON
    b = q8.shape[0]
    d = eng.codes.shape[1]
    if mode == "hamming":
        qmul = torch.ones(b, dtype=torch.float32, device=q8.device)
        has_scale = False
        s = qmul  # unused
    else:
        qmul = qsign.to(torch.float32)
        if eng.scales is not None:
            has_scale = True
            s = eng.scales
        else:
            has_scale = False
            s = qmul
            # per-tensor scale folded into the sign: s * sign is exact, so the key is the same
            qmul = qmul * torch.tensor(eng.tensor_scale, dtype=torch.float32, device=q8.device)
    tiles = max(_TILES, triton.cdiv(eng.n, _BN * 65535))  # grid axis 1 is limited to 65535
    grid = (triton.cdiv(b, _BQ), triton.cdiv(eng.n, _BN * tiles))
    kern[grid](q8, eng.codes, s, qmul, thr32, counts, cand_ids, cand_ip, b, eng.n, cap,
               q8.stride(0), eng.codes.stride(0), HAS_SCALE=has_scale, D=d, BK=64 if d % 64 == 0 else 32,
               BQ=_BQ, BN=_BN, TILES=tiles, num_warps=4)
