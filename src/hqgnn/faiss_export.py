"""FAISS export: a run's item side (codes / float embeddings) as FAISS indexes (FAISS' own bit packing), written to disk."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .index.common import ArrayLike, to_numpy
from .index.packing import as_int8_codes, check_code_range

__all__ = ["dequantize", "export_faiss", "faiss_binary_bytes", "to_faiss_binary", "to_faiss_flat_ip", "write_faiss"]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency, but not on every machine
        raise ImportError("FAISS interop needs the 'faiss-cpu' package") from e
    return faiss


def faiss_binary_bytes(codes_1bit: ArrayLike) -> np.ndarray:
    """(n, d) {-1,+1} codes -> (n, ceil(d/8)) uint8 in FAISS' binary layout.

    FAISS (``faiss.real_to_binary``) packs dimension t into bit t % 8 of byte t // 8, least
    significant bit first; a code of +1 is a set bit. When d is not a multiple of 8 (FAISS needs
    d % 8 == 0) the last byte is zero-padded, which leaves Hamming distances unchanged as long as
    queries are packed the same way.
    """
    codes = as_int8_codes(codes_1bit, "codes_1bit")
    check_code_range(codes, 1, "codes_1bit")
    return np.packbits(codes > 0, axis=1, bitorder="little")


def to_faiss_binary(codes_1bit: ArrayLike, hnsw: bool = False, M: int = 32) -> Any:
    """A FAISS ``IndexBinaryFlat`` (exact Hamming) or ``IndexBinaryHNSW`` (approximate) holding the
    1-bit codes (a (n, d) +-1 array), item ids = row numbers. FAISS ranks by Hamming distance only: the
    task of an hqgnn index of 1-bit codes without scales (score ``d - 2 * hamming``)."""
    faiss = _faiss()
    packed = faiss_binary_bytes(codes_1bit)
    dbits = packed.shape[1] * 8
    index = faiss.IndexBinaryHNSW(dbits, int(M)) if hnsw else faiss.IndexBinaryFlat(dbits)
    index.add(packed)
    return index


def to_faiss_flat_ip(float_emb: ArrayLike) -> Any:
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
    from .io import atomic_path

    with atomic_path(path) as tmp:
        if isinstance(index, faiss.IndexBinary):
            faiss.write_index_binary(index, str(tmp))
        else:
            faiss.write_index(index, str(tmp))


def dequantize(codes: ArrayLike, scale: ArrayLike) -> np.ndarray:
    """``codes * scale`` as float32: per-row scales (n,) / (n, 1) or one tensor scale, the vectors ``recommend`` scores."""
    c = np.asarray(to_numpy(codes), dtype=np.float32)
    a = np.asarray(to_numpy(scale), dtype=np.float32)
    if a.size == 1:
        return c * a.reshape(())
    return c * a.reshape(-1, 1)


def _single_scale(scale: np.ndarray) -> bool:
    a = np.asarray(scale).reshape(-1)
    return a.size == 1 or bool(np.all(a == a[0]))


def export_faiss(run: Any, prefix: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Write a run's item side as FAISS indexes named by what they rank; returns ``(path, description)`` pairs.

    * ``PREFIX.continuous_ip.faiss``: IndexFlatIP over the float item embeddings (query: ``user_emb``).
      For full-precision runs this is the served ranking; for quantized runs it is NOT (it ranks the
      embeddings before quantization).
    * quantized runs, ``PREFIX.dequantized_ip.faiss``: IndexFlatIP over ``item_codes * item_scale``
      (query: ``user_codes * user_scale``); its inner product is the served score, so its top-K is
      ``recommend``'s (seen items not masked; ties aside).
    * 1-bit runs, ``PREFIX.binary_flat.faiss`` (exact) and ``PREFIX.binary_hnsw.faiss`` (approximate):
      Hamming distance over the sign codes (query: ``faiss_binary_bytes(user_codes)``). Hamming order
      is the served order only when every item has the same scale (``quant.scale = "tensor"``);
      with per-row scales it ignores the item scales.

    Row i of every index is item i of the run (``ids.npz`` / the export's ``item_ids`` map it to your id).
    """
    prefix = str(prefix)
    quant_note = "; not the served ranking of this quantized run" if run.quantized else "; the served ranking"
    indexes = [
        (
            "continuous_ip",
            to_faiss_flat_ip(run.tables["item_emb"].numpy()),
            "IndexFlatIP over the float item embeddings (query user_emb)" + quant_note,
        )
    ]
    if run.quantized:
        items = dequantize(run.tables["item_codes"], run.tables["item_scale"])
        query = "user_query" if "user_query" in run.tables else "user_codes * user_scale"
        if "item_term" in run.tables:
            # centered codes with quantized queries: the per-item term rides in one extra dimension,
            # matched by a constant 1 appended to the query, so the inner product is still the served score
            items = np.hstack([items, run.tables["item_term"].numpy().reshape(-1, 1).astype(np.float32)])
            query = f"[{query}, 1]"
        indexes.append(
            (
                "dequantized_ip",
                to_faiss_flat_ip(items),
                f"IndexFlatIP over item_codes * item_scale (query {query}); the served ranking",
            )
        )
    if run.quantized and run.bits == 1 and "user_query" not in run.tables:
        codes = run.tables["item_codes"].numpy()
        same = _single_scale(run.tables["item_scale"].numpy())
        note = "the served ranking (one item scale)" if same else "sign-only ranking, ignores the per-item scales"
        indexes += [
            ("binary_flat", to_faiss_binary(codes), f"IndexBinaryFlat, Hamming over the sign codes; {note}"),
            (
                "binary_hnsw",
                to_faiss_binary(codes, hnsw=True),
                f"IndexBinaryHNSW (approximate), Hamming over the sign codes; {note}",
            ),
        ]
    written = []
    for name, index, what in indexes:
        path = f"{prefix}.{name}.faiss"
        write_faiss(index, path)
        written.append((path, what))
    return written
