"""The one index interface: the ``Index`` protocol, ``build_index`` and ``load_index``.

As in FAISS, one interface covers every code format: a :class:`~hqgnn.index.format.CodeFormat`
picks the implementation (the symmetric popcount / integer-dot engine when queries and items are
codes of one width with no term, the asymmetric engine otherwise) and the device picks the kernels
(numba on the CPU, Triton or torch on CUDA). Every implementation returns exactly what the float64
brute force of :mod:`hqgnn.index.reference` returns, ties to the lower item id.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable


from .format import CodeFormat
from .queries import QueryCodes, encode_queries

__all__ = ["Index", "QueryCodes", "build_index", "encode_queries", "load_index", "read_format"]


@runtime_checkable
class Index(Protocol):
    """Exact top-k over item codes of one :class:`CodeFormat`.

    ``search(queries, k, exclude=None) -> (scores, ids)``: ``queries`` is a float array (B, d), encoded
    by the format (:func:`encode_queries`), an integer array of codes (scales 1), or a
    :class:`QueryCodes`; ``exclude`` is one CSR row of item ids per query (``(indptr, indices)`` or a
    scipy CSR matrix). Scores float32 and ids int64, each (B, k), best first, ties to the lower id,
    score -inf / id -1 beyond the eligible items; numpy on the CPU, torch tensors on CUDA.
    """

    n: int
    dim: int
    device: str

    @property
    def format(self) -> CodeFormat: ...

    def search(self, queries: Any, k: int, exclude: Any = None) -> tuple[Any, Any]: ...

    def memory_bytes(self) -> int: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def build_index(
    codes: Any, fmt: CodeFormat, *, scale: Any = None, term: Any = None, device: str = "cpu", backend: str = "auto"
) -> Index:
    """The index of ``fmt`` over item ``codes`` (int8 (n, d)).

    Parameters
    ----------
    codes : array_like of int8, shape (n, fmt.dim)
        Item codes in ``fmt.item_bits`` bits ({-1, +1} for 1 bit).
    fmt : CodeFormat
        How items and queries are stored and scored.
    scale, term : array_like or float, optional
        The item scales ``s_i`` (None, one value, or (n,)) and terms ``t_i`` (``fmt.term`` formats).
    device : str
        ``"cpu"`` or ``"cuda[:i]"``.
    backend : {"auto", "numba", "torch", "triton"}
        ``"auto"``: numba on the CPU, Triton (else torch) on CUDA.
    """
    if term is not None and not fmt.term:
        raise ValueError("item terms given, but the format has term=False")
    if fmt.term and term is None:
        raise ValueError("the format has per-item terms (term=True), but none were given")
    if fmt.symmetric:
        from .factory import build_code_index

        index: Any = build_code_index(codes, scale, fmt.item_bits, device=device, backend=backend)
    else:
        from .asym import AsymCodeIndex

        # 1-bit {-1, +1} queries are exact 2-bit codes for the asymmetric kernels (range [-2, 1])
        index = AsymCodeIndex(
            codes,
            scale,
            item_bits=fmt.item_bits,
            item_term=term,
            query_bits=max(2, fmt.query_bits) if fmt.query_bits else 0,
            device=device,
            backend=backend,
            item_order=fmt.item_order,
            gpu_layout=fmt.layout,
        )
    index._format = fmt
    return index  # type: ignore[no-any-return]


def read_format(path: str | os.PathLike[str]) -> CodeFormat | None:
    """The code format stored with a saved index (None for an index saved before formats were stored)."""
    from .io import read_meta

    fmt = read_meta(path).get("code_format")
    return None if fmt is None else CodeFormat.from_dict(fmt)


def load_index(path: str | os.PathLike[str], device: str = "cpu", mmap: bool = True, backend: str = "auto") -> Index:
    """Open an index written by ``Index.save`` (memory-mapped when ``mmap`` and the directory form)."""
    from .factory import load_code_index

    index: Any = load_code_index(path, mmap=mmap, device=device, backend=backend)
    fmt = read_format(path)
    if fmt is not None:
        index._format = fmt
    return index  # type: ignore[no-any-return]
