"""Load an index and tag audio with it (:class:`Tagger`); building one is :mod:`clapknn.tagging.build`.

>>> from clapknn import build_index, Tagger
>>> index = build_index("examples/", "index/moods")            # doctest: +SKIP
>>> Tagger(index).tag("~/Music/album").tracks                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .aggregate import aggregate, select_tags
from ..embedding.encode import embed_array, embed_files
from ..encoders import Encoder, encoder_from_identity
from ..errors import ClapknnError, ParameterError
from ..index import INDEX_HOME, Index, index_path  # (re-exported: their old home)
from ..labels import collect_audio
from ..options import (
    AGGREGATIONS, DEFAULT_AGGREGATE, DEFAULT_BATCH_SIZE, DEFAULT_K, DEFAULT_SPACE, DEFAULT_TAG_SNIPPETS, DEFAULT_WEIGHTS, SPACES,
    DEFAULT_MULTILABEL_THRESHOLD, DEFAULT_WORKERS,
    WEIGHTS, check_choice, check_int, check_max_snippets, check_seconds, check_threshold,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..vote import KNNTagger

__all__ = ["INDEX_HOME", "index_path", "load_index", "Tagger", "TagResult", "DEFAULT_K", "DEFAULT_WEIGHTS", "vote_summary"]

logger = logging.getLogger(__name__)

def load_index(path: str | Path) -> Index:
    """Read an index directory (a bare name is looked up under ``index/`` too)."""
    return Index.load(index_path(path))


@dataclass
class TagResult:
    """Tags for a set of tracks.

    Attributes
    ----------
    tracks : pandas.DataFrame
        One row per tagged track: ``path``, ``tags`` (``;``-joined, best first), ``top``,
        ``score`` (of ``top``), ``n_snippets``, then one ``score:<tag>`` column per tag.
    snippets : pandas.DataFrame
        One row per snippet: ``path``, ``start``, ``end``, ``top``, ``score:<tag>`` columns.
    skipped : list of (path, reason)
    neighbors : pandas.DataFrame or None
        With ``explain=True``: per track, the indexed examples that voted, most similar first:
        ``path``, ``neighbor`` (the example file), ``neighbor_start`` (its closest snippet, s),
        ``neighbor_tags``, ``similarity`` (cosine) and ``votes`` (neighbour slots it filled).
    vectors : np.ndarray [shape=(n_snippets, dim), dtype=float32] or None
        With ``explain=True``: the snippet embeddings, rows aligned with :attr:`snippets` (for
        embedding maps or your own analysis without encoding the audio again).
    """

    tracks: Any
    snippets: Any
    skipped: list[tuple[str, str]] = field(default_factory=list)
    neighbors: Any = None
    vectors: Any = None

    def __len__(self) -> int:
        return len(self.tracks)


def example_groups(metadata) -> np.ndarray:
    """Per index row, what a leave-one-out vote must leave out together: the example's group (its
    source track or album, from a labels CSV) where one was given, else its file."""
    paths = metadata["path"].astype(str).to_numpy()
    if "group" not in metadata:
        return np.char.add("file:", paths.astype(str))
    group = metadata["group"].fillna("").astype(str).to_numpy()
    return np.where(group != "", np.char.add("group:", group.astype(str)), np.char.add("file:", paths.astype(str)))


def _key_tempo(paths: list[str], analysed: Mapping[str, dict]):
    """The :func:`clapknn.analysis.analyze_files` table of ``paths``: rows already analysed from the
    engine's signals are taken as they are, the other files are decoded and analysed here."""
    import pandas as pd

    from ..analysis import COLUMNS, analyze_files

    rest = [p for p in paths if p not in analysed]
    more = analyze_files(rest) if rest else pd.DataFrame(columns=list(COLUMNS))
    rows = {**analysed, **{r["path"]: r for r in more.to_dict("records")}}
    return pd.DataFrame([rows[p] for p in paths if p in rows], columns=list(COLUMNS))


class Tagger:
    """Tags audio with an index.

    Parameters
    ----------
    index : Index or path
    encoder : Encoder, optional
        Defaults to the encoder recorded in the index (rebuilt from its identity). A given encoder
        must have the same identity, or :class:`~clapknn.errors.EncoderMismatchError` is raised.
    k : int
        Neighbours per snippet (capped at the index size).
    weights : {"uniform", "distance", "similarity"}
    aggregate : {"mean", "max", "vote"}
        How snippet scores become a track score.
    threshold : float, optional
        Minimum track score (in [0, 1]) for a tag to be listed. Default: 0.5 for a multi-label index (some
        example has several tags), else 0 (the best tag is always listed).
    top_n : int, optional
        At most this many tags per track; 0 for no limit. Default: 1 for a single-label index,
        no limit otherwise.
    hop_seconds : float, optional
        Hop between query snippets (the snippet length always comes from the index).
    encoder_options : mapping, optional
        Passed when rebuilding the encoder (e.g. a local ``checkpoint`` path, ``device``).
    space : {"auto", "plain", "standardized"}
        The vote's search space (:func:`~clapknn.vote.space_options`): ``"auto"`` lets the
        encoder's settings decide (the features encoder picks plain or standardised on the index's
        own examples); the others force one. ``clapknn evaluate --space`` measures each.
    max_snippets : int or "all"
        At most this many snippets per track, spread over it away from its ends and read by seeking
        (:func:`clapknn.audio.snippet.sample_indices`); ``None`` or ``"all"`` for every snippet. Default:
        :data:`clapknn.options.DEFAULT_TAG_SNIPPETS` (chosen by measurement, docs/scale.md).
    """

    def __init__(
        self,
        index: Index | str | Path,
        *,
        encoder: Encoder | None = None,
        k: int = DEFAULT_K,
        weights: str = DEFAULT_WEIGHTS,
        aggregate: str = DEFAULT_AGGREGATE,
        threshold: float | None = None,
        top_n: int | None = None,
        hop_seconds: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        encoder_options: Mapping[str, Any] | None = None,
        space: str = DEFAULT_SPACE,
        max_snippets: int | str | None = DEFAULT_TAG_SNIPPETS,
    ) -> None:
        # every setting is checked before anything is loaded
        check_int("k", k)
        check_choice("weights", weights, WEIGHTS)
        check_choice("aggregation", aggregate, AGGREGATIONS)
        check_choice("space", space, SPACES)
        threshold = check_threshold(threshold)
        top_n = check_int("top_n", top_n, minimum=0, allow_none=True)
        hop_seconds = check_seconds("hop", hop_seconds, allow_none=True)
        check_int("batch_size", batch_size)
        max_snippets = check_max_snippets(max_snippets)
        from ..vote.space import space_options

        self.index = index if isinstance(index, Index) else load_index(index)
        if len(self.index) == 0:
            raise ParameterError("the index is empty")
        #: what the user should know about the settings (e.g. k capped at the index size)
        self.notes: list[str] = []
        if k > len(self.index):
            self.notes.append(f"k={k} is more than the index's {len(self.index)} example vectors; all of them vote")
        if encoder is None:
            encoder = self.index.encoder or encoder_from_identity(
                self.index.encoder_identity, **dict(encoder_options or {})
            )
        self.index.check_encoder(encoder.identity())
        self.encoder = encoder
        self.aggregate = aggregate
        self.hop_seconds = hop_seconds
        self.batch_size = batch_size
        self.max_snippets = max_snippets
        tags = list(self.index.metadata["tags"])
        self.multilabel = any(len(t) > 1 for t in tags)
        self.threshold = threshold if threshold is not None else (DEFAULT_MULTILABEL_THRESHOLD if self.multilabel else 0.0)
        self.top_n = (None if self.multilabel else 1) if top_n is None else (top_n or None)  # 0: no limit
        # an encoder may ask for a search-space transform fitted on the index's own vectors (the
        # features encoder: per-dimension standardisation); the build fits it once and saves it with
        # the index, which is then searched as saved; fitted here only when none is saved or it was
        # fitted with other settings
        knn_options = space_options(encoder.knn_options() if hasattr(encoder, "knn_options") else {}, space)
        self.space = space
        params = dict(n_neighbors=k, weights=weights, threshold=self.threshold, **knn_options)
        # every vector has tags, so the vote's classes_ are the index vocabulary, sorted
        self.tags = sorted({str(t) for ts in tags for t in ts})
        # the vote (scikit-learn's import, the saved state or a fit) is set up in a thread from here
        # on, beside the decoding and encoding of the first tracks; :attr:`estimator` waits for it
        self._estimator: KNNTagger | None = None
        self._vote_error: BaseException | None = None
        self._vote_thread: threading.Thread | None = threading.Thread(
            target=self._set_up_vote, args=(params, [list(t) for t in tags]), name="clapknn-vote", daemon=True
        )
        self._vote_thread.start()

    def _set_up_vote(self, params: dict[str, Any], tag_lists: list[list[str]]) -> None:
        try:
            from ..vote import KNNTagger

            saved = self.index.vote
            if saved is not None and KNNTagger.state_fits(saved, params):
                est = KNNTagger.from_fitted_state(saved, tag_lists, search_index=self.index.vote_index(), **params)
            else:
                est = KNNTagger(**params).fit(self.index.vectors, tag_lists, groups=example_groups(self.index.metadata))
            if [str(t) for t in est.classes_] != self.tags:  # pragma: no cover - the fit's own vocabulary
                raise ClapknnError("the vote's tags differ from the index's")
            self._estimator = est
        except BaseException as exc:  # noqa: BLE001 - raised where the vote is first used
            self._vote_error = exc

    @property
    def estimator(self) -> "KNNTagger":
        """The fitted vote (:class:`~clapknn.vote.KNNTagger`), set up from the index's saved state
        (or fitted on its vectors) in a background thread started by the constructor; the first use
        waits for it and raises what setting it up raised."""
        thread = self._vote_thread
        if thread is not None:
            thread.join()
            self._vote_thread = None
        if self._vote_error is not None:
            raise self._vote_error
        return self._estimator

    def tag_vectors(
        self, vectors, snippets, files: Sequence[str], *, skipped: Sequence[tuple[str, str]] = (), explain: bool = False,
    ) -> TagResult:
        """Tag already-embedded snippets (no decoding, no encoder call).

        Parameters
        ----------
        vectors : ndarray of shape (n_snippets, dim)
            The encoder's vectors for the query snippets (as the index's encoder gives them).
        snippets : DataFrame
            One row per vector with ``file`` (position in ``files``), ``path``, ``start`` and ``end``.
        files : sequence of str
            The tracks' paths; tracks with no snippet are left out of the result.
        skipped : sequence of (path, reason)
            Carried into :attr:`TagResult.skipped`.
        explain : bool
            Also list the examples that voted (:attr:`TagResult.neighbors`).
        """
        import pandas as pd

        files = list(files)
        skipped = list(skipped)

        score_cols = [f"score:{t}" for t in self.tags]
        if len(vectors):
            proba = self.estimator.predict_proba(vectors)
        else:
            proba = np.zeros((0, len(self.tags)))
        snip = snippets[["path", "start", "end"]].reset_index(drop=True).copy()
        snip["top"] = [self.tags[j] for j in np.argmax(proba, axis=1)] if len(proba) else []
        snip[score_cols] = proba
        file_ids = snippets["file"].to_numpy()
        used = sorted(set(file_ids.tolist()))
        remap = {f: i for i, f in enumerate(used)}
        groups = np.array([remap[f] for f in file_ids], dtype=np.int64)
        track_scores = aggregate(proba, groups, method=self.aggregate, n_groups=len(used))
        chosen = select_tags(track_scores, self.tags, threshold=self.threshold, top_n=self.top_n)
        best = np.argmax(track_scores, axis=1) if len(used) else np.zeros(0, dtype=int)
        tracks = pd.DataFrame(
            {
                "path": [files[f] for f in used],
                "tags": [";".join(c) for c in chosen],
                "top": [self.tags[j] for j in best],
                "score": track_scores[np.arange(len(used)), best] if len(used) else [],
                "n_snippets": np.bincount(groups, minlength=len(used)) if len(used) else [],
            }
        )
        tracks[score_cols] = track_scores
        neighbors = self._explain(vectors, groups, [files[f] for f in used]) if explain else None
        return TagResult(tracks, snip, skipped, neighbors, np.asarray(vectors) if explain else None)

    def _explain(self, vectors, groups, paths, per_track: int = 5):
        """The indexed examples that voted for each track, most similar first.

        One row per example file (its snippets are pooled): ``similarity`` of its closest snippet,
        which starts at ``neighbor_start``, and ``votes``, how many of the track's
        ``n_snippets × k`` neighbour slots its snippets filled.
        """
        import pandas as pd

        rows = []
        if len(vectors):
            sims, ids = self.estimator.similarities(vectors)
            meta = self.index.metadata
            for g, path in enumerate(paths):
                mask = groups == g
                best: dict[str, tuple[float, int]] = {}
                votes: dict[str, int] = {}
                for s, i in zip(sims[mask].ravel().tolist(), ids[mask].ravel().tolist()):
                    if i < 0:
                        continue
                    name = str(meta["path"].iat[i])
                    votes[name] = votes.get(name, 0) + 1
                    if name not in best or (s, -i) > (best[name][0], -best[name][1]):
                        best[name] = (float(s), int(i))
                for name, (s, i) in sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[:per_track]:
                    rows.append((path, name, float(meta["start"].iat[i]), ";".join(meta["tags"].iat[i]), s, votes[name]))
        return pd.DataFrame(rows, columns=["path", "neighbor", "neighbor_start", "neighbor_tags", "similarity", "votes"])

    def tag(
        self, paths: str | Path | Sequence[str | Path], *, progress: bool = False, explain: bool = False,
        cache=None, workers: int = DEFAULT_WORKERS, key_tempo: bool = False,
    ) -> TagResult:
        """Tag audio files; folders are scanned for audio.

        Files that cannot be decoded (or are silent) are listed in :attr:`TagResult.skipped`.
        ``cache`` and ``workers`` are as in :func:`build_index`. ``key_tempo=True`` adds the columns of
        :func:`clapknn.analysis.analyze_files` (key, mode, bpm and their confidences) to
        :attr:`TagResult.tracks`; a file the embedding engine decoded whole at the analysis' rate is
        analysed from that signal, not decoded again.
        """
        files, problems = self.collect_files(paths)
        analysed: dict[str, dict] = {}

        def analyse(path: str, y: np.ndarray) -> None:
            from ..analysis import analyze_signal

            analysed[path] = analyze_signal(y, path)

        on_signal = None
        if key_tempo:
            from ..analysis import SAMPLE_RATE

            on_signal = analyse if self.encoder.sample_rate == SAMPLE_RATE else None
        emb = embed_files(
            files, self.encoder, snippet_seconds=self.index.snippet_seconds,
            hop_seconds=self.hop_seconds or self.index.hop_seconds, batch_size=self.batch_size,
            hashes=False, progress=progress, desc="tagging", cache=cache, workers=workers,
            max_snippets=self.max_snippets, on_signal=on_signal,
        )
        result = self.tag_vectors(
            emb.vectors, emb.snippets, [str(f) for f in files], skipped=problems + emb.failures, explain=explain
        )
        if key_tempo and len(result.tracks):
            result.tracks = result.tracks.merge(_key_tempo(list(result.tracks["path"]), analysed), on="path", how="left")
        return result

    @staticmethod
    def collect_files(paths: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
        """The audio files named by ``paths`` (folders scanned) and ``(path, reason)`` problems.

        Raises
        ------
        ClapknnError
            When no audio file is found at all.
        """
        problems: list[tuple[str, str]] = []
        files = collect_audio(paths, problems=problems)
        if not files:
            detail = "; ".join(f"{w}: {r}" for w, r in problems[:3])
            raise ClapknnError(f"nothing to tag ({detail})" if detail else "nothing to tag")
        return files, problems

    def tag_array(self, y: np.ndarray, sr: int, *, name: str = "<array>", explain: bool = False) -> TagResult:
        """Tag an in-memory signal sampled at ``sr`` Hz: mono ``(n,)``, or ``(n_samples, n_channels)``
        / ``(n_channels, n_samples)`` with at most 8 channels, float or integer PCM (checked by
        :func:`clapknn.audio.signal.as_mono`, as decoded files are; an ambiguous shape is a ParameterError)."""
        vectors, snippets = embed_array(
            y, sr, self.encoder, snippet_seconds=self.index.snippet_seconds,
            hop_seconds=self.hop_seconds or self.index.hop_seconds, batch_size=self.batch_size,
            max_snippets=self.max_snippets,
        )
        snippets["path"] = name
        skipped = [] if len(vectors) else [(name, "silent")]
        return self.tag_vectors(vectors, snippets, [name], skipped=skipped, explain=explain)


def vote_summary(index: Index) -> dict | None:
    """The default tagger's vote on an index of the ``features`` encoder (what ``clapknn info``
    shows): ``k``, ``weights``, the ``space`` the vote searches, the leave-one-out evidence of the
    ``auto`` choice and each feature block's relevance; ``{"error": ...}`` when the vote cannot be
    set up (e.g. an index of an older recipe); ``None`` for a model encoder (not loaded just to
    describe its plain vote)."""
    if index.encoder_identity.get("name") != "features":
        return None
    from ..encoders.features import FEATURE_BLOCKS

    try:
        est = Tagger(index).estimator
    except ClapknnError as exc:  # e.g. an index of an older recipe
        return {"error": str(exc)}
    out = {"k": int(est.n_neighbors), "weights": est.weights, "space": "standardised" if est.standardized_ else "plain"}
    if hasattr(est, "loo_score_"):
        out["loo_vote_share"] = {k: round(float(v), 4) for k, v in est.loo_score_.items() if k != "p_value_plain"}
        if "p_value_plain" in est.loo_score_:  # the permutation test's p-value for the plain space's gain
            out["p_value_plain"] = round(float(est.loo_score_["p_value_plain"]), 4)
    if getattr(est, "block_relevance_", None) is not None:
        out["block_relevance"] = {name: round(float(r), 3) for name, r in zip(FEATURE_BLOCKS, est.block_relevance_)}
    return out
