"""The curator's session: a library tagged once, retagged from its stored vectors after each label.

:class:`Curator` embeds the library's tracks once (through the embedding cache, in a background
thread whose progress the page shows), keeps their snippet vectors in memory, and tags them with
:meth:`clapknn.tagging.tagger.Tagger.tag_vectors`. A label (confirm, correct or a new tag) makes the track an
example through :func:`clapknn.incremental.add_examples` (the index is saved whole, atomically, as
``clapknn add`` does), then the whole library is tagged again from the stored vectors: no track is
decoded or encoded again. Undo applies the inverse update (:func:`~clapknn.incremental.remove_examples`
for a track that was no example, ``add_examples`` with its former tags otherwise).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClapknnError, ParameterError
from ..options import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
from .labelnext import LOW_MARGIN, margins, queue

__all__ = ["Curator", "Correction"]

logger = logging.getLogger(__name__)

#: Corrections that can be undone, newest last.
UNDO_DEPTH = 50


def _real(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.path.expanduser(str(path))))


@dataclass
class Correction:
    """One label given in the page: the track, the tags given, and what the index held for it before
    (``None``: the track was no example)."""

    path: str
    tags: tuple[str, ...]
    previous: tuple[str, ...] | None


@dataclass
class _Library:
    files: list[str] = field(default_factory=list)  # absolute paths, position = track id
    vectors: Any = None  # (n_snippets, dim)
    snippets: Any = None  # DataFrame file, path, start, end
    track_vectors: Any = None  # (n_files, dim): mean of each file's snippets (zeros when none)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    real: dict[str, str] = field(default_factory=dict)  # real path of each of ``files``
    served: set[str] = field(default_factory=set)  # the real paths, for the file checks


class Curator:
    """The state behind ``clapknn serve``.

    Parameters
    ----------
    index : path
        The index directory (a bare name is looked up under ``index/`` too).
    library : path
        The music folder. Only its audio files (and the index's examples) are ever served.
    k : int
        Neighbours per snippet.
    cache : bool, path or EmbeddingCache
        The embedding cache (:func:`clapknn.embedding.cache.resolve_cache`); ``True``: the default folder.
    workers, batch_size : int
        As in :func:`clapknn.embedding.encode.embed_files`.
    low_margin : float
        A track whose two best scores are closer than this is flagged low-confidence.
    """

    def __init__(self, index, library, *, k: int | None = None, cache=True, workers: int = DEFAULT_WORKERS, batch_size: int = DEFAULT_BATCH_SIZE,
                 low_margin: float = LOW_MARGIN) -> None:
        from ..options import DEFAULT_K, check_int
        from ..tagging.tagger import index_path

        self.index_path = index_path(index).absolute()
        self.library = Path(os.path.expanduser(str(library))).absolute()
        self.k = check_int("k", DEFAULT_K if k is None else k)
        self.cache = cache
        self.workers = workers
        self.batch_size = batch_size
        self.low_margin = float(low_margin)
        self.lock = threading.RLock()
        self.state = "starting"  # starting, tagging, ready, error
        self.error = ""
        self.done = 0
        self.total = 0
        self.n_cached = 0
        self.version = 0  # bumped on every retag
        self.history: list[Correction] = []
        self.lib = _Library()
        self.tagger = None
        self.tracks = None  # pandas.DataFrame, one row per tagged track
        self.examples: list[str] = []  # example files of the index, position = example id
        self._example_tags: dict[str, tuple[str, ...]] = {}  # real path -> tags
        self._thread: threading.Thread | None = None
        self._round: list[int] = []  # the label-next queue being worked through: track ids, best first
        self._round_n = 0  # the length asked for it

    # ------------------------------------------------------------------ loading
    def start(self, *, background: bool = True) -> None:
        """Load the index and tag the library (in a thread unless ``background`` is false)."""
        if background:
            self._thread = threading.Thread(target=self._load_safely, name="clapknn-serve-tagging", daemon=True)
            self._thread.start()
        else:
            self._load_safely()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the initial tagging to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _load_safely(self) -> None:
        try:
            self._load()
        except ClapknnError as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - shown in the page instead of a dead thread
            logger.exception("tagging the library failed")
            self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        with self.lock:
            self.state, self.error = "error", message

    def _load(self) -> None:
        import pandas as pd

        from ..embedding.engine import iter_embeddings
        from ..tagging.tagger import Tagger

        if not (self.index_path / "manifest.json").is_file():
            raise ClapknnError(
                f"no index at {self.index_path}: build one from labelled examples with "
                f"'clapknn build EXAMPLES --out {self.index_path}', then start clapknn serve again"
            )
        if not self.library.is_dir():
            raise ClapknnError(f"no music folder at {self.library}: give --library a folder of audio files")
        tagger = Tagger(self.index_path, k=self.k, batch_size=self.batch_size)
        files, problems = Tagger.collect_files(self.library)
        root = _real(self.library)
        inside, outside, real = [], [], {}
        for f in files:
            r = _real(f)
            if r.startswith(root.rstrip(os.sep) + os.sep):
                inside.append(str(f))
                real[str(f)] = r
            else:
                outside.append(str(f))
        problems += [(f, "links outside the library (not served)") for f in outside]
        if not inside:
            raise ClapknnError(f"no audio file inside {self.library}")
        with self.lock:
            self.state, self.total, self.done = "tagging", len(inside), 0
        vectors, file_ids, starts, ends = [], [], [], []
        track_vectors = np.zeros((len(inside), tagger.encoder.dim), dtype=np.float32)
        n_cached = 0
        index = tagger.index
        for fe in iter_embeddings(
            inside, tagger.encoder, snippet_seconds=index.snippet_seconds, hop_seconds=index.hop_seconds,
            batch_size=self.batch_size, hashes=False, cache=self.cache or None, workers=self.workers,
        ):
            if fe.error:
                problems.append((fe.path, fe.error))
            elif fe.n_snippets:
                vectors.append(fe.vectors)
                file_ids.append(np.full(fe.n_snippets, fe.index, dtype=np.int64))
                starts.append(fe.starts)
                ends.append(fe.ends)
                track_vectors[fe.index] = fe.vectors.mean(axis=0)
            n_cached += fe.cached
            with self.lock:
                self.done += 1
                self.n_cached = n_cached
        ids = np.concatenate(file_ids) if file_ids else np.zeros(0, dtype=np.int64)
        snippets = pd.DataFrame({
            "file": ids, "path": [inside[i] for i in ids.tolist()],
            "start": np.concatenate(starts) if starts else np.zeros(0),
            "end": np.concatenate(ends) if ends else np.zeros(0),
        })
        lib = _Library(inside, np.concatenate(vectors) if vectors else np.zeros((0, tagger.encoder.dim), np.float32),
                       snippets, track_vectors, problems, real)
        lib.served = set(real.values())
        with self.lock:
            self.lib, self.n_cached = lib, n_cached
            self._use(tagger)
            self.state = "ready"

    # ------------------------------------------------------------------ tagging from stored vectors
    def _use(self, tagger) -> dict[str, str]:
        """Tag the library with ``tagger``; returns ``{path: old top}`` of the tracks whose top tag changed."""
        import pandas as pd

        lib = self.lib
        result = tagger.tag_vectors(lib.vectors, lib.snippets, lib.files, skipped=lib.skipped)
        tracks = result.tracks
        tags = list(tagger.tags)
        score_cols = [f"score:{t}" for t in tags]
        ids = {p: i for i, p in enumerate(lib.files)}
        tracks.insert(0, "id", [ids[p] for p in tracks["path"]])
        root = str(self.library)
        tracks.insert(1, "name", [os.path.relpath(p, root) for p in tracks["path"]])
        tracks["margin"] = margins(tracks[score_cols].to_numpy()) if len(tracks) else []
        tracks["low"] = tracks["margin"] < self.low_margin
        # the snippet that voted: the one that gave the top tag its highest score (the earlier on ties)
        snip = result.snippets
        best_start, best_end = {}, {}
        if len(snip):
            col_of = {p: tags.index(t) for p, t in zip(tracks["path"], tracks["top"])}
            cols = np.array([col_of[p] for p in snip["path"]], dtype=np.int64)
            value = snip[score_cols].to_numpy()[np.arange(len(snip)), cols]
            ranked = pd.DataFrame({"path": snip["path"], "start": snip["start"], "end": snip["end"], "value": -value})
            ranked = ranked.sort_values(["value", "start"], kind="mergesort").drop_duplicates("path")
            best_start = dict(zip(ranked["path"], ranked["start"].astype(float)))
            best_end = dict(zip(ranked["path"], ranked["end"].astype(float)))
        tracks["snippet_start"] = [best_start.get(p, 0.0) for p in tracks["path"]]
        tracks["snippet_end"] = [best_end.get(p, 0.0) for p in tracks["path"]]
        # which tracks are examples, and with which tags
        meta = tagger.index.metadata
        audio = meta[meta["kind"] == "audio"]
        self.examples = list(dict.fromkeys(audio["path"].astype(str)))
        first_tags = dict(reversed(list(zip(audio["path"].astype(str), audio["tags"]))))  # a file's tags: its first row's
        self._example_tags = {}
        for p in self.examples:
            self._example_tags.setdefault(_real(p), tuple(first_tags[p]))
        tracks["example"] = [";".join(self._example_tags.get(lib.real.get(p) or _real(p), ())) for p in tracks["path"]]
        changed: dict[str, str] = {}
        if self.tracks is not None:
            before = dict(zip(self.tracks["path"], self.tracks["top"]))
            changed = {p: before[p] for p, t in zip(tracks["path"], tracks["top"]) if p in before and before[p] != t}
        tracks["changed"] = [p in changed for p in tracks["path"]]
        self.tagger, self.tracks = tagger, tracks.reset_index(drop=True)
        self.version += 1
        return changed

    def _retag_from(self, index) -> dict[str, str]:
        from ..tagging.tagger import Tagger

        return self._use(Tagger(index, encoder=self.tagger.encoder, k=self.k, batch_size=self.batch_size))

    # ------------------------------------------------------------------ what the page asks
    def require_ready(self) -> None:
        """Raise a :class:`ClapknnError` saying why the library is not there yet."""
        if self.state == "error":
            raise ClapknnError(self.error)
        if self.state != "ready":
            raise ClapknnError(f"the library is being tagged ({self.done} of {self.total} tracks); try again in a moment")

    def status(self) -> dict[str, Any]:
        """The session's state for the page's header."""
        with self.lock:
            out = {
                "state": self.state, "error": self.error, "done": self.done, "total": self.total,
                "cached": self.n_cached, "index": str(self.index_path), "library": str(self.library),
                "version": self.version, "undo": len(self.history), "k": self.k,
                "history": [{"name": os.path.basename(c.path), "tags": list(c.tags)} for c in self.history[-5:]],
            }
            if self.state == "ready":
                out.update(
                    tags=list(self.tagger.tags), n_tracks=int(len(self.tracks)), n_examples=len(self.examples),
                    n_skipped=len(self.lib.skipped), n_low=int(self.tracks["low"].sum()),
                    counts={t: int((self.tracks["top"] == t).sum()) for t in self.tagger.tags},
                )
            return out

    def track(self, track_id: int) -> dict[str, Any]:
        """One track's row plus "why": the examples that voted, with their similarity."""
        self.require_ready()
        with self.lock:
            row = self._row(track_id)
            lib = self.lib
            mask = lib.snippets["file"].to_numpy() == track_id
            snippets = lib.snippets[mask].assign(file=0)
            result = self.tagger.tag_vectors(lib.vectors[mask], snippets, [lib.files[track_id]], explain=True)
            eid = {_real(p): i for i, p in enumerate(self.examples)}
            why = [
                {"example": eid.get(_real(r.neighbor)), "name": os.path.basename(r.neighbor), "path": r.neighbor,
                 "tags": r.neighbor_tags, "start": float(r.neighbor_start), "similarity": float(r.similarity),
                 "votes": int(r.votes)}
                for r in result.neighbors.itertuples()
            ]
            snips = [
                {"start": float(s.start), "end": float(s.end), "top": s.top}
                for s in result.snippets.itertuples()
            ]
            return {"track": row, "why": why, "snippets": snips, "tags": list(self.tagger.tags)}

    def _row(self, track_id: int) -> dict[str, Any]:
        from .table import row_dict

        hit = self.tracks.index[self.tracks["id"] == track_id]
        if not len(hit):
            raise ParameterError(f"no track {track_id} in the library's table")
        return row_dict(self.tracks.loc[hit[0]], self.tagger.tags)

    def queue(self, n: int = 10, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The label-next queue (:func:`clapknn.webapp.labelnext.queue`), as a round of ``n`` tracks:
        the round stays put while its tracks are labelled (each labelled track leaves it; an undone
        one comes back), and the next ``n`` are chosen, from the library as it is tagged then, once
        every track of the round is an example (or ``fresh`` asks for a new round now)."""
        from .table import row_dict

        self.require_ready()
        with self.lock:
            tracks, tags = self.tracks, self.tagger.tags
            row_of = {int(i): r for r, i in enumerate(tracks["id"].to_numpy())}
            is_example = tracks["example"].to_numpy() != ""
            left = [i for i in self._round if i in row_of and not is_example[row_of[i]]]
            if fresh or not left or n != self._round_n:
                scores = tracks[[f"score:{t}" for t in tags]].to_numpy()
                lib = self.lib
                file_ids = lib.snippets["file"].to_numpy()
                has_row = np.array([int(f) in row_of for f in file_ids], dtype=bool)
                track_of = np.array([row_of[int(f)] for f in file_ids[has_row]], dtype=np.int64)
                rows = queue(self.tagger, scores, lib.vectors[has_row], track_of, n=n, exclude=np.flatnonzero(is_example))
                self._round, self._round_n = [int(tracks["id"].iat[r]) for r in rows], n
                left = list(self._round)
            return [row_dict(tracks.iloc[row_of[i]], tags) for i in left]

    # ------------------------------------------------------------------ labels and undo
    def label(self, track_id: int, tags) -> dict[str, Any]:
        """Make a track an example with ``tags`` (confirm, correct or a new tag) and retag everything."""
        from ..incremental import add_examples

        self.require_ready()
        tags = tuple(dict.fromkeys(str(t).strip() for t in ([tags] if isinstance(tags, str) else tags) if str(t).strip()))
        if not tags:
            raise ParameterError("give a tag")
        bad = [t for t in tags if len(t) > 64 or any(c in t for c in ";|\n\r\t")]
        if bad:
            raise ParameterError(f"a tag is at most 64 characters, without ';', '|' or line breaks: {bad[0]!r}")
        with self.lock:
            if not 0 <= track_id < len(self.lib.files):
                raise ParameterError(f"no track {track_id} in the library")
            path = self.lib.files[track_id]
            previous = self._example_tags.get(self.lib.real.get(path) or _real(path))
            updated, _ = add_examples(self.index_path, [path], tags=list(tags), cache=self.cache, batch_size=self.batch_size,
                                      encoder=self.tagger.encoder)
            self.history.append(Correction(path, tags, previous))
            del self.history[:-UNDO_DEPTH]
            changed = self._retag_from(updated)
            return self._changes(changed, f"{os.path.basename(path)} is now an example of {', '.join(tags)}")

    def undo(self) -> dict[str, Any]:
        """Take back the last label: the index gets back what it held for that track."""
        from ..incremental import add_examples, remove_examples

        self.require_ready()
        with self.lock:
            if not self.history:
                raise ParameterError("nothing to undo")
            c = self.history[-1]
            if c.previous is None:
                updated, _ = remove_examples(self.index_path, [c.path])
            else:
                updated, _ = add_examples(self.index_path, [c.path], tags=list(c.previous), cache=self.cache,
                                          batch_size=self.batch_size, encoder=self.tagger.encoder)
            self.history.pop()
            changed = self._retag_from(updated)
            was = "no example" if c.previous is None else f"an example of {', '.join(c.previous)}"
            return self._changes(changed, f"undone: {os.path.basename(c.path)} is {was} again")

    def _changes(self, changed: dict[str, str], message: str) -> dict[str, Any]:
        tops = dict(zip(self.tracks["path"], self.tracks["top"]))
        ids = dict(zip(self.tracks["path"], self.tracks["id"]))
        rows = [
            {"id": int(ids[p]), "name": os.path.relpath(p, str(self.library)), "before": old, "after": tops[p]}
            for p, old in sorted(changed.items())
        ]
        return {"message": message, "changed": rows, "n_changed": len(rows), "status": self.status()}

    # ------------------------------------------------------------------ files the page may play
    def track_file(self, relative: str) -> Path:
        """The library track at ``relative`` (to the library), refused unless it is one of the tagged
        tracks and its real path lies inside the library."""
        from .safety import inside

        self.require_ready()
        path = inside(self.library, relative)
        if _real(path) not in self.lib.served:
            raise PermissionError(f"{relative}: not a track of the library")
        return path

    def example_file(self, example_id: int) -> Path:
        """The example file ``example_id`` of the index."""
        from .safety import regular_file

        self.require_ready()
        with self.lock:
            if not 0 <= example_id < len(self.examples):
                raise ParameterError(f"no example {example_id} in the index")
            return regular_file(self.examples[example_id])
