"""Named benchmark datasets (gowalla, yelp2018): local lookup, hash-verified download and cache."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..config import DataConfig
from ..errors import HqgnnError
from ..io import atomic_path

log = logging.getLogger("hqgnn.data")

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data"
DOWNLOAD_TIMEOUT_S = 60.0
FILES = ("train.txt", "test.txt")

# name -> {file name -> "algo:hexdigest"}. Hashes from the project's data README (sha256 where known;
# upstream yelp2018 train.txt only has the md5 published by RecZoo). Tests register fake names here.
DATASETS: dict[str, dict[str, str]] = {
    "gowalla": {
        "train.txt": "sha256:7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
        "test.txt": "sha256:099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
    },
    "yelp2018": {
        "train.txt": "md5:1b8b5d22a227e01d6de002c53d32b4c4",
        "test.txt": "sha256:9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",
    },
}


def register_dataset(name: str, hashes: dict[str, str]) -> None:
    """Add (or replace) a named dataset; ``hashes`` maps train.txt / test.txt to "sha256:<hex>" or "md5:<hex>"."""
    missing = [f for f in FILES if f not in hashes]
    if missing:
        raise HqgnnError(f"dataset {name!r}: no hash for {', '.join(missing)}")
    for spec in hashes.values():
        _parse_spec(spec)
    DATASETS[name] = dict(hashes)


def is_registered(name: str) -> bool:
    return name in DATASETS


def _parse_spec(spec: str) -> tuple[str, str]:
    algo, _, digest = spec.partition(":")
    if algo not in ("sha256", "md5") or not digest:
        raise HqgnnError(f"bad hash spec {spec!r} (expected 'sha256:<hex>' or 'md5:<hex>')")
    return algo, digest.lower()


def cache_dir(cfg: DataConfig | None = None) -> Path:
    """The download cache: ``cfg.cache_dir``, else ``$HQGNN_CACHE``, else ``~/.cache/hqgnn``."""
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get("HQGNN_CACHE"):
        return Path(os.environ["HQGNN_CACHE"]).expanduser()
    return Path.home() / ".cache" / "hqgnn"


def _local_candidates(name: str, cfg: DataConfig | None) -> list[Path]:
    roots = []
    if cfg is not None and cfg.data_dir:
        roots.append(Path(cfg.data_dir).expanduser())
    if os.environ.get("HQGNN_DATA"):
        roots.append(Path(os.environ["HQGNN_DATA"]).expanduser())
    out = []
    for root in roots:
        out.append(root / name)
        if root.name == name:  # the user pointed at the dataset folder itself
            out.append(root)
    return out


def resolve_dataset(name: str, cfg: DataConfig | None = None) -> Path:
    """Directory holding ``train.txt`` and ``test.txt`` of the named dataset.

    Order: ``cfg.data_dir/<name>``, then ``$HQGNN_DATA/<name>`` (either root may also be the
    dataset folder itself), used as they are when they hold ``train.txt`` (local copies are not
    hash-checked: they may be legitimate rebuilds); then the cache ``<cache>/datasets/<name>``;
    else download there from ``$HQGNN_DATA_URL`` (default: the LightGCN repository), each file
    verified against its registered hash. Files enter the cache only after verification, so a
    cached file is trusted without re-hashing.
    """
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise HqgnnError(f"unknown dataset {name!r} (known: {known})")
    candidates = _local_candidates(name, cfg)
    for cand in candidates:
        if (cand / "train.txt").is_file():
            return cand
    if candidates:
        log.info("%s not found under %s; using the download cache", name, ", ".join(map(str, candidates)))
    target = cache_dir(cfg) / "datasets" / name
    for fname in FILES:
        if not (target / fname).is_file():
            download(name, fname, target / fname)
    return target


def _hint(name: str) -> str:
    return (
        f"point at a local copy with --data-dir DIR or HQGNN_DATA=DIR (holding {name}/train.txt and "
        f"{name}/test.txt), or set HQGNN_DATA_URL to a mirror"
    )


def download(name: str, fname: str, dest: Path) -> None:
    """Fetch ``<base>/<name>/<fname>`` into ``dest``: stream to a temp file, verify the hash, then rename.

    A hash mismatch deletes the temp file and raises :class:`HqgnnError` naming the file and both
    hashes; a network failure raises a one-line :class:`HqgnnError` saying how to use local data.
    """
    algo, expected = _parse_spec(DATASETS[name][fname])
    base = os.environ.get("HQGNN_DATA_URL", DEFAULT_BASE_URL).rstrip("/")
    url = f"{base}/{name}/{fname}"
    log.info("downloading %s -> %s", url, dest)
    digest = hashlib.new(algo)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                reason: object = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise HqgnnError(f"could not download {url} ({reason}); {_hint(name)}") from None
        actual = digest.hexdigest()
        if actual != expected:
            # atomic_path removes the temp file when we raise, so nothing unverified is left behind.
            raise HqgnnError(
                f"{url}: hash mismatch for {name}/{fname}: expected {algo}:{expected}, got {algo}:{actual}"
            )


def clear_cache(name: str, cfg: DataConfig | None = None) -> None:
    """Delete the cached copy of a named dataset (next load downloads it again)."""
    shutil.rmtree(cache_dir(cfg) / "datasets" / name, ignore_errors=True)
