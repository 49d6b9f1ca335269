"""File digests: the one SHA-256 of a file's bytes, a per-process memo of it, and the digest of
a container's audio data alone (:func:`audio_digest`, the tags around it left out).

Every place that names a file by its content (index metadata, the embedding cache's memo, a CLAP
checkpoint's identity, the checksums of a saved directory) hashes it here; the embedding cache
names a file by its audio data, and the tag writer checks it leaves that data alone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Callable

from ..errors import FileTagError, first_line

__all__ = ["audio_digest", "file_sha256", "file_stamp", "memo_sha256"]

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


def _hash_range(f, h, start: int, end: int) -> None:
    f.seek(start)
    left = end - start
    while left > 0:
        block = f.read(min(_CHUNK, left))
        if not block:
            break
        h.update(block)
        left -= len(block)


def _skip_id3v2(f) -> int:
    """Offset after any ID3v2 tags at the start of the file."""
    offset = 0
    while True:
        f.seek(offset)
        head = f.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            return offset
        size = 0
        for b in head[6:10]:
            size = (size << 7) | (b & 0x7F)
        offset += 10 + size + (10 if head[5] & 0x10 else 0)


def _mp3_range(f, size: int) -> tuple[int, int]:
    start = _skip_id3v2(f)
    end = size
    if end - start >= 128:
        f.seek(end - 128)
        if f.read(3) == b"TAG":
            end -= 128
    if end - start >= 32:
        f.seek(end - 32)
        footer = f.read(32)
        if footer[:8] == b"APETAGEX":
            tag_size = struct.unpack("<I", footer[12:16])[0]
            flags = struct.unpack("<I", footer[20:24])[0]
            end -= tag_size + (32 if flags & 0x80000000 else 0)
    return start, end


def _flac_start(f) -> int:
    offset = _skip_id3v2(f)
    f.seek(offset)
    if f.read(4) != b"fLaC":
        raise FileTagError("not a FLAC stream")
    offset += 4
    while True:
        head = f.read(4)
        if len(head) < 4:
            raise FileTagError("truncated FLAC metadata")
        length = int.from_bytes(head[1:4], "big")
        offset += 4 + length
        f.seek(offset)
        if head[0] & 0x80:
            return offset


def _chunks(f, size: int, *, big_endian: bool, start: int = 12):
    """``(id, payload offset, payload size)`` of the chunks of a RIFF/AIFF file."""
    fmt = ">I" if big_endian else "<I"
    offset = start
    while offset + 8 <= size:
        f.seek(offset)
        head = f.read(8)
        cid, length = head[:4], struct.unpack(fmt, head[4:8])[0]
        yield cid, offset + 8, length
        offset += 8 + length + (length & 1)


#: GUID of the ASF data object (the audio packets), as stored on disk.
_ASF_DATA_OBJECT = bytes.fromhex("3626b2758e66cf11a6d900aa0062ce6c")


def _asf_objects(f, size: int):
    """``(guid, payload offset, payload size)`` of the top-level objects of an ASF file."""
    offset = 0
    while offset + 24 <= size:
        f.seek(offset)
        head = f.read(24)
        guid, length = head[:16], struct.unpack("<Q", head[16:24])[0]
        if length < 24:
            raise FileTagError("malformed ASF object")
        yield guid, offset + 24, length - 24
        offset += length


def _ogg_digest(f, h) -> None:
    from mutagen.ogg import OggPage

    state: dict[int, tuple[int, bytes]] = {}  # serial -> (packets completed, partial packet)
    f.seek(0)
    while True:
        try:
            page = OggPage(f)
        except EOFError:
            break
        done, buf = state.get(page.serial, (0, b""))
        for j, data in enumerate(page.packets):
            buf = buf + data if (j == 0 and page.continued) else data
            if j < len(page.packets) - 1 or page.complete:
                if done != 1:  # packet 1 of each logical stream is its comment header
                    h.update(struct.pack("<IQ", page.serial, done))
                    h.update(buf)
                done, buf = done + 1, b""
        state[page.serial] = (done, buf)


def audio_digest(path: str | Path, *, parsed=None) -> str:
    """SHA-256 of the audio data of a file, leaving out the tags around it.

    Equal before and after :func:`clapknn.players.write_tags` means the audio was not touched. What is hashed:
    MP3 (and WavPack, Monkey's Audio, Musepack, OptimFROG): everything between a leading ID3v2
    tag and a trailing APEv2/ID3v1 tag; FLAC: the frames
    after the metadata blocks; Ogg (Vorbis, Opus, FLAC, Speex): every packet except each stream's
    comment header; MP4/M4A: the ``mdat`` boxes; WAV: the ``data`` chunk; AIFF: the ``SSND`` chunk;
    WMA: the ASF data object.

    ``parsed``: the file as ``mutagen.File`` already read it, to save parsing it again.

    Raises
    ------
    FileTagError
        For other formats, or a file whose structure cannot be followed.
    """
    import mutagen

    path = Path(path).expanduser()
    try:
        if parsed is not None:
            kind = type(parsed).__name__
        else:
            kind = type(mutagen.File(str(path))).__name__ if path.is_file() else None
    except mutagen.MutagenError as exc:
        raise FileTagError(f"{path}: cannot parse ({first_line(exc)})") from exc
    if kind is None:
        raise FileTagError(f"{path}: not a file type audio_digest knows")
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if kind in ("MP3", "EasyMP3", "WavPack", "MonkeysAudio", "Musepack", "OptimFROG"):
            _hash_range(f, h, *_mp3_range(f, size))
        elif kind == "FLAC":
            _hash_range(f, h, _flac_start(f), size)
        elif kind.startswith("Ogg"):
            _ogg_digest(f, h)
        elif kind in ("MP4", "EasyMP4"):
            from mutagen.mp4 import Atoms

            f.seek(0)
            boxes = [a for a in Atoms(f).atoms if a.name == b"mdat"]
            if not boxes:
                raise FileTagError(f"{path}: no mdat box")
            for a in boxes:
                _hash_range(f, h, a.offset + a.length - a.datalength, a.offset + a.length)
        elif kind in ("WAVE", "AIFF"):
            target, big = (b"data", False) if kind == "WAVE" else (b"SSND", True)
            found = [(o, n) for cid, o, n in _chunks(f, size, big_endian=big) if cid == target]
            if not found:
                raise FileTagError(f"{path}: no {target.decode()} chunk")
            for o, n in found:
                _hash_range(f, h, o, o + n)
        elif kind == "ASF":
            found = [(o, n) for guid, o, n in _asf_objects(f, size) if guid == _ASF_DATA_OBJECT]
            if not found:
                raise FileTagError(f"{path}: no ASF data object")
            for o, n in found:
                _hash_range(f, h, o, o + n)
        else:
            raise FileTagError(f"{path}: audio_digest does not know the layout of {kind} files")
    return h.hexdigest()
