"""The fallback decoder: audioread (ffmpeg) for the formats libsndfile does not read (m4a/aac, wma...).

These formats cannot seek here: a window is decoded from the start of the file, keeping the frames
:func:`~clapknn.audio.signal.plan_window` asks for, in bounded memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import AudioError, first_line
from .signal import check_rate, plan_window, to_mono

__all__ = ["count_fallback", "ffmpeg_available", "open_fallback", "read_fallback"]

logger = logging.getLogger("clapknn.audio.decode")

def _audioread():
    """The audioread module (its import warns that the stdlib modules it uses are deprecated)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioread
        import audioread.ffdec

        audioread.available_backends()  # imports the backend modules
    return audioread


def ffmpeg_available() -> bool:
    """Whether audioread can use ffmpeg (its backend list is cached per process)."""
    audioread = _audioread()
    return audioread.ffdec.FFmpegAudioFile in audioread.available_backends()


def open_fallback(path: Path, why: str):
    """Open ``path`` with audioread (ffmpeg), or raise :class:`AudioError` saying why not."""
    audioread = _audioread()
    try:
        return audioread.audio_open(str(path))
    except Exception as exc:  # noqa: BLE001 - audioread and its backends raise many types
        reason = f"{why}; " if why else ""
        if not ffmpeg_available():
            raise AudioError(
                f"{path}: cannot decode audio ({reason}reading {path.suffix or 'such'} files needs ffmpeg, "
                "which was not found)"
            ) from exc
        detail = first_line(exc) if type(exc).__name__ != "NoBackendError" else "not recognised as audio"
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
    check_rate(path, file_sr)
    return file_sr, channels


def count_fallback(path: Path, why: str) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` of a file only the fallback decoder reads, counted by
    decoding it (container headers give the duration to 0.1 s at best), in bounded memory."""
    with open_fallback(path, why) as f:
        file_sr, channels = _fallback_format(path, f, why)
        frames = 0
        try:
            for block in _fallback_blocks(f):
                frames += len(block)
        except Exception as exc:  # noqa: BLE001 - stopped part-way: load() reports it
            logger.debug("%s: the fallback decoder stopped after %d frames (%s)", path, frames, first_line(exc))
    if not frames:
        raise AudioError(f"{path}: no audio samples could be decoded (empty or truncated stream)")
    return file_sr, channels, frames


def read_fallback(path: Path, offset: float, duration: float | None, sr: int, why: str):
    """:func:`clapknn.audio.decode.read_sndfile` for files only audioread (ffmpeg) reads: decoded from the start (these
    formats cannot seek here), keeping the frames of the planned window."""
    blocks: list[np.ndarray] = []
    error = None
    with open_fallback(path, why) as f:
        file_sr, _ = _fallback_format(path, f, why)
        plan = plan_window(offset, duration, file_sr, sr)
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
            error = first_line(exc)
        announced = float(getattr(f, "duration", 0) or 0)
    y = np.concatenate(blocks) / np.float32(32768) if blocks else np.zeros(0, np.float32)
    if error is None and duration is None and offset == 0 and announced and y.size < (announced - 1) * file_sr:
        logger.warning(
            "%s: only %.1f s of the %.1f s its container announces could be decoded (truncated?); using them",
            path, y.size / file_sr, announced,
        )
    return y.astype(np.float32, copy=False), file_sr, error, plan
