"""Durable file writes: temp file in the same folder, fsync, rename, fsync the folder; whole-directory swaps; locks.

A reader never sees a half-written file (rename is atomic), a crash never leaves a renamed file whose
bytes are not on disk (the file is fsynced before the rename, the folder after it), and files get the
mode the user's umask asks for (``tempfile.mkstemp`` alone would leave every file 0600).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import HqgnnError


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any thread writes files
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what open(path, "w") would give: the user's umask decides, not mkstemp's 0600


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename / create / unlink inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is fsynced, given the umask's mode and renamed over
    ``path`` (then the folder is fsynced); on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    """np.savez to a temp file then rename (np.savez appends .npz to names without it, so pass a handle)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


# -- whole directories ------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(a))


def old_name(target: Path) -> Path:
    """Where a directory swap parks the previous ``target`` for the instant between two renames."""
    return target.parent / f".{target.name}.old"


def replace_dir(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put the complete directory ``staging`` at ``target``, replacing what was there, in one step.

    ``staging`` (beside ``target``, same file system) must already be complete and fsynced. Where
    the kernel can exchange two paths atomically (Linux), a reader or a crash sees either the old
    or the new directory at ``target``, never none; elsewhere the old one is first renamed to
    ``.<name>.old`` and :func:`recover_dir` puts it back if the process dies between the two renames.
    """
    staging, target = Path(staging), Path(target)
    if target.exists():
        if _exchange(staging, target):
            fsync_dir(target.parent)
            shutil.rmtree(staging)  # now the old directory
            return
        parked = old_name(target)
        if parked.exists():
            shutil.rmtree(parked)
        os.rename(target, parked)
        os.rename(staging, target)
        fsync_dir(target.parent)
        shutil.rmtree(parked)
        return
    os.rename(staging, target)
    fsync_dir(target.parent)


def recover_dir(target: str | os.PathLike[str]) -> None:
    """Undo a swap that died between its two renames: ``target`` missing but its parked copy present."""
    target = Path(target)
    parked = old_name(target)
    if parked.is_dir() and not target.exists():
        os.rename(parked, target)
        fsync_dir(target.parent)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``root`` (before a rename makes the tree visible)."""
    for folder, dirs, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


def staging_dir(target: Path) -> Path:
    """A fresh empty folder beside ``target`` to build its replacement in (same file system: rename works)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    os.chmod(path, 0o777 & ~UMASK)  # mkdtemp makes 0700; the run folder gets what mkdir would give
    return path


@contextlib.contextmanager
def built_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A staging folder to build ``target``'s new contents in: on success fsynced and swapped in whole
    (:func:`replace_dir`), on any error or interrupt removed, so ``target`` is never half written."""
    staging = staging_dir(Path(target))
    try:
        yield staging
        fsync_tree(staging)
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (files of a run are replaced by rename, never edited in place, so a
    shared inode is safe); a copy where links are not possible; folders recursively."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_file)
    else:
        _link_file(src, dst)


def _link_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# -- locks ------------------------------------------------------------------------------------------
LOCK_NAME = ".lock"


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of a run directory, inside it (nothing is left beside the directory)."""
    return Path(target) / LOCK_NAME


def listed(folder: Path) -> list[Path]:
    """The entries of ``folder`` other than its lock file (a folder holding only its lock counts as empty)."""
    return [c for c in folder.iterdir() if c.name != LOCK_NAME]


class DirLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``DIR/.lock`` (the directory is created if needed).

    A second writer of the same directory (another ``hqgnn train --out D``, ``HQGNN.save``) is refused
    with one line instead of both "succeeding" into a mix. The kernel drops the lock when the holder
    dies (kill -9 included), so a crash never leaves a stale lock. A finished run swapped in whole gets
    a fresh lock file; the holder keeps its lock on the old inode until it is done, which is only cleanup.
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: int | None = None

    def acquire(self) -> "DirLock":
        import fcntl

        recover_dir(self.target)  # a swap that died between its two renames (non-Linux fallback only)
        self.target.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise HqgnnError(f"{self.target}: another hqgnn process is writing this run directory "
                                 f"(its {LOCK_NAME} is locked); wait for it to finish or choose another "
                                 "directory") from None
            raise
        self._fd = fd
        # staging folders of a writer of this directory that was killed mid-write: garbage now (under the lock)
        for stale in self.target.parent.glob(f".{self.target.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
