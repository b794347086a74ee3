"""Exact top-k retrieval straight from packed quantized codes (1-bit Hamming, b-bit integer dot), CPU and CUDA.

Public API::

    index = build_code_index(item_codes, item_scale, bits, device="cpu")   # Binary/ScalarCodeIndex
    scores, ids = index.search(query_codes, k, query_scales=None, exclude=(indptr, indices),
                               mode="scaled")                              # or "hamming" (1 bit)
    scores, ids = index.search_rerank(query_codes, query_float, item_float, k, candidates=100)
    index.save(path); index = CodeIndex.load(path, mmap=True)

    # asymmetric: b-bit items (+ scale s_i, term t_i) x 4/8-bit or float queries
    index = build_asym_index(item_codes, item_scale, item_bits=1, item_term=None, query_bits=4)
    codes, scales = prepare_queries(x, rotation=R, center=mu, query_bits=4)   # once per query
    scores, ids = index.search(codes, k, query_scales=scales, exclude=(indptr, indices))

Results are exact: identical to :func:`reference_search` (float64 brute force), sorted by score
descending with ties broken by lower item id; numpy arrays on CPU, torch tensors on CUDA.
"""

from __future__ import annotations

from .asym import AsymCodeIndex, build_asym_index
from .queries import prepare_queries
from .base import BACKENDS, CodeIndex
from .binary import BinaryCodeIndex
from .factory import build_code_index, load_code_index
from .reference import reference_asym_search, reference_scores, reference_search
from .rerank import search_rerank
from .scalar import ScalarCodeIndex

__all__ = [
    "AsymCodeIndex",
    "BACKENDS",
    "BinaryCodeIndex",
    "CodeIndex",
    "ScalarCodeIndex",
    "build_asym_index",
    "build_code_index",
    "load_code_index",
    "prepare_queries",
    "reference_asym_search",
    "reference_scores",
    "reference_search",
    "run_retrieval_bench",
    "search_rerank",
]


def run_retrieval_bench(items: int, dim: int, bits: int, queries: int, k: int, device: str = "cpu", seed: int = 0,
                        threads: int | None = None, query_bits: int | None = None) -> dict:
    """See :func:`hqgnn.index.bench.run_retrieval_bench` (imported lazily: it pulls in torch/faiss)."""
    from .bench import run_retrieval_bench as _run

    return _run(items, dim, bits, queries, k, device=device, seed=seed, threads=threads, query_bits=query_bits)
