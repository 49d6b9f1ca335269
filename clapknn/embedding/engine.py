"""Streaming embedding: cached, multi-process decoding feeding one batched encoder, file by file.

:func:`iter_embeddings` is the one embedding engine: behind :func:`clapknn.embedding.encode.embed_files`
(index building, tagging, evaluation) and resumable tagging (:func:`tag_to_csv`). Data flow::

    paths ──► source thread ──► bounded queue ──► caller thread: batches ──► encoder.embed
               │  content key (memo) → cache hit? ────────────────────► (vectors from the cache)
               └► decode: in the thread (workers=0) or in N worker processes (workers=N)

- **Cache.** With an :class:`~clapknn.embedding.cache.EmbeddingCache`, a file whose bytes, encoder identity
  and snippet settings were seen before is neither decoded nor encoded; fresh results are stored as
  soon as each file is done.
- **Workers.** ``workers=N`` decodes and resamples in N processes (``spawn``, so it is safe beside
  torch and FAISS threads) while this process encodes. At most ``2 * N`` files are in flight, so
  memory does not grow with the library. Files longer than
  :data:`~clapknn.audio.snippet.WHOLE_FILE_SECONDS` are streamed window by window in this process instead,
  so no worker ever holds a whole long file.
- **Order and results.** Files come out in input order, each as soon as its last snippet is
  encoded. Batches are cut in input order whatever the number of workers (cache hits simply drop
  out of the stream), and encoders are batch-independent, so the vectors are the same.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .cache import CachedFile, EmbeddingCache, resolve_cache, settings_key
from ..audio.digests import file_sha256
from ..encoders.base import Encoder
from ..errors import AudioError, ClapknnError, ParameterError
from ..audio.snippet import DEFAULT_SNIPPET_SECONDS
from ..options import DEFAULT_WORKERS

__all__ = ["FileEmbedding", "Signal", "empty_reason", "iter_embeddings", "vector_problem"]

logger = logging.getLogger(__name__)

_QUEUE_SNIPPETS = 64  # snippets decoded ahead of the encoder
_HIT_BATCH = 64  # cache hits handed to the consumer per queue message


@dataclass(frozen=True)
class Signal:
    """An in-memory source for :func:`iter_embeddings`: mono float32 samples ``y`` at ``sr`` Hz (checked
    by :func:`clapknn.audio.signal.as_mono` first), reported under ``name``. Cut in the engine's own
    thread (never sent to a worker process) and never cached."""

    y: np.ndarray
    sr: int
    name: str = "<array>"

    def __str__(self) -> str:
        return self.name


@dataclass
class FileEmbedding:
    """The snippet vectors of one file.

    Attributes
    ----------
    index : int
        Position of the file in the input list.
    path : str
    vectors : np.ndarray [shape=(n_snippets, dim), dtype=float32]
        Empty when the file failed or is silent.
    starts, ends : np.ndarray [shape=(n_snippets,)]
        Seconds.
    duration : float
        Seconds covered by the file's snippets (the end of the last one, silent ones included).
    n_silent : int
    sha256 : str
        Empty when not computed.
    error : str
        Empty when the file gave vectors.
    cached : bool
        The vectors came from the embedding cache.
    signal : np.ndarray or None
        With ``keep_signals=True``: the file's whole signal at the encoder's rate when the engine
        decoded it in one read (else ``None``: a cache hit, a file read by seeking, a long file).
    """

    index: int
    path: str
    vectors: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    duration: float
    n_silent: int
    sha256: str
    error: str
    cached: bool = False
    signal: np.ndarray | None = None

    @property
    def n_snippets(self) -> int:
        """Number of snippet vectors of the file."""
        return int(len(self.vectors))


@dataclass
class _State:
    path: str
    duration: float = 0.0
    n_snippets: int = 0
    n_silent: int = 0
    sha256: str = ""
    error: str = ""
    cacheable: bool = True  # False after a decoding error: those are not cached
    entry: CachedFile | None = None  # set for a cache hit
    content: str = ""  # the cache's key for the file's audio (EmbeddingCache.content_key)
    signal: np.ndarray | None = None  # the whole decoded signal, when asked for and read in one go


def vector_problem(vectors: np.ndarray) -> str:
    """Why an encoder's vectors cannot be used (``""`` when they can): a vector with NaN or inf
    would poison every later search. The one check of every embedding path (files, arrays, Ray)."""
    if not np.isfinite(vectors).all():
        return "the encoder gave non-finite values (NaN or inf) for this audio"
    return ""


def empty_reason(n_silent: int) -> str:
    """The reason given for a file or signal that gave no vector because it is silent (or empty)."""
    return f"silent (all {n_silent} snippet(s) below -80 dBFS)" if n_silent else "no audio"


def _error_text(exc: BaseException, path: str) -> str:
    """The reason recorded for a file that failed (the same text as :func:`clapknn.embedding.encode.embed_files`)."""
    if isinstance(exc, AudioError):
        text = str(exc)
        return text.split(": ", 1)[-1] if text.startswith(path) else text
    if isinstance(exc, OSError):
        return exc.strerror or f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _file_events(
    path, sr: int, length: float, hop: float | None, hashes: bool, pad: str = "repeat", max_snippets: int | None = None,
    keep_signal: bool = False,
) -> Iterator[tuple]:
    """Yield ``("snippet", start, end, audio)`` per non-silent snippet, then ``("file", state)``;
    ``pad`` is the encoder's rule for a track shorter than one snippet, ``max_snippets`` the most
    snippets taken from the track (:func:`clapknn.audio.snippet.sample_indices`; ``None``: all)."""
    from ..audio.snippet import iter_file_snippets, iter_snippets

    state = _State(str(path))
    try:
        if isinstance(path, Signal):
            from ..audio.signal import resample

            events = iter_snippets(resample(path.y, path.sr, sr), sr, length, hop, pad=pad, max_snippets=max_snippets)
        else:
            keep = (lambda y: setattr(state, "signal", y)) if keep_signal else None
            events = iter_file_snippets(path, sr, length, hop, pad=pad, max_snippets=max_snippets, on_signal=keep)
        for start, end, audio in events:
            state.duration = max(state.duration, end)
            if audio is None:
                state.n_silent += 1
                continue
            state.n_snippets += 1
            yield ("snippet", start, end, audio)
        if hashes and not isinstance(path, Signal):
            state.sha256 = file_sha256(path)
        if state.n_snippets == 0:
            state.error = empty_reason(state.n_silent)
    except (AudioError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        state.error = _error_text(exc, path)
        state.cacheable = False
    yield ("file", state)


def _decode_in_worker(
    path: str, sr: int, length: float, hop: float | None, hashes: bool, pad: str = "repeat", max_snippets: int | None = None,
    keep_signal: bool = False,
):
    """Run in a worker process: decode and cut one file.

    Returns ``None`` for a file longer than :data:`~clapknn.audio.snippet.WHOLE_FILE_SECONDS` (the caller
    streams it instead), else ``(state, starts, ends, audio)`` with ``audio`` of shape
    ``(n, n_samples)``.
    """
    from ..audio.decode import sndfile_info
    from ..audio.snippet import WHOLE_FILE_SECONDS

    try:
        import os
        import stat

        # only a regular file goes to libsndfile here: opening a named pipe would block forever
        if stat.S_ISREG(os.stat(path).st_mode):
            meta = sndfile_info(Path(path))  # (its decoders' stderr notes held, as in decode.load)
            if not isinstance(meta, BaseException) and meta.duration > WHOLE_FILE_SECONDS:
                return None
    except Exception:  # noqa: BLE001 - not readable by libsndfile: the decoder below says why
        pass
    starts, ends, rows = [], [], []
    state = None
    for ev in _file_events(path, sr, length, hop, hashes, pad, max_snippets, keep_signal):
        if ev[0] == "snippet":
            starts.append(ev[1])
            ends.append(ev[2])
            rows.append(ev[3])
        else:
            state = ev[1]
    audio = np.stack(rows) if rows else None
    return state, starts, ends, audio


def _source(paths, encoder, length, hop, hashes, cache, key, workers, q, stop, max_snippets=None, keep_signals=False):
    """Producer thread: emit ``snippet``/``file`` messages in input order."""
    pool = None

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def stream(i: int, p: str, sha: str, content: str) -> bool:
        for ev in _file_events(p, encoder.sample_rate, length, hop, hashes and not sha, encoder.pad, max_snippets, keep_signals):
            if ev[0] == "snippet":
                if not put(("snippet", i, ev[1], ev[2], ev[3])):
                    return False
            else:
                state = ev[1]
                state.sha256, state.content = state.sha256 or sha, content
                if not put(("file", i, state)):
                    return False
        return True

    def emit(i: int, p: str, sha: str, content: str, job) -> bool:
        if isinstance(job, _State):  # a cache hit
            return put(("file", i, job))
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory)
            raise ClapknnError(f"decode worker failed on {p}: {type(exc).__name__}: {exc}") from exc
        if result is None:  # a long file: stream it here, window by window
            return stream(i, p, sha, content)
        state, starts, ends, audio = result
        for j in range(len(starts)):
            if not put(("snippet", i, starts[j], ends[j], audio[j])):
                return False
        state.sha256, state.content = state.sha256 or sha, content
        return put(("file", i, state))

    hits: list = []  # cache hits not yet handed over: sent in groups, one queue message each
    try:
        window = 2 * workers
        inflight: deque = deque()  # (i, path, sha, content key, future or cache-hit state), in input order
        for i, p in enumerate(paths):
            if stop.is_set():
                return
            sha = content = ""
            if isinstance(p, Signal):  # cut here, after every file before it, and never cached
                if hits:
                    if not put(("files", hits)):
                        return
                    hits = []
                while inflight:
                    if not emit(*inflight.popleft()):
                        return
                if not stream(i, p, sha, content):
                    return
                continue
            if cache is not None:
                try:
                    sha, content = cache.content_key(p)
                except OSError:
                    sha = content = ""  # missing or unreadable: the decoder reports it
                if content:
                    entry = cache.get(key, content, dim=encoder.dim)
                    if entry is not None:
                        state = _State(p, entry.duration, len(entry.vectors), entry.n_silent, sha, entry=entry)
                        if not len(entry.vectors):
                            state.error = empty_reason(entry.n_silent)
                        if inflight:
                            inflight.append((i, p, sha, content, state))
                        else:
                            hits.append((i, state))
                            if len(hits) >= _HIT_BATCH:
                                if not put(("files", hits)):
                                    return
                                hits = []
                        continue
                if hits:  # hand over the hits gathered so far before anything else
                    if not put(("files", hits)):
                        return
                    hits = []
            if not workers:
                if not stream(i, p, sha, content):
                    return
                continue
            if pool is None:  # started on the first file to decode: a warm cache never pays for it
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            job = pool.submit(
                _decode_in_worker, p, encoder.sample_rate, length, hop, hashes and not sha, encoder.pad, max_snippets,
                keep_signals,
            )
            inflight.append((i, p, sha, content, job))
            # emit whatever is ready at the head; block only when the window is full
            while inflight and (
                isinstance(inflight[0][4], _State)
                or inflight[0][4].done()
                or sum(not isinstance(x[4], _State) for x in inflight) > window
            ):
                if not emit(*inflight.popleft()):
                    return
        if hits and not put(("files", hits)):
            return
        while inflight:
            if not emit(*inflight.popleft()):
                return
    except BaseException as exc:  # surfaced in the consumer
        q.put(("crash", exc))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        q.put(("end",))


def iter_embeddings(
    paths: Sequence[str | Path | Signal],
    encoder: Encoder,
    *,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    batch_size: int = 16,
    hashes: bool = True,
    cache: "bool | str | Path | EmbeddingCache | None" = None,
    workers: int = DEFAULT_WORKERS,
    max_snippets: int | None = None,
    keep_signals: bool = False,
) -> Iterator[FileEmbedding]:
    """Embed files one after the other, yielding each as soon as it is done (see the module doc).

    Parameters
    ----------
    paths : sequence of paths or :class:`Signal`
        Files, or in-memory signals (cut in this process, never cached).
    encoder : Encoder
    snippet_seconds, hop_seconds : float
        Snippet length and hop (the hop defaults to the length).
    batch_size : int
        Snippets per call to ``encoder.embed``.
    hashes : bool
        Record each file's SHA-256 (always done when a cache is used).
    cache : bool, path or EmbeddingCache, optional
        ``True`` for the default cache folder (:func:`clapknn.embedding.cache.default_cache_dir`).
    workers : int
        Decoding processes; 0 decodes in a thread of this process.
    max_snippets : int, optional
        At most this many snippets per file, spread over it and read by seeking
        (:func:`clapknn.audio.snippet.iter_file_snippets`); ``None`` (default) takes every snippet.
    keep_signals : bool
        Hand each file's whole decoded signal (at ``encoder.sample_rate``) back in
        :attr:`FileEmbedding.signal` when the engine decoded it in one read, so a caller that needs the
        file at that rate too (key and tempo analysis) does not decode it again.

    Yields
    ------
    FileEmbedding
        One per input path, in input order.
    """
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ParameterError(f"workers must be >= 0, got {workers}")
    from ..options import check_max_snippets

    max_snippets = check_max_snippets(max_snippets)
    store = resolve_cache(cache)
    key = settings_key(encoder.identity(), snippet_seconds, hop_seconds, max_snippets) if store is not None else ""
    cache_settings = (
        {"encoder": encoder.identity(), "snippet_seconds": snippet_seconds, "hop_seconds": hop_seconds or snippet_seconds}
        if store is not None
        else None
    )
    if cache_settings is not None and max_snippets is not None:
        cache_settings["max_snippets"] = max_snippets
    paths = [p if isinstance(p, Signal) else str(Path(p)) for p in paths]
    q: queue.Queue = queue.Queue(maxsize=_QUEUE_SNIPPETS)
    stop = threading.Event()
    worker = threading.Thread(
        target=_source,
        args=(paths, encoder, snippet_seconds, hop_seconds, hashes, store, key, workers, q, stop, max_snippets, keep_signals),
        daemon=True,
    )
    worker.start()

    pending: list[np.ndarray] = []
    pending_ids: list[int] = []
    rows: dict[int, list] = {}  # file -> [starts, ends, vectors]
    outstanding: dict[int, int] = {}
    done: dict[int, _State] = {}
    next_i = 0
    dim = encoder.dim

    def flush() -> None:
        if not pending:
            return
        vecs = np.asarray(encoder.embed(np.stack(pending)), dtype=np.float32)
        for i, v in zip(pending_ids, vecs):
            rows[i][2].append(v)
            outstanding[i] -= 1
        pending.clear()
        pending_ids.clear()

    def finished(i: int) -> FileEmbedding:
        state = done.pop(i)
        acc = rows.pop(i, ([], [], []))
        outstanding.pop(i, None)
        if state.entry is not None:
            e = state.entry
            return FileEmbedding(i, str(paths[i]), e.vectors, e.starts, e.ends, e.duration, e.n_silent, state.sha256, state.error, True)
        # what the vectors say of the whole track, from all of its snippets read here
        stacked = np.asarray(encoder.track_context(np.stack(acc[2])), dtype=np.float32) if acc[2] else None
        if not state.error and stacked is not None and vector_problem(stacked):
            state.error = vector_problem(stacked)
            state.cacheable = False
        if state.error:
            vectors, starts, ends = np.zeros((0, dim), np.float32), np.zeros(0), np.zeros(0)
        else:
            vectors = stacked if stacked is not None else np.zeros((0, dim), np.float32)
            starts, ends = np.asarray(acc[0], dtype=np.float64), np.asarray(acc[1], dtype=np.float64)
        if store is not None and state.cacheable and state.content:
            store.put(key, state.content, CachedFile(vectors, starts, ends, state.duration, state.n_silent), settings=cache_settings)
        return FileEmbedding(
            i, str(paths[i]), vectors, starts, ends, state.duration, state.n_silent, state.sha256, state.error,
            signal=state.signal,
        )

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
                acc = rows.setdefault(i, ([], [], []))
                acc[0].append(start)
                acc[1].append(end)
                pending.append(audio)
                pending_ids.append(i)
                outstanding[i] = outstanding.get(i, 0) + 1
                if len(pending) >= batch_size:
                    flush()
            elif kind == "files":
                for i, state in item[1]:
                    done[i] = state
            else:
                _, i, state = item
                done[i] = state
            while next_i in done and outstanding.get(next_i, 0) == 0:
                yield finished(next_i)
                next_i += 1
        flush()
        while next_i in done:
            yield finished(next_i)
            next_i += 1
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()
        if store is not None:
            store.close()
