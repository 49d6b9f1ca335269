"""Embedding cache: never decode or encode the same audio twice with the same settings.

An entry holds the snippet vectors of one file (plus their start/end times, the file's duration and
its count of silent snippets) and is keyed by

- the file's **content key** (:meth:`EmbeddingCache.content_key`): a SHA-256 of its audio data and
  stream parameters, leaving out the tags around them (:func:`clapknn.audio.digests.audio_digest`:
  MP3, FLAC, Ogg, MP4, WAV, AIFF, WMA...), else of the whole file. A renamed or copied file is still
  a hit, an edited one a miss, and one whose tags were written (``clapknn tag --write``, or any
  tag editor) is still a hit; and
- a *settings key*: a hash of the encoder's :meth:`~clapknn.encoders.base.Encoder.identity`
  (name, sample rate, dim, checkpoint hash, recipe version...), the snippet length, the hop and,
  when snippets are sampled, their number per track.

Hashing a file still reads it, so the cache also keeps a memo ``(real path, size, mtime, ctime,
inode) -> SHA-256, content key`` in a small SQLite file. An unchanged library is then not even read
on a re-run: one ``stat`` and one lookup per file. Any write to a file changes its mtime and ctime
(``ctime`` cannot be set back by ``touch``), so a changed file is re-hashed (and, if only its tags
changed, found again in the cache by its content key).

Layout (under :func:`default_cache_dir`)::

    hashes.sqlite                       the (path, size, mtime, ctime, inode) -> sha256, content memo
    <settings key>/settings.json        what the key stands for (encoder identity, snippet, hop)
    <settings key>/<key[:2]>/<key>.emb  one entry per content key

Entries are written to a temporary name and renamed, so readers never see half of one, and are
checked (magic, sizes, CRC-32) when read: a damaged entry is a miss and is replaced. Several
processes may share one cache.

Decoding errors are not cached (a file may be mid-copy, or a codec may be installed later); a file
found to be entirely silent is, because that is a property of its bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import struct
import threading
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.digests import file_sha256, file_stamp
from ..errors import ParameterError
from ..audio.snippet import SNIPPET_RULES

__all__ = [
    "CachedFile",
    "EmbeddingCache",
    "audio_content_key",
    "default_cache_dir",
    "resolve_cache",
    "settings_key",
    "ENV_EMBEDDING_CACHE",
    "CACHE_FORMAT",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the embedding cache folder; ``off`` (or ``0``, ``none``) disables it.
ENV_EMBEDDING_CACHE = "CLAPKNN_EMBEDDING_CACHE"
#: Version of the entry layout; part of every settings key, so a new layout never reads an old one.
CACHE_FORMAT = 1

_MAGIC = b"CKE1"
_HEADER = struct.Struct("<4sIIId")  # magic, n snippets, dim, n silent, duration (s)
_CRC = struct.Struct("<I")
_OFF = {"", "0", "off", "no", "false", "none"}


def audio_content_key(path: str | os.PathLike) -> str | None:
    """Hex SHA-256 of a file's audio content: its audio data without the tags around it
    (:func:`clapknn.audio.digests.audio_digest`) together with the stream's parameters (container
    type, sample rate, channels, bit depth, which the data alone may not fix: a WAV ``data`` chunk
    read at another rate is other audio). ``None`` for a format whose layout is not followed."""
    try:
        import mutagen

        from ..audio.digests import audio_digest

        parsed = mutagen.File(str(path))
        if parsed is None:
            return None  # not an audio format mutagen knows
        digest = audio_digest(path, parsed=parsed)
        info = parsed.info
    except Exception as exc:  # noqa: BLE001 - any parse failure: the caller keys on the whole file
        logger.debug("no audio content key for %s: %s", path, exc)
        return None
    params = [type(info).__name__] + [str(getattr(info, a, "")) for a in ("sample_rate", "channels", "bits_per_sample")]
    return hashlib.sha256(f"clapknn-audio-1|{'|'.join(params)}|{digest}".encode()).hexdigest()


def default_cache_dir() -> Path | None:
    """Where embeddings are cached, or ``None`` when caching is switched off.

    ``$CLAPKNN_EMBEDDING_CACHE`` if set (``off`` disables the cache), else
    ``$CLAPKNN_CACHE/embeddings``, else ``$XDG_CACHE_HOME/clapknn/embeddings``, else
    ``~/.cache/clapknn/embeddings``.
    """
    from ..encoders.clap import cache_dir  # the one resolution of clapknn's cache folder

    env = os.environ.get(ENV_EMBEDDING_CACHE)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return cache_dir() / "embeddings"


def settings_key(
    encoder_identity: dict[str, Any], snippet_seconds: float, hop_seconds: float | None, max_snippets: int | None = None,
) -> str:
    """A short hex key for everything besides the audio that decides the vectors.

    ``max_snippets`` (snippets sampled per track, ``None`` for all) is part of the key when given,
    so a sampled file's few vectors are never taken for all of its vectors (and the keys of
    every-snippet entries are those they always were).
    """
    from ..encoders.base import comparable_identity

    hop = snippet_seconds if hop_seconds is None else hop_seconds
    settings = {
        "format": CACHE_FORMAT,
        "snippet_rules": SNIPPET_RULES,
        "encoder": comparable_identity(encoder_identity),  # a checkpoint's path is no setting
        "snippet_seconds": round(float(snippet_seconds), 6),
        "hop_seconds": round(float(hop), 6),
    }
    if max_snippets is not None:
        settings["max_snippets"] = int(max_snippets)
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


@dataclass
class CachedFile:
    """The cached outcome of embedding one file.

    Attributes
    ----------
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
        One row per non-silent snippet (``n`` is 0 for an entirely silent file).
    starts, ends : np.ndarray [shape=(n,), dtype=float64]
        Seconds.
    duration : float
        Seconds.
    n_silent : int
        Snippets dropped as silent.
    """

    vectors: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    duration: float
    n_silent: int

    def to_bytes(self) -> bytes:
        """The entry as stored: header, start and end times, vectors, then a CRC-32 of it all."""
        v = np.ascontiguousarray(self.vectors, dtype=np.float32)
        n, dim = v.shape
        payload = b"".join(
            [
                _HEADER.pack(_MAGIC, n, dim, int(self.n_silent), float(self.duration)),
                np.ascontiguousarray(self.starts, dtype="<f8").tobytes(),
                np.ascontiguousarray(self.ends, dtype="<f8").tobytes(),
                v.astype("<f4", copy=False).tobytes(),
            ]
        )
        return payload + _CRC.pack(zlib.crc32(payload))

    @classmethod
    def from_bytes(cls, data: bytes) -> "CachedFile":
        """Parse an entry; raises ``ValueError`` when it is damaged."""
        if len(data) < _HEADER.size + _CRC.size:
            raise ValueError("entry too short")
        magic, n, dim, n_silent, duration = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("not a clapknn cache entry")
        expected = _HEADER.size + 16 * n + 4 * n * dim + _CRC.size
        if len(data) != expected:
            raise ValueError(f"entry has {len(data)} bytes, expected {expected}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(memoryview(data)[: -_CRC.size]) != crc:
            raise ValueError("entry checksum mismatch")
        off = _HEADER.size
        starts = np.frombuffer(data, dtype="<f8", count=n, offset=off).astype(np.float64)
        ends = np.frombuffer(data, dtype="<f8", count=n, offset=off + 8 * n).astype(np.float64)
        vectors = np.frombuffer(data, dtype="<f4", count=n * dim, offset=off + 16 * n).astype(np.float32).reshape(n, dim)
        return cls(vectors, starts, ends, float(duration), int(n_silent))


class EmbeddingCache:
    """A folder of cached file embeddings plus the path → SHA-256 memo (see the module docstring).

    Parameters
    ----------
    root : path
        The cache folder (created on first write).
    memo : bool
        Keep and use the ``(path, size, mtime, ctime, inode) -> sha256, content key`` memo.
        Without it every lookup hashes the whole file.
    """

    def __init__(self, root: str | os.PathLike, *, memo: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.memo = memo
        self._local = threading.local()
        self._memo_broken = False
        self._written_settings: set[str] = set()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    # ------------------------------------------------------------------ hash memo
    def _db(self) -> sqlite3.Connection | None:
        if not self.memo or self._memo_broken:
            return None
        con = getattr(self._local, "con", None)
        if con is not None:
            return con
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(str(self.root / "hashes.sqlite"), timeout=30.0)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "ctime_ns INTEGER, inode INTEGER, sha256 TEXT, content TEXT)"
            )
            if "content" not in {row[1] for row in con.execute("PRAGMA table_info(hashes)")}:
                con.execute("ALTER TABLE hashes ADD COLUMN content TEXT")  # a memo from before content keys
            con.commit()
        except (sqlite3.Error, OSError) as exc:
            logger.warning("embedding cache: hash memo unusable (%s); files will be re-hashed", exc)
            self._memo_broken = True
            return None
        self._local.con = con
        return con

    def _memo(self, path: str | os.PathLike) -> tuple[str, tuple, tuple | None]:
        """``(real path, stamp, (sha256, content) from the memo or None)``."""
        real, stamp = file_stamp(path)  # a pipe or device is refused: reading it to hash could block forever
        con = self._db()
        row = None
        if con is not None:
            try:
                row = con.execute(
                    "SELECT size, mtime_ns, ctime_ns, inode, sha256, content FROM hashes WHERE path = ?", (real,)
                ).fetchone()
            except sqlite3.Error as exc:
                logger.warning("embedding cache: hash memo unreadable (%s); files will be re-hashed", exc)
                self._memo_broken = True
                row = None
        known = (str(row[4]), str(row[5] or "")) if row is not None and tuple(row[:4]) == stamp else None
        return real, stamp, known

    def _remember(self, real: str, stamp: tuple, sha256: str, content: str) -> None:
        con = self._db()
        if con is not None and not self._memo_broken:
            try:
                con.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)", (real, *stamp, sha256, content or None))
                con.commit()
            except sqlite3.Error as exc:  # e.g. a read-only cache: keep going without the memo
                logger.warning("embedding cache: cannot update the hash memo (%s)", exc)
                self._memo_broken = True

    def file_sha256(self, path: str | os.PathLike) -> str:
        """SHA-256 of a file, from the memo when the file's size, mtime, ctime and inode are
        unchanged, else by reading it (and remembering the result).

        Raises
        ------
        OSError
            When the file cannot be read.
        """
        real, stamp, known = self._memo(path)
        if known is not None:
            return known[0]
        digest = file_sha256(real)
        self._remember(real, stamp, digest, "")
        return digest

    def content_key(self, path: str | os.PathLike) -> tuple[str, str]:
        """``(sha256, content key)`` of a file, from the memo when it is unchanged.

        The content key (what entries are stored under) is :func:`audio_content_key` where the
        format's layout is known, else the file's SHA-256: writing tags into a file leaves it as
        it was, so the file's vectors are found again.

        Raises
        ------
        OSError
            When the file cannot be read.
        """
        real, stamp, known = self._memo(path)
        if known is not None and known[1]:
            return known
        sha = known[0] if known is not None else file_sha256(real)
        content = audio_content_key(real) or sha
        self._remember(real, stamp, sha, content)
        return sha, content

    # ------------------------------------------------------------------ entries
    def _entry_path(self, key: str, content: str) -> Path:
        return self.root / key / content[:2] / f"{content}.emb"

    def get(self, key: str, content: str, *, dim: int | None = None) -> CachedFile | None:
        """The entry for a file's content key (:meth:`content_key`) under a settings key, or
        ``None`` (a damaged entry is removed)."""
        path = self._entry_path(key, content)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        try:
            entry = CachedFile.from_bytes(data)
            if dim is not None and len(entry.vectors) and entry.vectors.shape[1] != dim:
                raise ValueError(f"vectors of dim {entry.vectors.shape[1]}, expected {dim}")
        except ValueError as exc:
            logger.warning("embedding cache: dropping damaged entry %s (%s)", path, exc)
            with contextlib.suppress(OSError, ValueError):
                path.unlink()
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, content: str, entry: CachedFile, *, settings: dict[str, Any] | None = None) -> None:
        """Store an entry atomically. A cache that cannot be written is logged, never fatal."""
        path = self._entry_path(key, content)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if settings is not None and key not in self._written_settings:
                info = path.parent.parent / "settings.json"
                if not info.exists():
                    _write_atomic(info, json.dumps(settings, indent=2, sort_keys=True, default=str).encode("utf-8"))
                self._written_settings.add(key)
            tmp.write_bytes(entry.to_bytes())
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("embedding cache: cannot write %s (%s)", path, exc)
            with contextlib.suppress(OSError, ValueError):
                tmp.unlink()

    # ------------------------------------------------------------------ housekeeping
    def stats(self) -> dict[str, Any]:
        """Entries and bytes per settings key, plus the memo size."""
        out: dict[str, Any] = {"root": str(self.root), "settings": {}, "entries": 0, "bytes": 0}
        if not self.root.is_dir():
            return out
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
            n = size = 0
            for f in sub.glob("*/*.emb"):
                n += 1
                size += f.stat().st_size
            settings = {}
            with contextlib.suppress(OSError, ValueError):
                settings = json.loads((sub / "settings.json").read_text(encoding="utf-8"))
            out["settings"][sub.name] = {"entries": n, "bytes": size, "encoder": settings.get("encoder", {}).get("name")}
            out["entries"] += n
            out["bytes"] += size
        return out

    def clear(self) -> int:
        """Delete every entry and the memo; returns the number of entries deleted."""
        self.close()
        n = 0
        if not self.root.is_dir():
            return 0
        for sub in [p for p in self.root.iterdir() if p.is_dir()]:
            n += sum(1 for _ in sub.glob("*/*.emb"))
            shutil.rmtree(sub, ignore_errors=True)
        for name in ("hashes.sqlite", "hashes.sqlite-wal", "hashes.sqlite-shm"):
            with contextlib.suppress(OSError, ValueError):
                (self.root / name).unlink()
        return n

    def close(self) -> None:
        """Close this thread's memo connection (others close when their thread ends)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def resolve_cache(cache: "bool | str | os.PathLike | EmbeddingCache | None") -> EmbeddingCache | None:
    """Turn a user's ``cache`` argument into an :class:`EmbeddingCache` (or ``None`` for no cache).

    ``None``/``False``: no cache. ``True``: the default folder (:func:`default_cache_dir`; ``None``
    when switched off there). A path: that folder. An :class:`EmbeddingCache`: itself.
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, EmbeddingCache):
        return cache
    if cache is True:
        root = default_cache_dir()
        return EmbeddingCache(root) if root is not None else None
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise ParameterError(f"cache must be a bool, a folder path or an EmbeddingCache, got {type(cache).__name__}")
