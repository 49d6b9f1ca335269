"""Tempo without machine learning: an onset-strength envelope, its autocorrelation (a strength-weighted histogram of every
inter-onset interval), a comb over the first multiples of each candidate period (so that a period is
only salient if the metre repeats at its multiples too) and a log-normal preference for moderate tempi
that settles double/half ambiguities. Beats come from dynamic-programming beat tracking at that tempo.

``docs/analysis.md`` explains the choices and reports measured scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError
from .inputs import SAMPLE_RATE, check_audio, is_silent

__all__ = ["TempoEstimate", "estimate_tempo", "onset_envelope"]

ONSET_HOP = 256  # samples (~11.6 ms): ~86 onset frames per second


@dataclass(frozen=True)
class TempoEstimate:
    """The estimated tempo of a piece.

    Attributes
    ----------
    bpm : float or None
        Beats per minute; ``None`` when the audio has no detectable onsets.
    confidence : float
        0..1: how much the winning tempo's salience exceeds that of the best competing tempo (any
        tempo more than 4 % away, its double and half included): ``1 - runner_up / best``.
    beats : np.ndarray [shape=(n_beats,)]
        Beat times in seconds.
    salience : float
        Normalised autocorrelation of the onset envelope at the beat period (0..1), a measure of how
        strongly periodic the onsets are ("pulse clarity").
    """

    bpm: float | None
    confidence: float
    beats: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    salience: float = 0.0


def onset_envelope(y: np.ndarray, sr: float = SAMPLE_RATE, *, hop_length: int = ONSET_HOP) -> np.ndarray:
    """Onset strength: positive log-mel spectral flux, one value per ``hop_length`` samples.

    Returns
    -------
    np.ndarray [shape=(t,)]
    """
    import librosa

    y = check_audio(y, sr)
    return librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop_length, n_fft=2048, n_mels=128)


def _detrend(env: np.ndarray) -> np.ndarray:
    """Onset envelope minus its local mean (~0.4 s), positive part only: the onsets' peaks."""
    from scipy.ndimage import uniform_filter1d

    return np.maximum(env - uniform_filter1d(env, size=35, mode="nearest"), 0.0)


def _grid_strength(x: np.ndarray, period: float) -> tuple[float, float]:
    """Mean onset strength on the best-aligned grid of ``period`` frames, and halfway between."""
    from scipy.ndimage import maximum_filter1d

    xm = maximum_filter1d(x, size=3, mode="nearest")  # tolerate +-1 frame of timing jitter
    n = xm.size
    best_on, best_mid = 0.0, 0.0
    for phase in np.arange(0.0, period, 1.0):
        on_idx = np.round(np.arange(phase, n - 1, period)).astype(int)
        mid_idx = np.round(np.arange(phase + period / 2, n - 1, period)).astype(int)
        if on_idx.size < 2 or mid_idx.size < 1:
            continue
        on = float(xm[on_idx].mean())
        if on > best_on:
            best_on, best_mid = on, float(xm[mid_idx].mean())
    return best_on, best_mid


def _periodicity(env: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised, bias-corrected autocorrelation of a detrended onset envelope (lags 0..max_lag).

    Only the onsets' peaks are kept (:func:`_detrend`), so the autocorrelation counts coincidences
    of onsets rather than of slow loudness changes: a strength-weighted histogram of all
    inter-onset intervals.
    """
    x = _detrend(env)
    n = x.size
    nfft = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.fft.rfft(x, nfft)
    acf = np.fft.irfft(spec * np.conj(spec), nfft)[: max_lag + 1]
    acf = acf / np.maximum(n - np.arange(max_lag + 1), 1)  # unbiased: divide by the overlap
    if acf[0] <= 0:
        return np.zeros(max_lag + 1)
    return acf / acf[0]


def _interp_peak(a: np.ndarray, i: int) -> float:
    """Sub-sample position of the maximum of ``a`` near index ``i`` (parabolic)."""
    if i <= 0 or i >= a.size - 1:
        return float(i)
    left, mid, right = a[i - 1], a[i], a[i + 1]
    den = left - 2 * mid + right
    if den >= 0:
        return float(i)
    return float(i + 0.5 * (left - right) / den)


def estimate_tempo(
    y: np.ndarray,
    sr: float = SAMPLE_RATE,
    *,
    min_bpm: float = 40.0,
    max_bpm: float = 240.0,
    prior_bpm: float = 120.0,
    prior_octaves: float = 1.0,
    n_multiples: int = 4,
    double_ratio: float | None = 0.75,
    double_max_bpm: float = 200.0,
    beats: bool = True,
    onset_env: np.ndarray | None = None,
    hop_length: int = ONSET_HOP,
) -> TempoEstimate:
    """Estimate the tempo (and the beat times) of a piece.

    Parameters
    ----------
    y, sr : np.ndarray [shape=(n,)], float
        Mono audio and its sample rate in Hz.
    min_bpm, max_bpm : float
        Range of tempi considered.
    prior_bpm, prior_octaves : float
        Centre and width (standard deviation in octaves) of the log-normal preference that decides
        between metrical levels (double/half tempo).
    n_multiples : int
        Number of multiples of a candidate beat period whose periodicity counts toward its salience.
    double_ratio : float or None
        Octave check: if the onset strength halfway between the found beats is at least this
        fraction of the strength on the beats, the tempo is doubled (None: no check).
    double_max_bpm : float
        The octave check never doubles to a tempo above this.
    beats : bool
        Also track beats (dynamic programming at the estimated tempo).
    onset_env : np.ndarray or None
        A precomputed :func:`onset_envelope` (same ``hop_length``); computed from ``y`` when None.
    hop_length : int
        Hop of the onset envelope, samples.

    Returns
    -------
    TempoEstimate

    Raises
    ------
    ParameterError
        Bad audio, or an empty/inverted tempo range.

    Examples
    --------
    >>> import numpy as np
    >>> from clapknn.analysis import estimate_tempo
    >>> sr = 22050
    >>> y = np.zeros(10 * sr, dtype=np.float32)
    >>> for t in np.arange(0, 10, 0.5):  # a click every 0.5 s: 120 BPM
    ...     y[int(t * sr) : int(t * sr) + 200] = 1.0
    >>> round(estimate_tempo(y, sr).bpm)
    120
    """
    import librosa

    y = check_audio(y, sr)
    if not (0 < min_bpm < max_bpm):
        raise ParameterError(f"need 0 < min_bpm < max_bpm; got min_bpm={min_bpm!r}, max_bpm={max_bpm!r}")
    if not prior_octaves > 0:
        raise ParameterError(f"prior_octaves must be positive; got {prior_octaves!r}")
    if int(n_multiples) < 1:
        raise ParameterError(f"n_multiples must be at least 1; got {n_multiples!r}")
    n_multiples = int(n_multiples)
    empty = TempoEstimate(None, 0.0, np.zeros(0), 0.0)
    if onset_env is None:
        if is_silent(y):
            return empty
        onset_env = onset_envelope(y, sr, hop_length=hop_length)
    env = np.asarray(onset_env, dtype=float)
    fps = sr / hop_length  # onset frames per second
    min_lag = max(1, int(math.floor(60.0 * fps / max_bpm)))
    max_lag = int(math.ceil(60.0 * fps / min_bpm))
    if env.size < 2 * max_lag or not np.any(env > 0):
        return empty

    acf = _periodicity(env, n_multiples * max_lag + 1)
    acf = np.maximum(acf, 0.0)

    # Salience of each candidate period: its periodicity and that of its first multiples (metrical
    # levels above the beat repeat at 2x, 3x, 4x the period), weighted 1/k and normalised, then a
    # log-normal preference around prior_bpm.
    lags = np.arange(min_lag, max_lag + 1)
    comb = np.zeros(lags.size)
    wsum = 0.0
    for k in range(1, n_multiples + 1):
        # max over +-1 frame at the k-th multiple tolerates non-integer periods
        idx = k * lags
        around = np.max(np.stack([acf[np.clip(idx + d, 0, acf.size - 1)] for d in (-1, 0, 1)]), axis=0)
        comb += around / k
        wsum += 1.0 / k
    comb /= wsum
    bpm_axis = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpm_axis / prior_bpm) / prior_octaves) ** 2)
    salience = comb * prior
    if not np.any(salience > 0):
        return empty

    i = int(np.argmax(salience))
    lag0 = int(lags[i])
    # Refine the period: parabolic peaks of the autocorrelation at the period and its multiples.
    estimates = []
    for k in range(1, n_multiples + 1):
        centre = k * lag0
        lo, hi = max(1, centre - k), min(acf.size - 2, centre + k)
        if lo > hi:
            break
        j = lo + int(np.argmax(acf[lo : hi + 1]))
        if acf[j] > 0:
            estimates.append(_interp_peak(acf, j) / k)
    period = float(np.median(estimates)) if estimates else float(lag0)
    bpm = 60.0 * fps / period

    if double_ratio is not None and 2 * bpm <= double_max_bpm:
        # Octave check: a pulse found by the autocorrelation may be every other beat (a backbeat,
        # a waltz bar, a shuffle). If the points halfway between our beats carry on average nearly
        # as much onset strength as the beats themselves, the true beat is twice as fast.
        on, mid = _grid_strength(_detrend(env), period)
        if on > 0 and mid >= double_ratio * on:
            period /= 2
            bpm *= 2

    far = np.abs(np.log(bpm_axis / bpm)) > math.log(1.04)
    runner_up = float(salience[far].max()) if np.any(far) else 0.0
    confidence = float(np.clip(1.0 - runner_up / salience[i], 0.0, 1.0))

    beat_times = np.zeros(0)
    if beats:
        _, beat_frames = librosa.beat.beat_track(
            onset_envelope=env, sr=sr, hop_length=hop_length, bpm=bpm, units="frames"
        )
        beat_times = librosa.frames_to_time(beat_frames, sr=sr, hop_length=hop_length)
    return TempoEstimate(float(bpm), confidence, np.asarray(beat_times, dtype=float), float(acf[lag0]))
