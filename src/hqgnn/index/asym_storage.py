"""AsymCodeIndex files: what an asymmetric index writes and reads (layout in hqgnn.index.io)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .asym_layout import host_layout
from .common import normalize_item_scale, normalize_item_term
from .io import read_index_files, write_index_files


def save_asym_index(index: Any, path: str | os.PathLike[str]) -> None:
    """Packed codes, per-row scales / terms (or their constants in the metadata) and the storage order."""
    packed, scale, term, order = index._packed, index._scale, index._term, index._order
    if index._gpu is not None:  # rebuilt from the device copy: the same files as a CPU index writes
        s, t = (normalize_item_scale(index.item_scale_dense(), index.n) if scale.per_row else scale,
                normalize_item_term(index.item_term_dense(), index.n) if term.per_row else term)
        packed, _, scale, term, order = host_layout(index.codes(), s, t, index.item_bits)
    arrays: dict[str, np.ndarray] = {"codes": packed}
    meta: dict[str, Any] = {"code_format": index.format.to_dict(), "kind": "AsymCodeIndex", "bits": index.item_bits, "item_bits": index.item_bits,
                            "query_bits": index.query_bits, "n": index.n, "dim": index.dim, "layout": index._layout}
    for name, rec in (("scales", scale), ("terms", term)):
        if rec.per_row:
            arrays[name] = rec.values
            meta[name] = "row"
        else:
            meta[name] = float(rec.values[0]) if rec.given else None
    if order is not None:
        arrays["order"] = order
    write_index_files(path, meta, arrays)


def read_asym_index(path: str | os.PathLike[str], mmap: bool = True) -> tuple:
    """The arguments of ``AsymCodeIndex._init`` before device and backend, from files :func:`save_asym_index` wrote."""
    meta, arrays = read_index_files(path, mmap=mmap)
    if meta.get("kind") != "AsymCodeIndex":
        raise ValueError(f"{path}: holds a {meta.get('kind')}, not an AsymCodeIndex")
    n = int(meta["n"])

    def record(name: str):
        v = arrays[name] if meta.get(name) == "row" else meta.get(name)
        return normalize_item_scale(v, n) if name == "scales" else normalize_item_term(v, n)

    return (arrays["codes"], meta["layout"], n, int(meta["dim"]), int(meta["item_bits"]), int(meta["query_bits"]),
            record("scales"), record("terms"), arrays.get("order"))
