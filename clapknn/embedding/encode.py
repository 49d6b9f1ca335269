"""Encode stage: run an encoder over files, snippet by snippet, with decoding overlapped.

:func:`embed_files` collects every snippet vector of a list of files into arrays. The work is done
by the streaming engine of :mod:`clapknn.embedding.engine`: a background thread (or N worker processes)
decodes and cuts files (:mod:`clapknn.audio.decode`, :mod:`clapknn.audio.snippet`) into a bounded queue while
the calling thread embeds full batches, so the model never waits for the disk and memory stays
bounded by the queue, whatever the number or length of the files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..encoders.base import Encoder
from ..errors import AudioError, ParameterError
from ..progress import progress_bar
from ..audio.snippet import DEFAULT_SNIPPET_SECONDS
from ..options import DEFAULT_WORKERS

__all__ = ["EmbeddedFiles", "embed_files", "embed_array"]

logger = logging.getLogger(__name__)


@dataclass
class EmbeddedFiles:
    """Snippet embeddings of a list of files.

    Attributes
    ----------
    vectors : np.ndarray [shape=(n_snippets, dim), dtype=float32]
    snippets : pandas.DataFrame
        One row per vector: ``file`` (position in the input list), ``path``, ``start``, ``end``
        (seconds).
    files : pandas.DataFrame
        One row per input file: ``path``, ``duration`` (seconds its snippets cover), ``n_snippets``,
        ``n_silent``, ``sha256``, ``error`` (empty when the file was used).
    n_cached : int
        Files whose vectors came from the embedding cache.
    manifest : dict or None
        Where the vectors were read from a shard directory: its manifest
        (:func:`clapknn.embedding.shards.read_shards`).
    """

    vectors: np.ndarray
    snippets: "pd.DataFrame"  # noqa: F821
    files: "pd.DataFrame"  # noqa: F821
    n_cached: int = 0
    manifest: dict | None = None

    @property
    def failures(self) -> list[tuple[str, str]]:
        """``(path, reason)`` for each file that gave no vector."""
        bad = self.files[self.files["error"] != ""]
        return list(zip(bad["path"], bad["error"]))


def embed_files(
    paths: Sequence[str | Path],
    encoder: Encoder,
    *,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    batch_size: int = 16,
    hashes: bool = True,
    progress: bool = False,
    desc: str = "embedding",
    cache=None,
    workers: int | str = DEFAULT_WORKERS,
    max_snippets: int | None = None,
    on_signal=None,
) -> EmbeddedFiles:
    """Embed every snippet of every file.

    Files that cannot be decoded, or that are entirely silent, are not fatal: they get an ``error``
    in :attr:`EmbeddedFiles.files` and no vectors.

    Parameters
    ----------
    paths : sequence of paths
    encoder : Encoder
    snippet_seconds, hop_seconds : float
        Snippet length and hop (defaults to the length).
    batch_size : int
        Snippets per call to ``encoder.embed``. Does not change the vectors.
    hashes : bool
        Record each file's SHA-256.
    progress : bool
        Show a progress bar (only when stderr is a terminal).
    cache : bool, path or EmbeddingCache, optional
        Reuse and store vectors in an embedding cache (:mod:`clapknn.embedding.cache`); ``True`` uses the
        default folder. Unchanged files are then neither decoded nor encoded.
    workers : int or "auto"
        Worker processes (:mod:`clapknn.embedding.workers`); 0 decodes in a thread while the encoder
        runs. An encoder that encodes in workers (``features``) encodes there too; ``"auto"``: one per
        core for such an encoder, else 0.
    max_snippets : int, optional
        At most this many snippets per file, spread over it (:func:`clapknn.audio.snippet.sample_indices`)
        and read by seeking; ``None`` (default): every snippet.
    on_signal : callable, optional
        ``on_signal(path, y)`` for each file the engine decoded in one read, with its whole signal
        ``y`` at ``encoder.sample_rate`` (:attr:`~clapknn.embedding.engine.FileEmbedding.signal`), as the
        file is done: what else a caller needs from the file at that rate costs no second decode.

    Notes
    -----
    The work is done by :mod:`clapknn.embedding.engine` (decoding ahead of the encoder, cache lookups),
    collected here into arrays.
    """
    import pandas as pd

    from .engine import iter_embeddings

    vectors: list[np.ndarray] = []
    file_ids, starts, ends = [], [], []
    file_rows = []
    n_cached = 0
    bar = progress_bar(len(paths), desc, enabled=progress, unit="track")
    try:
        for fe in iter_embeddings(
            paths, encoder, snippet_seconds=snippet_seconds, hop_seconds=hop_seconds, batch_size=batch_size,
            hashes=hashes, cache=cache or None, workers=workers, max_snippets=max_snippets,
            keep_signals=on_signal is not None,
        ):
            if fe.signal is not None:
                on_signal(fe.path, fe.signal)
            if fe.error:
                logger.info("skipped %s: %s", fe.path, fe.error)
            elif fe.n_snippets:
                vectors.append(fe.vectors)
                file_ids.append(np.full(fe.n_snippets, fe.index, dtype=np.int64))
                starts.append(fe.starts)
                ends.append(fe.ends)
            n_cached += fe.cached
            file_rows.append((fe.path, fe.duration, fe.n_snippets, fe.n_silent, fe.sha256, fe.error))
            bar.update(1)
    finally:
        bar.close()
    if cache:
        logger.info("embedding cache: %d of %d file(s) from the cache", n_cached, len(file_rows))
    out_vectors = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), dtype=np.float32)
    ids = np.concatenate(file_ids) if file_ids else np.zeros(0, dtype=np.int64)
    names = [file_rows[i][0] for i in ids.tolist()]
    snippets = pd.DataFrame(
        {
            "file": ids,
            "path": names,
            "start": np.concatenate(starts) if starts else np.zeros(0),
            "end": np.concatenate(ends) if ends else np.zeros(0),
        }
    )
    files = pd.DataFrame(file_rows, columns=["path", "duration", "n_snippets", "n_silent", "sha256", "error"])
    return EmbeddedFiles(out_vectors, snippets, files, n_cached)


def embed_array(
    y: np.ndarray,
    sr: int,
    encoder: Encoder,
    *,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    batch_size: int = 16,
    max_snippets: int | None = None,
) -> tuple[np.ndarray, "pd.DataFrame"]:  # noqa: F821
    """Embed an in-memory signal; returns ``(vectors, snippets)``.

    Parameters
    ----------
    y : np.ndarray
        Mono ``(n,)``, or ``(n_samples, n_channels)`` / ``(n_channels, n_samples)`` with at most
        :data:`clapknn.audio.signal.MAX_ARRAY_CHANNELS` channels; float, or integer PCM (scaled as
        soundfile does). Checked by :func:`clapknn.audio.signal.as_mono`, as decoded files are.
    sr : int
        Its sample rate, Hz.
    encoder : Encoder
    snippet_seconds, hop_seconds, batch_size, max_snippets
        As in :func:`embed_files`.

    Raises
    ------
    ParameterError
        An ambiguous shape (the message says how to pass the audio), a bad sample rate.
    AudioError
        NaN or infinite samples, or samples far beyond full scale; an encoder that gives NaN or
        infinite vectors for it (as files are checked, :func:`clapknn.embedding.engine.vector_problem`).

    The signal goes through the engine (:func:`~clapknn.embedding.engine.iter_embeddings` with a
    :class:`~clapknn.embedding.engine.Signal`), as files do: same windows, batches and vector check.
    """
    import pandas as pd

    from ..audio.signal import SAMPLE_RATE_RANGE, as_mono
    from ..audio.snippet import check_lengths
    from .engine import Signal, empty_reason, iter_embeddings

    y = as_mono(y)
    lo, hi = SAMPLE_RATE_RANGE
    try:
        ok = not isinstance(sr, bool) and float(sr).is_integer() and lo <= float(sr) <= hi
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ParameterError(f"sample rate must be a whole number of Hz in {lo}-{hi}, got {sr!r}")
    check_lengths(snippet_seconds, hop_seconds)
    (fe,) = iter_embeddings(
        [Signal(y, int(sr))], encoder, snippet_seconds=snippet_seconds, hop_seconds=hop_seconds, batch_size=batch_size,
        hashes=False, max_snippets=max_snippets,
    )
    if fe.error and fe.error != empty_reason(fe.n_silent):  # the check every embedding path makes
        raise AudioError(f"<array>: {fe.error}")
    snippets = pd.DataFrame({"file": 0, "path": "<array>", "start": fe.starts, "end": fe.ends})
    return fe.vectors, snippets
