"""File digests: the one SHA-256 of a file's bytes, and a per-process memo of it.

Every place that names a file by its content (index metadata, the embedding cache's memo, a CLAP
checkpoint's identity, the checksums of a saved directory) hashes it here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Callable

__all__ = ["file_sha256", "file_stamp", "memo_sha256"]

_CHUNK = 1 << 20
_MEMO: dict[tuple, str] = {}
_MEMO_LOCK = threading.Lock()


def file_stamp(path: str | os.PathLike) -> tuple[str, tuple[int, int, int, int]]:
    """``(real path, (size, mtime_ns, ctime_ns, inode))`` of a regular file: what changes when its
    bytes may have (any write moves mtime and ctime; ``touch`` cannot set ctime back).

    Raises
    ------
    OSError
        For a missing file, or anything but a regular file (reading a pipe would block forever).
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (pipe, socket or device)", str(path))
    return real, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path: str | os.PathLike, *, chunk: int = _CHUNK) -> str:
    """Hex SHA-256 of a file's bytes.

    Raises
    ------
    OSError
        For anything but a readable regular file (reading a named pipe would block forever).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file (pipe, socket or device)", str(path))
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def memo_sha256(path: str | os.PathLike, *, known: Callable[[Path, os.stat_result], str | None] | None = None) -> str:
    """:func:`file_sha256`, computed once per process for a file whose stamp (:func:`file_stamp`)
    has not changed.

    Parameters
    ----------
    path : path
    known : callable, optional
        ``known(real_path, stat)`` may return a digest recorded elsewhere for this very file (e.g.
        beside a download) to use instead of reading it; ``None`` to read it.
    """
    real, stamp = file_stamp(path)
    key = (real, *stamp)
    with _MEMO_LOCK:
        digest = _MEMO.get(key)
    if digest is not None:
        return digest
    digest = known(Path(real), os.stat(real)) if known is not None else None
    if digest is None:
        digest = file_sha256(real)
    with _MEMO_LOCK:
        _MEMO[key] = digest
    return digest
