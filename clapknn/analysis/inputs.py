"""What the analysis reads: mono floating-point audio, at :data:`SAMPLE_RATE` unless told otherwise."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["SAMPLE_RATE", "check_audio", "is_silent"]

SAMPLE_RATE = 22050  # Hz; the key and tempo defaults are tuned for this rate


def check_audio(y: np.ndarray, sr: float) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ParameterError(f"audio must be mono, shape (n,); got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"audio must be floating point; got dtype {y.dtype}")
    if not np.isfinite(y).all():
        raise ParameterError("audio buffer is not finite everywhere")
    if not (isinstance(sr, (int, float, np.integer, np.floating)) and sr > 0):
        raise ParameterError(f"sr must be a positive number; got {sr!r}")
    return y.astype(np.float32, copy=False)


def is_silent(y: np.ndarray) -> bool:
    return y.size == 0 or float(np.max(np.abs(y))) < 1e-4
