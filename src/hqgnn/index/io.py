"""The one on-disk format of a code index: packed codes + scales / terms as .npy files (memory-mappable) or
one .npz, no pickle, with the code format in the metadata; the asymmetric index's reader and writer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import built_dir, save_npz
from .asym_layout import host_layout
from .common import ItemScale, normalize_item_scale, normalize_item_term

if TYPE_CHECKING:
    from .asym import AsymCodeIndex

__all__ = ["FORMAT", "VERSION", "read_asym_index", "read_index_files", "read_meta", "save_asym_index",
           "write_index_files"]


FORMAT = "hqgnn-code-index"
VERSION = 1


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a saved index ({} when it has none): ``meta.json`` of the directory form, or the
    ``__meta__`` member of the .npz form (read alone, the arrays are not loaded)."""
    p = Path(path)
    if p.is_dir():
        return json.loads((p / "meta.json").read_text()) if (p / "meta.json").is_file() else {}
    with np.load(p, allow_pickle=False) as z:
        return json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}


def write_index_files(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` + ``arrays``. A path ending in ``.npz`` gives one archive; anything else a
    directory with ``meta.json`` and one ``<name>.npy`` per array (built beside it, fsynced, then
    swapped in by :func:`hqgnn.io.built_dir`, so readers never see half an index)."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    if path.suffix == ".npz":
        save_npz(path, __meta__=np.array(json.dumps(meta)), **arrays)
        return path
    with built_dir(path) as staging:
        for name, arr in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_index_files(path: str | os.PathLike[str], mmap: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`write_index_files`. Directory arrays are memory-mapped when ``mmap`` --
    copy-on-write ('c'): pages load lazily and are shared, the files are never written, and the
    arrays stay writable so the search kernels need no separate read-only compilation. .npz
    members cannot be mapped and are read into memory."""
    path = Path(path)
    arrays: dict[str, np.ndarray]
    if path.is_dir():
        meta = json.loads((path / "meta.json").read_text())
        _check_meta(meta, path)
        arrays = {}
        for f in sorted(path.glob("*.npy")):
            arrays[f.stem] = np.load(f, mmap_mode="c" if mmap else None, allow_pickle=False)
        return meta, arrays
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        _check_meta(meta, path)
        arrays = {name: z[name] for name in z.files if name != "__meta__"}
    return meta, arrays


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an hqgnn code index (format={meta.get('format')!r})")
    if int(meta.get("version", -1)) > VERSION:
        raise ValueError(f"{path}: index format version {meta['version']} is newer than this hqgnn ({VERSION})")
    if meta.get("kind") in ("BinaryCodeIndex", "ScalarCodeIndex"):  # the symmetric engine, folded in issue 23
        raise ValueError(f"{path}: saved by the symmetric code index of an older hqgnn, which this version no "
                         "longer reads; re-export it (build_index over the run's codes, then Index.save)")
    if meta.get("kind") != "AsymCodeIndex":
        raise ValueError(f"{path}: unknown index kind {meta.get('kind')!r}")


def save_asym_index(index: AsymCodeIndex, path: str | os.PathLike[str]) -> None:
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


def read_asym_index(path: str | os.PathLike[str], mmap: bool = True) -> tuple[Any, ...]:
    """The arguments of ``AsymCodeIndex._init`` before device and backend, from files :func:`save_asym_index` wrote."""
    meta, arrays = read_index_files(path, mmap=mmap)
    n = int(meta["n"])

    def record(name: str) -> ItemScale:
        v = arrays[name] if meta.get(name) == "row" else meta.get(name)
        return normalize_item_scale(v, n) if name == "scales" else normalize_item_term(v, n)

    return (arrays["codes"], meta["layout"], n, int(meta["dim"]), int(meta["item_bits"]), int(meta["query_bits"]),
            record("scales"), record("terms"), arrays.get("order"))
