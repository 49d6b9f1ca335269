"""More than one machine: the embedding engine on Ray Data, writing parquet shards that indexes consume.

Pipeline (streaming, across as many nodes as the cluster has)::

    paths ─► batches of files ─► encoder actors (GPU when the cluster has one), each running the
                                 embedding engine of a local run (clapknn.embedding.engine.iter_embeddings:
                                 decoding ahead of the encoder, the embedding cache, the vector check)
                                       │  snippet rows, then one status row per file
                                       ▼
                              the driver: parquet shards + shards.json, swapped in atomically

- :func:`embed_with_ray` runs it and writes a shard directory: ``*.parquet`` files with one row per
  snippet (``file``, ``path``, ``kind="snippet"``, ``start``, ``end``, ``vector``) plus one status row
  per file (``kind="file"``: ``duration``, ``n_silent``, ``sha256``, ``error``, ``cached``), and
  ``shards.json`` (encoder identity, snippet settings, dim, counts, failures, a SHA-256 of every
  shard). The directory is written by :func:`clapknn.store.save_directory`, as indexes are: in a
  hidden sibling folder, then swapped in. With an embedding cache (:mod:`clapknn.embedding.cache`), every actor
  reads and fills it as a local run does. An actor lost with its node is restarted on another one
  and its batch of files run again; each file's rows reach the shards once.
- :func:`read_shards` turns a shard directory back into :class:`~clapknn.embedding.encode.EmbeddedFiles`, exactly
  what :func:`~clapknn.embedding.encode.embed_files` returns for the same files (same vectors: the encoders are
  batch-independent).
- :func:`index_from_shards` builds a labelled tagging :class:`~clapknn.index.Index` from shards and an
  example set; :func:`library_from_shards` builds a :class:`~clapknn.library.LibraryIndex`;
  :func:`tag_shards` tags the shards' tracks with an index.

Ray is an optional dependency (``pip install 'clapknn[distributed]'``); nothing here imports it
until :func:`embed_with_ray` runs. Reading shards needs only pyarrow. See ``docs/scale.md`` for a
real cluster.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..audio.snippet import DEFAULT_SNIPPET_SECONDS
from ..errors import ClapknnError, ParameterError
from ..options import DEFAULT_FILES_PER_TASK
from .shards import SHARDS_FORMAT, SHARDS_MANIFEST

__all__ = ["embed_with_ray"]

logger = logging.getLogger(__name__)


def _shard_columns(batch_rows: list[tuple], dim: int):
    """A pyarrow table of shard rows ``(file, path, kind, start, end, duration, n_silent, sha256, error,
    cached, vector)``."""
    import pyarrow as pa

    names = ["file", "path", "kind", "start", "end", "duration", "n_silent", "sha256", "error", "cached"]
    columns = list(zip(*batch_rows)) if batch_rows else [[] for _ in range(len(names) + 1)]
    types = [pa.int64(), pa.string(), pa.string(), pa.float64(), pa.float64(), pa.float64(), pa.int64(), pa.string(),
             pa.string(), pa.bool_()]
    cols = {n: pa.array(list(c), type=t) for n, c, t in zip(names, columns, types)}
    vectors = np.asarray(columns[-1], dtype=np.float32).reshape(-1, dim) if batch_rows else np.zeros((0, dim), np.float32)
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), type=pa.float32()), dim)
    return pa.table(cols)


class _EngineActor:
    """Ray actor: one encoder running the embedding engine (:func:`clapknn.embedding.engine.iter_embeddings`:
    decoding ahead of the encoder, the embedding cache, the vector check) over each batch of files it
    is given, returning their shard rows (one per snippet, then one status row per file)."""

    def __init__(self, name: str, options: dict[str, Any], identity: dict[str, Any], *, snippet_seconds: float,
                 hop_seconds: float, batch_size: int, cache: str | None) -> None:
        from ..encoders import get_encoder
        from ..errors import EncoderMismatchError
        from ..index import describe_mismatch

        self.encoder = get_encoder(name, **options)
        diffs = describe_mismatch(identity, self.encoder.identity())
        if diffs:  # another clapknn version or checkpoint on this node than on the driver
            raise EncoderMismatchError("the encoder on a Ray worker differs from the driver's: " + "; ".join(diffs))
        self.settings = dict(snippet_seconds=snippet_seconds, hop_seconds=hop_seconds, batch_size=batch_size)
        self.cache = cache

    def __call__(self, batch: dict[str, np.ndarray]):
        from .cache import EmbeddingCache
        from .engine import iter_embeddings

        ids = np.asarray(batch["file"]).astype(np.int64).tolist()
        paths = np.asarray(batch["path"]).astype(str).tolist()
        # no SQLite memo on a shared file system: each file is hashed where it is read
        store = EmbeddingCache(self.cache, memo=False) if self.cache else None
        rows: list[tuple] = []
        for fe in iter_embeddings(paths, self.encoder, hashes=True, cache=store, **self.settings):
            i = ids[fe.index]
            for start, end, vector in zip(fe.starts.tolist(), fe.ends.tolist(), fe.vectors):
                rows.append((i, fe.path, "snippet", start, end, 0.0, 0, "", "", False, vector))
            rows.append((i, fe.path, "file", 0.0, 0.0, float(fe.duration), int(fe.n_silent), fe.sha256, fe.error,
                         bool(fe.cached), np.zeros(self.encoder.dim, np.float32)))
        return _shard_columns(rows, int(self.encoder.dim))


def embed_with_ray(
    paths: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    encoder: str = "features",
    encoder_options: Mapping[str, Any] | None = None,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    batch_size: int = 16,
    num_encoders: int | None = None,
    gpus_per_encoder: float | None = None,
    cpus_per_encoder: float = 1.0,
    files_per_task: int = DEFAULT_FILES_PER_TASK,
    address: str | None = None,
    progress: bool = False,
    cache=None,
    shard_rows: int = 200_000,
) -> Path:
    """Embed audio files on a Ray cluster and write parquet shards to ``out``.

    Every encoder actor runs the embedding engine of a local run (:func:`clapknn.embedding.engine.iter_embeddings`)
    on the batches of files Ray Data hands it: the same decoding, the same vector checks, the same
    embedding cache (read and filled as files are done). The driver writes what comes back into
    shards, then swaps the shard directory in atomically (:func:`clapknn.store.save_directory`,
    with a checksum of every shard). An actor lost with its node is restarted elsewhere and its
    batch run again, so the job completes with each file once.

    Parameters
    ----------
    paths : path or sequence of paths
        Audio files and/or folders (scanned here, on the driver). On a multi-node cluster every node
        must see them at the same paths (a shared or object-store-backed file system).
    out : path
        Shard directory to write (replaced atomically; only the driver writes it).
    encoder : {"features", "clap"}
    encoder_options : mapping, optional
        Settings for :func:`clapknn.encoders.get_encoder` in each actor (``checkpoint`` path...).
        On GPU actors ``device`` defaults to ``"cuda"``.
    snippet_seconds, hop_seconds : float
    batch_size : int
        Snippets per encoder call.
    num_encoders : int, optional
        Encoder actors. Default: one per GPU when the cluster has GPUs, else one per 2 CPUs (at least 1).
    gpus_per_encoder : float, optional
        GPUs per actor; default 1 when the cluster has GPUs, else 0.
    cpus_per_encoder : float
        CPUs reserved per encoder actor.
    files_per_task : int
        Files handed to an actor at a time (what is run again when its node is lost).
    address : str, optional
        Ray cluster address (``"auto"`` on a cluster node); default: the running Ray instance, or a
        new local one (its log lines stay in Ray's log files, not on this terminal).
    progress : bool
        Ray Data's progress bars and progress log.
    cache : bool, path or EmbeddingCache, optional
        The embedding cache (:mod:`clapknn.embedding.cache`; ``True`` for the default folder), used by every
        actor as by a local run. On a multi-node cluster the folder must be shared, like the audio
        (the actors hash files without the SQLite memo).
    shard_rows : int
        Rows per shard file, at most.

    Returns
    -------
    Path
        The shard directory.
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClapknnError("the Ray pipeline needs Ray: pip install 'clapknn[distributed]'") from exc
    from ..options import check_int
    from ..tagging.tagger import Tagger

    check_int("batch_size", batch_size)
    check_int("files_per_task", files_per_task)
    check_int("shard_rows", shard_rows)
    out = Path(out).expanduser().absolute()
    if out.exists() and not (out / SHARDS_MANIFEST).is_file() and any(out.iterdir()):
        raise ParameterError(f"{out}: exists and is not a clapknn shard directory; refusing to overwrite it")
    files, problems = Tagger.collect_files(paths)
    for where, reason in problems:
        logger.warning("skipped %s: %s", where, reason)
    options = dict(encoder_options or {})
    from ..encoders import get_encoder
    from ..store import save_directory

    # Ray's chatter stays off the terminal unless progress is asked for
    with contextlib.nullcontext() if progress else _quiet_ray():
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, configure_logging=False)
        resources = ray.cluster_resources()
        n_gpus = float(resources.get("GPU", 0))
        if gpus_per_encoder is None:
            gpus_per_encoder = 1.0 if n_gpus >= 1 else 0.0
        if gpus_per_encoder and encoder == "clap":
            options.setdefault("device", "cuda")
        if num_encoders is None:
            num_encoders = max(1, int(n_gpus // gpus_per_encoder) if gpus_per_encoder else int(resources.get("CPU", 2) // 2))
        # the identity the shards are written with: built here once (for CLAP that loads the checkpoint)
        local_options = {k: v for k, v in options.items() if k != "device"}
        identity = get_encoder(encoder, **local_options).identity()
        hop = snippet_seconds if hop_seconds is None else hop_seconds
        from .cache import resolve_cache

        store = resolve_cache(cache)
        dim = int(identity["dim"])

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress)
        ctx.enable_operator_progress_bars = bool(progress)
        items = [{"file": i, "path": str(p)} for i, p in enumerate(files)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 200)))
        ds = ds.map_batches(
            _EngineActor, batch_size=int(files_per_task), batch_format="numpy",
            fn_constructor_kwargs={"name": encoder, "options": options, "identity": identity, "snippet_seconds": snippet_seconds,
                                   "hop_seconds": hop, "batch_size": batch_size,
                                   "cache": str(store.root) if store is not None else None},
            compute=ray.data.ActorPoolStrategy(size=num_encoders), num_cpus=cpus_per_encoder, num_gpus=gpus_per_encoder or None,
        )
        counts = {"n_vectors": 0, "n_cached": 0, "failures": []}

        def write(tmp: Path) -> list[str]:
            """Stream the actors' rows into shard files (each file's rows come once, retried batches included)."""
            import pyarrow.compute as pa_compute
            import pyarrow.parquet as pq

            names: list[str] = []
            writer, in_shard = None, 0
            try:
                for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    if not table.num_rows:
                        continue
                    if writer is None or in_shard >= shard_rows:
                        if writer is not None:
                            writer.close()
                        names.append(f"part-{len(names):05d}.parquet")
                        writer, in_shard = pq.ParquetWriter(str(tmp / names[-1]), table.schema), 0
                    writer.write_table(table)
                    in_shard += table.num_rows
                    status = table.filter(pa_compute.equal(table["kind"], "file")).to_pydict()
                    counts["n_vectors"] += table.num_rows - len(status["file"])
                    counts["n_cached"] += sum(status["cached"])
                    counts["failures"] += [[i, p, e] for i, p, e in zip(status["file"], status["path"], status["error"]) if e]
            finally:
                if writer is not None:
                    writer.close()
            # saved with the shards' checksums; failures in input order, as embed_files lists them
            manifest.update(counts, failures=[[p, e] for _, p, e in sorted(counts["failures"])])
            return names

        manifest = {
            "format": "clapknn-shards",
            "format_version": SHARDS_FORMAT,
            "encoder": identity,
            "snippet_seconds": float(snippet_seconds),
            "hop_seconds": float(hop),
            "dim": dim,
            "n_files": len(files),
            "skipped_inputs": [list(p) for p in problems],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        save_directory(out, manifest, write, kind="clapknn shard directory", manifest_name=SHARDS_MANIFEST)
        return out


@contextlib.contextmanager
def _quiet_ray():
    """Keep Ray's chatter off the terminal for the run: Ray Data's info lines (execution plans,
    "progress bars disabled") and what Ray's C++ core writes to this process's stderr (start-up
    notes, warnings) go to a temporary file instead, which is shown only when the run fails.
    Ray's own log files keep everything."""
    import logging as _logging
    import sys
    import tempfile

    import ray.data  # noqa: F401 - sets up Ray Data's loggers

    sys.stderr.flush()
    saved_fd = os.dup(2)
    captured = tempfile.TemporaryFile(prefix="clapknn-ray-")
    os.dup2(captured.fileno(), 2)
    failed = False

    # the handlers writing to the terminal, not the ones writing Ray's session log files
    handlers = [h for h in _logging.getLogger("ray.data").handlers + _logging.getLogger("ray").handlers
                if isinstance(h, _logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(_logging.ERROR)
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        for h, level in zip(handlers, levels):
            h.setLevel(level)
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        if failed:  # what Ray said may be why
            captured.seek(0)
            tail = captured.read()[-8000:].decode("utf-8", "replace")
            if tail.strip():
                sys.stderr.write(tail if tail.endswith("\n") else tail + "\n")
        captured.close()
