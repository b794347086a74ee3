"""On-disk format of a code index: packed codes + scales as .npy files (memory-mappable) or one .npz, no pickle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "VERSION", "read_index_files", "write_index_files"]

FORMAT = "hqgnn-code-index"
VERSION = 1


def write_index_files(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` + ``arrays``. A path ending in ``.npz`` gives one archive; anything else a
    directory with ``meta.json`` and one ``<name>.npy`` per array (written to a temp dir, then
    renamed, so readers never see half an index)."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    if path.suffix == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, arr in arrays.items():
            np.save(tmpdir / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmpdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmpdir, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmpdir, path)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return path


def read_index_files(path: str | os.PathLike[str], mmap: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`write_index_files`. Directory arrays are memory-mapped when ``mmap`` --
    copy-on-write ('c'): pages load lazily and are shared, the files are never written, and the
    arrays stay writable so the search kernels need no separate read-only compilation. .npz
    members cannot be mapped and are read into memory."""
    path = Path(path)
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
