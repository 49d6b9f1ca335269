"""Snippet: cut audio into fixed-length, deterministic windows with their start times.

Rules (the same for arrays and files):

- windows of ``length`` seconds start at ``0, hop, 2*hop, ...`` and lie wholly inside the track;
- the tail: when the audio after the last such window lasts at least :data:`TAIL_MIN_FRACTION` of a
  window (5 s of a 10-s snippet), one more window is added, aligned to the track's end (it starts at
  ``duration - length`` and overlaps the one before). A shorter tail is not used. So a 29.6-s track
  gives windows at 0, 10 and 19.6 s; a 24-s track gives 0 and 10 s (its last 4 s are not used).
  Reported start and end times are those of the samples each window holds;
- a track shorter than one window gives a single window at 0, padded to the full length by the
  encoder's rule (:data:`PAD_RULES`, :attr:`clapknn.encoders.Encoder.pad`): ``"repeat"`` loops the
  audio, ending on a partial copy (the ``features`` encoder); ``"repeatpad"`` repeats as many whole
  copies as fit, then zeros (LAION-CLAP's training rule, used by the ``clap`` encoder);
- a window whose RMS (before padding) is below :data:`SILENCE_RMS` is silent: it is dropped and counted.

Every window has exactly ``round(length * sr)`` samples, so an encoder never crops or pads at random.

Sampling (``max_snippets=N``, used when tagging): of a track's windows above, at most ``N`` are
kept, spread evenly over it and away from its ends (:func:`sample_indices`: the window nearest the
middle of each of ``N`` equal parts, so a 4-minute track with ``N=4`` gives the 10-s windows at 30,
90, 140 and 200 s and never the intro or outro). Only those windows are decoded: a format libsndfile
opens (wav, flac, ogg, mp3, aiff...) is read by seeking to each; a file only the fallback decoder
(ffmpeg) reads cannot seek there, so it is decoded once, whole, and the windows are taken from it.
A sampled window that is silent is dropped (and counted) like any other; no other window replaces it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ParameterError
from .signal import resampled_length
from ..options import DEFAULT_SNIPPET_SECONDS  # one home: clapknn.options

__all__ = [
    "DEFAULT_SNIPPET_SECONDS",
    "SILENCE_RMS",
    "SNIPPET_RULES",
    "SnippetBatch",
    "snippet_starts",
    "n_samples",
    "repeat_pad",
    "PAD_RULES",
    "pad_to",
    "check_lengths",
    "cut",
    "iter_snippets",
    "iter_file_snippets",
    "TAIL_MIN_FRACTION",
    "WHOLE_FILE_SECONDS",
    "sample_indices",
    "sampled_windows",
]

logger = logging.getLogger(__name__)

#: RMS (full scale = 1.0) below which a snippet counts as silent: -80 dBFS.
SILENCE_RMS = 1e-4
#: Version of the windowing rules above (2: the end-aligned tail window, windows of long files
#: resampled with context; 3: the encoder's padding rule, silence measured before padding). Part of the embedding cache's key, so vectors cut under other rules are
#: not reused.
SNIPPET_RULES = 3
#: A tail left after the last regular window gets a window of its own (aligned to the track's end)
#: when it lasts at least this fraction of a snippet.
TAIL_MIN_FRACTION = 0.5


def check_lengths(length: float, hop: float | None) -> float:
    if not (length > 0 and np.isfinite(length)):
        raise ParameterError(f"snippet length must be a positive number of seconds, got {length!r}")
    hop = length if hop is None else hop
    if not (hop > 0 and np.isfinite(hop)):
        raise ParameterError(f"hop must be a positive number of seconds, got {hop!r}")
    return float(hop)


def n_samples(length: float, sr: int) -> int:
    """Number of samples in a snippet of ``length`` seconds at ``sr`` Hz."""
    return int(round(length * sr))


def snippet_starts(duration: float, length: float, hop: float | None = None) -> np.ndarray:
    """Start times (seconds) of the snippets of a track of ``duration`` seconds.

    Windows start every ``hop`` seconds and lie inside the track; a tail of at least
    :data:`TAIL_MIN_FRACTION` of ``length`` after the last one gets one more window, starting at
    ``duration - length`` (see the module rules). Returns ``[0.0]`` for a track shorter than
    ``length`` (it will be repeat-padded) and an empty array for an empty track.
    """
    chunks = list(_start_chunks(duration, length, hop))
    return np.concatenate(chunks) if chunks else np.zeros(0)


def _start_chunks(duration: float, length: float, hop: float | None, chunk: int = 4096) -> Iterator[np.ndarray]:
    """:func:`snippet_starts` in pieces of at most ``chunk`` values, so a header that claims years of
    audio costs nothing until its windows are actually read."""
    hop = check_lengths(length, hop)
    if duration <= 0:
        return
    if duration < length:
        yield np.zeros(1)
        return
    count = int(np.floor((duration - length) / hop + 1e-9)) + 1
    for a in range(0, count, chunk):
        yield np.round(np.arange(a, min(a + chunk, count)) * hop, 6)
    tail = round(duration - length, 6)
    if duration - ((count - 1) * hop + length) >= TAIL_MIN_FRACTION * length - 1e-9 and tail > round((count - 1) * hop, 6):
        yield np.array([tail])


def sample_indices(count: int, max_snippets: int | None) -> np.ndarray:
    """Which of a track's ``count`` windows to keep when at most ``max_snippets`` are wanted.

    ``None`` (or ``max_snippets >= count``) keeps them all. Otherwise, for each of ``max_snippets``
    equal parts of the track, the window whose centre is nearest the part's centre (a tie goes to
    the window nearer the track's middle, so the choice is symmetric): the first and last windows
    (intro, outro) are kept only when more than half of the windows are. Deterministic,
    increasing, without repeats.
    """
    if max_snippets is None or count <= max_snippets:
        return np.arange(count)
    centre = (np.arange(int(max_snippets)) + 0.5) * count / int(max_snippets) - 0.5  # in window units
    middle = (count - 1) / 2
    return np.where(centre < middle, np.floor(centre + 0.5), np.ceil(centre - 0.5)).astype(np.int64)


def sampled_windows(
    file_ids: np.ndarray, starts: np.ndarray, durations: np.ndarray, max_snippets: int | None, length: float,
    hop: float | None = None,
) -> np.ndarray:
    """Which of a set of embedded snippets tagging with ``max_snippets`` reads: a boolean mask.

    ``file_ids`` gives each snippet's file (a row of ``durations``, the files' decoded lengths in
    seconds) and ``starts`` its start time. Per file, the windows :func:`sample_indices` picks from the
    file's window grid (:func:`snippet_starts`) are kept, as :func:`iter_file_snippets` reads them; so
    vectors embedded from every window (an index's examples, Ray shards) are voted on as
    :meth:`clapknn.Tagger.tag` would vote on the same files.
    """
    file_ids = np.asarray(file_ids, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.float64)
    keep = np.ones(len(starts), dtype=bool)
    if max_snippets is None:
        return keep
    for i, duration in enumerate(np.asarray(durations, dtype=np.float64)):
        rows = np.flatnonzero(file_ids == i)
        grid = snippet_starts(float(duration), length, hop)
        if not len(rows) or len(grid) <= max_snippets:
            continue
        chosen = grid[sample_indices(len(grid), max_snippets)]
        keep[rows] = np.isclose(starts[rows][:, None], chosen[None, :], atol=1e-6).any(axis=1)
    return keep


def _index(start: float, sr: int, size: int, n: int) -> int:
    """First sample of the window starting at ``start`` s in a track of ``n`` samples: the rounded
    start, moved back onto the track when rounding would push an end-aligned window past its end."""
    i = int(round(start * sr))
    return max(0, min(i, n - size)) if n >= size else i


def _decodable_samples(path, sr: int, claimed: int) -> int:
    """How many samples at ``sr`` a file really decodes to, at most ``claimed`` (its header's
    figure), found by bisection with short reads (a file whose header claims more than it holds)."""
    from . import decode

    probe = max(1, sr // 20)  # 50 ms reads
    lo, hi = 0, max(int(claimed), 0)  # lo decodes, hi does not (or is the claim)
    if decode.load(path, sr=sr, offset=0.0, duration=probe / sr).size == 0:
        return 0
    while hi - lo > probe:
        mid = (lo + hi) // 2
        if decode.load(path, sr=sr, offset=mid / sr, duration=probe / sr).size > 0:
            lo = mid
        else:
            hi = mid
    tail = decode.load(path, sr=sr, offset=lo / sr, duration=2 * probe / sr)
    return lo + int(tail.size)


def repeat_pad(y: np.ndarray, size: int) -> np.ndarray:
    """Loop ``y`` until it has ``size`` samples (crop when longer)."""
    y = np.asarray(y, dtype=np.float32)
    if y.size == 0:
        return np.zeros(size, dtype=np.float32)
    if y.size >= size:
        return y[:size]
    reps = -(-size // y.size)
    return np.tile(y, reps)[:size]


#: How a window shorter than the snippet is filled (see the module rules).
PAD_RULES = ("repeat", "repeatpad")


def pad_to(y: np.ndarray, size: int, rule: str = "repeat") -> np.ndarray:
    """Fill ``y`` to ``size`` samples by ``rule`` (crop when longer).

    ``"repeat"``: :func:`repeat_pad` (loop, the last copy partial). ``"repeatpad"``: as many whole
    copies as fit, then zeros, exactly as laion-clap's ``get_audio_features(data_filling="repeatpad")``.
    """
    if rule == "repeat":
        return repeat_pad(y, size)
    if rule != "repeatpad":
        raise ParameterError(f"unknown padding rule {rule!r}; choose one of {', '.join(PAD_RULES)}")
    y = np.asarray(y, dtype=np.float32)
    if y.size >= size:
        return y[:size]
    out = np.zeros(size, dtype=np.float32)
    if y.size:
        reps = size // y.size
        out[: reps * y.size] = np.tile(y, reps)
    return out


def _is_silent(x: np.ndarray) -> bool:
    return x.size == 0 or float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) < SILENCE_RMS


@dataclass
class SnippetBatch:
    """Snippets of one track: ``audio`` is ``(n, n_samples)``; ``starts``/``ends`` in seconds.

    ``n_silent`` counts windows dropped as silent; ``duration`` is the track's length in seconds.
    """

    audio: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    n_silent: int
    duration: float


def iter_snippets(
    y: np.ndarray, sr: int, length: float = DEFAULT_SNIPPET_SECONDS, hop: float | None = None, *, pad: str = "repeat",
    max_snippets: int | None = None,
) -> Iterator[tuple[float, float, np.ndarray | None]]:
    """The one window cutter: yield ``(start, end, audio)`` for each snippet of a mono array, ``audio``
    ``None`` for a silent one (see the module rules). :func:`cut` collects it; :func:`iter_file_snippets`
    runs it over a file decoded in one read, and cuts windows read by seeking with :func:`_window`.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ParameterError(f"audio must be mono (1-D), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ParameterError("audio buffer is not finite everywhere")
    size = n_samples(length, sr)
    duration = y.size / sr
    starts = snippet_starts(duration, length, hop)
    for s in starts[sample_indices(len(starts), max_snippets)]:
        i = _index(s, sr, size, y.size)
        yield _window(s, y[i : i + size], size, length, duration, pad)


def _window(start: float, x: np.ndarray, size: int, length: float, duration: float, pad: str):
    """``(start, end, audio)`` of one window's samples: ``None`` when silent (measured before padding:
    zeros added by ``"repeatpad"`` do not make it quieter), else padded to ``size``."""
    return float(start), float(min(start + length, duration)), (None if _is_silent(x) else pad_to(x, size, pad))


def cut(
    y: np.ndarray, sr: int, length: float = DEFAULT_SNIPPET_SECONDS, hop: float | None = None, *, pad: str = "repeat",
    max_snippets: int | None = None,
) -> SnippetBatch:
    """Cut a mono array into snippets (see the module rules): :func:`iter_snippets`, collected.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
    sr : int
    length, hop : float
        Seconds; ``hop`` defaults to ``length`` (no overlap).
    pad : {"repeat", "repeatpad"}
        How a track shorter than one window is filled (:func:`pad_to`; the encoder's ``pad``).
    max_snippets : int, optional
        Keep at most this many windows, spread by :func:`sample_indices` (default: all).
    """
    rows, kept, ends, silent = [], [], [], 0
    for start, end, audio in iter_snippets(y, sr, length, hop, pad=pad, max_snippets=max_snippets):
        if audio is None:
            silent += 1
            continue
        rows.append(audio)
        kept.append(start)
        ends.append(end)
    size = n_samples(length, sr)
    audio = np.stack(rows) if rows else np.zeros((0, size), dtype=np.float32)
    return SnippetBatch(audio, np.asarray(kept, dtype=np.float64), np.asarray(ends, dtype=np.float64), silent, np.asarray(y).size / sr)


#: Files up to this long (seconds) are decoded in one read; longer ones window by window, so memory
#: stays bounded by one snippet whatever the file's length. Both give the same samples
#: (:func:`clapknn.audio.decode.load` resamples each window with context around it).
WHOLE_FILE_SECONDS = 600.0


def iter_file_snippets(
    path: str | Path, sr: int, length: float = DEFAULT_SNIPPET_SECONDS, hop: float | None = None, *, pad: str = "repeat",
    max_snippets: int | None = None, on_signal=None,
) -> Iterator[tuple[float, float, np.ndarray | None]]:
    """Yield ``(start, end, audio)`` for each snippet of a file; ``audio`` is ``None`` for a silent one.

    The snippets are those :func:`cut` gives for the whole file decoded at ``sr`` (same rules, same
    samples). Files longer than :data:`WHOLE_FILE_SECONDS` are read one window at a time (seeking),
    so a 3-hour mix never sits in memory whole. ``pad`` is the rule for a track shorter than one
    window (:func:`pad_to`). With ``max_snippets``, only the windows :func:`sample_indices` picks
    are yielded, and only they are decoded where the format can seek (see the module rules).
    ``on_signal``, when given, is called with the whole decoded signal (mono float32 at ``sr``)
    before its windows are cut: such a file is decoded in one read even when sampled (no seeking),
    so whatever else a caller needs from the file at ``sr`` does not decode it again (files longer
    than :data:`WHOLE_FILE_SECONDS` are still read a window at a time, and give no signal).

    Raises
    ------
    AudioError
        When the file cannot be decoded.

    A file whose audio ends before its header says (truncated) gives the windows that decode,
    with a logged warning.
    """
    from . import decode

    check_lengths(length, hop)
    meta = decode.info(path)
    size = n_samples(length, sr)
    n = resampled_length(meta.frames, meta.sample_rate, sr)  # the whole file's length at sr
    starts = None
    if max_snippets is not None:
        starts = snippet_starts(n / sr, length, hop)
        if len(starts) <= max_snippets:
            starts = None  # every window is wanted: read as without sampling
        else:
            starts = starts[sample_indices(len(starts), max_snippets)]
    # a caller that takes the whole signal (on_signal) gets it from one read, windows cut from it
    seek = starts is not None and decode.can_seek(path) and on_signal is None
    whole = decode.load(path, sr=sr) if meta.duration <= WHOLE_FILE_SECONDS and not seek else None
    if whole is not None:
        if on_signal is not None:
            on_signal(whole)
        # sampled again over the decoded length, which can differ from the header's
        yield from iter_snippets(whole, sr, length, hop, pad=pad, max_snippets=None if starts is None else max_snippets)
        return
    duration = n / sr
    if starts is None:
        starts = (s for part in _start_chunks(duration, length, hop) for s in part)
    held = None
    if seek:
        # the last sampled window is read first: when the audio ends before the header says (a
        # truncated file, a lying frame count), the windows are sampled again over what decodes
        last = decode.load(path, sr=sr, offset=_index(starts[-1], sr, size, n) / sr, duration=size / sr)
        if last.size < size:
            real = _decodable_samples(path, sr, n)
            logger.warning(
                "%s: header says %.1f s but the audio ends near %.1f s; using the part that decodes",
                path, duration, real / sr,
            )
            n, duration = real, real / sr
            all_starts = snippet_starts(duration, length, hop)
            starts = all_starts[sample_indices(len(all_starts), max_snippets)]
            if len(starts) == 0:
                return
            last = decode.load(path, sr=sr, offset=_index(starts[-1], sr, size, n) / sr, duration=size / sr)
        held = last
    for j, s in enumerate(starts):
        i = _index(s, sr, size, n)
        if held is not None and j == len(starts) - 1:
            x = held
        else:
            x = decode.load(path, sr=sr, offset=i / sr, duration=size / sr)
            if s > 0 and x.size < size:
                # the header promised more audio than the file holds (a truncated download)
                logger.warning(
                    "%s: header says %.1f s but the audio ends near %.1f s; using the part that decodes",
                    path, duration, s + x.size / sr,
                )
                return
        yield _window(s, x, size, length, duration, pad)
