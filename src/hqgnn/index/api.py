"""The one index interface: the ``Index`` protocol, its only constructors ``build_index`` / ``load_index``, re-ranking.

As in FAISS, one interface covers every code format: a :class:`~hqgnn.index.format.CodeFormat` says
how items and queries are stored and scored, one engine (:class:`hqgnn.index.asym.AsymCodeIndex`)
serves them all, and the device picks its kernels (numba on the CPU, Triton or torch on CUDA).
Symmetric formats (queries codes of the items' width, no term) are the special case ``query_bits ==
item_bits``; 1-bit queries are searched as the exact 2-bit codes they are, and pure Hamming ranking is
the 1-bit format without scales (``scale="none"``: the score is ``d - 2 * hamming``). Every result equals
the float64 brute force of :mod:`hqgnn.index.reference`, ties to the lower item id.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable


from .common import ArrayLike, ExcludeLike, ScaleLike, to_numpy
from .format import CodeFormat
from .queries import QueryCodes, encode_queries

__all__ = ["Index", "QueryCodes", "build_index", "encode_queries", "load_index", "read_format", "search_rerank"]


@runtime_checkable
class Index(Protocol):
    """Exact top-k over item codes of one :class:`CodeFormat`.

    ``search(queries, k, exclude=None) -> (scores, ids)``: ``queries`` is a float array (B, d), encoded
    by the format (:func:`encode_queries`), an integer array of codes (scales 1), or a
    :class:`QueryCodes`; ``exclude`` is one CSR row of item ids per query (``(indptr, indices)`` or a
    scipy CSR matrix). Scores float32 and ids int64, each (B, k), best first, ties to the lower id,
    score -inf / id -1 beyond the eligible items; numpy on the CPU, torch tensors on CUDA.
    ``threads``: CPU search threads (None: every usable core, or ``HQGNN_NUM_THREADS``).
    """

    n: int
    dim: int
    device: str
    backend: str
    threads: int | None

    @property
    def format(self) -> CodeFormat: ...

    def search(self, queries: Any, k: int, exclude: Any = None) -> tuple[Any, Any]: ...

    def memory_bytes(self) -> int: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def build_index(
    codes: ArrayLike,
    fmt: CodeFormat,
    *,
    scale: ScaleLike = None,
    term: ScaleLike = None,
    device: str = "cpu",
    backend: str = "auto",
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
    from .asym import AsymCodeIndex

    if term is not None and not fmt.term:
        raise ValueError("item terms given, but the format has term=False")
    if fmt.term and term is None:
        raise ValueError("the format has per-item terms (term=True), but none were given")
    index = AsymCodeIndex(
        codes,
        scale,
        item_bits=fmt.item_bits,
        item_term=term,
        query_bits=max(2, fmt.query_bits) if fmt.query_bits else 0,  # 1-bit {-1, +1}: exact 2-bit codes
        device=device,
        backend=backend,
        item_order=fmt.item_order,
        gpu_layout=fmt.layout,
    )
    index._format = fmt
    return index


def read_format(path: str | os.PathLike[str]) -> CodeFormat | None:
    """The code format stored with a saved index (None for an index saved before formats were stored)."""
    from .io import read_meta

    fmt = read_meta(path).get("code_format")
    return None if fmt is None else CodeFormat.from_dict(fmt)


def load_index(path: str | os.PathLike[str], device: str = "cpu", mmap: bool = True, backend: str = "auto") -> Index:
    """Open an index written by ``Index.save`` (codes memory-mapped when ``mmap`` and the directory form).

    An index saved by the symmetric engine of hqgnn <= 0.x (``kind`` BinaryCodeIndex / ScalarCodeIndex in
    its metadata) is refused with one error naming the file: re-export it from its run.
    """
    from .asym import AsymCodeIndex
    from .io import read_asym_index

    fmt = read_format(path)
    index = AsymCodeIndex.restore(
        read_asym_index(path, mmap=mmap), device, backend, "packed" if fmt is None else fmt.layout
    )
    index._format = fmt
    return index


def search_rerank(
    index: Index,
    query_codes: Any,
    query_float: ArrayLike,
    item_float: ArrayLike,
    k: int,
    candidates: int = 100,
    query_scales: ScaleLike = None,
    exclude: ExcludeLike = None,
) -> tuple[Any, Any]:
    """Two-stage retrieval (HashGNN protocol): the top ``candidates`` items by ``index.search`` (exact),
    then the best ``k`` of those by the float inner product <query_float[u], item_float[i]>.

    ``query_codes`` is what ``index.search`` takes (with ``query_scales``, codes and scales as a
    :class:`QueryCodes`). The re-rank is exact among the candidates: float64 inner products of the given
    embeddings, ordered by (score desc, item id asc), returned as float32; ``candidates`` is raised to
    ``k`` if smaller. numpy arrays for a CPU index, torch tensors on the device for a CUDA one, like
    ``search``; missing slots are -1 / -inf.
    """
    c = max(int(candidates), int(k))
    queries = query_codes if query_scales is None else QueryCodes(query_codes, query_scales)
    _, cand = index.search(queries, c, exclude=exclude)
    import torch

    on_host = index.device == "cpu"
    scores, ids = _rerank_torch(index, torch.from_numpy(cand) if on_host else cand, query_float, item_float, k)
    return (scores.numpy(), ids.numpy()) if on_host else (scores, ids)


def _rerank_torch(index: Index, cand: Any, query_float: ArrayLike, item_float: ArrayLike, k: int) -> tuple[Any, Any]:
    """:func:`search_rerank`'s second stage on the index's device (candidate ids ``cand``, -1 = none)."""
    import torch

    from ..topk import stable_topk

    qf = torch.as_tensor(to_numpy(query_float), device=index.device).to(torch.float64).reshape(cand.shape[0], -1)
    xf = torch.as_tensor(to_numpy(item_float), device=index.device)
    # sort candidates by id first so stable_topk's column tie-break is the id tie-break
    ids = torch.sort(torch.where(cand >= 0, cand, torch.full_like(cand, index.n)), dim=1).values
    valid = ids < index.n
    ids = torch.where(valid, ids, torch.zeros_like(ids))
    s = torch.einsum("bd,bcd->bc", qf, xf[ids].to(torch.float64))
    s = torch.where(valid, s, torch.full_like(s, float("-inf")))
    v, pos = stable_topk(s, min(k, s.shape[1]))
    return v.to(torch.float32), torch.where(torch.isneginf(v), torch.full_like(pos, -1), ids.gather(1, pos))
