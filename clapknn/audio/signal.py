"""Audio samples in memory: the one check at clapknn's audio boundary, mixing to mono, resampling.

:func:`as_mono` checks samples (shape, channel layout, dtype, NaN/inf, peak) for files after
decoding (:mod:`clapknn.audio.decode`), in-memory arrays and the Ray path alike. Resampling uses soxr
(high quality); :func:`plan_window` says which input frames a window needs so that, resampled with
context around it, it holds the same samples as the whole file resampled at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AudioError, ParameterError

__all__ = [
    "MAX_ARRAY_CHANNELS",
    "MAX_PEAK",
    "RESAMPLE_CONTEXT_SECONDS",
    "SAMPLE_RATE_RANGE",
    "WindowPlan",
    "as_mono",
    "check_rate",
    "plan_window",
    "resample",
    "resampled_length",
    "to_mono",
]

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

    Only the layout is handled here; :func:`as_mono` checks the samples. The channels are summed
    one column at a time in float32 and divided by their count: the same values as
    ``y.mean(axis=1, dtype=np.float32)``, several times faster than numpy's reduction over a short
    inner axis (the decoder's blocks are ``(frames, 2)`` for stereo)."""
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] == 1:
            return np.ascontiguousarray(y[:, 0], dtype=np.float32)
        y = y.astype(np.float32, copy=False)
        out = y[:, 0].copy()  # contiguous
        for k in range(1, y.shape[1]):
            out += y[:, k]
        out /= np.float32(y.shape[1])
        return out
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
class WindowPlan:
    """The input frames to decode for an output window, and where the window lies in their resampling."""

    start: int  # first input frame to read
    frames: int | None  # input frames to read; None to the end
    lead: int  # output samples to drop at the start (resampling context)
    size: int | None  # output samples wanted; None to the end


def plan_window(offset: float, duration: float | None, file_sr: int, sr: int) -> WindowPlan:
    """Which input frames to read for the output samples ``[round(offset*sr), + round(duration*sr))``.

    When the rates differ, the read starts :data:`RESAMPLE_CONTEXT_SECONDS` early, on an input frame
    that maps to a whole output sample (a multiple of ``file_sr / gcd``), and ends as late, so that
    resampling the read and cutting the window out gives the samples of the whole file resampled.
    """
    if file_sr == sr:
        start = int(round(offset * file_sr))
        frames = None if duration is None else int(math.ceil(duration * file_sr))
        return WindowPlan(start, frames, 0, None if duration is None else int(round(duration * sr)))
    g = math.gcd(file_sr, sr)
    p_in, p_out = file_sr // g, sr // g
    out_start = int(round(offset * sr))
    context = -(-int(math.ceil(RESAMPLE_CONTEXT_SECONDS * sr)) // p_out) * p_out
    out0 = max(0, (out_start - context) // p_out * p_out)
    start = out0 // p_out * p_in
    if duration is None:
        return WindowPlan(start, None, out_start - out0, None)
    size = int(round(duration * sr))
    end = -(-(out_start + size + context) * file_sr // sr) + p_in
    return WindowPlan(start, end - start, out_start - out0, size)




def check_rate(path: Path, sr: int) -> None:
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= sr <= hi:
        raise AudioError(f"{path}: sample rate {sr} Hz is outside {lo}-{hi} Hz; the header is corrupt")
