"""Key and tempo of signals and files: the analysis's entry points (:func:`analyze`,
:func:`analyze_signal`, :func:`analyze_file`, :func:`analyze_files`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from ..errors import ParameterError
from .inputs import SAMPLE_RATE
from .key import KeyEstimate, estimate_key
from .profiles import DEFAULT_PROFILE, check_profile
from .tempo import TempoEstimate, estimate_tempo

__all__ = ["COLUMNS", "analyze", "analyze_file", "analyze_files", "analyze_signal"]

log = logging.getLogger(__name__)

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
    from ..audio.decode import load

    check_profile(profile)
    return analyze_signal(load(path, sr=SAMPLE_RATE, offset=offset, duration=duration), path, profile=profile,
                          key_window=key_window, beats=beats)


def analyze_signal(
    y: np.ndarray, path: str | Path = "<array>", *, profile: str = DEFAULT_PROFILE, key_window: float | None = None,
    beats: bool = False,
) -> dict[str, Any]:
    """:func:`analyze_file` of a signal already decoded at :data:`SAMPLE_RATE` (mono float32), reported
    under ``path``: the embedding engine's decode of a file is reused this way (``Tagger.tag(key_tempo=True)``)."""
    check_profile(profile)
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

    from ..errors import AudioError
    from ..progress import progress_bar

    if errors not in ("raise", "skip"):
        raise ParameterError(f"errors must be 'raise' or 'skip'; got {errors!r}")
    check_profile(profile)
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
