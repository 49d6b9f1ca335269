"""The directory store: how every saved clapknn directory is written, locked and checked.

Indexes (:mod:`clapknn.index`), libraries (:mod:`clapknn.library`) and Ray shard directories
(:mod:`clapknn.embedding.ray`) are folders of data files plus a JSON manifest. They share one set of
guarantees, all implemented here:

- **Atomic swap.** :func:`save_directory` writes everything into a hidden sibling folder, fsyncs
  it, optionally reads it back, then renames the old folder to ``.<name>.previous`` and the new one
  into place. A failure or a kill at any moment leaves the old directory (or its ``.previous``
  copy, which the next save or load puts back).
- **A lock.** Saves hold ``.<name>.lock`` exclusively, loads (:func:`open_directory`) shared, so a
  load never reads a folder in the middle of a swap. :func:`file_lock` is the one advisory lock.
- **Mandatory checksums.** The manifest lists the SHA-256 of every data file; :func:`verify_files`
  refuses a file without one, or whose bytes changed.

:class:`StoredDirectory` gives a class saved this way its ``save`` and ``load``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .audio.digests import file_sha256
from .errors import IndexFormatError

__all__ = [
    "MANIFEST_FILE",
    "StoredDirectory",
    "file_lock",
    "open_directory",
    "read_manifest",
    "read_parquet",
    "save_directory",
    "verify_files",
]

logger = logging.getLogger(__name__)

#: The manifest's name in an index or library directory.
MANIFEST_FILE = "manifest.json"


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike, *, shared: bool = False, create: bool = True) -> Iterator[bool]:
    """Hold an advisory ``flock`` on ``lock_path``: exclusive, or ``shared``; yields whether a lock
    is held. With ``create=False`` a missing (or unopenable) lock file means no lock is taken: a
    reader never creates one (a folder copied in by hand, a read-only folder)."""
    import fcntl

    try:
        fh = open(lock_path, "a+" if create else "r")
    except OSError:
        if create:
            raise
        yield False
        return
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _lock_of(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def backup_of(path: Path) -> Path:
    """Where the previous directory is kept during a swap: ``.<name>.previous`` beside it."""
    return path.parent / f".{path.name}.previous"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_parquet(path: str | Path, columns: list[str] | None = None):
    """A parquet file as a pyarrow Table, read in the calling thread.

    ``pandas.read_parquet`` goes through Arrow's dataset scanner, whose worker threads can still be
    winding down when the interpreter exits right after, and then abort it ("terminate called
    without an active exception", apache/arrow#39862); a command that reads an index and exits at
    once is exactly that case. Our files are small, so one thread loses nothing.
    """
    import pyarrow.parquet as pq

    with pq.ParquetFile(str(path)) as f:
        return f.read(columns=columns, use_threads=False)


def save_directory(
    path: Path,
    manifest: dict[str, Any],
    write: Callable[[Path], Iterable[str]],
    *,
    kind: str,
    verify: Callable[[Path], Any] | None = None,
    manifest_name: str = MANIFEST_FILE,
) -> dict[str, Any]:
    """Replace the directory ``path`` atomically with new contents (see the module docstring).

    ``write(tmp)`` writes the data files into a fresh hidden sibling folder and returns their names
    (relative to it); the manifest (``manifest`` plus the files' SHA-256 under ``"checksums"``) is
    written last as ``manifest_name``, every file and the folder are fsynced, ``verify(tmp)`` (if
    given) must read it back, and only then is the swap made, under the exclusive lock. A non-empty
    folder without a manifest is refused (``kind`` names what was expected). Returns the manifest
    written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = backup_of(path)
    with file_lock(_lock_of(path)):
        if not path.exists() and backup.exists():  # a save killed between its two renames
            os.rename(backup, path)
        if path.exists() and not path.is_dir():
            raise IndexFormatError(f"{path}: exists and is not a directory; refusing to overwrite it")
        if path.exists() and not (path / manifest_name).is_file() and any(path.iterdir()):
            raise IndexFormatError(f"{path}: exists and is not a {kind}; refusing to overwrite it")
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            names = tuple(write(tmp))
            manifest = dict(manifest)
            manifest["checksums"] = {name: file_sha256(tmp / name) for name in names}
            with open(tmp / manifest_name, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            for name in names:
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(tmp)
            if verify is not None:
                verify(tmp)  # never swap in something that cannot be read back
            if path.exists():
                if backup.exists():
                    shutil.rmtree(backup)
                os.rename(path, backup)
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    return manifest


@contextlib.contextmanager
def open_directory(path: str | Path, *, kind: str) -> Iterator[Path]:
    """Hold the directory's lock shared while reading it; yields the folder to read: ``path``, or
    its ``.previous`` copy when a save was killed between its two renames (the next save puts it
    back).

    Raises
    ------
    IndexFormatError
        No such directory (nor a previous copy), or not a directory.
    """
    path = Path(os.path.expanduser(path))
    with file_lock(_lock_of(path.absolute()), shared=True, create=False):
        if not path.exists():
            backup = backup_of(path.absolute())
            if not backup.is_dir():
                raise IndexFormatError(f"{path}: no such {kind} directory")
            logger.warning("%s is missing; using the previous %s kept at %s", path, kind, backup)
            path = backup
        if not path.is_dir():
            raise IndexFormatError(f"{path}: not {_a(kind)} {kind} directory")
        yield path


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def read_manifest(path: Path, *, kind: str, manifest_name: str = MANIFEST_FILE) -> dict[str, Any]:
    """The JSON object in ``path / manifest_name``.

    Raises
    ------
    IndexFormatError
        No manifest, or not a JSON object.
    """
    mpath = path / manifest_name
    if not mpath.is_file():
        raise IndexFormatError(f"{path}: not a {kind} (no {manifest_name})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{mpath}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{mpath}: unreadable manifest (not a JSON object)")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any], names: Iterable[str], *, manifest_name: str = MANIFEST_FILE) -> None:
    """Check that each of ``names`` is in ``path`` with the SHA-256 its manifest records.

    Raises
    ------
    IndexFormatError
        A missing file, a manifest without a checksum for it, or a checksum mismatch.
    """
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict):
        raise IndexFormatError(f"{path / manifest_name}: manifest has no checksums")
    for name in names:
        f = path / name
        if not f.is_file():
            raise IndexFormatError(f"{path}: missing {name}")
        expected = checksums.get(name)
        if not expected:
            raise IndexFormatError(f"{path / manifest_name}: manifest has no checksum for {name}")
        if file_sha256(f) != expected:
            raise IndexFormatError(f"{f}: checksum mismatch; the file was modified or truncated after it was written")


class StoredDirectory:
    """``save`` and ``load`` of an object kept as one directory store (an index, a library).

    A subclass names its kind in :attr:`STORE_KIND` (``"index"``: the manifest says ``"clapknn
    index"``), keeps its manifest in ``self.manifest`` and gives ``_write_files(tmp)`` (write the
    data files into the folder ``tmp``, return their names) and the classmethod ``_read(folder)``
    (read and check a folder, return the object).
    """

    STORE_KIND = ""
    manifest: dict[str, Any]

    def _write_files(self, tmp: Path) -> Iterable[str]:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    @classmethod
    def _read(cls, path: Path):  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write to the directory ``path`` atomically (:func:`save_directory`): an existing ``path``
        is replaced only if it is a directory of this kind or empty; any other folder is refused
        rather than overwritten. Returns the absolute path."""
        path = Path(os.path.expanduser(path)).absolute()
        self.manifest = save_directory(path, self.manifest, self._write_files, kind=f"clapknn {self.STORE_KIND}",
                                       verify=type(self)._read)
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read and check a saved directory, under its shared lock (:func:`open_directory`).

        Raises
        ------
        IndexFormatError
            Missing directory or file, not a directory of this kind, unknown format version,
            checksum or count mismatch.
        """
        with open_directory(path, kind=cls.STORE_KIND) as folder:
            return cls._read(folder)
