"""Decode: read audio files (or windows of them) as mono float32 at a requested sample rate.

soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) is tried first because it can
seek, so a 10-second window of a 3-hour file costs a 10-second read. Formats libsndfile cannot open
(m4a/aac, wma, ...) fall back to librosa's audioread path. Resampling uses soxr (high quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError

__all__ = ["AudioInfo", "AUDIO_EXTENSIONS", "info", "load", "resample", "to_mono"]

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
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def info(path: str | Path) -> AudioInfo:
    """Read duration, sample rate and channel count of an audio file without decoding it all.

    Raises
    ------
    AudioError
        If the file is missing, empty or not decodable audio.
    """
    path = Path(path)
    _check_path(path)
    import soundfile as sf

    try:
        i = sf.info(str(path))
        if i.frames > 0 and i.samplerate > 0:
            return AudioInfo(i.frames / i.samplerate, int(i.samplerate), int(i.channels), int(i.frames))
    except Exception:  # noqa: BLE001 - any libsndfile failure means "try the fallback"
        pass
    y, sr = _load_fallback(path, sr=None, offset=0.0, duration=None)
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


def _load_fallback(path: Path, *, sr: int | None, offset: float, duration: float | None):
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            # librosa warns that it is falling back to audioread; we chose that path on purpose.
            warnings.simplefilter("ignore")
            y, file_sr = librosa.load(str(path), sr=None, mono=True, offset=offset, duration=duration)
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})") from exc
    if sr is not None:
        y = resample(y, int(file_sr), sr)
        file_sr = sr
    return np.asarray(y, dtype=np.float32), int(file_sr)


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
        Missing, empty or undecodable file, or samples that are not finite.
    """
    path = Path(path)
    _check_path(path)
    import soundfile as sf

    y = None
    try:
        with sf.SoundFile(str(path)) as f:
            file_sr = int(f.samplerate)
            start = int(round(offset * file_sr))
            if start > 0:
                f.seek(min(start, f.frames))
            frames = -1 if duration is None else int(math.ceil(duration * file_sr))
            y = to_mono(f.read(frames, dtype="float32", always_2d=True))
    except Exception:  # noqa: BLE001 - libsndfile cannot read it: fall back below
        y = None
    if y is None:
        y, file_sr = _load_fallback(path, sr=None, offset=offset, duration=duration)
    if y.size and not np.isfinite(y).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    y = resample(y, file_sr, sr)
    if duration is not None:
        y = y[: int(round(duration * sr))]
    return y
