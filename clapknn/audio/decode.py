"""Decode: read audio files (or windows of them) as mono float32 at a requested sample rate.

soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) is tried first because it can
seek, so a 10-second window of a 3-hour file costs a 10-second read. Files of the formats libsndfile
reads are decoded by libsndfile only: its verdict on a damaged one is final, whatever other decoders
are installed. Other formats (m4a/aac, wma, ...) fall back to audioread (ffmpeg).
Resampling uses soxr (high quality); a window is resampled with context around it, so it holds the
same samples as the whole file resampled at once.

:func:`as_mono` is the one check of audio samples at the boundary (shape, channel layout, dtype,
NaN/inf, peak): files, in-memory arrays and the Ray path all go through it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError, ParameterError

__all__ = [
    "AudioInfo",
    "can_seek",
    "AUDIO_EXTENSIONS",
    "MAX_ARRAY_CHANNELS",
    "MAX_PEAK",
    "RESAMPLE_CONTEXT_SECONDS",
    "SAMPLE_RATE_RANGE",
    "as_mono",
    "info",
    "load",
    "resample",
    "resampled_length",
    "to_mono",
]

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


#: Largest channel count :func:`as_mono` takes for an in-memory 2-D array; it tells the channel axis
#: from the sample axis by length (files say their layout, so any channel count works there).
MAX_ARRAY_CHANNELS = 8
#: Largest accepted sample magnitude (full scale = 1.0). Float files may exceed full scale a little;
#: beyond +60 dBFS the "samples" are garbage bytes, not loud music, and would poison the features.
MAX_PEAK = 1e3
#: Accepted sample rates, Hz. A corrupt header can claim 0 or 1 Hz; resampling that to 22,050 Hz
#: would turn a 40 kB file into gigabytes.
SAMPLE_RATE_RANGE = (1000, 1_000_000)
#: Audio read on each side of a window before resampling it (seconds), so that the window's samples
#: equal those of the whole file resampled at once (soxr's filter reaches a few ms).
RESAMPLE_CONTEXT_SECONDS = 0.1
_BLOCK_FRAMES = 1 << 16  # frames per read: small enough that a decoder error part-way loses little


def _scale_integers(y: np.ndarray) -> np.ndarray:
    """Integer PCM as float32 in [-1, 1), scaled as soundfile does (unsigned: offset at mid-range)."""
    bits = 8 * y.dtype.itemsize
    full = float(2 ** (bits - 1))
    if y.dtype.kind == "u":
        return ((y.astype(np.float64) - full) / full).astype(np.float32)
    return (y.astype(np.float64) / full).astype(np.float32)


def as_mono(y, *, where: str = "audio", channel_axis: int | None = None) -> np.ndarray:
    """Check audio samples and mix them to mono float32: the one validator at clapknn's audio boundary.

    Files (after decoding), in-memory arrays (:func:`clapknn.encode.embed_array`,
    :meth:`clapknn.Tagger.tag_array`) and the Ray path all pass through here.

    Parameters
    ----------
    y : array-like
        1-D mono samples, or 2-D multi-channel audio. With ``channel_axis=None`` the channel axis is
        the one of length 1 to :data:`MAX_ARRAY_CHANNELS`; the other axis must be longer than that.
        So ``(n_samples, n_channels)`` (soundfile's layout) and ``(n_channels, n_samples)`` (librosa's)
        both work; a shape where both axes could be channels, or neither, is refused.
        Integer samples are scaled to full scale 1.0 as soundfile does (``int16 / 32768``, unsigned
        8-bit offset at 128); floats are taken as they are.
    where : str
        What to name in error messages (a path, or ``"audio"``).
    channel_axis : int, optional
        The channel axis when the layout is known (a decoder's output); any channel count then.

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]

    Raises
    ------
    ParameterError
        Not numeric audio, more than 2 dimensions, or an ambiguous 2-D shape (the message says how
        to pass it).
    AudioError
        NaN or infinite samples, or samples beyond :data:`MAX_PEAK` times full scale.
    """
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        y = _scale_integers(y)
    elif y.dtype.kind != "f":
        raise ParameterError(f"{where}: samples must be numbers (float or integer PCM), got dtype {y.dtype}")
    if y.ndim == 2:
        if channel_axis is None:
            a, b = y.shape
            small = [ax for ax, n in enumerate(y.shape) if 1 <= n <= MAX_ARRAY_CHANNELS]
            if len(small) != 1:
                why = "both axes could be channels" if len(small) == 2 else "neither axis is a channel axis"
                raise ParameterError(
                    f"{where}: cannot tell channels from samples in an array of shape {y.shape} ({why}); "
                    f"pass mono audio as a 1-D array, or an array of shape (n_samples, n_channels) with "
                    f"at most {MAX_ARRAY_CHANNELS} channels and more than {MAX_ARRAY_CHANNELS} samples"
                )
            channel_axis = small[0]
        y = y.mean(axis=channel_axis, dtype=np.float64 if y.dtype == np.float64 else np.float32)
    elif y.ndim != 1:
        raise ParameterError(
            f"{where}: audio must be 1-D (mono) or 2-D (samples and channels), got shape {y.shape}"
        )
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.size:
        if not np.isfinite(y).all():
            raise AudioError(f"{where}: audio contains NaN or infinite samples")
        peak = float(np.max(np.abs(y)))
        if peak > MAX_PEAK:
            raise AudioError(f"{where}: samples reach {peak:.3g} times full scale; the file is corrupt")
    return y


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average channels of a decoder's output: ``(n,)`` or ``(n, channels)`` (soundfile layout).

    Only the layout is handled here; :func:`as_mono` checks the samples."""
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.mean(axis=1, dtype=np.float32)
    return y.astype(np.float32, copy=False)


def resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    """Number of samples :func:`resample` returns for ``n`` input samples (soxr rounds half up)."""
    if orig_sr == target_sr:
        return int(n)
    return (2 * int(n) * int(target_sr) + int(orig_sr)) // (2 * int(orig_sr))


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float audio with soxr (``HQ``); identity when the rates match."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(y, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(y, dtype=np.float32), orig_sr, target_sr, quality="HQ").astype(
        np.float32, copy=False
    )


@dataclass(frozen=True)
class _Window:
    """The input frames to decode for an output window, and where the window lies in their resampling."""

    start: int  # first input frame to read
    frames: int | None  # input frames to read; None to the end
    lead: int  # output samples to drop at the start (resampling context)
    size: int | None  # output samples wanted; None to the end


def _plan(offset: float, duration: float | None, file_sr: int, sr: int) -> _Window:
    """Which input frames to read for the output samples ``[round(offset*sr), + round(duration*sr))``.

    When the rates differ, the read starts :data:`RESAMPLE_CONTEXT_SECONDS` early, on an input frame
    that maps to a whole output sample (a multiple of ``file_sr / gcd``), and ends as late, so that
    resampling the read and cutting the window out gives the samples of the whole file resampled.
    """
    if file_sr == sr:
        start = int(round(offset * file_sr))
        frames = None if duration is None else int(math.ceil(duration * file_sr))
        return _Window(start, frames, 0, None if duration is None else int(round(duration * sr)))
    g = math.gcd(file_sr, sr)
    p_in, p_out = file_sr // g, sr // g
    out_start = int(round(offset * sr))
    context = -(-int(math.ceil(RESAMPLE_CONTEXT_SECONDS * sr)) // p_out) * p_out
    out0 = max(0, (out_start - context) // p_out * p_out)
    start = out0 // p_out * p_in
    if duration is None:
        return _Window(start, None, out_start - out0, None)
    size = int(round(duration * sr))
    end = -(-(out_start + size + context) * file_sr // sr) + p_in
    return _Window(start, end - start, out_start - out0, size)


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


def _check_rate(path: Path, sr: int) -> None:
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= sr <= hi:
        raise AudioError(f"{path}: sample rate {sr} Hz is outside {lo}-{hi} Hz; the header is corrupt")


def _sndfile_info(path: Path):
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
    i = _sndfile_info(path)
    if not isinstance(i, BaseException):
        if i.frames > 0 and i.samplerate > 0:
            _check_rate(path, int(i.samplerate))
            return AudioInfo(i.frames / i.samplerate, int(i.samplerate), int(i.channels), int(i.frames))
        why = "no audio frames in the stream (empty or truncated)"
        if _sndfile_only(path):
            raise AudioError(f"{path}: no audio samples could be decoded (empty or truncated stream)")
    else:
        why = _sndfile_reason(path, i)
        if _sndfile_only(path):
            raise AudioError(f"{path}: cannot decode audio ({why})")
    sr, channels, frames = _count_fallback(path, why)
    return AudioInfo(frames / sr, sr, channels, frames)


def can_seek(path: str | Path) -> bool:
    """Whether a window of ``path`` can be read without decoding what comes before it: libsndfile
    opens it (wav, flac, ogg, mp3, aiff...). Files only the fallback decoder (ffmpeg) reads are
    decoded from their start for every window (:func:`load`)."""
    return not isinstance(_sndfile_info(Path(path)), BaseException)


def _audioread():
    """The audioread module (its import warns that the stdlib modules it uses are deprecated)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioread
        import audioread.ffdec

        audioread.available_backends()  # imports the backend modules
    return audioread


def _ffmpeg_available() -> bool:
    """Whether audioread can use ffmpeg (its backend list is cached per process)."""
    audioread = _audioread()
    return audioread.ffdec.FFmpegAudioFile in audioread.available_backends()


def _open_fallback(path: Path, why: str):
    """Open ``path`` with audioread (ffmpeg), or raise :class:`AudioError` saying why not."""
    audioread = _audioread()
    try:
        return audioread.audio_open(str(path))
    except Exception as exc:  # noqa: BLE001 - audioread and its backends raise many types
        reason = f"{why}; " if why else ""
        if not _ffmpeg_available():
            raise AudioError(
                f"{path}: cannot decode audio ({reason}reading {path.suffix or 'such'} files needs ffmpeg, "
                "which was not found)"
            ) from exc
        detail = _reason(exc) if type(exc).__name__ != "NoBackendError" else "not recognised as audio"
        raise AudioError(f"{path}: cannot decode audio ({reason}ffmpeg: {detail})") from exc


def _fallback_blocks(f):
    """``(frames, channels)`` int16 blocks of an open audioread file (its buffers may split frames)."""
    width = 2 * int(f.channels)
    carry = b""
    for buf in f:
        data = carry + bytes(buf)
        usable = len(data) // width * width
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], "<i2").reshape(-1, int(f.channels))


def _fallback_format(path: Path, f, why: str) -> tuple[int, int]:
    file_sr, channels = int(f.samplerate or 0), int(f.channels or 0)
    if file_sr <= 0 or channels <= 0:
        raise AudioError(f"{path}: cannot decode audio ({why + '; ' if why else ''}ffmpeg found no audio stream)")
    _check_rate(path, file_sr)
    return file_sr, channels


def _count_fallback(path: Path, why: str) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` of a file only the fallback decoder reads, counted by
    decoding it (container headers give the duration to 0.1 s at best), in bounded memory."""
    with _open_fallback(path, why) as f:
        file_sr, channels = _fallback_format(path, f, why)
        frames = 0
        try:
            for block in _fallback_blocks(f):
                frames += len(block)
        except Exception as exc:  # noqa: BLE001 - stopped part-way: load() reports it
            logger.debug("%s: the fallback decoder stopped after %d frames (%s)", path, frames, _reason(exc))
    if not frames:
        raise AudioError(f"{path}: no audio samples could be decoded (empty or truncated stream)")
    return file_sr, channels, frames


def _read_fallback(path: Path, offset: float, duration: float | None, sr: int, why: str):
    """:func:`_read_sndfile` for files only audioread (ffmpeg) reads: decoded from the start (these
    formats cannot seek here), keeping the frames of the planned window."""
    blocks: list[np.ndarray] = []
    error = None
    with _open_fallback(path, why) as f:
        file_sr, _ = _fallback_format(path, f, why)
        plan = _plan(offset, duration, file_sr, sr)
        stop = None if plan.frames is None else plan.start + plan.frames
        pos = 0
        try:
            for block in _fallback_blocks(f):
                lo, hi = max(plan.start - pos, 0), len(block) if stop is None else min(len(block), stop - pos)
                if hi > lo:
                    blocks.append(to_mono(block[lo:hi]))
                pos += len(block)
                if stop is not None and pos >= stop:
                    break
        except Exception as exc:  # noqa: BLE001 - a decoder error part-way
            error = _reason(exc)
        announced = float(getattr(f, "duration", 0) or 0)
    y = np.concatenate(blocks) / np.float32(32768) if blocks else np.zeros(0, np.float32)
    if error is None and duration is None and offset == 0 and announced and y.size < (announced - 1) * file_sr:
        logger.warning(
            "%s: only %.1f s of the %.1f s its container announces could be decoded (truncated?); using them",
            path, y.size / file_sr, announced,
        )
    return y.astype(np.float32, copy=False), file_sr, error, plan


def _read_sndfile(path: Path, offset: float, duration: float | None, sr: int):
    """Read with libsndfile, block by block, mixing down to mono as it goes, the input frames needed
    for the output window ``[offset, offset + duration)`` at ``sr`` Hz (see :func:`_plan`).

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
            return None, 0, _sndfile_reason(path, exc), None
        blocks: list[np.ndarray] = []
        error = None
        with f:
            file_sr = int(f.samplerate)
            _check_rate(path, file_sr)
            plan = _plan(offset, duration, file_sr, sr)
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
                error = _sndfile_reason(path, exc)
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
    :data:`RESAMPLE_CONTEXT_SECONDS` of context on each side when it must be resampled: a window
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
        (:data:`MAX_PEAK`).
    """
    path = Path(path)
    _check_path(path)
    y, file_sr, why, plan = _read_sndfile(path, offset, duration, sr)
    if y is None or (y.size == 0 and why is not None and offset == 0):
        # libsndfile could not open it, or it broke before its first samples
        if _sndfile_only(path):
            raise AudioError(f"{path}: cannot decode audio ({why})")
        y, file_sr, why, plan = _read_fallback(path, offset, duration, sr, why or "")
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
