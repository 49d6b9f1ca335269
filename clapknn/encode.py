"""Encode stage: run an encoder over files, snippet by snippet, with decoding overlapped.

A background thread decodes and cuts files (:mod:`clapknn.decode`, :mod:`clapknn.snippet`) into a
bounded queue while the calling thread embeds full batches, so the model never waits for the disk
and memory stays bounded by the queue, whatever the number or length of the files.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .encoders.base import Encoder
from .errors import AudioError, ParameterError
from .snippet import DEFAULT_SNIPPET_SECONDS, iter_file_snippets

__all__ = ["EmbeddedFiles", "embed_files", "file_sha256", "progress_bar"]

logger = logging.getLogger(__name__)

_QUEUE_SNIPPETS = 64  # snippets decoded ahead of the encoder


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes.

    Raises ``OSError`` for anything but a regular file (reading a named pipe would block forever).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file (pipe, socket or device)", str(path))
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def progress_bar(total: int | None, desc: str, *, enabled: bool):
    """A tqdm bar on stderr, or a silent stand-in when ``enabled`` is false or stderr is no terminal."""
    import sys

    shown = enabled and sys.stderr.isatty()
    if shown:
        from tqdm.auto import tqdm
    else:  # tqdm.auto warns in a notebook without ipywidgets, even for a bar that is never drawn
        from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", disable=not shown, leave=False)


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
        One row per input file: ``path``, ``duration``, ``n_snippets``, ``n_silent``, ``sha256``,
        ``error`` (empty when the file was used).
    """

    vectors: np.ndarray
    snippets: "pd.DataFrame"  # noqa: F821
    files: "pd.DataFrame"  # noqa: F821

    @property
    def failures(self) -> list[tuple[str, str]]:
        """``(path, reason)`` for each file that gave no vector."""
        bad = self.files[self.files["error"] != ""]
        return list(zip(bad["path"], bad["error"]))


@dataclass
class _FileState:
    path: str
    duration: float = 0.0
    n_snippets: int = 0
    n_silent: int = 0
    sha256: str = ""
    error: str = ""
    rows: list = field(default_factory=list)


def _produce(paths, encoder, length, hop, hashes, q, stop):
    try:
        for i, p in enumerate(paths):
            if stop.is_set():
                return
            state = _FileState(str(p))
            try:
                for start, end, audio in iter_file_snippets(p, encoder.sample_rate, length, hop):
                    state.duration = max(state.duration, end)
                    if audio is None:
                        state.n_silent += 1
                        continue
                    state.n_snippets += 1
                    q.put(("snippet", i, start, end, audio))
                    if stop.is_set():
                        return
                if hashes:
                    state.sha256 = file_sha256(p)
                if state.n_snippets == 0 and not state.error:
                    state.error = (
                        f"silent (all {state.n_silent} snippet(s) below -80 dBFS)" if state.n_silent else "no audio"
                    )
            except AudioError as exc:
                state.error = str(exc).split(": ", 1)[-1] if str(exc).startswith(str(p)) else str(exc)
            except OSError as exc:
                state.error = exc.strerror or f"{type(exc).__name__}: {exc}"
            except (ValueError, RuntimeError, MemoryError) as exc:
                state.error = f"{type(exc).__name__}: {exc}"
            q.put(("file", i, state))
    except BaseException as exc:  # pragma: no cover - surfaced in the consumer
        q.put(("crash", exc))
    finally:
        q.put(("end",))


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
    workers: int = 0,
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
        Reuse and store vectors in an embedding cache (:mod:`clapknn.cache`); ``True`` uses the
        default folder. Unchanged files are then neither decoded nor encoded.
    workers : int
        Decode in this many worker processes (:mod:`clapknn.stream`); 0 decodes in a thread.
    """
    import pandas as pd

    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    if (cache is not None and cache is not False) or workers:
        from .stream import embed_files_streamed

        return embed_files_streamed(
            paths, encoder, snippet_seconds=snippet_seconds, hop_seconds=hop_seconds, batch_size=batch_size,
            hashes=hashes, progress=progress, desc=desc, cache=cache, workers=workers,
        )
    paths = [Path(p) for p in paths]
    q: queue.Queue = queue.Queue(maxsize=_QUEUE_SNIPPETS)
    stop = threading.Event()
    worker = threading.Thread(
        target=_produce, args=(paths, encoder, snippet_seconds, hop_seconds, hashes, q, stop), daemon=True
    )
    worker.start()

    chunks: list[np.ndarray] = []
    rows: list[tuple[int, str, float, float]] = []
    pending: list[np.ndarray] = []
    states: dict[int, _FileState] = {}

    def flush() -> None:
        if pending:
            chunks.append(np.asarray(encoder.embed(np.stack(pending)), dtype=np.float32))
            pending.clear()

    bar = progress_bar(len(paths), desc, enabled=progress)
    try:
        while True:
            item = q.get()
            kind = item[0]
            if kind == "end":
                break
            if kind == "crash":
                raise item[1]
            if kind == "snippet":
                _, i, start, end, audio = item
                pending.append(audio)
                rows.append((i, str(paths[i]), start, end))
                if len(pending) >= batch_size:
                    flush()
            else:
                _, i, state = item
                states[i] = state
                if state.error:
                    logger.info("skipped %s: %s", state.path, state.error)
                bar.update(1)
        flush()
    finally:
        stop.set()
        bar.close()
        # drain so the producer can exit
        while worker.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()

    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    snippets = pd.DataFrame(rows, columns=["file", "path", "start", "end"])
    # a vector with NaN/inf would poison every later search: drop its whole file, with a reason
    for i in sorted({rows[r][0] for r in np.flatnonzero(~np.isfinite(vectors).all(axis=1))}):
        if not states[i].error:
            states[i].error = "the encoder gave non-finite values (NaN or inf) for this audio"
    failed = {i for i, s in states.items() if s.error}
    if failed and len(snippets):
        keep = ~snippets["file"].isin(failed).to_numpy()
        vectors, snippets = vectors[keep], snippets[keep].reset_index(drop=True)
        for i in failed:
            states[i].n_snippets = 0
    files = pd.DataFrame(
        [
            (s.path, s.duration, s.n_snippets, s.n_silent, s.sha256, s.error)
            for s in (states[i] for i in range(len(paths)))
        ],
        columns=["path", "duration", "n_snippets", "n_silent", "sha256", "error"],
    )
    return EmbeddedFiles(vectors, snippets, files)


def embed_array(
    y: np.ndarray,
    sr: int,
    encoder: Encoder,
    *,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, "pd.DataFrame"]:  # noqa: F821
    """Embed an in-memory mono (or ``(channels, n)``) array; returns ``(vectors, snippets)``."""
    import pandas as pd

    from .decode import resample
    from .snippet import cut

    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise ParameterError(f"audio must be 1-D (mono) or 2-D (channels, samples), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise AudioError("audio buffer is not finite everywhere")
    y = resample(y, int(sr), encoder.sample_rate)
    batch = cut(y, encoder.sample_rate, snippet_seconds, hop_seconds)
    parts = [encoder.embed(batch.audio[i : i + batch_size]) for i in range(0, len(batch.audio), batch_size)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    snippets = pd.DataFrame({"file": 0, "path": "<array>", "start": batch.starts, "end": batch.ends})
    return np.asarray(vectors, dtype=np.float32), snippets
