"""Streaming embedding: cached, multi-process decoding (and encoding) file by file.

:func:`iter_embeddings` is the one embedding engine: behind :func:`clapknn.embedding.encode.embed_files`
(index building, tagging, evaluation) and resumable tagging (:func:`tag_to_csv`). Data flow::

    paths ──► source thread ──► bounded queue ──► caller thread: batches ──► encoder.embed
               │  content key (memo) → cache hit? ────────────────────► (vectors from the cache)
               ├► decode: in the thread (workers=0) or in N worker processes (workers=N)
               └► decode + encode in N worker processes (an encoder that encodes in workers) ──► vectors

- **Cache.** With an :class:`~clapknn.embedding.cache.EmbeddingCache`, a file whose bytes, encoder identity
  and snippet settings were seen before is neither decoded nor encoded; fresh results are stored as
  soon as each file is done.
- **Workers** (:mod:`clapknn.embedding.workers`). ``workers=N`` runs each file in one of N processes
  (forks of a ``forkserver`` server, so they are safe beside torch and FAISS threads and start
  with their modules loaded). For an encoder whose ``encodes_in_workers`` is true (``features``) the
  worker decodes, cuts and encodes the file and sends back its vectors; for the others (CLAP) it
  decodes and cuts, and this process encodes full batches. ``workers="auto"`` picks one per core or 0
  (:func:`~clapknn.embedding.workers.resolve_workers`). At most ``2 * N`` files are in flight, so
  memory does not grow with the library. Files longer than
  :data:`~clapknn.audio.snippet.WHOLE_FILE_SECONDS` are not decoded whole anywhere: a decoding worker
  leaves them to this process, which streams them window by window; an encoding worker streams them
  itself, a batch at a time.
- **Order and results.** Files come out in input order, each as soon as its last snippet is
  encoded. Batches are cut in input order whatever the number of workers (cache hits simply drop
  out of the stream), and encoders are batch-independent and embed every snippet on its own, so
  the vectors are the same whichever process encodes them. The NaN/inf check
  (:func:`vector_problem`) is made here, once per file, for every path.
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
from .workers import FileState, Signal, decode_file, embed_file, empty_reason, file_events, resolve_workers, worker_pool
from ..encoders.base import Encoder
from ..errors import ClapknnError, ParameterError
from ..audio.snippet import DEFAULT_SNIPPET_SECONDS
from ..options import DEFAULT_WORKERS

__all__ = ["FileEmbedding", "Signal", "empty_reason", "iter_embeddings", "vector_problem"]

logger = logging.getLogger(__name__)

_QUEUE_SNIPPETS = 64  # snippets decoded ahead of the encoder
_HIT_BATCH = 64  # cache hits handed to the consumer per queue message


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


def vector_problem(vectors: np.ndarray) -> str:
    """Why an encoder's vectors cannot be used (``""`` when they can): a vector with NaN or inf
    would poison every later search. The one check of every embedding path (files, arrays, Ray)."""
    if not np.isfinite(vectors).all():
        return "the encoder gave non-finite values (NaN or inf) for this audio"
    return ""


def _source(paths, encoder, length, hop, hashes, cache, key, workers, q, stop, max_snippets=None, keep_signals=False,
            batch_size=16):
    """Producer thread: emit ``snippet``/``encoded``/``file`` messages in input order."""
    pool = None
    in_workers = bool(workers) and encoder.encodes_in_workers

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def stream(i: int, p: str, sha: str, content: str) -> bool:
        for ev in file_events(p, encoder.sample_rate, length, hop, hashes and not sha, encoder.pad, max_snippets, keep_signals):
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
        if isinstance(job, FileState):  # a cache hit
            return put(("file", i, job))
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory) or its encoder failed
            what = "embedding" if in_workers else "decode"
            raise ClapknnError(f"{what} worker failed on {p}: {type(exc).__name__}: {exc}") from exc
        if result is None:  # a long file: stream it here, window by window
            return stream(i, p, sha, content)
        state, starts, ends, data = result
        state.sha256, state.content = state.sha256 or sha, content
        if in_workers:  # the file's vectors, encoded by the worker
            return put(("encoded", i, starts, ends, data, state))
        for j in range(len(starts)):
            if not put(("snippet", i, starts[j], ends[j], data[j])):
                return False
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
                        state = FileState(p, entry.duration, len(entry.vectors), entry.n_silent, sha, entry=entry)
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
                pool = worker_pool(workers, encoder)
            if in_workers:
                job = pool.submit(embed_file, p, length, hop, hashes and not sha, max_snippets, keep_signals, batch_size)
            else:
                job = pool.submit(
                    decode_file, p, encoder.sample_rate, length, hop, hashes and not sha, encoder.pad, max_snippets,
                    keep_signals,
                )
            inflight.append((i, p, sha, content, job))
            # emit whatever is ready at the head; block only when the window is full
            while inflight and (
                isinstance(inflight[0][4], FileState)
                or inflight[0][4].done()
                or sum(not isinstance(x[4], FileState) for x in inflight) > window
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
    workers: int | str = DEFAULT_WORKERS,
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
    workers : int or "auto"
        Worker processes; 0 decodes in a thread of this process. An encoder that encodes in workers
        (``features``) runs in them too. ``"auto"``: one per core for such an encoder, else 0
        (:func:`~clapknn.embedding.workers.resolve_workers`).
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
    workers = resolve_workers(workers, encoder)
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
        args=(paths, encoder, snippet_seconds, hop_seconds, hashes, store, key, workers, q, stop, max_snippets, keep_signals,
              batch_size),
        daemon=True,
    )
    worker.start()

    pending: list[np.ndarray] = []
    pending_ids: list[int] = []
    rows: dict[int, list] = {}  # file -> [starts, ends, vectors]
    outstanding: dict[int, int] = {}
    done: dict[int, FileState] = {}
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
            elif kind == "encoded":  # a file's vectors, from the worker that decoded it
                _, i, starts, ends, vectors, state = item
                rows[i] = (list(starts), list(ends), [] if vectors is None else list(vectors))
                done[i] = state
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
