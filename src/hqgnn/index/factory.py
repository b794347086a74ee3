"""Building and opening a code index: picks the concrete CodeIndex for a bit width (the base never imports them)."""

from __future__ import annotations

from .base import CodeIndex
from .binary import BinaryCodeIndex
from .common import ArrayLike, DeviceLike, ScaleLike
from .scalar import ScalarCodeIndex

__all__ = ["build_code_index", "load_code_index"]


def build_code_index(item_codes: ArrayLike, item_scale: ScaleLike = None, bits: int = 1, device: DeviceLike = "cpu",
                     backend: str = "auto") -> CodeIndex:
    """The index for ``bits``-bit item codes: :class:`BinaryCodeIndex` for 1 bit ({-1,+1} codes),
    :class:`ScalarCodeIndex` for 2..8 bits. ``item_scale``: None, a scalar, or one float per item.
    ``backend``: "auto" (numba on CPU; Triton, else torch, on CUDA), "numba", "torch", "triton"."""
    bits = int(bits)
    if bits == 1:
        return BinaryCodeIndex(item_codes, item_scale, device=device, backend=backend)
    if 2 <= bits <= 8:
        return ScalarCodeIndex(item_codes, item_scale, bits=bits, device=device, backend=backend)
    raise ValueError(f"bits must be in 1..8, got {bits}")


def load_code_index(path, mmap: bool = True, device: DeviceLike = "cpu", backend: str = "auto") -> CodeIndex:
    """Open an index written by ``CodeIndex.save`` or ``AsymCodeIndex.save`` (memory-mapped when ``mmap``)."""
    from .io import read_meta

    if read_meta(path).get("kind") == "AsymCodeIndex":
        from .asym import AsymCodeIndex

        return AsymCodeIndex.load(path, mmap=mmap, device=device, backend=backend)
    return CodeIndex.load(path, mmap=mmap, device=device, backend=backend)
