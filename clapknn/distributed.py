"""More than one machine: the embedding stage on Ray Data, writing parquet shards that indexes consume.

Pipeline (streaming: decoding, encoding and writing overlap, across as many nodes as the cluster has)::

    paths ─► decode tasks (CPU, one file each) ─► encoder actors (GPU when the cluster has one)
              snippet rows: path, start, end,        batches of snippets → vectors
              audio (float32 bytes); then one              │
              status row per file                          ▼
                                                   parquet shards + shards.json

- :func:`embed_with_ray` runs it and writes a shard directory: ``*.parquet`` files with one row per
  snippet (``file``, ``path``, ``kind="snippet"``, ``start``, ``end``, ``vector``) plus one status row
  per file (``kind="file"``: ``duration``, ``n_silent``, ``sha256``, ``content``, ``error``), and
  ``shards.json`` (encoder identity, snippet settings, dim, file count). With an embedding cache
  (:mod:`clapknn.cache`), decode tasks take the files found there instead of decoding them, and the
  driver stores the fresh ones once the shards are written.
- :func:`read_shards` turns a shard directory back into :class:`~clapknn.encode.EmbeddedFiles`, exactly
  what :func:`~clapknn.encode.embed_files` returns for the same files (same vectors: the encoders are
  batch-independent).
- :func:`index_from_shards` builds a labelled tagging :class:`~clapknn.index.Index` from shards and an
  example set; :func:`library_from_shards` builds a :class:`~clapknn.library.LibraryIndex`;
  :func:`tag_shards` tags the shards' tracks with an index.

Ray is an optional dependency (``pip install 'clapknn[distributed]'``); nothing here imports it
until :func:`embed_with_ray` runs. Reading shards needs only pyarrow. See ``docs/scale.md`` for a
real cluster.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ClapknnError, IndexFormatError, LabelError, ParameterError
from .snippet import DEFAULT_SNIPPET_SECONDS

__all__ = ["embed_with_ray", "read_shards", "index_from_shards", "library_from_shards", "tag_shards", "SHARDS_MANIFEST"]

logger = logging.getLogger(__name__)

SHARDS_MANIFEST = "shards.json"
SHARDS_FORMAT = 1


def _decode_file(row: dict, *, sample_rate: int, length: float, hop: float | None, cache: str | None = None,
                 key: str = "", dim: int = 0, pad: str = "repeat"):
    """Ray flat_map: one file → its snippet rows, then one status row (streamed, window by window).

    With an embedding ``cache`` folder (visible to this node): a file found there (by its content
    key under the settings ``key``) gives ``cached`` rows that carry their vectors instead of audio,
    and is not decoded; the status row names the content key either way."""
    from .stream import _empty_reason, _file_events

    base = {"file": int(row["file"]), "path": str(row["path"])}
    sha = content = ""
    if cache:
        from .cache import EmbeddingCache

        store = EmbeddingCache(cache, memo=False)  # no SQLite memo on a shared file system
        try:
            sha, content = store.content_key(base["path"])
        except OSError:
            sha = content = ""  # missing or unreadable: the decoder reports it
        entry = store.get(key, content, dim=dim) if content else None
        if entry is not None:
            for start, end, vector in zip(entry.starts, entry.ends, entry.vectors):
                yield {**base, "kind": "cached", "start": float(start), "end": float(end),
                       "audio": np.ascontiguousarray(vector, dtype="<f4").tobytes(),
                       "duration": 0.0, "n_silent": 0, "sha256": "", "content": "", "error": ""}
            error = "" if len(entry.vectors) else _empty_reason(entry.n_silent)
            yield {**base, "kind": "file", "start": 0.0, "end": 0.0, "audio": b"", "duration": float(entry.duration),
                   "n_silent": int(entry.n_silent), "sha256": sha, "content": "", "error": error}
            return
    for ev in _file_events(base["path"], sample_rate, length, hop, not sha, pad):
        if ev[0] == "snippet":
            yield {**base, "kind": "snippet", "start": float(ev[1]), "end": float(ev[2]),
                   "audio": np.ascontiguousarray(ev[3], dtype="<f4").tobytes(),
                   "duration": 0.0, "n_silent": 0, "sha256": "", "content": "", "error": ""}
        else:
            s = ev[1]
            # the content key marks a file whose fresh vectors the driver stores once the shards are written
            yield {**base, "kind": "file", "start": 0.0, "end": 0.0, "audio": b"", "duration": float(s.duration),
                   "n_silent": int(s.n_silent), "sha256": s.sha256 or sha, "content": content if s.cacheable else "",
                   "error": s.error}


class _EncodeActor:
    """Ray actor: holds one encoder and turns batches of snippet rows into vector rows."""

    def __init__(self, name: str, options: dict[str, Any], identity: dict[str, Any]) -> None:
        from .encoders import get_encoder
        from .errors import EncoderMismatchError
        from .index import describe_mismatch

        self.encoder = get_encoder(name, **options)
        diffs = describe_mismatch(identity, self.encoder.identity())
        if diffs:  # another clapknn version or checkpoint on this node than on the driver
            raise EncoderMismatchError("the encoder on a Ray worker differs from the driver's: " + "; ".join(diffs))

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        kind = np.asarray(batch["kind"]).astype(str)
        snip = kind == "snippet"
        cached = kind == "cached"  # vectors from the embedding cache, carried in the audio column
        dim = int(self.encoder.dim)
        vectors = np.zeros((len(kind), dim), dtype=np.float32)
        payload = np.asarray(batch["audio"], dtype=object)
        if snip.any():
            audio = np.stack([np.frombuffer(b, dtype="<f4") for b in payload[snip]])
            vectors[snip] = np.asarray(self.encoder.embed(audio), dtype=np.float32)
        if cached.any():
            vectors[cached] = np.stack([np.frombuffer(b, dtype="<f4") for b in payload[cached]])
        batch = {**batch, "kind": np.where(cached, "snippet", kind)}
        cols = {k: pa.array(np.asarray(v).tolist() if k in ("path", "kind", "sha256", "content", "error") else np.asarray(v))
                for k, v in batch.items() if k != "audio"}
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), type=pa.float32()), dim)
        return pa.table(cols)


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
    cpus_per_decode: float = 1.0,
    address: str | None = None,
    progress: bool = False,
    cache=None,
) -> Path:
    """Embed audio files on a Ray cluster and write parquet shards to ``out``.

    Parameters
    ----------
    paths : path or sequence of paths
        Audio files and/or folders (scanned here, on the driver). On a multi-node cluster every node
        must see them at the same paths (a shared or object-store-backed file system).
    out : path
        Shard directory to write (replaced atomically; must be visible to every node on a cluster).
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
    cpus_per_encoder, cpus_per_decode : float
        CPUs reserved per encoder actor and per decode task.
    address : str, optional
        Ray cluster address (``"auto"`` on a cluster node); default: the running Ray instance, or a
        new local one.
    progress : bool
        Ray Data's progress bars and progress log.
    cache : bool, path or EmbeddingCache, optional
        The embedding cache (:mod:`clapknn.cache`; ``True`` for the default folder). Decode tasks
        look files up there and skip decoding and encoding the ones found; the driver stores the
        fresh files' vectors once the shards are written. On a multi-node cluster the folder must
        be shared, like the audio (the tasks hash files without the SQLite memo).

    Returns
    -------
    Path
        The shard directory.
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClapknnError("the Ray pipeline needs Ray: pip install 'clapknn[distributed]'") from exc
    from .encoders import get_encoder
    from .tagger import Tagger

    out = Path(out).expanduser().absolute()
    if out.exists() and not (out / SHARDS_MANIFEST).is_file() and any(out.iterdir()):
        raise ParameterError(f"{out}: exists and is not a clapknn shard directory; refusing to overwrite it")
    files, problems = Tagger.collect_files(paths)
    for where, reason in problems:
        logger.warning("skipped %s: %s", where, reason)
    options = dict(encoder_options or {})
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
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
    built = get_encoder(encoder, **local_options)
    identity, pad = built.identity(), built.pad
    del built  # the actors hold their own
    hop = snippet_seconds if hop_seconds is None else hop_seconds
    from .cache import resolve_cache, settings_key

    store = resolve_cache(cache)
    key = settings_key(identity, snippet_seconds, hop) if store is not None else ""

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    ctx.enable_operator_progress_bars = bool(progress)
    items = [{"file": i, "path": str(p)} for i, p in enumerate(files)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 200)))
    ds = ds.flat_map(
        _decode_file, fn_kwargs={"sample_rate": identity["sample_rate"], "length": snippet_seconds, "hop": hop,
                                 "cache": str(store.root) if store is not None else None, "key": key,
                                 "dim": int(identity["dim"]), "pad": pad},
        num_cpus=cpus_per_decode,
    )
    ds = ds.map_batches(
        _EncodeActor, fn_constructor_kwargs={"name": encoder, "options": options, "identity": identity}, batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_encoders), num_cpus=cpus_per_encoder,
        num_gpus=gpus_per_encoder or None,
    )
    try:
        ds.write_parquet(str(tmp))
        manifest = {
            "format": "clapknn-shards",
            "format_version": SHARDS_FORMAT,
            "encoder": identity,
            "snippet_seconds": float(snippet_seconds),
            "hop_seconds": float(hop),
            "dim": int(identity["dim"]),
            "n_files": len(files),
            "skipped_inputs": [list(p) for p in problems],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        tmp.mkdir(parents=True, exist_ok=True)  # no rows at all still makes a (valid, empty) directory
        (tmp / SHARDS_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if store is not None:
        try:
            _store_fresh(out, store, key, identity, snippet_seconds, hop)
        finally:
            store.close()
    return out


def _store_fresh(shards: Path, store, key: str, identity: dict[str, Any], snippet_seconds: float, hop: float) -> None:
    """Put the vectors of the files the shards embedded afresh (status rows with a content key)
    into the embedding cache."""
    import pyarrow as pa

    from .cache import CachedFile
    from .index import read_parquet

    tables = [read_parquet(p, columns=["file", "kind", "content"]) for p in sorted(shards.glob("*.parquet"))]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return
    emb = read_shards(shards)
    status = pa.concat_tables(tables).to_pandas()
    fresh = status[(status["kind"] == "file") & (status["content"].astype(str) != "")]
    settings = {"encoder": identity, "snippet_seconds": snippet_seconds, "hop_seconds": hop}
    by_file = emb.snippets.groupby("file").indices if len(emb.snippets) else {}
    for i, content in zip(fresh["file"].astype(int), fresh["content"].astype(str)):
        row = emb.files.iloc[i]
        if row["error"] and not row["error"].startswith("silent"):
            continue
        rows = by_file.get(i, np.zeros(0, dtype=np.int64))
        snips = emb.snippets.iloc[rows]
        entry = CachedFile(emb.vectors[rows], snips["start"].to_numpy(float), snips["end"].to_numpy(float),
                           float(row["duration"]), int(row["n_silent"]))
        store.put(key, content, entry, settings=settings)


def _shard_manifest(shards: Path) -> dict[str, Any]:
    mpath = shards / SHARDS_MANIFEST
    if not mpath.is_file():
        raise IndexFormatError(f"{shards}: not a clapknn shard directory (no {SHARDS_MANIFEST})")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    if manifest.get("format") != "clapknn-shards" or manifest.get("format_version") != SHARDS_FORMAT:
        raise IndexFormatError(f"{shards}: unsupported shard format {manifest.get('format')!r} v{manifest.get('format_version')!r}")
    return manifest


def read_shards(shards: str | Path):
    """Read a shard directory into :class:`~clapknn.encode.EmbeddedFiles` (with ``.manifest``).

    Rows are put back in input order (file, then start time); snippets of files that failed are
    dropped, as :func:`~clapknn.encode.embed_files` drops them.
    """
    import pandas as pd
    import pyarrow as pa

    from .encode import EmbeddedFiles
    from .index import read_parquet

    shards = Path(shards).expanduser()
    manifest = _shard_manifest(shards)
    dim = int(manifest["dim"])
    parts = sorted(shards.glob("*.parquet"))
    tables = [read_parquet(p) for p in parts]
    tables = [t for t in tables if t.num_rows]
    if tables:
        table = pa.concat_tables(tables, promote_options="default")
        vec = table.column("vector").combine_chunks()
        if hasattr(vec, "storage"):
            vec = vec.storage
        vectors = np.asarray(vec.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
        frame = table.drop_columns(["vector"]).to_pandas()
    else:
        vectors = np.zeros((0, dim), np.float32)
        frame = pd.DataFrame(columns=["file", "path", "kind", "start", "end", "duration", "n_silent", "sha256", "error"])
    frame["_row"] = np.arange(len(frame))
    status = frame[frame["kind"] == "file"].sort_values("file")
    n_files = int(manifest["n_files"])
    if len(status) != n_files or (len(status) and not np.array_equal(status["file"].to_numpy(), np.arange(n_files))):
        raise IndexFormatError(f"{shards}: {len(status)} file status rows for {n_files} files; the shards are incomplete")
    failed = set(status.loc[status["error"] != "", "file"].astype(int))
    snips = frame[(frame["kind"] == "snippet") & ~frame["file"].isin(failed)].sort_values(["file", "start"], kind="stable")
    counts = snips.groupby("file").size()
    files = pd.DataFrame(
        {
            "path": status["path"].astype(str).to_numpy(),
            "duration": status["duration"].astype(float).to_numpy(),
            "n_snippets": [int(counts.get(i, 0)) for i in status["file"]],
            "n_silent": status["n_silent"].astype(int).to_numpy(),
            "sha256": status["sha256"].astype(str).to_numpy(),
            "error": status["error"].astype(str).to_numpy(),
        }
    )
    snippets = pd.DataFrame(
        {
            "file": snips["file"].astype(np.int64).to_numpy(),
            "path": snips["path"].astype(str).tolist(),
            "start": snips["start"].astype(float).to_numpy(),
            "end": snips["end"].astype(float).to_numpy(),
        }
    )
    return EmbeddedFiles(vectors[snips["_row"].to_numpy()], snippets, files, manifest=manifest)


def index_from_shards(
    shards: str | Path,
    examples,
    out: str | Path | None = None,
    *,
    labels: str | Path | None = None,
):
    """Build a tagging :class:`~clapknn.index.Index` from shards and an example set.

    Every example file must be in the shards (embed the example set's files with
    :func:`embed_with_ray`); files of the shards that are not examples are ignored.

    Raises
    ------
    LabelError
        When no example has vectors in the shards.
    """
    from .index import Index, example_metadata
    from .labels import ExampleSet, load_examples
    from .tagger import BuildReport

    emb = read_shards(shards)
    m = emb.manifest
    example_set = examples if isinstance(examples, ExampleSet) else load_examples(examples, labels=labels)

    def norm(p) -> str:
        return os.path.normcase(os.path.abspath(str(p)))

    tags_of = {norm(e.path): e.tags for e in example_set.examples}
    group_of = {norm(e.path): e.group or "" for e in example_set.examples}
    file_norm = [norm(p) for p in emb.files["path"]]
    found = set(file_norm)
    missing = [(str(e.path), "not in the shards") for e in example_set.examples if norm(e.path) not in found]
    keep_files = [i for i, p in enumerate(file_norm) if p in tags_of]
    files = emb.files.iloc[keep_files].reset_index(drop=True)
    files.insert(1, "tags", [";".join(tags_of[file_norm[i]]) for i in keep_files])
    mask = emb.snippets["file"].isin(keep_files).to_numpy()
    meta = example_metadata(
        emb.snippets[mask], list(emb.files["sha256"].astype(str)), [tags_of.get(p, ()) for p in file_norm],
        [group_of.get(p, "") for p in file_norm], [os.path.abspath(str(p)) for p in emb.files["path"]],
    )
    if not len(meta):
        raise LabelError(f"no example has vectors in {shards} ({len(missing)} not in the shards)")
    index = Index.from_arrays(
        emb.vectors[mask], meta, encoder=m["encoder"], snippet_seconds=m["snippet_seconds"], hop_seconds=m["hop_seconds"],
        extra={"source": f"ray shards {Path(shards).name}"},
        report=BuildReport(files, list(example_set.problems) + missing, list(example_set.notes)),
    )
    if out is not None:
        index.save(out)
    return index


def library_from_shards(shards: str | Path, out: str | Path | None = None, *, kind: str = "auto", target_recall: float = 0.95):
    """Build a :class:`~clapknn.library.LibraryIndex` (one vector per track) from shards."""
    from .library import LibraryIndex, _track_vectors

    emb = read_shards(shards)
    m = emb.manifest
    vectors, tracks = _track_vectors(emb)
    if not len(vectors):
        raise ClapknnError(f"no track has vectors in {shards}")
    lib = LibraryIndex.from_vectors(
        vectors, tracks, encoder=m["encoder"], snippet_seconds=m["snippet_seconds"], hop_seconds=m["hop_seconds"],
        kind=kind, target_recall=target_recall, skipped=[tuple(p) for p in m.get("skipped_inputs", [])] + list(emb.failures),
    )
    if out is not None:
        lib.save(out)
    return lib


def tag_shards(tagger, shards: str | Path):
    """Tag every track of a shard directory with a :class:`~clapknn.Tagger` (no decoding, no encoding).

    The shards must have been written with the tagger's encoder and the index's snippet length.

    Returns
    -------
    TagResult
        As :meth:`clapknn.Tagger.tag` returns for the same files.
    """
    from .errors import EncoderMismatchError

    emb = read_shards(shards)
    m = emb.manifest
    tagger.index.check_encoder(m["encoder"])
    if float(m["snippet_seconds"]) != tagger.index.snippet_seconds:
        raise EncoderMismatchError(
            f"{shards}: snippets of {m['snippet_seconds']:g} s, the index uses {tagger.index.snippet_seconds:g} s"
        )
    skipped = [tuple(p) for p in m.get("skipped_inputs", [])] + list(emb.failures)
    return tagger.tag_vectors(emb.vectors, emb.snippets, list(emb.files["path"].astype(str)), skipped=skipped)
