"""FAISS interop: export codes / float embeddings as FAISS indexes (same bit packing), write them to disk."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .common import to_numpy
from .packing import as_int8_codes, check_code_range

__all__ = ["faiss_binary_bytes", "to_faiss_binary", "to_faiss_flat_ip", "write_faiss"]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency, but not on every machine
        raise ImportError("FAISS interop needs the 'faiss-cpu' package") from e
    return faiss


def faiss_binary_bytes(codes_1bit: object) -> np.ndarray:
    """(n, d) {-1,+1} codes -> (n, ceil(d/8)) uint8 in FAISS' binary layout.

    FAISS (``faiss.real_to_binary``) packs dimension t into bit t % 8 of byte t // 8, least
    significant bit first; a code of +1 is a set bit. When d is not a multiple of 8 (FAISS needs
    d % 8 == 0) the last byte is zero-padded, which leaves Hamming distances unchanged as long as
    queries are packed the same way. These bytes are exactly :class:`BinaryCodeIndex`'s words.
    """
    from .binary import BinaryCodeIndex

    if isinstance(codes_1bit, BinaryCodeIndex):
        nbytes = -(-codes_1bit.dim // 8)
        return np.ascontiguousarray(codes_1bit.words.astype("<u8").view(np.uint8)[:, :nbytes])
    codes = as_int8_codes(codes_1bit, "codes_1bit")
    check_code_range(codes, 1, "codes_1bit")
    return np.packbits(codes > 0, axis=1, bitorder="little")


def to_faiss_binary(codes_1bit: object, hnsw: bool = False, M: int = 32) -> Any:
    """A FAISS ``IndexBinaryFlat`` (exact Hamming) or ``IndexBinaryHNSW`` (approximate) holding the
    1-bit codes (a (n, d) +-1 array or a :class:`BinaryCodeIndex`), item ids = row numbers.
    FAISS ranks by Hamming distance only: the task of ``search(..., mode="hamming")``."""
    faiss = _faiss()
    packed = faiss_binary_bytes(codes_1bit)
    dbits = packed.shape[1] * 8
    index = faiss.IndexBinaryHNSW(dbits, int(M)) if hnsw else faiss.IndexBinaryFlat(dbits)
    index.add(packed)
    return index


def to_faiss_flat_ip(float_emb: object) -> Any:
    """A FAISS ``IndexFlatIP`` (exact float32 inner product) over (n, d) embeddings."""
    faiss = _faiss()
    x = np.ascontiguousarray(to_numpy(float_emb), dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"float_emb must be 2-D (n, d), got shape {x.shape}")
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def write_faiss(index: Any, path: str | os.PathLike[str]) -> None:
    """Write a FAISS index (binary or float) with FAISS' own serializer (atomic rename)."""
    faiss = _faiss()
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        if isinstance(index, faiss.IndexBinary):
            faiss.write_index_binary(index, str(tmp))
        else:
            faiss.write_index(index, str(tmp))


def export_faiss(run: Any, prefix: str | os.PathLike[str]) -> list[str]:
    """Write a run's item side as FAISS indexes next to ``prefix``; returns the paths written.

    Always ``PREFIX.flat_ip.faiss`` (IndexFlatIP over the float item embeddings); for 1-bit runs also
    ``PREFIX.binary_flat.faiss`` (IndexBinaryFlat) and ``PREFIX.binary_hnsw.faiss`` (IndexBinaryHNSW)
    over the sign codes. Row i of every index is item i of the run (``ids.npz`` maps it to your id).
    """
    prefix = str(prefix)
    written = []
    indexes = [("flat_ip", to_faiss_flat_ip(run.tables["item_emb"].numpy()))]
    if run.quantized and run.bits == 1:
        codes = run.tables["item_codes"].numpy()
        indexes += [("binary_flat", to_faiss_binary(codes)), ("binary_hnsw", to_faiss_binary(codes, hnsw=True))]
    for name, index in indexes:
        path = f"{prefix}.{name}.faiss"
        write_faiss(index, path)
        written.append(path)
    return written
