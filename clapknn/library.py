"""Library-wide similarity: one vector per track in an approximate nearest-neighbour index.

``clapknn index-library ~/Music --out library/`` embeds every track (through the embedding cache, so
a re-run embeds only new or changed files), pools its snippet vectors into one track vector (the
mean, L2-normalised), and indexes the track vectors with FAISS for inner-product (cosine) search.
``clapknn similar FILE --library library/`` then lists the tracks nearest to FILE.

The index kind follows the library size (:func:`clapknn.ann.choose_kind`; the search itself is :mod:`clapknn.ann`):

============  ==========================  =====================================================
tracks        kind                        why
============  ==========================  =====================================================
≤ 20,000      ``flat`` (exact)            a full scan takes milliseconds; recall is 1
≤ 250,000     ``hnsw`` (HNSW32, flat)     best recall/latency; build cost grows ~n log n
more          ``ivf`` (IVF-Flat)          k-means coarse quantiser, ``nlist ≈ √n``; builds in
                                          a minute at a million tracks on two cores
============  ==========================  =====================================================

Recall is measured at build time: up to :data:`RECALL_QUERIES` library tracks are searched both
exactly and with the index (the query track itself left out of both), and the search depth
(``efSearch`` for HNSW, ``nprobe`` for IVF) is raised until recall@10 reaches ``target_recall``.
The depth and the measured recall@10 are stored in the manifest.

A library directory holds ``library.faiss``, ``tracks.parquet`` (row ``i`` is FAISS id ``i``:
``path``, ``sha256``, ``duration``, ``n_snippets``) and ``manifest.json`` (format version, kind and
parameters, measured recall, encoder identity, snippet settings, counts, package versions,
checksums). Saving is atomic; loading checks the checksums and counts.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .ann import RECALL_QUERIES, build_ann, measure_depth, set_depth
from .errors import ClapknnError, IndexFormatError, ParameterError, first_line
from .options import (
    DEFAULT_LIBRARY_KIND, DEFAULT_SNIPPET_SECONDS, DEFAULT_TARGET_RECALL, DEFAULT_WORKERS, check_int, check_snippets,
)
from .store import StoredDirectory, read_manifest, read_parquet, verify_files

__all__ = ["LibraryIndex", "index_library", "similar"]

logger = logging.getLogger(__name__)

LIBRARY_FORMAT = 1
LIBRARY_FILE = "library.faiss"
TRACKS_FILE = "tracks.parquet"

class LibraryIndex(StoredDirectory):
    """Track vectors of a library in a FAISS index, with their metadata and manifest.

    Build one with :func:`index_library` (or :meth:`from_vectors`), search it with :meth:`search`
    or :func:`similar`.

    Attributes
    ----------
    index : faiss.Index
    tracks : pandas.DataFrame
        Row ``i`` is FAISS id ``i``: ``path``, ``sha256``, ``duration`` (seconds covered by the
        track's snippets, see :func:`similar`), ``n_snippets``.
    manifest : dict
    skipped : list of (path, reason)
        Files left out when the library was just indexed (empty for a loaded one).
    encoder : Encoder or None
        The encoder the library was just indexed with (``None`` for a loaded one).
    """

    STORE_KIND = "library"

    def __init__(self, index, tracks, manifest: dict[str, Any], *, skipped=(), encoder=None) -> None:
        self.index = index
        self.tracks = tracks.reset_index(drop=True)
        self.manifest = manifest
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.encoder = encoder
        self._by_path: dict[str, int] | None = None
        self._by_sha: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        m = self.manifest
        return f"LibraryIndex({len(self)} tracks, kind={m['kind']!r}, recall@10={m.get('recall_at_10')})"

    @property
    def kind(self) -> str:
        """The FAISS index type chosen for the library (as recorded in its manifest)."""
        return str(self.manifest["kind"])

    @property
    def encoder_identity(self) -> dict[str, Any]:
        """The encoder identity recorded when the library was indexed."""
        return dict(self.manifest["encoder"])

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        tracks,
        *,
        encoder: dict[str, Any],
        snippet_seconds: float,
        hop_seconds: float,
        kind: str = DEFAULT_LIBRARY_KIND,
        target_recall: float = DEFAULT_TARGET_RECALL,
        recall_queries: int = RECALL_QUERIES,
        seed: int = 0,
        extra: dict[str, Any] | None = None,
        skipped=(),
        encoder_object=None,
    ) -> "LibraryIndex":
        """Index track vectors (rows are L2-normalised here) and measure the index's recall@10;
        ``skipped`` and ``encoder_object`` become :attr:`skipped` and :attr:`encoder`."""
        import time

        import pandas as pd

        from .encoders.base import l2_normalize
        from .index import _versions

        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if not np.allclose(np.einsum("ij,ij->i", vectors, vectors), 1.0, atol=1e-4):
            vectors = l2_normalize(vectors)  # (already unit rows are used as they are: no copy of a big library)
        tracks = pd.DataFrame(tracks).reset_index(drop=True)
        if len(tracks) != len(vectors):
            raise ParameterError(f"{len(vectors)} vectors but {len(tracks)} track rows")
        if len(vectors) == 0:
            raise ParameterError("no track to index")
        t0 = time.perf_counter()
        index, kind, params = build_ann(vectors, kind, seed=seed)
        build_s = time.perf_counter() - t0
        depth, recall, m = measure_depth(index, kind, vectors, 10, target_recall, recall_queries, seed)
        if depth is not None:
            params["efSearch" if kind == "hnsw" else "nprobe"] = int(depth)
        if recall < target_recall:
            logger.warning(
                "%s index: recall@10 %.3f at the deepest search tried, below the target %.2f "
                "(vectors without cluster structure?); kind='flat' gives exact results", kind, recall, target_recall,
            )
        manifest = {
            "format": "clapknn-library",
            "format_version": LIBRARY_FORMAT,
            "kind": kind,
            "params": params,
            "metric": "inner_product",
            "recall_at_10": round(float(recall), 4),
            "recall_queries": int(m),
            "target_recall": float(target_recall),
            "target_reached": bool(recall >= target_recall),
            "build_seconds": round(build_s, 3),
            "encoder": dict(encoder),
            "snippet_seconds": float(snippet_seconds),
            "hop_seconds": float(hop_seconds),
            "dim": int(vectors.shape[1]),
            "n_tracks": int(len(vectors)),
            "pooling": "mean of snippet vectors, L2-normalised",
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if extra:
            manifest.update(extra)
        return cls(index, tracks, manifest, skipped=skipped, encoder=encoder_object)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, ids)`` of the ``k`` nearest tracks of each query row (``-1`` ids are padding)."""
        from .encoders.base import l2_normalize

        q = l2_normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.index.d:
            raise ParameterError(f"query vectors have dim {q.shape[1]}, the library has {self.index.d}")
        k = int(min(max(k, 1), len(self)))
        return self.index.search(q, k)

    def vector(self, i: int) -> np.ndarray:
        """The stored vector of track ``i``."""
        return self.index.reconstruct(int(i))

    def find(self, path: str | Path, sha256: str | None = None) -> int | None:
        """Id of a track by path (as written, or absolute), else by content hash; ``None`` if absent."""
        if self._by_path is None:
            self._by_path = {}
            for i, p in enumerate(self.tracks["path"].astype(str)):
                self._by_path.setdefault(p, i)
                self._by_path.setdefault(os.path.abspath(p), i)
            self._by_sha = {}
            for i, s in enumerate(self.tracks["sha256"].astype(str)):
                if s:
                    self._by_sha.setdefault(s, i)
        for key in (str(path), os.path.abspath(os.path.expanduser(str(path)))):
            if key in self._by_path:
                return self._by_path[key]
        if sha256:
            return self._by_sha.get(sha256)
        return None

    # ------------------------------------------------------------------ persistence
    def _write_files(self, tmp: Path) -> tuple[str, ...]:
        """The data files of :meth:`save` (:class:`~clapknn.store.StoredDirectory`): the FAISS
        index and the track table."""
        import faiss

        faiss.write_index(self.index, str(tmp / LIBRARY_FILE))
        self.tracks.to_parquet(tmp / TRACKS_FILE, index=False)
        return LIBRARY_FILE, TRACKS_FILE

    @classmethod
    def _read(cls, path: Path) -> "LibraryIndex":
        import faiss

        manifest = read_manifest(path, kind="clapknn library")
        if manifest.get("format") != "clapknn-library":
            raise IndexFormatError(f"{path}: not a clapknn library (a tagging index? use it with 'clapknn tag')")
        if manifest.get("format_version") != LIBRARY_FORMAT:
            raise IndexFormatError(
                f"{path}: library format version {manifest.get('format_version')!r} is not supported (this clapknn reads {LIBRARY_FORMAT})"
            )
        verify_files(path, manifest, (LIBRARY_FILE, TRACKS_FILE))
        try:
            index = faiss.read_index(str(path / LIBRARY_FILE))
            tracks = read_parquet(path / TRACKS_FILE).to_pandas(use_threads=False)
        except Exception as exc:  # noqa: BLE001 - faiss/pyarrow raise many types
            raise IndexFormatError(f"{path}: cannot read library files ({first_line(exc)})") from exc
        n = int(manifest.get("n_tracks", -1))
        if index.ntotal != n or len(tracks) != n or index.d != int(manifest.get("dim", -1)):
            raise IndexFormatError(f"{path}: inconsistent library ({index.ntotal} vectors, {len(tracks)} track rows, manifest says {n})")
        kind = manifest["kind"]
        if kind == "ivf":
            faiss.extract_index_ivf(index).make_direct_map()
        params = manifest.get("params", {})
        set_depth(index, kind, params.get("efSearch") if kind == "hnsw" else params.get("nprobe"))
        return cls(index, tracks, manifest)


def _track_vectors(emb) -> tuple[np.ndarray, "pd.DataFrame"]:  # noqa: F821
    """Mean snippet vector per usable file (normalised later) and the track table."""
    import pandas as pd

    files = emb.files
    ok = np.flatnonzero((files["error"] == "").to_numpy() & (files["n_snippets"] > 0).to_numpy())
    if not len(ok):
        return np.zeros((0, emb.vectors.shape[1]), np.float32), files.iloc[:0]
    sums = np.zeros((len(files), emb.vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, emb.snippets["file"].to_numpy(), emb.vectors)
    counts = np.bincount(emb.snippets["file"].to_numpy(), minlength=len(files))
    vecs = (sums[ok] / counts[ok, None]).astype(np.float32)
    tracks = pd.DataFrame(
        {
            "path": files["path"].iloc[ok].astype(str).to_numpy(),
            "sha256": files["sha256"].iloc[ok].astype(str).to_numpy(),
            "duration": files["duration"].iloc[ok].astype(float).to_numpy(),
            "n_snippets": files["n_snippets"].iloc[ok].astype(np.int64).to_numpy(),
        }
    )
    return vecs, tracks


def index_library(
    paths: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    encoder="features",
    encoder_options: Mapping[str, Any] | None = None,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    kind: str = DEFAULT_LIBRARY_KIND,
    target_recall: float = DEFAULT_TARGET_RECALL,
    batch_size: int = 16,
    cache=True,
    workers: int = DEFAULT_WORKERS,
    progress: bool = False,
) -> LibraryIndex:
    """Embed every track under ``paths`` and build a :class:`LibraryIndex` (saved to ``out`` when given).

    Parameters
    ----------
    paths : path or sequence of paths
        Audio files and/or folders (scanned recursively).
    out : path, optional
    encoder, encoder_options, snippet_seconds, hop_seconds, batch_size, workers, progress
        As in :func:`clapknn.build_index`.
    kind : {"auto", "flat", "hnsw", "ivf"}
    target_recall : float
        recall@10 the search depth is tuned to reach (measured against exact search).
    cache : bool, path or EmbeddingCache
        The embedding cache (on by default: a re-run only embeds new or changed files).

    Returns
    -------
    LibraryIndex
        With :attr:`~LibraryIndex.skipped` (``(path, reason)`` of files left out).
    """
    from .embedding.encode import embed_files
    from .encoders import Encoder, get_encoder
    from .tagging.tagger import Tagger

    snippet_seconds, hop = check_snippets(snippet_seconds, hop_seconds)
    enc = encoder if isinstance(encoder, Encoder) else get_encoder(encoder, **dict(encoder_options or {}))
    files, problems = Tagger.collect_files(paths)
    emb = embed_files(
        files, enc, snippet_seconds=snippet_seconds, hop_seconds=hop, batch_size=batch_size,
        hashes=True, progress=progress, desc="indexing", cache=cache, workers=workers,
    )
    vectors, tracks = _track_vectors(emb)
    skipped = problems + emb.failures
    if not len(vectors):
        raise ClapknnError(f"no track could be embedded ({len(skipped)} skipped)")
    lib = LibraryIndex.from_vectors(
        vectors, tracks, encoder=enc.identity(), snippet_seconds=snippet_seconds, hop_seconds=hop,
        kind=kind, target_recall=target_recall, skipped=skipped, encoder_object=enc,
    )
    if out is not None:
        lib.save(out)
    return lib


def similar(
    library: LibraryIndex | str | Path,
    query: str | Path,
    *,
    k: int = 10,
    encoder=None,
    encoder_options: Mapping[str, Any] | None = None,
    cache=True,
    include_self: bool = False,
):
    """The ``k`` library tracks nearest to the track ``query``.

    A query that is in the library (same path, or same bytes) uses its stored vector; any other file
    is embedded with the library's encoder and settings.

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``path``, ``similarity`` (cosine), ``duration`` (seconds of the track its snippets
        cover: the end of its last snippet, which is the track's length unless a tail shorter than
        half a snippet was left out or the file is truncated); the query track itself is left
        out unless ``include_self``.
    """
    import pandas as pd

    from .embedding.encode import embed_files
    from .encoders import encoder_from_identity
    from .errors import AudioError

    from .encoders import check_encoder_options

    check_int("k", k)
    lib = library if isinstance(library, LibraryIndex) else LibraryIndex.load(library)
    # refused even when the query's stored vector makes the encoder unnecessary
    check_encoder_options(lib.encoder_identity.get("name"), dict(encoder_options or {}))
    query = Path(query).expanduser()
    me = lib.find(query)
    if me is None and query.is_file():
        from .embedding.cache import resolve_cache

        store = resolve_cache(cache)
        try:
            sha = store.file_sha256(query) if store is not None else None
        except OSError:
            sha = None
        me = lib.find(query, sha256=sha)
    if me is not None:
        vec = lib.vector(me)
    else:
        enc = encoder or lib.encoder or encoder_from_identity(lib.encoder_identity, **dict(encoder_options or {}))
        from .index import check_same_encoder

        check_same_encoder(lib.encoder_identity, enc.identity(), what="library", rebuild="clapknn index-library MUSIC --out LIBRARY")
        emb = embed_files(
            [query], enc, snippet_seconds=float(lib.manifest["snippet_seconds"]),
            hop_seconds=float(lib.manifest["hop_seconds"]), cache=cache,
        )
        if emb.failures:
            raise AudioError(f"{query}: {emb.failures[0][1]}")
        vec = emb.vectors.mean(axis=0)
    sims, ids = lib.search(vec[None, :], k + (0 if include_self else 1))
    rows = []
    for s, i in zip(sims[0].tolist(), ids[0].tolist()):
        if i < 0 or (i == me and not include_self):
            continue
        rows.append((str(lib.tracks["path"].iat[i]), float(s), float(lib.tracks["duration"].iat[i])))
    rows = rows[:k]
    return pd.DataFrame(
        {"rank": np.arange(1, len(rows) + 1), "path": [r[0] for r in rows],
         "similarity": [r[1] for r in rows], "duration": [r[2] for r in rows]}
    )
