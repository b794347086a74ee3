"""A run directory that checks itself: ``manifest.json`` (written last) and the cross-file invariants.

The manifest names every file of the finished run with its size and sha256, the code format the
tables hold (bits, query bits, item terms, float queries) and every table's shape. Loading a run
(:func:`hqgnn.run.load_run`, hence ``evaluate``, ``recommend``, ``export``, ``serve`` and
``HQGNN.load``) and ``hqgnn check`` verify it, then check what must agree across files whether or
not a manifest exists: every table's rows against the id maps, the seen-item CSR (shape, in range,
sorted), the config against the tables it describes. A violation raises :class:`RunCheckError`:
one line naming the file and the problem, never a traceback and never a served answer.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HqgnnError

MANIFEST = "manifest.json"
FORMAT = "hqgnn-run"
FORMAT_VERSION = 1
# Files a finished run must have; model.safetensors and curve.png are listed in the manifest when present.
REQUIRED = ("config.toml", "metrics.json", "tables.safetensors", "ids.npz", "seen.npz")
OPTIONAL = ("model.safetensors", "curve.png", "format.json")
FLOAT_TABLES = ("user_emb", "item_emb", "item_scale", "user_scale", "user_query", "item_term")


class RunCheckError(HqgnnError):
    """A run directory that is damaged or inconsistent: ``file`` (a name inside the run) and ``problem``.

    ``str()`` is the CLI's line (``RUN/file: problem``); the service sends ``file: problem`` only, so
    no server path reaches a client.
    """

    def __init__(self, run_dir: Path, file: str, problem: str) -> None:
        super().__init__(f"{Path(run_dir) / file}: {problem}")
        self.run_dir, self.file, self.problem = Path(run_dir), file, problem

    @property
    def public(self) -> str:
        return f"{self.file}: {self.problem}" if self.file else f"run directory: {self.problem}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_format(bits: int, user_bits: int, center: bool, tables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The code format the config describes: what the tables must hold (and the manifest records).

    ``query_bits``: the width of the user codes, 0 for float queries (and for float runs).
    """
    if not bits:
        return {"bits": 0, "query_bits": 0, "float_queries": False, "item_term": False}
    from .config import QuantConfig
    from .index.format import CodeFormat

    # the query width and the term come from CodeFormat, the one place that derives them
    fmt = CodeFormat.from_config(QuantConfig(bits=int(bits), user_bits=int(user_bits), center=bool(center)), dim=1)
    return {"bits": fmt.item_bits, "query_bits": fmt.query_bits, "float_queries": fmt.float_queries,
            "item_term": fmt.term}


def expected_tables(fmt: dict[str, Any]) -> set[str]:
    names = {"user_emb", "item_emb"}
    if fmt["bits"]:
        names |= {"item_codes", "item_scale"}
        names |= {"user_query"} if fmt["float_queries"] else {"user_codes", "user_scale"}
        if fmt["item_term"]:
            names.add("item_term")
    return names


def config_format(cfg: Any) -> dict[str, Any]:
    q = cfg.quant
    return code_format(q.bits, q.user_bits, q.center)


def build_manifest(run_dir: Path, fmt: dict[str, Any], shapes: dict[str, list[int]], n_users: int,
                   n_items: int) -> dict[str, Any]:
    files = {}
    for name in REQUIRED + OPTIONAL:
        path = run_dir / name
        if path.is_file():
            data = path.read_bytes()
            files[name] = {"size": len(data), "sha256": sha256_bytes(data)}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "code_format": fmt, "users": int(n_users),
            "items": int(n_items), "tables": shapes, "files": files}


# -- reading --------------------------------------------------------------------------------------
def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The parsed manifest, None for a run written before manifests; RunCheckError when it is damaged."""
    path = run_dir / MANIFEST
    if not path.exists():
        return None
    try:
        man = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunCheckError(run_dir, MANIFEST, f"not valid JSON ({_short(exc)})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise RunCheckError(run_dir, MANIFEST, f"not an hqgnn run manifest (format {_get(man, 'format')!r})")
    version = man.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunCheckError(run_dir, MANIFEST, f"bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise RunCheckError(run_dir, MANIFEST, f"format_version {version} is newer than this hqgnn reads "
                                               f"({FORMAT_VERSION}): upgrade hqgnn")
    files = man.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise RunCheckError(run_dir, MANIFEST, "'files' is missing or malformed")
    for name in REQUIRED:
        if name not in files:
            raise RunCheckError(run_dir, MANIFEST, f"does not list {name}")
    for key in ("code_format", "tables"):
        if not isinstance(man.get(key), dict):
            raise RunCheckError(run_dir, MANIFEST, f"{key!r} is missing or malformed")
    return man


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read_verified(run_dir: Path, name: str, man: dict[str, Any] | None) -> bytes:
    """The bytes of ``name``, checked against the manifest's size and sha256 when there is a manifest."""
    path = run_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunCheckError(run_dir, name, "missing (is this a finished hqgnn run directory?)") from None
    except IsADirectoryError:
        raise RunCheckError(run_dir, name, "is a directory, expected a file") from None
    except OSError as exc:
        raise RunCheckError(run_dir, name, f"cannot be read ({exc.strerror})") from None
    if man is not None and name in man["files"]:
        entry = man["files"][name]
        if entry.get("size") != len(data):
            raise RunCheckError(run_dir, name, f"{len(data)} bytes, the manifest says {entry.get('size')} "
                                               "(truncated, replaced or damaged)")
        if entry.get("sha256") != sha256_bytes(data):
            raise RunCheckError(run_dir, name, "content differs from the manifest (sha256 mismatch: damaged, or "
                                               "a file of another run)")
    return data


def parse_tables(run_dir: Path, name: str, data: bytes) -> dict[str, Any]:
    from safetensors.torch import load as load_safetensors

    try:
        tables = load_safetensors(data)
    except Exception as exc:  # noqa: BLE001  SafetensorError, header JSON errors, dtype / shape mismatches
        raise RunCheckError(run_dir, name, f"not a readable safetensors file ({_short(exc)})") from None
    return tables


def parse_npz(run_dir: Path, name: str, data: bytes, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise RunCheckError(run_dir, name, f"has no array {missing[0]!r}")
            return {k: z[k] for k in keys}
    except RunCheckError:
        raise
    except Exception as exc:  # noqa: BLE001  BadZipFile, zlib.error, ValueError ...: any unreadable member is one line
        raise RunCheckError(run_dir, name, f"not a readable .npz file ({_short(exc)})") from None


def check_ids(run_dir: Path, name: str, arr: np.ndarray, what: str) -> None:
    if arr.ndim != 1:
        raise RunCheckError(run_dir, name, f"{what} has shape {arr.shape}, expected one dimension")
    if arr.dtype.kind not in "iuU":
        raise RunCheckError(run_dir, name, f"{what} has dtype {arr.dtype}, expected integers or strings")
    if len(arr) and len(np.unique(arr)) != len(arr):
        raise RunCheckError(run_dir, name, f"{what} holds a repeated id (an id must name one row)")


def check_seen(run_dir: Path, name: str, s: dict[str, np.ndarray], n_users: int, n_items: int) -> None:
    indptr, indices, shape = s["indptr"], s["indices"], s["shape"]
    for key, arr in (("indptr", indptr), ("indices", indices), ("shape", shape)):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise RunCheckError(run_dir, name, f"{key} must be a 1-d integer array (got {arr.dtype} {arr.shape})")
    if shape.tolist() != [n_users, n_items]:
        raise RunCheckError(run_dir, name, f"shape {shape.tolist()} does not match the id maps "
                                           f"({n_users} users x {n_items} items in ids.npz)")
    if len(indptr) != n_users + 1:
        raise RunCheckError(run_dir, name, f"indptr has {len(indptr)} entries, expected users + 1 = {n_users + 1}")
    if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise RunCheckError(run_dir, name, "indptr is not a non-decreasing 0..len(indices) offset array")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise RunCheckError(run_dir, name, f"item index out of range [0, {n_items})")
    if len(indices) > 1:
        # within each row strictly increasing: sorted and no duplicates (the masking kernels scan sorted rows)
        step = np.diff(indices.astype(np.int64))
        row_start = np.zeros(len(indices), dtype=bool)
        row_start[indptr[1:-1][indptr[1:-1] < len(indices)]] = True
        if ((step <= 0) & ~row_start[1:]).any():
            raise RunCheckError(run_dir, name, "a user's seen items are not sorted and unique")


def check_tables(run_dir: Path, name: str, tables: dict[str, Any], fmt: dict[str, Any], n_users: int,
                 n_items: int, config_name: str) -> None:
    import torch

    want = expected_tables(fmt)
    have = set(tables)
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        what = "full precision" if not fmt["bits"] else (
            f"{fmt['bits']}-bit codes with " + ("float queries" if fmt["float_queries"] else
                                                f"{fmt['query_bits']}-bit queries")
            + (" and item terms" if fmt["item_term"] else ""))
        detail = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") + (
            f"unexpected {', '.join(extra)}" if extra else "")
        raise RunCheckError(run_dir, name, f"does not match {config_name} ({what}): {detail}")
    dims = set()
    for key, t in tables.items():
        rows = n_users if key.startswith("user_") else n_items
        if key.endswith("_scale"):
            if not (t.numel() == 1 or (t.ndim >= 1 and t.shape[0] == rows and t.numel() == rows)):
                raise RunCheckError(run_dir, name, f"{key} has shape {list(t.shape)}, expected {rows} rows or one value")
        elif key == "item_term":
            if t.ndim != 1 or t.shape[0] != rows:
                raise RunCheckError(run_dir, name, f"{key} has shape {list(t.shape)}, expected ({rows},)")
        else:
            if t.ndim != 2 or t.shape[0] != rows:
                raise RunCheckError(run_dir, name, f"{key} has shape {list(t.shape)}, expected {rows} rows "
                                                   f"({'users' if rows == n_users else 'items'} in ids.npz) x dim")
            if key != "user_emb" and key != "item_emb":
                dims.add(t.shape[1])
        if key.endswith("_codes"):
            if t.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
                raise RunCheckError(run_dir, name, f"{key} has dtype {t.dtype}, expected integer codes")
            width = fmt["bits"] if key == "item_codes" else fmt["query_bits"]
            bound = 1 << max(width - 1, 0)
            if t.numel() and (int(t.min()) < -bound or int(t.max()) > bound):
                raise RunCheckError(run_dir, name, f"{key} holds values outside the {width}-bit range")
        elif key in FLOAT_TABLES:
            if not t.dtype.is_floating_point:
                raise RunCheckError(run_dir, name, f"{key} has dtype {t.dtype}, expected floating point")
            if t.numel() and not bool(torch.isfinite(t).all()):
                raise RunCheckError(run_dir, name, f"{key} holds non-finite values (NaN or inf)")
    if tables["user_emb"].shape[1] != tables["item_emb"].shape[1]:
        raise RunCheckError(run_dir, name, "user_emb and item_emb have different widths")
    if len(dims) > 1:
        raise RunCheckError(run_dir, name, f"the code tables have different widths {sorted(dims)}")


def check_manifest_against(run_dir: Path, man: dict[str, Any], fmt: dict[str, Any], tables: dict[str, Any],
                           n_users: int, n_items: int) -> None:
    if man["code_format"] != fmt:
        raise RunCheckError(run_dir, MANIFEST, f"code format {man['code_format']} differs from config.toml's {fmt}")
    shapes = {k: list(v.shape) for k, v in tables.items()}
    if man["tables"] != shapes:
        raise RunCheckError(run_dir, MANIFEST, "table shapes differ from tables.safetensors")
    if man.get("users") != n_users or man.get("items") != n_items:
        raise RunCheckError(run_dir, MANIFEST, f"{man.get('users')} users and {man.get('items')} items, but ids.npz "
                                               f"has {n_users} and {n_items}")
