"""Key profiles: the weights of the 12 pitch classes in a major and a minor key (three published
sets), the key names, and the 24 key templates built from them. The one home of the profiles:
key finding (:mod:`clapknn.analysis.key`) and the features encoder read them here."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..options import DEFAULT_KEY_PROFILE

__all__ = ["DEFAULT_PROFILE", "KEY_NAMES", "MAJOR_NAMES", "MINOR_NAMES", "PROFILES", "check_profile", "key_templates",
           "pitch_class"]

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
DEFAULT_PROFILE = DEFAULT_KEY_PROFILE

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


def check_profile(profile: str) -> tuple[np.ndarray, np.ndarray]:
    if profile not in PROFILES:
        raise ParameterError(f"unknown key profile {profile!r}; choose one of {', '.join(PROFILES)}")
    major, minor = PROFILES[profile]
    return np.asarray(major, dtype=float), np.asarray(minor, dtype=float)


def key_templates(profile: str = DEFAULT_PROFILE) -> np.ndarray:
    """The 24 key templates of a profile set: unit, zero-mean rows, 0-11 the major keys on C..B
    (the major profile rotated so that its tonic sits on each pitch class), 12-23 the minor keys
    (:data:`KEY_NAMES` order). What :func:`~clapknn.analysis.key.key_scores` correlates with, and
    the key bank of the features encoder.

    Raises
    ------
    ParameterError
        For an unknown profile set.
    """
    major, minor = check_profile(profile)
    templates = np.stack(
        [np.roll(major, k) for k in range(12)] + [np.roll(minor, k) for k in range(12)]
    )  # (24, 12)
    t = templates - templates.mean(axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return t
