"""The rounding rule and its gradient estimators (STE, GSTE) as autograd Functions, plus the LSQ scale gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..config import QUANT_ESTIMATORS as ESTIMATORS  # the one list of estimator names

__all__ = [
    "ESTIMATORS",
    "GSTEQuantize",
    "STEQuantize",
    "inside_clip_range",
    "integer_codes",
    "level_range",
    "quantize_with_estimator",
]


def level_range(bits: int) -> tuple[int, int]:
    """(qn, qp): codes lie in [-qn, qp]. 1 bit is the sign code {-1, +1}, so (1, 1)."""
    if bits == 1:
        return 1, 1
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1


def integer_codes(x: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Integer-valued codes of x in x's dtype (no grad tracking implied).

    1 bit: +1 where x >= 0 (so sign(0) = +1), else -1; the scale is not used.
    b >= 2: clamp(round(x / scale), -2^(b-1), 2^(b-1) - 1); torch.round breaks ties to even.
    scale broadcasts against x: shape (n, 1) for one scale per row, () for one per tensor.
    """
    if bits == 1:
        # (x >= 0) * 2 - 1 rather than torch.sign, which maps 0 to 0.
        return (x >= 0).to(x.dtype) * 2 - 1
    qn, qp = level_range(bits)
    return torch.clamp(torch.round(x / scale), -qn, qp)


def inside_clip_range(x: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Where x / scale lies in the closed interval [-2^(b-1), 2^(b-1) - 1].

    This is the boundary rule for both estimators (gradient kept inside, zeroed strictly outside) and
    for the LSQ scale gradient. It is the rule of clamp-then-round LSQ code and of torch.clamp's own
    gradient, so the two ends count as inside. Computed with the same x / scale as integer_codes.
    """
    qn, qp = level_range(bits)
    v = x / scale
    return (v >= -qn) & (v <= qp)


def _scale_grad(g: Tensor, x: Tensor, scale: Tensor, bits: int, grad_scale: float) -> Tensor:
    """LSQ (Esser et al. 2020): dq/ds = round(x/s) - x/s inside the range, the clip bound outside
    (1 bit: dq/ds = sign(x)), summed to the scale's shape and multiplied by grad_scale = 1/sqrt(n*Qp)."""
    codes = integer_codes(x, scale, bits)
    if bits == 1:
        dq_ds = codes
    else:
        # Outside the range the code already equals the clip bound, so only the inside needs - x/s.
        dq_ds = torch.where(inside_clip_range(x, scale, bits), codes - x / scale, codes)
    return (g * dq_ds).sum_to_size(scale.shape) * grad_scale


class STEQuantize(torch.autograd.Function):
    """q = scale * codes(x); dL/dx = dL/dq (zeroed outside the clip range for b >= 2)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor, bits: int, grad_scale: float) -> Tensor:
        # x and scale are inputs, so saving them costs no memory; masks are recomputed in backward
        # instead of saved, trading a few elementwise ops for activation memory.
        ctx.save_for_backward(x, scale)
        ctx.bits = bits
        ctx.grad_scale = grad_scale
        return integer_codes(x, scale, bits) * scale

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, scale = ctx.saved_tensors
        bits = ctx.bits
        grad_x = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_x = g if bits == 1 else torch.where(inside_clip_range(x, scale, bits), g, 0.0)
        if ctx.needs_input_grad[1]:
            grad_s = _scale_grad(g, x, scale, bits, ctx.grad_scale)
        return grad_x, grad_s, None, None


class GSTEQuantize(torch.autograd.Function):
    """q = scale * codes(x); dL/dx = g * (1 + delta * sign(g) * (x - q)) with g = dL/dq.

    The element-wise gradient scaling of EWGS (Lee et al. 2021), our reading of HQ-GNN's GSTE: a
    first-order correction g + H (x - q) of the gradient at q, with H ~ delta * |g|. For b >= 2 the
    same clip-range zeroing as STE applies. delta is a 0-dim tensor so it can change without
    recompiling; with delta = 0 the result equals STE bit for bit (g * (1 + 0) == g).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, scale: Tensor, delta: Tensor, bits: int, grad_scale: float
    ) -> Tensor:
        ctx.save_for_backward(x, scale, delta)
        ctx.bits = bits
        ctx.grad_scale = grad_scale
        return integer_codes(x, scale, bits) * scale

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        x, scale, delta = ctx.saved_tensors
        bits = ctx.bits
        grad_x = grad_s = None
        if ctx.needs_input_grad[0]:
            # Recompute q exactly as forward did, so x - q is the true quantization error.
            err = x - integer_codes(x, scale, bits) * scale
            grad_x = g * (1 + delta * torch.sign(g) * err)
            if bits > 1:
                grad_x = torch.where(inside_clip_range(x, scale, bits), grad_x, 0.0)
        if ctx.needs_input_grad[1]:
            grad_s = _scale_grad(g, x, scale, bits, ctx.grad_scale)
        return grad_x, grad_s, None, None, None


def quantize_with_estimator(
    x: Tensor, scale: Tensor, bits: int, estimator: str, delta: Tensor, grad_scale: float = 1.0
) -> Tensor:
    """Apply the named estimator ("ste" or "gste"); scale broadcasts against x ((n, 1) or ())."""
    # Function.apply is unannotated in torch; the local annotations state its type (never evaluated at run time)
    if estimator == "ste":
        ste: Callable[..., Tensor] = STEQuantize.apply
        return ste(x, scale, bits, grad_scale)
    if estimator == "gste":
        gste: Callable[..., Tensor] = GSTEQuantize.apply
        return gste(x, scale, delta, bits, grad_scale)
    raise ValueError(f"unknown estimator {estimator!r} (expected one of {', '.join(ESTIMATORS)})")
