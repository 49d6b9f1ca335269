"""Key and tempo without machine learning.

Key: a constant-Q chromagram of the harmonic part of the signal, tuned to the recording's own
reference pitch, summed over the track (or over sliding windows), correlated with the 24 rotations of a
major and a minor key profile (the Krumhansl-Schmuckler method; profiles by Krumhansl & Kessler,
Temperley, or Albrecht & Shanahan, the default). The confidence is the margin between the best and the
runner-up correlation.

Tempo: an onset-strength envelope, its autocorrelation (a strength-weighted histogram of every
inter-onset interval), a comb over the first multiples of each candidate period (so that a period is
only salient if the metre repeats at its multiples too) and a log-normal preference for moderate tempi
that settles double/half ambiguities. Beats come from dynamic-programming beat tracking at that tempo.

``docs/analysis.md`` explains the choices and reports measured scores.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from .errors import ParameterError

__all__ = [
    "PROFILES",
    "DEFAULT_PROFILE",
    "KEY_NAMES",
    "SAMPLE_RATE",
    "KeyEstimate",
    "TempoEstimate",
    "chromagram",
    "key_scores",
    "estimate_key",
    "onset_envelope",
    "estimate_tempo",
    "analyze",
    "analyze_signal",
    "analyze_file",
    "analyze_files",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # Hz; everything below is tuned for this rate
CHROMA_HOP = 2048  # samples (~93 ms): key needs no finer time resolution
ONSET_HOP = 256  # samples (~11.6 ms): ~86 onset frames per second
CQT_FMIN = 32.70  # Hz, C1: the lowest bass notes still define the key
CQT_OCTAVES = 7  # C1 .. B7
CQT_BINS_PER_OCTAVE = 36  # three bins per semitone, so a detuned partial still lands on its semitone

# --- Key profiles -------------------------------------------------------------------------------
# Each profile lists the weight of the 12 pitch classes counted upward from the tonic
# (tonic, minor 2nd, major 2nd, ..., major 7th); index 0 is the tonic.
#
# Krumhansl & Kessler (1982), probe-tone ratings: C. L. Krumhansl and E. J. Kessler, "Tracing the dynamic
# changes in perceived tonal organization in a spatial representation of musical keys", Psychological
# Review 89(4):334-368; used for key finding by Krumhansl (1990), "Cognitive Foundations of Musical
# Pitch", ch. 4 (the Krumhansl-Schmuckler algorithm).
KRUMHANSL_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KRUMHANSL_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
# Temperley (1999), hand-revised profiles: D. Temperley, "What's key for key? The Krumhansl-Schmuckler
# key-finding algorithm reconsidered", Music Perception 17(1):65-100 (also "The Cognition of Basic
# Musical Structures", MIT Press 2001). Flatter chromatic tones, harmonic-minor leading tone.
TEMPERLEY_MAJOR = (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0)
TEMPERLEY_MINOR = (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0)
# Albrecht & Shanahan (2013), pitch-class distributions of a corpus of 490 common-practice pieces:
# J. Albrecht and D. Shanahan, "The use of large corpora to train a new type of key-finding algorithm:
# An improved treatment of the minor mode", Music Perception 31(1):59-67.
ALBRECHT_MAJOR = (0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081)
ALBRECHT_MINOR = (0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052)

#: Key profiles by name: ``(major, minor)``, tonic first.
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "krumhansl": (KRUMHANSL_MAJOR, KRUMHANSL_MINOR),
    "temperley": (TEMPERLEY_MAJOR, TEMPERLEY_MINOR),
    "albrecht": (ALBRECHT_MAJOR, ALBRECHT_MINOR),
}

#: The profile set used when none is named: the most accurate of the three in bench/key_tempo.py
#: (docs/analysis.md).
DEFAULT_PROFILE = "albrecht"

#: Tonic spellings by pitch class (0 = C), the usual ones for each mode (Bb major, C# minor, ...).
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
#: The 24 key labels in score order: the 12 majors from C, then the 12 minors from C.
KEY_NAMES = tuple(f"{n} major" for n in MAJOR_NAMES) + tuple(f"{n} minor" for n in MINOR_NAMES)

_PITCH_CLASS = {
    "C": 0, "B#": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "Fb": 4, "F": 5, "E#": 5,
    "F#": 6, "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11, "Cb": 11,
}  # fmt: skip


def pitch_class(name: str) -> int:
    """Pitch class (0 = C) of a tonic spelled like ``"F#"``, ``"Bb"`` or ``"C"``.

    Raises
    ------
    ParameterError
        If ``name`` is not a note name.
    """
    key = name.strip()
    key = key[:1].upper() + key[1:]
    if key not in _PITCH_CLASS:
        raise ParameterError(f"unknown note name {name!r}; expected e.g. 'C', 'F#', 'Bb'")
    return _PITCH_CLASS[key]


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEstimate:
    """The estimated key of a piece.

    Attributes
    ----------
    key : str or None
        Tonic, e.g. ``"F#"`` or ``"Bb"``; ``None`` when the audio holds no pitched content.
    mode : {"major", "minor"} or None
    confidence : float
        Correlation of the best key minus that of the runner-up (0 = a tie; usually 0.01-0.4).
        Small margins mean the runner-up (often the relative key or one a fifth away) is as likely.
    scores : dict
        Correlation (-1..1) of the chroma profile with each of the 24 keys, keyed by ``"C major"`` ...
        ``"B minor"`` (see :data:`KEY_NAMES`); empty when ``key`` is None.
    profile : str
        The key-profile set that was used.
    tuning : float
        Estimated deviation of the recording's reference pitch from A440, in fractions of a semitone.
    """

    key: str | None
    mode: str | None
    confidence: float
    scores: dict[str, float] = field(default_factory=dict, repr=False)
    profile: str = DEFAULT_PROFILE
    tuning: float = 0.0

    @property
    def label(self) -> str | None:
        """``"A minor"``-style label, or None."""
        return None if self.key is None else f"{self.key} {self.mode}"

    @property
    def tonic(self) -> int | None:
        """Pitch class of the tonic (0 = C), or None."""
        return None if self.key is None else pitch_class(self.key)


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


# --- Input checks -------------------------------------------------------------------------------


def _check_audio(y: np.ndarray, sr: float) -> np.ndarray:
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


def _check_profile(profile: str) -> tuple[np.ndarray, np.ndarray]:
    if profile not in PROFILES:
        raise ParameterError(f"unknown key profile {profile!r}; choose one of {', '.join(PROFILES)}")
    major, minor = PROFILES[profile]
    return np.asarray(major, dtype=float), np.asarray(minor, dtype=float)


def _is_silent(y: np.ndarray) -> bool:
    return y.size == 0 or float(np.max(np.abs(y))) < 1e-4


# --- Key ----------------------------------------------------------------------------------------


def chromagram(
    y: np.ndarray,
    sr: float = SAMPLE_RATE,
    *,
    harmonic: bool = True,
    tuning: float | None = None,
    hop_length: int = CHROMA_HOP,
) -> tuple[np.ndarray, float]:
    """Constant-Q chromagram used for key finding.

    The reference pitch is estimated from the signal when ``tuning`` is None and the constant-Q
    bins (three per semitone, C1 to B7) are centred on it. With ``harmonic``, percussive energy is
    removed by median-filtering harmonic/percussive separation of the constant-Q magnitude (sustained
    partials are horizontal ridges, drum hits vertical ones), which is far cheaper than separating
    the full-resolution STFT. Each frame is then folded into 12 pitch classes and scaled to a
    maximum of 1.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio.
    sr : float
        Sample rate in Hz.
    harmonic : bool
        Suppress percussion before folding into pitch classes.
    tuning : float or None
        Deviation from A440 in semitones (-0.5..0.5); estimated when None.
    hop_length : int
        Hop between chroma frames, samples.

    Returns
    -------
    chroma : np.ndarray [shape=(12, t)]
        Pitch-class energy per frame, each frame scaled to a maximum of 1 (row 0 = C). Frames more
        than 40 dB below the loudest frame are zero, so that silence and reverb tails do not count.
    tuning : float
        The tuning used, semitones.
    """
    import warnings

    import librosa

    y = _check_audio(y, sr)
    if tuning is None:
        tuning = float(librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=12))
        if not np.isfinite(tuning):
            tuning = 0.0
    # The top CQT octave must stay below Nyquist.
    n_octaves = CQT_OCTAVES
    while n_octaves > 1 and CQT_FMIN * 2 ** (n_octaves + tuning / 12) >= sr / 2:
        n_octaves -= 1
    with warnings.catch_warnings():
        # Very short clips make librosa warn that its filters are longer than the signal.
        warnings.filterwarnings("ignore", message=".*too large for input signal.*")
        warnings.filterwarnings("ignore", message=".*too short for.*")
        C = np.abs(
            librosa.cqt(
                y,
                sr=sr,
                hop_length=hop_length,
                fmin=CQT_FMIN,
                n_bins=n_octaves * CQT_BINS_PER_OCTAVE,
                bins_per_octave=CQT_BINS_PER_OCTAVE,
                tuning=tuning,
            )
        )
    if harmonic and C.shape[1] >= 3:
        # kernels: 9 frames (~0.8 s) along time for the harmonic part, 31 bins (~10 semitones)
        # along frequency for the percussive part
        C = librosa.decompose.hpss(C, kernel_size=(9, 31))[0]
    chroma = librosa.feature.chroma_cqt(
        C=C,
        sr=sr,
        hop_length=hop_length,
        fmin=CQT_FMIN,
        n_octaves=n_octaves,
        bins_per_octave=CQT_BINS_PER_OCTAVE,
        norm=None,
    )
    chroma = np.maximum(chroma, 0.0)
    peak = chroma.max(axis=0)
    loud = peak > (10 ** (-40 / 20)) * max(float(peak.max(initial=0.0)), 1e-12)
    chroma = np.where(loud, chroma / np.maximum(peak, 1e-12), 0.0)
    return chroma, tuning


def key_scores(pc_profile: np.ndarray, *, profile: str = DEFAULT_PROFILE) -> np.ndarray:
    """Pearson correlation of a pitch-class profile with all 24 keys.

    Parameters
    ----------
    pc_profile : np.ndarray [shape=(..., 12)]
        Pitch-class weights, index 0 = C.
    profile : {"krumhansl", "temperley", "albrecht"}

    Returns
    -------
    np.ndarray [shape=(..., 24)]
        Correlations in :data:`KEY_NAMES` order (12 majors from C, then 12 minors from C). A flat
        (constant) input gives all zeros.
    """
    major, minor = _check_profile(profile)
    x = np.asarray(pc_profile, dtype=float)
    if x.shape[-1] != 12:
        raise ParameterError(f"pitch-class profile must have 12 entries; got shape {x.shape}")
    # Template matrix: row k is the profile rotated so that its tonic sits on pitch class k.
    templates = np.stack(
        [np.roll(major, k) for k in range(12)] + [np.roll(minor, k) for k in range(12)]
    )  # (24, 12)
    t = templates - templates.mean(axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    xc = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(xc, axis=-1, keepdims=True)
    xc = np.divide(xc, norm, out=np.zeros_like(xc), where=norm > 1e-12)
    return xc @ t.T


def estimate_key(
    y: np.ndarray,
    sr: float = SAMPLE_RATE,
    *,
    profile: str = DEFAULT_PROFILE,
    window: float | None = None,
    hop: float | None = None,
    harmonic: bool = True,
    tuning: float | None = None,
) -> KeyEstimate:
    """Estimate the key (tonic and mode) of a piece.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio.
    sr : float
        Sample rate in Hz (22050 is what the defaults are tuned for).
    profile : {"krumhansl", "temperley", "albrecht"}
        Key-profile set (see :data:`PROFILES`).
    window : float or None
        None correlates the chroma summed over the whole track with the profiles. A duration in
        seconds instead correlates each window of that length and averages the 24 correlations over
        the windows (weighted by their energy), so that a long modulation does not dominate.
    hop : float or None
        Hop between windows in seconds; default ``window / 2``.
    harmonic : bool
        Remove percussion (HPSS) before computing chroma.
    tuning : float or None
        Deviation of the reference pitch from A440 in semitones; estimated when None.

    Returns
    -------
    KeyEstimate

    Raises
    ------
    ParameterError
        Bad audio (not mono, not finite), unknown profile, or a non-positive window.

    Examples
    --------
    >>> import numpy as np
    >>> from clapknn.analysis import estimate_key
    >>> sr = 22050
    >>> t = np.arange(sr) / sr
    >>> triad = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))  # C E G
    >>> estimate_key(triad.astype(np.float32), sr).label
    'C major'
    """
    y = _check_audio(y, sr)
    _check_profile(profile)
    if window is not None and not window > 0:
        raise ParameterError(f"window must be a positive number of seconds or None; got {window!r}")
    if hop is not None and not hop > 0:
        raise ParameterError(f"hop must be a positive number of seconds or None; got {hop!r}")
    if _is_silent(y):
        return KeyEstimate(None, None, 0.0, {}, profile, 0.0)

    chroma, tuning = chromagram(y, sr, harmonic=harmonic, tuning=tuning)
    if not np.any(chroma > 0):
        return KeyEstimate(None, None, 0.0, {}, profile, tuning)

    if window is None:
        scores = key_scores(chroma.sum(axis=1), profile=profile)
    else:
        frames_per_s = sr / CHROMA_HOP
        width = max(1, int(round(window * frames_per_s)))
        step = max(1, int(round((hop if hop is not None else window / 2) * frames_per_s)))
        n = chroma.shape[1]
        starts = range(0, max(n - width, 0) + 1, step)
        segments = np.stack([chroma[:, s : s + width].sum(axis=1) for s in starts])  # (w, 12)
        weights = segments.sum(axis=1)
        per_window = key_scores(segments, profile=profile)  # (w, 24)
        scores = (weights[:, None] * per_window).sum(axis=0) / max(weights.sum(), 1e-12)

    order = np.argsort(scores)[::-1]
    best, second = int(order[0]), int(order[1])
    mode = "major" if best < 12 else "minor"
    tonic = (MAJOR_NAMES if best < 12 else MINOR_NAMES)[best % 12]
    return KeyEstimate(
        key=tonic,
        mode=mode,
        confidence=float(scores[best] - scores[second]),
        scores={name: float(s) for name, s in zip(KEY_NAMES, scores)},
        profile=profile,
        tuning=float(tuning),
    )


# --- Tempo --------------------------------------------------------------------------------------


def onset_envelope(y: np.ndarray, sr: float = SAMPLE_RATE, *, hop_length: int = ONSET_HOP) -> np.ndarray:
    """Onset strength: positive log-mel spectral flux, one value per ``hop_length`` samples.

    Returns
    -------
    np.ndarray [shape=(t,)]
    """
    import librosa

    y = _check_audio(y, sr)
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
    y : np.ndarray [shape=(n,)]
        Mono audio.
    sr : float
        Sample rate in Hz.
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

    y = _check_audio(y, sr)
    if not (0 < min_bpm < max_bpm):
        raise ParameterError(f"need 0 < min_bpm < max_bpm; got min_bpm={min_bpm!r}, max_bpm={max_bpm!r}")
    if not prior_octaves > 0:
        raise ParameterError(f"prior_octaves must be positive; got {prior_octaves!r}")
    if int(n_multiples) < 1:
        raise ParameterError(f"n_multiples must be at least 1; got {n_multiples!r}")
    n_multiples = int(n_multiples)
    empty = TempoEstimate(None, 0.0, np.zeros(0), 0.0)
    if onset_env is None:
        if _is_silent(y):
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


# --- Files --------------------------------------------------------------------------------------

#: Column order of :func:`analyze_files` (``path`` as in the tables of :mod:`clapknn.tagging.tagger`).
COLUMNS = ("path", "key", "mode", "key_confidence", "bpm", "tempo_confidence")


def analyze(
    y: np.ndarray,
    sr: float = SAMPLE_RATE,
    *,
    profile: str = DEFAULT_PROFILE,
    key_window: float | None = None,
) -> tuple[KeyEstimate, TempoEstimate]:
    """Key and tempo of one audio buffer (see :func:`estimate_key`, :func:`estimate_tempo`)."""
    return (
        estimate_key(y, sr, profile=profile, window=key_window),
        estimate_tempo(y, sr),
    )


def analyze_file(
    path: str | Path,
    *,
    profile: str = DEFAULT_PROFILE,
    key_window: float | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    beats: bool = False,
) -> dict[str, Any]:
    """Key, mode and tempo of one audio file.

    Parameters
    ----------
    path : str or Path
    profile : {"krumhansl", "temperley", "albrecht"}
    key_window : float or None
        See ``window`` in :func:`estimate_key`.
    offset, duration : float
        Analyse only this window of the file, seconds (``duration=None``: to the end).
    beats : bool
        Include the beat times (seconds, a list) under ``"beats"``.

    Returns
    -------
    dict
        ``path, key, mode, key_confidence, bpm, tempo_confidence`` (and ``beats``). ``key``, ``mode``
        and ``bpm`` are None for silent, unpitched or unpulsed audio.

    Raises
    ------
    AudioError
        The file is missing or cannot be decoded.
    ParameterError
        Unknown profile or bad window.

    Examples
    --------
    >>> from clapknn.analysis import analyze_file
    >>> analyze_file("song.wav")  # doctest: +SKIP
    {'path': 'song.wav', 'key': 'A', 'mode': 'minor', 'key_confidence': 0.121, 'bpm': 96.02, 'tempo_confidence': 0.41}
    """
    from .audio.decode import load

    _check_profile(profile)
    return analyze_signal(load(path, sr=SAMPLE_RATE, offset=offset, duration=duration), path, profile=profile,
                          key_window=key_window, beats=beats)


def analyze_signal(
    y: np.ndarray, path: str | Path = "<array>", *, profile: str = DEFAULT_PROFILE, key_window: float | None = None,
    beats: bool = False,
) -> dict[str, Any]:
    """:func:`analyze_file` of a signal already decoded at :data:`SAMPLE_RATE` (mono float32), reported
    under ``path``: the embedding engine's decode of a file is reused this way (``Tagger.tag(key_tempo=True)``)."""
    _check_profile(profile)
    k = estimate_key(y, SAMPLE_RATE, profile=profile, window=key_window)
    t = estimate_tempo(y, SAMPLE_RATE, beats=beats)
    row: dict[str, Any] = {
        "path": str(path),
        "key": k.key,
        "mode": k.mode,
        "key_confidence": round(k.confidence, 4),
        "bpm": None if t.bpm is None else round(t.bpm, 2),
        "tempo_confidence": round(t.confidence, 4),
    }
    if beats:
        row["beats"] = [round(float(b), 3) for b in t.beats]
    return row


def analyze_files(
    paths: Iterable[str | Path],
    *,
    profile: str = DEFAULT_PROFILE,
    key_window: float | None = None,
    errors: Literal["raise", "skip"] = "raise",
    progress: bool = False,
) -> "Any":
    """Key, mode and tempo of several files as a table.

    Parameters
    ----------
    paths : iterable of str or Path
        Audio files (folders are not scanned here; see :func:`clapknn.labels.scan_audio`).
    profile : {"krumhansl", "temperley", "albrecht"}
    key_window : float or None
        See ``window`` in :func:`estimate_key`.
    errors : {"raise", "skip"}
        On a file that cannot be decoded: raise its :class:`~clapknn.errors.AudioError`, or leave it
        out and list it, as ``(path, reason)``, in ``table.attrs["skipped"]``.
    progress : bool
        Show a progress bar (tqdm, on stderr, only when stderr is a terminal).

    Returns
    -------
    pandas.DataFrame
        One row per analysed file, columns ``path, key, mode, key_confidence, bpm,
        tempo_confidence`` (:data:`COLUMNS`), in the order of ``paths``.

    Raises
    ------
    AudioError
        With ``errors="raise"``, the first file that cannot be decoded.
    ParameterError
        Unknown profile or ``errors`` value.
    """
    import pandas as pd

    from .progress import progress_bar
    from .errors import AudioError

    if errors not in ("raise", "skip"):
        raise ParameterError(f"errors must be 'raise' or 'skip'; got {errors!r}")
    _check_profile(profile)
    paths = list(paths)
    rows, skipped = [], []
    with progress_bar(len(paths), "analyse", enabled=progress) as bar:
        for path in paths:
            try:
                rows.append(analyze_file(path, profile=profile, key_window=key_window))
            except AudioError as exc:
                if errors == "raise":
                    raise
                log.warning("skipping %s", exc)
                reason = str(exc)
                if reason.startswith(f"{path}: "):
                    reason = reason[len(f"{path}: ") :]
                skipped.append((str(path), reason))
            bar.update(1)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs["skipped"] = skipped
    return table
