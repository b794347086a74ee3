"""Exact top-k retrieval straight from quantized codes: one format, one interface, one engine, CPU and CUDA.

Public API (FAISS-style: a format description, one build, one load)::

    fmt = CodeFormat(dim=64, item_bits=1, query_bits=0)            # 1-bit items x float queries
    index = build_index(item_codes, fmt, scale=s, term=None, device="cpu")
    scores, ids = index.search(x, k, exclude=(indptr, indices))      # float x, encoded by the format
    scores, ids = index.search(QueryCodes(codes, scales), k)         # queries already in codes
    index.save(path); index = load_index(path, device="cuda")
    fmt.item_bytes, index.memory_bytes()

Results are exact: identical to :func:`reference_search` / :func:`reference_asym_search` (float64
brute force), sorted by score descending with ties broken by lower item id; numpy arrays on CPU,
torch tensors on CUDA.
"""

from __future__ import annotations

from .api import Index, QueryCodes, build_index, encode_queries, load_index, read_format, search_rerank
from .common import BACKENDS
from .format import CodeFormat
from .queries import prepare_queries
from .reference import reference_asym_search, reference_search

__all__ = [
    "BACKENDS",
    "CodeFormat",
    "Index",
    "QueryCodes",
    "build_index",
    "encode_queries",
    "load_index",
    "prepare_queries",
    "read_format",
    "reference_asym_search",
    "reference_search",
    "search_rerank",
]
