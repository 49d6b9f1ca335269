"""Index: labelled snippet embeddings in a FAISS exact inner-product index, saved as a directory.

An index directory holds::

    index.faiss        FAISS IndexFlatIP over L2-normalised vectors (inner product = cosine)
    metadata.parquet   one row per vector id: path, start, end, tags, sha256, kind ("audio"/"text")
    vote.json          the fitted vote (:meth:`clapknn.vote.KNNTagger.fitted_state`: its settings,
                       the space chosen, the space's transform and the evidence for the choice)
    vote.faiss         the vectors in the vote's search space, when they are not index.faiss's
    manifest.json      format version, encoder identity, snippet settings, dim, tag vocabulary,
                       package versions, creation time and a SHA-256 of each file above

A :class:`~clapknn.Tagger` restores the fitted vote and searches the saved FAISS index as it is,
so tagging starts as fast with 40,000 example snippets as with 100; an index saved without the
vote files (older versions) is fitted when loaded, as before.

Saving is atomic: everything is written to a hidden sibling directory, checked, then swapped in by
rename under a lock, so an interrupted or failed save never leaves a half index and never destroys
the previous one (a kill between the two renames leaves the previous index in ``.<name>.previous``,
which :meth:`Index.load` and the next save recover). Loading takes the same lock, shared, so it
never reads a directory in the middle of a swap, and verifies the checksums (both files must have
one), the manifest's field types, the counts and the tag vocabulary.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import EncoderMismatchError, IndexFormatError, ParameterError, first_line
from .store import MANIFEST_FILE, StoredDirectory, read_manifest, read_parquet, verify_files

__all__ = [
    "Index", "example_metadata", "FORMAT_VERSION", "INDEX_FILE", "METADATA_FILE", "MANIFEST_FILE", "describe_mismatch",
    "INDEX_HOME", "index_path",
]

logger = logging.getLogger(__name__)

#: Version of the on-disk layout written by this code.
FORMAT_VERSION = 1
#: Default index home (relative to the working directory).
INDEX_HOME = Path("index")
INDEX_FILE = "index.faiss"
VOTE_FILE = "vote.json"
VOTE_INDEX_FILE = "vote.faiss"
METADATA_FILE = "metadata.parquet"
_META_COLUMNS = ["path", "start", "end", "tags", "sha256", "kind"]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("clapknn", "numpy", "faiss-cpu", "librosa", "torch", "laion-clap"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def describe_mismatch(built: dict[str, Any], query: dict[str, Any]) -> list[str]:
    """Human-readable differences between two encoder identities (empty when they match).

    A checkpoint is identified by its content: when both sides record the same
    ``checkpoint_sha256``, a different ``checkpoint`` location (a moved or renamed file) is no
    difference, and the recorded path (a location key, :data:`~clapknn.encoders.base.LOCATION_KEYS`)
    never is one.
    """
    from .encoders.base import LOCATION_KEYS

    same_weights = built.get("checkpoint_sha256") and built.get("checkpoint_sha256") == query.get("checkpoint_sha256")
    diffs = []
    for key in sorted(set(built) | set(query)):
        if key in LOCATION_KEYS or (key == "checkpoint" and same_weights):
            continue
        if built.get(key) != query.get(key):
            was, now = (_shown(key, side.get(key)) for side in (built, query))
            diffs.append(f"{key}: index has {was}, query encoder has {now}")
    return diffs


#: What an identity key left out means (an encoder records some settings only when not the default).
_UNRECORDED = {"precision": "fp32"}


def _shown(key: str, value: Any) -> str:
    return repr(_UNRECORDED[key]) if value is None and key in _UNRECORDED else repr(value)


def check_same_encoder(built: dict[str, Any], query: dict[str, Any], *, what: str, rebuild: str) -> None:
    """Raise :class:`EncoderMismatchError` naming every difference between the encoder identity a
    store of vectors (``what``: "index", "library") was built with and a query encoder's. When the
    features recipe changed (a newer clapknn computes other vectors from the same audio), the
    message adds ``rebuild``, the command that mends it."""
    diffs = describe_mismatch(built, query)
    if diffs:
        hint = f"; rebuild it with this version of clapknn ({rebuild})" if any(d.startswith(("recipe:", "preprocessing:")) for d in diffs) else ""
        raise EncoderMismatchError(f"query encoder differs from the {what}'s: " + "; ".join(diffs) + hint)


def example_metadata(snippets, sha256: Sequence[str], tags: Sequence[Sequence[str]], groups: Sequence[str], paths: Sequence[str]):
    """The metadata frame of an index's audio rows (columns as in :class:`Index`), one row per snippet.

    Parameters
    ----------
    snippets : pandas.DataFrame
        ``file`` (a position in the per-file sequences below), ``start``, ``end``.
    sha256, tags, groups, paths : sequences, one item per file
        Each file's SHA-256, tags, group (``""`` when the file is its own) and path as stored
        (absolute, so the index works from any folder).
    """
    import pandas as pd

    ids = snippets["file"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "path": [paths[i] for i in ids],
            "start": snippets["start"].to_numpy(dtype=float),
            "end": snippets["end"].to_numpy(dtype=float),
            "tags": [tuple(tags[i]) for i in ids],
            "sha256": [sha256[i] for i in ids],
            "kind": "audio",
            # the source track / album of the example ("" when the file is its own), from a labels
            # CSV's group column: the vote's choice of space leaves whole groups out
            "group": [groups[i] or "" for i in ids],
        }
    )


def index_path(path: str | Path) -> Path:
    """Where the index ``path`` is: as given, or, for a bare name that is not a folder here, under ``index/``."""
    p = Path(os.path.expanduser(path))  # Path.expanduser raises on '~x'
    if not p.exists() and not p.is_absolute() and len(p.parts) == 1 and (INDEX_HOME / p).exists():
        p = INDEX_HOME / p
    return p


class Index(StoredDirectory):
    """Labelled snippet embeddings plus their metadata and manifest.

    Build one with :func:`clapknn.build_index` (or :meth:`from_arrays`), save it with :meth:`save`,
    read it back with :meth:`load`.

    Attributes
    ----------
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
        L2-normalised embeddings; row ``i`` is FAISS id ``i``.
    metadata : pandas.DataFrame
        Row ``i`` describes vector ``i``: ``path``, ``start``, ``end`` (seconds), ``tags`` (tuple of
        str), ``sha256`` of the source file, ``kind`` (``"audio"`` or ``"text"``), and, in indexes
        built since it was added, ``group`` (the example's source track or album from a labels CSV;
        empty when none was given).
    manifest : dict
        See the module docstring.
    report : clapknn.tagging.build.BuildReport, clapknn.incremental.UpdateReport or None
        What the build (or update) used and left out; ``None`` for a loaded index.
    encoder : Encoder or None
        The encoder the index was just built with (``None`` for a loaded index: a
        :class:`~clapknn.Tagger` rebuilds it from :attr:`encoder_identity`).
    """

    STORE_KIND = "index"

    def __init__(self, vectors: np.ndarray, metadata, manifest: dict[str, Any], *, report=None, encoder=None) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.metadata = metadata
        self.manifest = manifest
        self.report = report
        self.encoder = encoder
        #: the fitted vote (:meth:`KNNTagger.fitted_state`), or ``None`` when none is saved
        self.vote: dict[str, Any] | None = None
        self._faiss = None
        self._vote_faiss = None  # the vote's search vectors, when they are not :attr:`vectors`

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        vectors: np.ndarray,
        metadata,
        *,
        encoder: dict[str, Any],
        snippet_seconds: float,
        hop_seconds: float,
        extra: dict[str, Any] | None = None,
        report=None,
        encoder_object=None,
    ) -> "Index":
        """Make an index from normalised vectors and a metadata frame (columns as in the class doc);
        ``report`` and ``encoder_object`` become :attr:`report` and :attr:`encoder`."""
        import pandas as pd

        from .encoders.base import l2_normalize

        vectors = l2_normalize(np.atleast_2d(vectors)) if len(vectors) else np.zeros((0, encoder["dim"]), np.float32)
        metadata = pd.DataFrame(metadata).reset_index(drop=True)
        missing = [c for c in _META_COLUMNS if c not in metadata.columns]
        if missing:
            raise ParameterError(f"metadata lacks column(s) {', '.join(missing)}")
        if len(metadata) != len(vectors):
            raise ParameterError(f"{len(vectors)} vectors but {len(metadata)} metadata rows")
        metadata = metadata.copy()
        metadata["tags"] = [tuple(t) for t in metadata["tags"]]
        manifest = {
            "format_version": FORMAT_VERSION,
            "encoder": dict(encoder),
            "sample_rate": int(encoder["sample_rate"]),
            "snippet_seconds": float(snippet_seconds),
            "hop_seconds": float(hop_seconds),
            "dim": int(vectors.shape[1]),
            "metric": "inner_product",
            "n_vectors": int(len(vectors)),
            "n_files": int(metadata.loc[metadata["kind"] == "audio", "path"].nunique()),
            "tags": sorted({t for ts in metadata["tags"] for t in ts}),
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if extra:
            manifest.update(extra)
        return cls(vectors, metadata, manifest, report=report, encoder=encoder_object)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Length of each vector."""
        return int(self.vectors.shape[1])

    @property
    def tags(self) -> list[str]:
        """Sorted tag vocabulary."""
        return list(self.manifest["tags"])

    @property
    def encoder_identity(self) -> dict[str, Any]:
        """The encoder identity recorded at build time (name, checkpoint hash, sample rate, ...)."""
        return dict(self.manifest["encoder"])

    @property
    def snippet_seconds(self) -> float:
        """Length of the example snippets, seconds."""
        return float(self.manifest["snippet_seconds"])

    @property
    def hop_seconds(self) -> float:
        """Hop between example snippets, seconds."""
        return float(self.manifest["hop_seconds"])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __repr__(self) -> str:
        return (
            f"Index({len(self)} vectors from {self.manifest.get('n_files', '?')} files, "
            f"encoder={self.manifest['encoder'].get('name')!r}, tags={self.tags})"
        )

    @property
    def faiss_index(self):
        """The FAISS ``IndexFlatIP`` over :attr:`vectors` (built on first use)."""
        if self._faiss is None:
            import faiss

            idx = faiss.IndexFlatIP(self.dim)
            if len(self):
                idx.add(self.vectors)
            self._faiss = idx
        return self._faiss

    def set_vote(self, estimator) -> None:
        """Keep a fitted :class:`~clapknn.vote.KNNTagger` (fitted on this index's vectors and tags)
        to save with the index: its :meth:`~clapknn.vote.KNNTagger.fitted_state` and its search
        vectors (shared with :attr:`faiss_index` when they are the same up to float rounding)."""
        search = estimator.search_index
        if search.ntotal != len(self):
            raise ParameterError(f"the vote was fitted on {search.ntotal} vectors, the index has {len(self)}")
        # the plain space is these vectors normalised again: equal to float rounding, so one copy
        # serves both (a saved vote in another space keeps its own vectors)
        same = search.d == self.dim and (
            not len(self) or np.allclose(search.reconstruct_n(0, len(self)), self.vectors, rtol=0.0, atol=1e-6)
        )
        self.vote = estimator.fitted_state()
        self._vote_faiss = None if same else search

    def vote_index(self):
        """The FAISS index of the saved vote's search vectors (:attr:`faiss_index` when they are
        the index's own vectors); ``None`` without a saved vote."""
        if self.vote is None:
            return None
        return self._vote_faiss if self._vote_faiss is not None else self.faiss_index

    def check_encoder(self, identity: dict[str, Any]) -> None:
        """Raise :class:`EncoderMismatchError` naming every difference when a query encoder's
        identity is not the one this index was built with."""
        check_same_encoder(self.encoder_identity, identity, what="index", rebuild="clapknn build EXAMPLES --out INDEX")

    def summary(self) -> dict[str, Any]:
        """What is in the index: counts per tag plus the manifest's main fields."""
        counts: dict[str, dict[str, int]] = {}
        for tags, kind, path in zip(self.metadata["tags"], self.metadata["kind"], self.metadata["path"]):
            for t in tags:
                c = counts.setdefault(t, {"snippets": 0, "files": set(), "text": 0})
                if kind == "text":
                    c["text"] += 1
                else:
                    c["snippets"] += 1
                    c["files"].add(path)
        per_tag = {t: {"files": len(c["files"]), "snippets": c["snippets"], "text": c["text"]} for t, c in counts.items()}
        m = self.manifest
        return {
            "encoder": m["encoder"],
            "snippet_seconds": m["snippet_seconds"],
            "hop_seconds": m["hop_seconds"],
            "dim": m["dim"],
            "n_vectors": m["n_vectors"],
            "n_files": m["n_files"],
            "tags": dict(sorted(per_tag.items())),
            "created": m["created"],
            "versions": m["versions"],
        }

    # ------------------------------------------------------------------ persistence
    def _write_files(self, tmp: Path) -> list[str]:
        """The data files of :meth:`save` (:class:`~clapknn.store.StoredDirectory`): the FAISS
        index, the metadata and the fitted vote."""
        import faiss

        faiss.write_index(self.faiss_index, str(tmp / INDEX_FILE))
        meta = self.metadata.copy()
        meta["tags"] = [list(t) for t in meta["tags"]]
        meta.to_parquet(tmp / METADATA_FILE, index=False)
        names = [INDEX_FILE, METADATA_FILE]
        if self.vote is not None:
            (tmp / VOTE_FILE).write_text(json.dumps(_to_json(self.vote), sort_keys=True), encoding="utf-8")
            names.append(VOTE_FILE)
            if self._vote_faiss is not None:
                faiss.write_index(self._vote_faiss, str(tmp / VOTE_INDEX_FILE))
                names.append(VOTE_INDEX_FILE)
        return names

    @classmethod
    def _read(cls, path: Path) -> "Index":
        import faiss

        manifest_path = path / MANIFEST_FILE
        manifest = read_manifest(path, kind="clapknn index")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{path}: index format version {version!r} is not supported (this clapknn reads {FORMAT_VERSION})"
            )
        required = ("encoder", "snippet_seconds", "hop_seconds", "dim", "n_vectors", "tags", "checksums")
        missing = [k for k in required if k not in manifest]
        if missing:
            raise IndexFormatError(f"{manifest_path}: manifest lacks {', '.join(missing)}")
        kinds = {
            "encoder": dict, "snippet_seconds": (int, float), "hop_seconds": (int, float), "dim": int,
            "n_vectors": int, "tags": list, "checksums": dict,
        }
        wrong = [k for k, t in kinds.items() if not isinstance(manifest[k], t) or isinstance(manifest[k], bool)]
        if wrong:
            raise IndexFormatError(f"{manifest_path}: manifest field(s) of the wrong type: {', '.join(wrong)}")
        # the vote files are optional (older indexes have none), but checked whenever the manifest lists them
        saved_vote = [n for n in (VOTE_FILE, VOTE_INDEX_FILE) if n in manifest["checksums"]]
        verify_files(path, manifest, (INDEX_FILE, METADATA_FILE, *saved_vote))
        try:
            fidx = faiss.read_index(str(path / INDEX_FILE))
            meta = read_parquet(path / METADATA_FILE).to_pandas(use_threads=False)
        except Exception as exc:  # noqa: BLE001 - faiss/pyarrow raise many types
            raise IndexFormatError(f"{path}: cannot read index files ({first_line(exc)})") from exc
        n, dim = int(manifest["n_vectors"]), int(manifest["dim"])
        if fidx.ntotal != n or len(meta) != n or fidx.d != dim:
            raise IndexFormatError(
                f"{path}: inconsistent index ({fidx.ntotal} vectors of dim {fidx.d}, {len(meta)} metadata rows, "
                f"manifest says {n} of dim {dim})"
            )
        missing = [c for c in _META_COLUMNS if c not in meta.columns]
        if missing:
            raise IndexFormatError(f"{path}: {METADATA_FILE} lacks column(s) {', '.join(missing)}")
        try:
            meta["tags"] = [tuple(str(x) for x in t) for t in meta["tags"]]
        except TypeError as exc:
            raise IndexFormatError(f"{path}: malformed tags column in {METADATA_FILE} ({exc})") from exc
        vocabulary = sorted({t for ts in meta["tags"] for t in ts})
        if vocabulary != list(manifest["tags"]):
            raise IndexFormatError(
                f"{path}: the manifest lists tags {manifest['tags']} but the metadata holds {vocabulary}"
            )
        obj = cls(_stored_vectors(fidx, n, dim), meta, manifest)
        obj._faiss = fidx
        if VOTE_FILE in saved_vote:
            try:
                obj.vote = _from_json(json.loads((path / VOTE_FILE).read_text(encoding="utf-8")))
                if VOTE_INDEX_FILE in saved_vote:
                    obj._vote_faiss = faiss.read_index(str(path / VOTE_INDEX_FILE))
            except Exception as exc:  # noqa: BLE001 - json/faiss raise many types
                raise IndexFormatError(f"{path}: cannot read the saved vote ({exc})") from exc
            if obj._vote_faiss is not None and obj._vote_faiss.ntotal != n:
                raise IndexFormatError(f"{path}: {VOTE_INDEX_FILE} holds {obj._vote_faiss.ntotal} vectors, the index {n}")
        return obj


class _FlatStorage:
    """Exposes a flat FAISS index's own vector storage to numpy, keeping the index alive as long as
    any array made from it (so :attr:`Index.vectors` and the index searched are one copy)."""

    def __init__(self, fidx, n: int, dim: int) -> None:
        import faiss

        self._index = fidx
        self.__array_interface__ = faiss.rev_swig_ptr(fidx.get_xb(), n * dim).reshape(n, dim).__array_interface__


def _stored_vectors(fidx, n: int, dim: int) -> np.ndarray:
    """The vectors of a loaded FAISS index: a view of its storage for a flat index, else a copy."""
    if not n:
        return np.zeros((0, dim), np.float32)
    if hasattr(fidx, "get_xb"):
        view = np.asarray(_FlatStorage(fidx, n, dim))
        if view.shape == (n, dim) and view.dtype == np.float32:
            return view
    return fidx.reconstruct_n(0, n)


def _to_json(value):
    """A fitted state as JSON: arrays as ``{"__ndarray__": values, "dtype", "shape"}``."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.ravel().tolist(), "dtype": value.dtype.str if value.dtype.kind != "O" else "O",
                "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value):
    """The inverse of :func:`_to_json` (tuples come back as lists)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            dtype = object if value["dtype"] == "O" else np.dtype(value["dtype"])
            return np.array(value["__ndarray__"], dtype=dtype).reshape(value["shape"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value
