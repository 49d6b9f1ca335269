"""Key without machine learning: a constant-Q chromagram of the harmonic part of the signal, tuned to the recording's own
reference pitch, summed over the track (or over sliding windows), correlated with the 24 rotations of a
major and a minor key profile (the Krumhansl-Schmuckler method; profiles by Krumhansl & Kessler,
Temperley, or Albrecht & Shanahan, the default). The confidence is the margin between the best and the
runner-up correlation.

``docs/analysis.md`` explains the choices and reports measured scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError
from .inputs import SAMPLE_RATE, check_audio, is_silent
from .profiles import DEFAULT_PROFILE, KEY_NAMES, MAJOR_NAMES, MINOR_NAMES, check_profile, key_templates, pitch_class

__all__ = ["KeyEstimate", "chromagram", "estimate_key", "key_scores"]

CHROMA_HOP = 2048  # samples (~93 ms): key needs no finer time resolution
CQT_FMIN = 32.70  # Hz, C1: the lowest bass notes still define the key
CQT_OCTAVES = 7  # C1 .. B7
CQT_BINS_PER_OCTAVE = 36  # three bins per semitone, so a detuned partial still lands on its semitone


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

    y = check_audio(y, sr)
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
    t = key_templates(profile)
    x = np.asarray(pc_profile, dtype=float)
    if x.shape[-1] != 12:
        raise ParameterError(f"pitch-class profile must have 12 entries; got shape {x.shape}")
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
    y = check_audio(y, sr)
    check_profile(profile)
    if window is not None and not window > 0:
        raise ParameterError(f"window must be a positive number of seconds or None; got {window!r}")
    if hop is not None and not hop > 0:
        raise ParameterError(f"hop must be a positive number of seconds or None; got {hop!r}")
    if is_silent(y):
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
