"""Key and tempo without machine learning.

One module per job:

- :mod:`~clapknn.analysis.profiles`: the key profiles (Krumhansl & Kessler, Temperley, Albrecht &
  Shanahan), key names and the 24 key templates; the one home of the profiles (the features
  encoder reads them there);
- :mod:`~clapknn.analysis.key`: constant-Q chromagram and key finding (:func:`estimate_key`);
- :mod:`~clapknn.analysis.tempo`: onset envelope, tempo and beats (:func:`estimate_tempo`);
- :mod:`~clapknn.analysis.files`: the entry points for signals and files (:func:`analyze`,
  :func:`analyze_signal`, :func:`analyze_file`, :func:`analyze_files`);
- :mod:`~clapknn.analysis.inputs`: the audio they read (:data:`SAMPLE_RATE`, the checks).

``docs/analysis.md`` explains the choices and reports measured scores.
"""

from __future__ import annotations

from .files import COLUMNS, analyze, analyze_file, analyze_files, analyze_signal
from .inputs import SAMPLE_RATE
from .key import KeyEstimate, chromagram, estimate_key, key_scores
from .profiles import DEFAULT_PROFILE, KEY_NAMES, PROFILES, pitch_class
from .tempo import TempoEstimate, estimate_tempo, onset_envelope

__all__ = [
    "PROFILES",
    "DEFAULT_PROFILE",
    "KEY_NAMES",
    "SAMPLE_RATE",
    "COLUMNS",
    "KeyEstimate",
    "TempoEstimate",
    "chromagram",
    "key_scores",
    "estimate_key",
    "onset_envelope",
    "estimate_tempo",
    "pitch_class",
    "analyze",
    "analyze_signal",
    "analyze_file",
    "analyze_files",
]
