"""One file's work for the embedding engine, and the worker processes that do it.

:func:`file_events` decodes and cuts one file (or cuts a :class:`Signal` held in memory) into
snippet events, then gives the file's state. With ``workers=N``, :func:`clapknn.embedding.engine.iter_embeddings`
hands each file to a pool of N processes (:func:`worker_pool`) running one of two jobs:

- :func:`decode_file`: decode and cut only; the snippets travel back and the calling process
  encodes them. For an encoder with a model (CLAP): one copy of the weights, full batches.
- :func:`embed_file`: decode, cut **and encode**, for an encoder whose
  :attr:`~clapknn.encoders.base.Encoder.encodes_in_workers` is true (the ``features`` encoder: numpy
  work per snippet, nothing to share between snippets). Each worker encodes the snippets it
  decodes and only the vectors travel back; the calling process collects them and makes the one
  NaN/inf check (:func:`clapknn.embedding.engine.vector_problem`).

Workers are forks of a ``forkserver`` server (``spawn`` where there is none) that imports the
decoders' modules and the encoder's :attr:`~clapknn.encoders.base.Encoder.worker_modules` once, so
starting a worker costs a fork, not a fresh interpreter importing numpy, scipy and librosa again;
the first pool of a process decides what its server holds. Each worker receives the encoder once
(the pool's initializer) and runs its BLAS and OpenMP libraries on one thread: N workers keep N
cores busy without oversubscribing them. Every snippet is encoded on its own whatever process
runs it, so the vectors do not depend on the number of workers or the batch size
(``tests/test_engine.py`` checks it).

:func:`resolve_workers` turns ``workers="auto"`` into a count: one worker per core for an encoder
that encodes in workers, 0 (a decoding thread beside the encoder) for the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..audio.digests import file_sha256
from ..encoders.base import Encoder
from ..errors import AudioError, ParameterError

__all__ = [
    "AUTO",
    "FileState",
    "Signal",
    "decode_file",
    "embed_file",
    "empty_reason",
    "file_events",
    "resolve_workers",
    "start_for_index",
    "worker_pool",
]

#: ``workers=AUTO``: let :func:`resolve_workers` choose.
AUTO = "auto"
#: Modules every worker server imports: the decoders and the window cutter.
_DECODE_MODULES = ("numpy", "soundfile", "soxr", "clapknn.audio.decode", "clapknn.audio.snippet", "clapknn.embedding.workers")


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
class FileState:
    """What the engine knows of one file apart from its snippets."""

    path: str
    duration: float = 0.0
    n_snippets: int = 0
    n_silent: int = 0
    sha256: str = ""
    error: str = ""
    cacheable: bool = True  # False after a decoding error: those are not cached
    entry: object = None  # the CachedFile of a cache hit
    content: str = ""  # the cache's key for the file's audio (EmbeddingCache.content_key)
    signal: np.ndarray | None = None  # the whole decoded signal, when asked for and read in one go


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


def file_events(
    path, sr: int, length: float, hop: float | None, hashes: bool, pad: str = "repeat", max_snippets: int | None = None,
    keep_signal: bool = False,
) -> Iterator[tuple]:
    """Yield ``("snippet", start, end, audio)`` per non-silent snippet, then ``("file", state)``;
    ``pad`` is the encoder's rule for a track shorter than one snippet, ``max_snippets`` the most
    snippets taken from the track (:func:`clapknn.audio.snippet.sample_indices`; ``None``: all)."""
    from ..audio.snippet import iter_file_snippets, iter_snippets

    state = FileState(str(path))
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


def decode_file(
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
    for ev in file_events(path, sr, length, hop, hashes, pad, max_snippets, keep_signal):
        if ev[0] == "snippet":
            starts.append(ev[1])
            ends.append(ev[2])
            rows.append(ev[3])
        else:
            state = ev[1]
    audio = np.stack(rows) if rows else None
    return state, starts, ends, audio


_worker_encoder: Encoder | None = None  # the encoder of this worker process (set by _start_worker)


_worker_keeps_memory = False  # set by _start_worker: whether _keep_freed_memory's settings were taken
#: glibc ``mallopt`` parameters and the values a worker sets (see :func:`_keep_freed_memory`).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 256 * 1024 * 1024


def _keep_freed_memory() -> bool:
    """In a worker process on glibc: serve arrays of up to 32 MB from the heap and keep freed memory
    mapped (up to 256 MB) instead of mapping and unmapping every large array. A snippet's STFTs,
    spectra and tempogram are arrays of a few MB made and freed per snippet; mapped afresh, each of
    their pages is faulted in and zeroed again every time, which costs about a quarter of the
    ``features`` encoder's CPU on this project's machines (``bench/throughput.py``). The values are
    those computed either way; the worker's memory stays at its peak rather than falling between
    snippets. Returns whether the settings were taken (never on other C libraries)."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):  # pragma: no cover - no loadable libc
        return False


def _start_worker(encoder: Encoder | None) -> None:
    """Pool initializer: keep the encoder, keep freed memory mapped (:func:`_keep_freed_memory`), and
    run BLAS/OpenMP on one thread in this process."""
    global _worker_encoder, _worker_keeps_memory
    _worker_encoder = encoder
    _worker_keeps_memory = _keep_freed_memory()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - no threadpoolctl: the libraries keep their own thread counts
        pass


def embed_file(
    path: str, length: float, hop: float | None, hashes: bool, max_snippets: int | None = None, keep_signal: bool = False,
    batch_size: int = 16,
):
    """Run in a worker process: decode, cut and encode one file with the worker's encoder, ``batch_size``
    snippets at a time (so a long file never sits in memory whole).

    Returns ``(state, starts, ends, vectors)``, ``vectors`` of shape ``(n, dim)`` (``None`` when the
    file gave no snippet).
    """
    enc = _worker_encoder
    if enc is None:
        raise RuntimeError("embed_file runs in a worker started by worker_pool(encoder, ...)")
    starts, ends, batch, vectors = [], [], [], []
    state = None
    for ev in file_events(path, enc.sample_rate, length, hop, hashes, enc.pad, max_snippets, keep_signal):
        if ev[0] == "snippet":
            starts.append(ev[1])
            ends.append(ev[2])
            batch.append(ev[3])
            if len(batch) >= batch_size:
                vectors.append(np.asarray(enc.embed(np.stack(batch)), dtype=np.float32))
                batch.clear()
        else:
            state = ev[1]
    if batch:
        vectors.append(np.asarray(enc.embed(np.stack(batch)), dtype=np.float32))
    return state, starts, ends, (np.concatenate(vectors) if vectors else None)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_workers(workers, encoder: Encoder) -> int:
    """The number of worker processes for ``workers``: an int as it is (checked), ``"auto"`` one per
    core when ``encoder`` encodes in workers (:attr:`~clapknn.encoders.base.Encoder.encodes_in_workers`),
    else 0 (decoding in a thread while this process encodes).

    Raises
    ------
    ParameterError
        Neither ``"auto"`` nor a whole number >= 0.
    """
    from ..options import check_workers

    workers = check_workers(workers)
    if workers == AUTO:
        return _cores() if encoder.encodes_in_workers else 0
    return workers


def _context(encoder):
    """The pools' start method: ``forkserver`` with its server's imports (the decoders and ``encoder``'s
    :attr:`~clapknn.encoders.base.Encoder.worker_modules`, an instance or a class), else ``spawn``."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # read when the server starts (once per process; a running server keeps what it has)
    ctx.set_forkserver_preload([*_DECODE_MODULES, *encoder.worker_modules])
    return ctx


def worker_pool(workers: int, encoder: Encoder):
    """A process pool of ``workers`` for the engine: forks of a ``forkserver`` server that has imported
    the decoders and ``encoder.worker_modules`` once (``spawn`` where there is no forkserver); each
    worker holds ``encoder`` when it encodes in workers (:func:`embed_file`) and runs one BLAS thread."""
    from concurrent.futures import ProcessPoolExecutor

    held = encoder if encoder.encodes_in_workers else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=_context(encoder), initializer=_start_worker, initargs=(held,))


def start_for_index(index, workers) -> bool:
    """Start the worker processes' server now when tagging with ``index`` will use worker processes
    (``workers`` as :func:`resolve_workers` takes it, for the index's encoder), so that the server's
    imports (numpy, scipy and librosa for the ``features`` encoder) run beside the caller's own
    start-up rather than after it; the engine's pool then forks from it. Returns whether it started
    one. Nothing is done when no worker would run, or when the index's manifest cannot be read
    (loading the index reports why)."""
    import json
    import multiprocessing

    try:
        from ..encoders import _encoder_class
        from ..index import MANIFEST_FILE, index_path

        name = json.loads((index_path(index) / MANIFEST_FILE).read_text(encoding="utf-8"))["encoder"]["name"]
        cls = _encoder_class(name)
        if not resolve_workers(workers, cls) or "forkserver" not in multiprocessing.get_all_start_methods():
            return False
    except Exception:  # noqa: BLE001 - not an index (or not readable): Index.load says why
        return False
    from multiprocessing import forkserver

    _context(cls)
    forkserver.ensure_running()
    return True
