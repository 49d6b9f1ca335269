"""Decode: read audio files (or windows of them) as mono float32 at a requested sample rate.

soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) is tried first because it can
seek, so a 10-second window of a 3-hour file costs a 10-second read. Formats libsndfile cannot open
(m4a/aac, wma, ...) fall back to librosa's audioread path. Resampling uses soxr (high quality).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError

__all__ = ["AudioInfo", "AUDIO_EXTENSIONS", "MAX_PEAK", "SAMPLE_RATE_RANGE", "info", "load", "resample", "to_mono"]

logger = logging.getLogger(__name__)

#: File extensions treated as audio when scanning folders.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".m4a", ".aac", ".wma"}
)


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header."""

    duration: float  # seconds
    sample_rate: int  # Hz
    channels: int
    frames: int


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_path(path: Path) -> None:
    """Raise :class:`AudioError` unless ``path`` is a non-empty regular file we may read."""
    if "\0" in str(path):
        raise AudioError(f"{path!r}: a file name cannot contain a NUL byte")
    try:
        st = path.stat()
    except OSError as exc:
        if path.is_symlink():
            if exc.errno == errno.ELOOP:
                raise AudioError(f"{path}: symbolic link loop") from exc
            raise AudioError(f"{path}: broken symbolic link (its target does not exist)") from exc
        if exc.errno == errno.ENOENT:
            raise AudioError(f"{path}: no such file") from exc
        raise AudioError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block the run forever on open(); a device is never a music file
        raise AudioError(f"{path}: not a regular file (pipe, socket or device)")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise AudioError(f"{path}: cannot open ({exc.strerror or exc})") from exc


def _sndfile_reason(path: Path, exc: BaseException) -> str:
    """libsndfile's message without its ``Error opening '<path>': `` prefix, lower-cased."""
    text = _reason(exc)
    for prefix in (f"Error opening {str(path)!r}: ", f"Error opening {os.fsencode(path)!r}: ", "Error : ", "Error: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.strip().rstrip(".")
    if text.startswith("File does not exist or is not a regular file"):
        # libsndfile's MP3 reader says this of any file it cannot parse; the path was checked above
        text = "not recognised as audio"
    return (text[:1].lower() + text[1:]) or type(exc).__name__


def _sf_name(path: Path) -> str | bytes:
    """The name to give libsndfile: bytes when the path is not valid UTF-8 (soundfile would fail
    to encode it)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return str(path)


def info(path: str | Path) -> AudioInfo:
    """Read duration, sample rate and channel count of an audio file without decoding it all.

    Raises
    ------
    AudioError
        If the file is missing, empty, unreadable or not decodable audio.
    """
    path = Path(path)
    _check_path(path)
    import soundfile as sf

    try:
        i = sf.info(_sf_name(path))
        if i.frames > 0 and i.samplerate > 0:
            _check_rate(path, int(i.samplerate))
            return AudioInfo(i.frames / i.samplerate, int(i.samplerate), int(i.channels), int(i.frames))
        why = "no audio frames in the stream (empty or truncated)"
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - any libsndfile failure means "try the fallback"
        why = _sndfile_reason(path, exc)
    y, sr = _load_fallback(path, sr=None, offset=0.0, duration=None, why=why)
    return AudioInfo(len(y) / sr, int(sr), 1, len(y))


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average channels. ``y`` is ``(n,)`` or ``(n, channels)`` (soundfile layout)."""
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.mean(axis=1)
    return y.astype(np.float32, copy=False)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float audio with soxr (``HQ``); identity when the rates match."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(y, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(y, dtype=np.float32), orig_sr, target_sr, quality="HQ").astype(
        np.float32, copy=False
    )


#: Extensions libsndfile decodes itself; others need the audioread fallback (ffmpeg or GStreamer).
_SNDFILE_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
#: Largest accepted sample magnitude (full scale = 1.0). Float files may exceed full scale a little;
#: beyond +60 dBFS the "samples" are garbage bytes, not loud music, and would poison the features.
MAX_PEAK = 1e3
#: Accepted sample rates, Hz. A corrupt header can claim 0 or 1 Hz; resampling that to 22,050 Hz
#: would turn a 40 kB file into gigabytes.
SAMPLE_RATE_RANGE = (1000, 1_000_000)
_BLOCK_FRAMES = 1 << 16  # frames per read: small enough that a decoder error part-way loses little


def _check_rate(path: Path, sr: int) -> None:
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= sr <= hi:
        raise AudioError(f"{path}: sample rate {sr} Hz is outside {lo}-{hi} Hz; the header is corrupt")


def _load_fallback(path: Path, *, sr: int | None, offset: float, duration: float | None, why: str):
    """Decode with librosa/audioread after libsndfile failed for reason ``why``."""
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            # librosa warns that it is falling back to audioread; we chose that path on purpose.
            warnings.simplefilter("ignore")
            y, file_sr = librosa.load(str(path), sr=None, mono=True, offset=offset, duration=duration)
    except Exception as exc:  # noqa: BLE001 - audioread and its backends raise many types
        if type(exc).__name__ == "NoBackendError":
            hint = ""
            if path.suffix.lower() not in _SNDFILE_EXTENSIONS:
                hint = f"; reading {path.suffix or 'such'} files needs ffmpeg, which was not found"
            raise AudioError(f"{path}: cannot decode audio ({why}{hint})") from exc
        if path.suffix.lower() in _SNDFILE_EXTENSIONS and why:
            raise AudioError(f"{path}: cannot decode audio ({why})") from exc
        raise AudioError(f"{path}: cannot decode audio ({why}; fallback decoder: {_reason(exc)})") from exc
    _check_rate(path, int(file_sr))
    if sr is not None:
        y = resample(y, int(file_sr), sr)
        file_sr = sr
    return np.asarray(y, dtype=np.float32), int(file_sr)


def _read_sndfile(path: Path, offset: float, duration: float | None):
    """Read a window with libsndfile, block by block, mixing down to mono as it goes.

    Returns ``(mono, sample_rate, error)``: ``error`` is libsndfile's reason when it could not open
    the file or stopped part-way (then ``mono`` holds what decoded before the failure, maybe
    nothing); ``(None, 0, reason)`` when it could not open the file at all.
    """
    import soundfile as sf

    try:
        f = sf.SoundFile(_sf_name(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile cannot open it
        return None, 0, _sndfile_reason(path, exc)
    blocks: list[np.ndarray] = []
    error = None
    with f:
        file_sr = int(f.samplerate)
        _check_rate(path, file_sr)
        # at most ~256k samples per read whatever the channel count, so memory stays small
        block_frames = max(256, min(_BLOCK_FRAMES, (1 << 18) // max(int(f.channels), 1)))
        want = -1 if duration is None else int(math.ceil(duration * file_sr))
        got = 0
        try:
            start = int(round(offset * file_sr))
            if start > 0:
                if start >= f.frames > 0:
                    return np.zeros(0, np.float32), file_sr, None
                f.seek(start)
            while want < 0 or got < want:
                n = block_frames if want < 0 else min(block_frames, want - got)
                block = f.read(n, dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(to_mono(block))
                got += len(block)
        except Exception as exc:  # noqa: BLE001 - a decoder error part-way (truncated or corrupt file)
            error = _sndfile_reason(path, exc)
        expected = int(f.frames) if f.frames > 0 else 0
    y = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if error is None and duration is None and offset == 0 and expected and y.size < expected - file_sr:
        logger.warning(
            "%s: only %.1f s of the %.1f s its header announces could be read (truncated?); using them",
            path, y.size / file_sr, expected / file_sr,
        )
    return y, file_sr, error


def load(
    path: str | Path,
    *,
    sr: int,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode ``path`` (or the window ``[offset, offset + duration)`` seconds of it) as mono float32
    audio at ``sr`` Hz.

    Only the requested window is read when the format can seek (everything libsndfile opens).
    A file that breaks off part-way (a truncated download) gives the audio before the break, with
    a logged warning; a window that starts past the last decodable sample is empty.

    Parameters
    ----------
    path : str or Path
    sr : int
        Target sample rate in Hz.
    offset : float
        Start of the window, seconds.
    duration : float or None
        Length of the window, seconds; ``None`` reads to the end.

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]

    Raises
    ------
    AudioError
        Missing, empty, unreadable or undecodable file (the reason is in the message), no audio
        samples at all, samples that are not finite, or samples far beyond full scale
        (:data:`MAX_PEAK`).
    """
    path = Path(path)
    _check_path(path)
    y, file_sr, why = _read_sndfile(path, offset, duration)
    if y is not None and why is not None:
        if y.size:
            logger.warning("%s: decoding stopped after %.1f s (%s); using the audio before that", path, offset + y.size / file_sr, why)
        elif offset > 0:
            logger.info("%s: nothing decodes from %.1f s on (%s)", path, offset, why)
        else:
            y = None  # nothing at all: let the fallback try
    if y is None:
        y, file_sr = _load_fallback(path, sr=None, offset=offset, duration=duration, why=why or "")
    if y.size == 0 and offset == 0:
        raise AudioError(f"{path}: no audio samples could be decoded (empty or truncated stream)")
    if y.size and not np.isfinite(y).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"{path}: samples reach {peak:.3g} times full scale; the file is corrupt")
    y = resample(y, file_sr, sr)
    if duration is not None:
        y = y[: int(round(duration * sr))]
    return y
