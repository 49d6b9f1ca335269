"""Decode: read audio files (or windows of them) as mono float32 at a requested sample rate.

soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) is tried first because it can
seek, so a 10-second window of a 3-hour file costs a 10-second read. Files of the formats libsndfile
reads are decoded by libsndfile only: its verdict on a damaged one is final, whatever other decoders
are installed. Other formats (m4a/aac, wma, ...) fall back to audioread (ffmpeg).
The fallback reader is :mod:`clapknn.audio.fallback`. Resampling (soxr, high quality) and the one
check of samples (:func:`~clapknn.audio.signal.as_mono`) are :mod:`clapknn.audio.signal`'s; a window
is resampled with context around it, so it holds the same samples as the whole file resampled at once.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AudioError, first_line
from .fallback import count_fallback, read_fallback
from .signal import as_mono, check_rate, plan_window, resample, to_mono

__all__ = ["AudioInfo", "AUDIO_EXTENSIONS", "can_seek", "info", "load", "read_sndfile"]

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


def _sndfilereason(path: Path, exc: BaseException) -> str:
    """libsndfile's message without its ``Error opening '<path>': `` prefix, lower-cased."""
    text = first_line(exc)
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


_BLOCK_FRAMES = 1 << 16  # frames per read: small enough that a decoder error part-way loses little


# ---------------------------------------------------------------- the decoders' own stderr output

#: Lines libmpg123 (libsndfile's MP3 decoder) prints on stderr by itself, for example
#: ``Note: Illegal Audio-MPEG-Header ... Trying to resync`` and ``Warning: Xing stream size off``.
_DECODER_NOISE = re.compile(
    rb"^(?:(?:Note|Warning|Error): |\[[^\]]*\] (?:error|warning|note)\b|Big trouble|Did you forget)"
)
#: Magic numbers of the containers whose libsndfile decoders print nothing; anything else (mp3,
#: or bytes libsndfile may hand to its mp3 decoder while probing) is read with stderr held.
_QUIET_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff", b"riff")
_fd2_lock = threading.Lock()
_fd2_state: dict = {"depth": 0, "saved": -1, "file": None}


def _needs_hold(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) not in _QUIET_MAGIC
    except OSError:
        return False


@contextmanager
def _decoder_stderr(path: Path):
    """Hold file descriptor 2 while libsndfile reads ``path``, and drop its decoders' own notes.

    libmpg123 writes to fd 2 directly (not through Python), so the only way to keep its notes out of
    the user's terminal is to point fd 2 elsewhere around the call. fd 2 is shared by the whole
    process: whatever other threads write meanwhile (log lines, a progress bar) goes to the same
    temporary file and is written out, in order, when the read ends; only the decoder's lines are
    dropped (logged at debug level). Nested and concurrent holds share one redirection.
    """
    if not _needs_hold(path):
        yield
        return
    import tempfile

    with _fd2_lock:
        if _fd2_state["depth"] == 0:
            try:
                sys.stderr.flush()
            except Exception:  # noqa: BLE001 - a closed or replaced stderr
                pass
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 at all: nothing to protect
                saved = -1
            if saved >= 0:
                held = tempfile.TemporaryFile()
                os.dup2(held.fileno(), 2)
                _fd2_state.update(saved=saved, file=held)
        _fd2_state["depth"] += 1
    try:
        yield
    finally:
        with _fd2_lock:
            _fd2_state["depth"] -= 1
            if _fd2_state["depth"] == 0 and _fd2_state["saved"] >= 0:
                try:
                    sys.stderr.flush()
                except Exception:  # noqa: BLE001
                    pass
                saved, held = _fd2_state["saved"], _fd2_state["file"]
                os.dup2(saved, 2)
                os.close(saved)
                _fd2_state.update(saved=-1, file=None)
                held.seek(0)
                data = held.read()
                held.close()
                keep, dropped = [], []
                for line in data.splitlines(keepends=True):
                    (dropped if _DECODER_NOISE.match(line) else keep).append(line)
                if keep:
                    os.write(2, b"".join(keep))
                if dropped:
                    logger.debug("%s: the decoder said: %s", path, b" | ".join(x.strip() for x in dropped).decode("utf-8", "replace"))


# ---------------------------------------------------------------- which decoder

_FORMAT_EXTENSIONS = {
    "WAV": (".wav", ".wave"),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga"),
    "MP3": (".mp3",),
    "AIFF": (".aif", ".aiff"),
}
_sndfile_extensions_cache: frozenset | None = None


def _sndfile_extensions() -> frozenset:
    """Extensions of the formats this libsndfile reads itself (mp3 needs libsndfile >= 1.1)."""
    global _sndfile_extensions_cache
    if _sndfile_extensions_cache is None:
        import soundfile as sf

        formats = sf.available_formats()
        exts = {e for fmt, names in _FORMAT_EXTENSIONS.items() if fmt in formats for e in names}
        if "OGG" in formats and "OPUS" in sf.available_subtypes("OGG"):
            exts.add(".opus")
        _sndfile_extensions_cache = frozenset(exts)
    return _sndfile_extensions_cache


def _sndfile_only(path: Path) -> bool:
    """Whether libsndfile's verdict on ``path`` is final (no fallback decoder): its extension names a
    format libsndfile reads. A damaged file of such a format is refused with libsndfile's reason
    rather than partly salvaged by ffmpeg, so the outcome does not depend on what else is installed."""
    return path.suffix.lower() in _sndfile_extensions()


def sndfile_info(path: Path):
    """libsndfile's header info of ``path`` (stderr held), or the exception it raised."""
    import soundfile as sf

    try:
        with _decoder_stderr(path):
            return sf.info(_sf_name(path))
    except Exception as exc:  # noqa: BLE001 - any libsndfile failure
        return exc


def info(path: str | Path) -> AudioInfo:
    """Read duration, sample rate and channel count of an audio file without decoding it all.

    Raises
    ------
    AudioError
        If the file is missing, empty, unreadable or not decodable audio.
    """
    path = Path(path)
    _check_path(path)
    i = sndfile_info(path)
    if not isinstance(i, BaseException):
        if i.frames > 0 and i.samplerate > 0:
            check_rate(path, int(i.samplerate))
            return AudioInfo(i.frames / i.samplerate, int(i.samplerate), int(i.channels), int(i.frames))
        why = "no audio frames in the stream (empty or truncated)"
        if _sndfile_only(path):
            raise AudioError(f"{path}: no audio samples could be decoded (empty or truncated stream)")
    else:
        why = _sndfilereason(path, i)
        if _sndfile_only(path):
            raise AudioError(f"{path}: cannot decode audio ({why})")
    sr, channels, frames = count_fallback(path, why)
    return AudioInfo(frames / sr, sr, channels, frames)


def can_seek(path: str | Path) -> bool:
    """Whether a window of ``path`` can be read without decoding what comes before it: libsndfile
    opens it (wav, flac, ogg, mp3, aiff...). Files only the fallback decoder (ffmpeg) reads are
    decoded from their start for every window (:func:`load`)."""
    return not isinstance(sndfile_info(Path(path)), BaseException)


def read_sndfile(path: Path, offset: float, duration: float | None, sr: int):
    """Read with libsndfile, block by block, mixing down to mono as it goes, the input frames needed
    for the output window ``[offset, offset + duration)`` at ``sr`` Hz (see :func:`~clapknn.audio.signal.plan_window`).

    Returns ``(mono, sample_rate, error, window)``: ``mono`` at the file's rate; ``error`` is
    libsndfile's reason when it could not open the file or stopped part-way (then ``mono`` holds
    what decoded before the failure, maybe nothing); ``(None, 0, reason, None)`` when it could not
    open the file at all.
    """
    import soundfile as sf

    with _decoder_stderr(path):
        try:
            f = sf.SoundFile(_sf_name(path))
        except Exception as exc:  # noqa: BLE001 - libsndfile cannot open it
            return None, 0, _sndfilereason(path, exc), None
        blocks: list[np.ndarray] = []
        error = None
        with f:
            file_sr = int(f.samplerate)
            check_rate(path, file_sr)
            plan = plan_window(offset, duration, file_sr, sr)
            # at most ~256k samples per read whatever the channel count, so memory stays small
            block_frames = max(256, min(_BLOCK_FRAMES, (1 << 18) // max(int(f.channels), 1)))
            want = -1 if plan.frames is None else plan.frames
            got = 0
            try:
                if plan.start > 0:
                    if plan.start >= f.frames > 0:
                        return np.zeros(0, np.float32), file_sr, None, plan
                    f.seek(plan.start)
                while want < 0 or got < want:
                    n = block_frames if want < 0 else min(block_frames, want - got)
                    block = f.read(n, dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    blocks.append(to_mono(block))
                    got += len(block)
            except Exception as exc:  # noqa: BLE001 - a decoder error part-way (truncated or corrupt file)
                error = _sndfilereason(path, exc)
            expected = int(f.frames) if f.frames > 0 else 0
    y = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if error is None and duration is None and offset == 0 and expected and y.size < expected - file_sr:
        logger.warning(
            "%s: only %.1f s of the %.1f s its header announces could be read (truncated?); using them",
            path, y.size / file_sr, expected / file_sr,
        )
    return y, file_sr, error, plan


def load(
    path: str | Path,
    *,
    sr: int,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode ``path`` (or the window ``[offset, offset + duration)`` seconds of it) as mono float32
    audio at ``sr`` Hz.

    Only the requested window is read when the format can seek (everything libsndfile opens), with
    :data:`~clapknn.audio.signal.RESAMPLE_CONTEXT_SECONDS` of context on each side when it must be resampled: a window
    holds the samples ``[round(offset * sr), round((offset + duration) * sr))`` of the whole file
    decoded and resampled at once (to float32 rounding).
    A file that breaks off part-way (a truncated download) gives the audio before the break, with
    a logged warning; a window that starts past the last decodable sample is empty. A file of a
    format libsndfile reads that it cannot open, or that breaks before its first samples, is
    refused with libsndfile's reason (no other decoder is tried, see ``docs/robustness.md``).

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
        (:data:`~clapknn.audio.signal.MAX_PEAK`).
    """
    path = Path(path)
    _check_path(path)
    y, file_sr, why, plan = read_sndfile(path, offset, duration, sr)
    if y is None or (y.size == 0 and why is not None and offset == 0):
        # libsndfile could not open it, or it broke before its first samples
        if _sndfile_only(path):
            raise AudioError(f"{path}: cannot decode audio ({why})")
        y, file_sr, why, plan = read_fallback(path, offset, duration, sr, why or "")
    if why is not None:
        if y.size:
            logger.warning(
                "%s: decoding stopped after %.1f s (%s); using the audio before that",
                path, (plan.start + y.size) / file_sr, why,
            )
        elif offset > 0:
            logger.info("%s: nothing decodes from %.1f s on (%s)", path, offset, why)
        else:
            raise AudioError(f"{path}: cannot decode audio ({why})")
    if y.size == 0 and offset == 0:
        raise AudioError(f"{path}: no audio samples could be decoded (empty or truncated stream)")
    y = as_mono(y, where=str(path))
    y = resample(y, file_sr, sr)[plan.lead :]
    if plan.size is not None:
        y = y[: plan.size]
    return y
