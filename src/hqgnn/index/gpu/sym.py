"""Torch (any device) and Triton (CUDA) exact top-k over integer codes: threshold, fused candidate scan, exact select.

Two methods, both exact (same order and scores as the float64 reference):

* ``exact``: items in chunks; integer inner products by matmul (float32 on CUDA -- exact, see
  ``_ip``), float64 keys, a running top-k merged with :func:`hqgnn.topk.stable_topk`. Simple and
  device-agnostic; it is the torch backend on CPU and the fallback everywhere.
* ``two_phase`` (CUDA default): (1) one pass stores each (query, tile of 128 items) max key; the
  (k + #excluded)-th largest tile max is a lower bound of the true k-th best key (k distinct
  eligible items reach it), lowered by a float32 safety margin; (2) a second fused pass keeps only
  items whose float32 key reaches that bound -- ~k per query, appended to a small per-query buffer
  together with their exact int32 inner product -- so the (B, n) score matrix never exists in
  memory; (3) exact float64 keys of the candidates, sorted by (key desc, id asc). Queries whose
  buffer overflowed (heavy ties, adversarial data) are redone with ``exact``. Both passes are one
  Triton kernel on CUDA (int8 tensor-core dot + epilogue); a torch version of them runs anywhere
  (tests use it on CPU to check the algorithm).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..common import Exclusion, ItemScale
from .topk import (
    LazyKernel,
    append_candidates,
    exclusion_rows,
    exclusion_slice,
    exclusion_tensors,
    float32_at_most,
    gathered_dot,
    running_topk,
    sorted_candidates,
    top_candidates,
)

__all__ = ["TorchCodeSearcher", "triton_available"]

_TRITON = LazyKernel(lambda: _build_triton_kernel())  # noqa: PLW0108  (defined below)


def triton_available() -> bool:
    """True when CUDA and an importable Triton are both present (kernel built on first call).
    With TRITON_INTERPRET=1 the kernel is built for Triton's CPU interpreter (CPU tensors; tests)."""
    return _TRITON.available()


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
        exr = exclusion_tensors(ex, b, self.n, self.device)
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
            exr = exclusion_rows(exr, rows, q8.shape[0])
            q8 = q8[rows]
            qsign = qsign[rows]
        b = q8.shape[0]
        qf = q8.to(self._fdtype())
        return running_topk(lambda c0, c1: self._keys64(self._ip(qf, c0, c1), slice(c0, c1), qsign, mode),
                            self.n, b, k, self._chunk_items(b), exr, self.device)

    # ------------------------------------------------------------------------ two-phase
    # items per tile of the threshold pass (= the Triton kernel's BN), and the per-query candidate
    # buffer (None: 4 (k + #excluded) + 256 rounded up to a power of two); tests shrink both
    tile = 128
    group = 8  # tiles per max-group of the threshold pass (one Triton program = one group)
    cap: int | None = None

    def _two_phase(self, q8: torch.Tensor, k: int, qsign: torch.Tensor, exr, mode: str,
                   cap: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        batch = max(1, min(b, (1 << 25) // max(ngroups, cap)))  # bounds group maxima and buffers
        if batch < b:
            parts = []
            for r0 in range(0, b, batch):
                r1 = min(b, r0 + batch)
                parts.append(self._two_phase(q8[r0:r1], k, qsign[r0:r1], exclusion_slice(exr, r0, r1), mode, cap))
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        thr = self._tile_threshold(q8, k, qsign, mode, ex_count)
        cand_ids, counts = self._collect(q8, thr, qsign, mode, cap)
        keys, ids = self._select(q8, cand_ids, counts, k, qsign, exr, mode, cap)
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

    def _tile_threshold(self, q8, k, qsign, mode, ex_count) -> torch.Tensor:
        """float32 per-query lower bound on the true k-th best key (-inf: no bound).

        Every group's max (a group = ``group`` tiles of ``tile`` consecutive items) is the key of
        a real item, so the (k + e)-th largest group max T has k + e distinct items at or above
        it; at most e of them are excluded (e = the query's #excluded items), so at least k
        eligible items score >= T: the k-th best eligible key is >= T. With n / 1024 groups the
        top-k items rarely share a group, so T is tight and phase 2 emits ~k candidates per
        query; it costs one int8 pass plus a top-k over n / 1024 values.
        """
        gmax = self._group_max(q8, qsign, mode)  # (B, ngroups) float32
        ngroups = gmax.shape[1]
        need = (k + ex_count).to(torch.int64)
        kk = int(min(ngroups, int(need.max().item())))
        vals = torch.topk(gmax, kk, dim=1).values
        thr = vals.gather(1, (need.clamp(max=kk) - 1)[:, None]).squeeze(1).to(torch.float64)
        thr = torch.where(need > ngroups, torch.full_like(thr, float("-inf")), thr)
        # T is a float32 key; exact keys of the items behind it -- and the true k-th best -- are
        # >= T minus a few ulps: lower by a safe margin and round down to float32
        return float32_at_most(thr - thr.abs() * _MARGIN - _TINY)

    def _group_max(self, q8, qsign, mode) -> torch.Tensor:
        b = q8.shape[0]
        g = self.tile * self.group
        ngroups = -(-self.n // g)
        if self.use_triton:
            gmax = torch.empty((b, ngroups), dtype=torch.float32, device=self.device)
            _launch_triton(self, q8, None, qsign, mode, 0, None, None, gmax=gmax)
            return gmax
        # torch emulation: same float32 keys, max over each group of g consecutive items
        qf = q8.to(self._fdtype())
        step = max(g, (self._chunk_items(b) // g) * g)
        out = []
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            key = self._keys32(self._ip(qf, c0, c1).to(torch.float32), c0, c1, qsign, mode)
            pad = (-(c1 - c0)) % g
            if pad:
                key = torch.cat([key, torch.full((b, pad), float("-inf"), device=self.device)], 1)
            out.append(key.view(b, -1, g).amax(-1))
        return torch.cat(out, 1)

    def _collect(self, q8, thr32, qsign, mode, cap):
        """Phase 2: ids of every item with float32 key >= thr (per query, first ``cap`` kept)."""
        b = q8.shape[0]
        counts = torch.zeros(b, dtype=torch.int32, device=self.device)
        cand_ids = torch.full((b, cap), -1, dtype=torch.int32, device=self.device)
        if self.use_triton:
            _launch_triton(self, q8, thr32, qsign, mode, cap, counts, cand_ids)
            return cand_ids, counts
        # torch emulation of the fused kernel (same float32 keys, same buffers)
        qf = q8.to(self._fdtype())
        step = self._chunk_items(b)
        for c0 in range(0, self.n, step):
            c1 = min(self.n, c0 + step)
            key = self._keys32(self._ip(qf, c0, c1).to(torch.float32), c0, c1, qsign, mode)
            append_candidates(key, thr32, c0, counts, cand_ids, cap)
        return cand_ids, counts

    def _select(self, q8, cand_ids, counts, k, qsign, exr, mode, cap):
        """Phase 3: exact keys of the candidates, exclusions removed, (key desc, id asc) top-k."""
        ids_sorted, valid, safe = sorted_candidates(cand_ids, counts, min(cap, max(1, int(counts.max()))), self.n)
        ids_sorted = ids_sorted.to(torch.int64)
        # exact inner products of the few candidates: gather their codes, one batched matmul
        ip = gathered_dot(lambda idx: self.codes[idx], safe, q8, self._fdtype())
        return top_candidates(self._keys64(ip, safe, qsign, mode), ids_sorted, valid, k, exr, self.n)


# ---------------------------------------------------------------------------------- Triton
def _build_triton_kernel():
    from .sym_triton import scan_kernel

    return scan_kernel


_BQ, _WARPS = 64, 4


def _launch_triton(eng: TorchCodeSearcher, q8, thr32, qsign, mode, cap, counts, cand_ids,
                   gmax: torch.Tensor | None = None) -> None:
    import triton

    kern = _TRITON.kernel
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
    ngroups = triton.cdiv(eng.n, eng.tile * eng.group)
    if ngroups > 65535:  # grid axis 1 limit
        raise ValueError("too many item groups for one launch; raise TorchCodeSearcher.group")
    emit = gmax is None
    dummy = qmul
    kern[(triton.cdiv(b, _BQ), ngroups)](
        q8, eng.codes, s, qmul, thr32 if emit else dummy, dummy if emit else gmax,
        counts if emit else dummy, cand_ids if emit else dummy, b, eng.n, ngroups, cap, q8.stride(0),
        eng.codes.stride(0), HAS_SCALE=has_scale, D=d, BK=64 if d % 64 == 0 else 32, BQ=_BQ, BN=eng.tile,
        TILES=eng.group, EMIT=emit, num_warps=_WARPS)
