"""Shard directories (written by :func:`clapknn.embedding.ray.embed_with_ray`): reading them back as
:class:`~clapknn.embedding.encode.EmbeddedFiles`, and the index, library and tags built from them.

- :func:`read_shards` turns a shard directory back into :class:`~clapknn.embedding.encode.EmbeddedFiles`,
  exactly what :func:`~clapknn.embedding.encode.embed_files` returns for the same files (same vectors:
  the encoders are batch-independent).
- :func:`index_from_shards` builds a labelled tagging :class:`~clapknn.index.Index` from shards and an
  example set; :func:`library_from_shards` builds a :class:`~clapknn.library.LibraryIndex`;
  :func:`tag_shards` tags the shards' tracks with an index.

Reading shards needs only pyarrow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClapknnError, IndexFormatError, LabelError
from ..options import DEFAULT_LIBRARY_KIND, DEFAULT_TARGET_RECALL
from ..store import read_parquet

__all__ = ["SHARDS_FORMAT", "SHARDS_MANIFEST", "index_from_shards", "library_from_shards", "read_shards", "shards_manifest", "tag_shards"]

SHARDS_MANIFEST = "shards.json"
SHARDS_FORMAT = 1


def shards_manifest(shards: str | Path) -> dict[str, Any]:
    """The manifest of a shard directory: encoder identity, snippet settings, counts (``n_files``,
    ``n_vectors``, ``n_cached``), ``failures`` and ``skipped_inputs`` as ``[path, reason]``, checksums."""
    from ..store import read_manifest

    shards = Path(shards).expanduser()
    manifest = read_manifest(shards, kind="clapknn shard directory", manifest_name=SHARDS_MANIFEST)
    if manifest.get("format") != "clapknn-shards" or manifest.get("format_version") != SHARDS_FORMAT:
        raise IndexFormatError(f"{shards}: unsupported shard format {manifest.get('format')!r} v{manifest.get('format_version')!r}")
    return manifest


def read_shards(shards: str | Path):
    """Read a shard directory into :class:`~clapknn.encode.EmbeddedFiles` (with its ``manifest``).

    Every shard's checksum is checked (under the directory's shared lock, as indexes are read); rows
    are put back in input order (file, then start time); snippets of files that failed are dropped,
    as :func:`~clapknn.encode.embed_files` drops them.

    Raises
    ------
    IndexFormatError
        Not a shard directory, a shard missing or changed, or not exactly one status row per file.
    """
    from ..store import open_directory, verify_files

    with open_directory(shards, kind="shard") as folder:
        manifest = shards_manifest(folder)
        parts = sorted(manifest.get("checksums") or {})
        verify_files(folder, manifest, parts, manifest_name=SHARDS_MANIFEST)
        tables = [read_parquet(folder / p) for p in parts]
    return _embedded_from_tables(tables, manifest, folder)


def _embedded_from_tables(tables, manifest: dict[str, Any], shards: Path):
    """The :class:`~clapknn.encode.EmbeddedFiles` the shard tables hold (see :func:`read_shards`)."""
    import pandas as pd
    import pyarrow as pa

    from .encode import EmbeddedFiles

    dim = int(manifest["dim"])
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
    n_cached = int(status["cached"].astype(bool).sum()) if "cached" in status else 0
    return EmbeddedFiles(vectors[snips["_row"].to_numpy()], snippets, files, n_cached, manifest=manifest)


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
    from ..index import Index, example_metadata
    from ..labels import ExampleSet, load_examples
    from ..tagging.build import BuildReport, fit_vote

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
    fit_vote(index)
    if out is not None:
        index.save(out)
    return index


def library_from_shards(shards: str | Path, out: str | Path | None = None, *, kind: str = DEFAULT_LIBRARY_KIND,
                        target_recall: float = DEFAULT_TARGET_RECALL):
    """Build a :class:`~clapknn.library.LibraryIndex` (one vector per track) from shards."""
    from ..library import LibraryIndex, _track_vectors

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
        As :meth:`clapknn.Tagger.tag` returns for the same files: with the tagger's
        ``max_snippets``, only the windows it would read are voted on.
    """
    from ..errors import EncoderMismatchError

    emb = read_shards(shards)
    m = emb.manifest
    tagger.index.check_encoder(m["encoder"])
    if float(m["snippet_seconds"]) != tagger.index.snippet_seconds:
        raise EncoderMismatchError(
            f"{shards}: snippets of {m['snippet_seconds']:g} s, the index uses {tagger.index.snippet_seconds:g} s"
        )
    skipped = [tuple(p) for p in m.get("skipped_inputs", [])] + list(emb.failures)
    from ..audio.snippet import sampled_windows
    from ..encoders import track_context

    keep = sampled_windows(emb.snippets["file"].to_numpy(), emb.snippets["start"].to_numpy(), emb.files["duration"].to_numpy(),
                           tagger.max_snippets, float(m["snippet_seconds"]), m.get("hop_seconds"))
    snippets = emb.snippets[keep].reset_index(drop=True)
    vectors = track_context(m["encoder"], emb.vectors, emb.snippets["file"].to_numpy(), keep)
    return tagger.tag_vectors(vectors, snippets, list(emb.files["path"].astype(str)), skipped=skipped)
