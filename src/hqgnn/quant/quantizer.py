"""b-bit embedding quantizer: scale choice (data-driven or learnable LSQ), codes, dequantization, the nn.Module."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from .estimators import ESTIMATORS, integer_codes, level_range, quantize_with_estimator

SCALE_MODES = ("row", "tensor")
SCALE_DTYPES = {"float32": 4, "float16": 2}  # storage dtype of a scale -> bytes

# Smallest scale used for b >= 2: only an all-zero row (or a learnable scale driven to <= 0) reaches
# it; it keeps x / s finite there (0 / eps = 0) without coarsening any realistic embedding row.
_EPS = 1e-12
# Candidate scales tried by the MSE search (plus two max-based ones, see _candidate_scales).
_GRID = 16
# Least-squares refinement steps after the grid search (a second step gained < 0.5% MSE, at 5 more kernels).
_ALS_STEPS = 1
# Elements per temporary (candidates x rows x dim) block in the grid search; bounds memory when a
# whole table is quantized at export time (about 64 MiB of float32).
_CHUNK_ELEMENTS = 1 << 24


def _grid_low(bits: int) -> float:
    # Lowest clip ratio searched. The MSE-optimal ratio grows with the bit width (fewer levels favour
    # clipping the tails harder): on Gaussian and Laplace rows of 64 entries the smallest per-row optimum
    # we saw was about 0.28 (2 bits), 0.54 (3), 0.76 (4), 0.99 (8) of max|x| / (Qp + 1/2).
    return {2: 0.2, 3: 0.3, 4: 0.4}.get(bits, 0.5)


def _candidate_scales(amax: Tensor, bits: int) -> Tensor:
    """(K, *amax.shape) candidate scales from amax = max|x| (per row (n, 1) or per tensor (1, 1)).

    ratio * amax / (Qp + 1/2) for ratios evenly spaced in [low, 1] (ratio 1: nothing is clipped beyond
    half a step), plus amax / Qp and amax / Qn, which put the largest entry exactly on the top (bottom)
    level, so data already on a uniform grid is recovered exactly.
    """
    return (_scale_factors(bits, amax.device).view(-1, *[1] * amax.dim()) * amax).clamp_min(_EPS)


def _scale_factors(bits: int, device: torch.device) -> Tensor:
    # Eagerly, cached per (bits, device): building the factors costs a few kernel launches and a
    # host-to-device copy, comparable to the whole search on a training batch. Under torch.compile they
    # are built inline (constants to the compiler), which also keeps Dynamo away from the lru_cache.
    if torch.compiler.is_compiling():
        return _build_scale_factors(bits, device)
    return _cached_scale_factors(bits, device)


def _build_scale_factors(bits: int, device: torch.device) -> Tensor:
    qn, qp = level_range(bits)
    ratios = torch.linspace(_grid_low(bits), 1.0, _GRID, dtype=torch.float64) / (qp + 0.5)
    factors = torch.cat([ratios, torch.tensor([1.0 / qp, 1.0 / qn], dtype=torch.float64)])
    return factors.to(device=device, dtype=torch.float32)


_cached_scale_factors = functools.lru_cache(maxsize=64)(_build_scale_factors)


def _squared_error(x: Tensor, scales: Tensor, bits: int) -> Tensor:
    """(K, ...) squared quantization error of x for each candidate scale (K leading)."""
    xk = x.unsqueeze(0)
    return (integer_codes(xk, scales, bits) * scales - xk).square()


def _refine(x: Tensor, s: Tensor, bits: int, dims: tuple[int, ...] | None) -> Tensor:
    """Alternating least squares: s <- <x, c> / <c, c> with c the codes at s. Each step cannot raise the
    error (s is optimal for fixed codes, rounding is optimal for fixed s), so it only polishes the grid."""
    for _ in range(_ALS_STEPS):
        c = integer_codes(x, s, bits)
        if dims is None:
            xc, cc = (x * c).sum(), (c * c).sum()
        else:
            xc, cc = (x * c).sum(dims, keepdim=True), (c * c).sum(dims, keepdim=True)
        # cc (a sum of squared integer codes) is 0 only for an all-zero row, where xc is 0 as well: the
        # clamp_min(1) avoids 0 / 0 and the row falls back to _EPS.
        s = (xc / cc.clamp_min(1)).clamp_min(_EPS)
    return s


@torch.no_grad()
def data_scale(x: Tensor, bits: int, per_row: bool) -> Tensor:
    """Scale fitted to x (2-D, float32 result): shape (n, 1) if per_row, else ().

    1 bit: mean |x| (BiGeaR), which is also the exact minimiser of ||x - s sign(x)||^2.
    b >= 2: minimise the squared error ||x - Q_s(x)||^2 over 18 candidate scales (see
    _candidate_scales), then one least-squares refinement step. On Gaussian and Laplace rows of 64
    entries the mean MSE is within 0.1% of (for b >= 4 up to 5% below) that of the best of 800 clip
    ratios r * max|x| / (Qp + 1/2), while max|x| / (Qp + 1/2) itself is 6% (8 bits) to 85% (2 bits) worse.
    About 20 kernels on an (18 x rows x dim) block; tables larger than _CHUNK_ELEMENTS go in chunks.
    """
    x = x.detach().to(torch.float32)
    if bits == 1:
        return x.abs().mean(dim=1, keepdim=True) if per_row else x.abs().mean()
    if x.numel() == 0:
        return x.new_ones(x.shape[0], 1) if per_row else x.new_ones(())
    k = _GRID + 2
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (k * max(1, x.shape[1])))
    if per_row:
        parts = []
        for chunk in torch.split(x, rows_per_chunk):
            cand = _candidate_scales(chunk.abs().amax(dim=1, keepdim=True), bits)  # (K, n, 1)
            best = _squared_error(chunk, cand, bits).sum(dim=2, keepdim=True).argmin(dim=0, keepdim=True)
            parts.append(_refine(chunk, cand.gather(0, best)[0], bits, dims=(1,)))
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    cand = _candidate_scales(x.abs().amax().reshape(1, 1), bits)  # (K, 1, 1)
    sse = torch.zeros(k, device=x.device, dtype=torch.float32)
    for chunk in torch.split(x, rows_per_chunk):
        sse += _squared_error(chunk, cand, bits).sum(dim=(1, 2))
    # index_select rather than cand[argmin]: indexing by a 0-dim tensor reads it on the host (a GPU sync).
    best = cand.reshape(-1).index_select(0, sse.argmin().reshape(1)).reshape(())
    return _refine(x, best, bits, dims=None)


class EmbeddingQuantizer(nn.Module):
    """Quantizes final user/item embeddings to b-bit codes times a scale; forward returns the
    dequantized values, differentiable through the chosen estimator.

    bits: 1..8. 1 bit: q = s * sign(x) (sign(0) = +1), codes in {-1, +1}. b >= 2: symmetric uniform
        q = s * clamp(round(x / s), -2^(b-1), 2^(b-1) - 1).
    estimator: "ste" or "gste" (see estimators.py). "none" means no quantizer: the caller must not build one.
    scale: "row" (one scale per embedding row) or "tensor" (one for the whole input / table).
    learnable_scale: False: the scale is refitted to the current x in every forward (data_scale) and
        detached, so dq/dx is defined by the estimator alone. With scale="tensor" this means the scale of
        the rows passed in (a training batch), not of the whole table. True: an nn.Parameter trained
        with the LSQ gradient; call init_scale(table) before the first forward.
    num_rows: table size; required for learnable per-row scales.
    delta: the GSTE coefficient (>= 0), held in a buffer; change it with set_delta. Ignored by "ste".
    """

    def __init__(
        self,
        bits: int,
        estimator: str = "ste",
        scale: str = "row",
        learnable_scale: bool = False,
        num_rows: int | None = None,
        delta: float = 0.0,
        scale_dtype: str = "float32",
    ) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
        if estimator == "none":
            raise ValueError("estimator 'none' means full precision: build no quantizer at all")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r} (expected one of {', '.join(ESTIMATORS)})")
        if scale not in SCALE_MODES:
            raise ValueError(f"unknown scale mode {scale!r} (expected one of {', '.join(SCALE_MODES)})")
        if scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"unknown scale dtype {scale_dtype!r} (expected one of {', '.join(SCALE_DTYPES)})")
        self.scale_dtype = scale_dtype
        if learnable_scale and scale == "row" and (num_rows is None or num_rows <= 0):
            raise ValueError("a learnable per-row scale needs num_rows (the table size)")
        self.bits = bits
        self.estimator = estimator
        self.scale_mode = scale
        self.learnable_scale = learnable_scale
        self.num_rows = num_rows
        _check_delta(delta)
        self.delta: Tensor  # a buffer (mypy would see Tensor | Module)
        self.register_buffer("delta", torch.tensor(float(delta)))
        self.scale: nn.Parameter | None
        self.register_parameter("scale", nn.Parameter(torch.ones(self._param_shape())) if learnable_scale else None)
        # A Python flag, not a tensor, so forward never syncs with the GPU (or breaks a compiled
        # graph) to check it; _load_from_state_dict keeps it in step with loaded checkpoints.
        self._scale_ready = False
        _, qp = level_range(bits)
        self._qp = qp

    # ---------------------------------------------------------------- scales
    def _param_shape(self) -> tuple[int, ...]:
        return (self.num_rows,) if self.scale_mode == "row" and self.num_rows is not None else ()

    def _scale_for(self, x: Tensor, rows: Tensor | None) -> tuple[Tensor, float]:
        """The scale broadcastable against x ((n, 1) or ()) and the LSQ gradient factor, rounded to the
        storage dtype: training, evaluation and serving all use the scale exactly as it is stored."""
        s, g = self._raw_scale_for(x, rows)
        if self.scale_dtype == "float16":
            # straight-through rounding: the value is the stored one, the LSQ gradient passes unchanged
            s = s + (s.detach().to(torch.float16).to(torch.float32) - s.detach())
        return s, g

    def _raw_scale_for(self, x: Tensor, rows: Tensor | None) -> tuple[Tensor, float]:
        if x.dim() != 2:
            raise ValueError(f"expected a 2-D (rows x dim) tensor, got shape {tuple(x.shape)}")
        if not self.learnable_scale:
            return data_scale(x, self.bits, self.scale_mode == "row"), 1.0
        if not self._scale_ready:
            raise RuntimeError("learnable scale not initialised: call init_scale(table) first")
        assert self.scale is not None
        if self.scale_mode == "tensor":
            # LSQ's 1/sqrt(n * Qp), with n the entries sharing this scale in this call.
            return self.scale.clamp_min(_EPS), (x.numel() * self._qp) ** -0.5
        s: Tensor
        if rows is None:
            if x.shape[0] != self.num_rows:
                raise ValueError(
                    f"x has {x.shape[0]} rows but the table has {self.num_rows}: pass rows= (table indices of x)"
                )
            s = self.scale
        else:
            s = self.scale[rows]
        return s.clamp_min(_EPS).unsqueeze(1), (x.shape[1] * self._qp) ** -0.5

    @torch.no_grad()
    def init_scale(self, x_all: Tensor) -> None:
        """Set a learnable scale from data (the same fit as the data-driven mode); x_all is the whole table."""
        if not self.learnable_scale or self.scale is None:
            raise RuntimeError("init_scale is only for learnable scales (the data-driven one is refitted every call)")
        if x_all.dim() != 2:
            raise ValueError(f"expected a 2-D (rows x dim) tensor, got shape {tuple(x_all.shape)}")
        if self.scale_mode == "row" and x_all.shape[0] != self.num_rows:
            raise ValueError(f"x_all has {x_all.shape[0]} rows, the table {self.num_rows}")
        s = data_scale(x_all, self.bits, self.scale_mode == "row")
        self.scale.copy_(s.reshape(self.scale.shape))
        self._scale_ready = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.scale is not None and prefix + "scale" in state_dict:
            self._scale_ready = True

    def set_delta(self, value: float) -> None:
        """Change the GSTE coefficient in place (no new graph, no recompilation)."""
        _check_delta(value)
        with torch.no_grad():
            self.delta.fill_(float(value))

    # ---------------------------------------------------------------- quantization
    def forward(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """Dequantized q, same shape and dtype as x; rows = table indices of x (learnable per-row scales only)."""
        s, grad_scale = self._scale_for(x, rows)
        # Work in float32 (the scale's dtype) so forward equals dequantize(quantize(x)) bit for bit.
        q = quantize_with_estimator(x.to(torch.float32), s, self.bits, self.estimator, self.delta, grad_scale)
        return q.to(x.dtype)

    @torch.no_grad()
    def quantize(self, x: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(codes int8 (n, d), scale float32 (n,) for "row" or () for "tensor"), no grad."""
        s, _ = self._scale_for(x, rows)
        s = s.detach().to(torch.float32)
        codes = integer_codes(x.detach().to(torch.float32), s, self.bits).to(torch.int8)
        return codes, (s.reshape(x.shape[0]) if self.scale_mode == "row" else s.reshape(()))

    @staticmethod
    def dequantize(codes: Tensor, scale: Tensor) -> Tensor:
        """codes * scale, float32; scale (n,) is one per row, () one for all. Equals forward exactly."""
        s = scale.to(torch.float32)
        return codes.to(torch.float32) * (s.unsqueeze(-1) if s.dim() == 1 else s)

    # ---------------------------------------------------------------- storage
    def bytes_per_row(self, dim: int) -> float:
        """Bit-packed bytes per row: bits * dim / 8, plus the per-row scale (4 B float32, 2 B float16). A
        per-tensor scale adds its bytes once per table (see table_bytes), not per row."""
        return self.bits * dim / 8 + (SCALE_DTYPES[self.scale_dtype] if self.scale_mode == "row" else 0)

    def table_bytes(self, num_rows: int, dim: int) -> float:
        """Bytes of a whole quantized table: rows plus the single per-tensor scale where there is one."""
        return num_rows * self.bytes_per_row(dim) + (
            SCALE_DTYPES[self.scale_dtype] if self.scale_mode == "tensor" else 0
        )

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, estimator={self.estimator!r}, scale={self.scale_mode!r}, "
            f"learnable_scale={self.learnable_scale}, num_rows={self.num_rows}, delta={float(self.delta):g}, "
            f"scale_dtype={self.scale_dtype!r}"
        )


def _check_delta(value: float) -> None:
    v = float(value)
    if not v >= 0 or v == float("inf"):  # also rejects NaN
        raise ValueError(f"delta must be a finite number >= 0, got {value!r} (estimate it, then set_delta)")
