"""The evaluation's embeddings: every snippet of every labelled file embedded once per snippet
length, through the one embedding engine (:func:`clapknn.embedding.encode.embed_files`: its
decoding workers and its cache), so that every split, setting and baseline reuses the vectors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import LabelError
from ..options import DEFAULT_WORKERS

__all__ = ["Embedded", "embed_examples", "query_windows"]


@dataclass
class Embedded:
    """Snippet embeddings of a labelled set at one snippet length.

    Attributes
    ----------
    snippet_seconds, hop_seconds : float
    vectors : np.ndarray [shape=(n_snippets, dim), dtype=float32]
    track : np.ndarray [shape=(n_snippets,), dtype=int64]
        Row of :attr:`paths` each snippet comes from.
    paths : list of str
        The files that gave at least one vector.
    tags : list of tuple of str
        Tags of each file.
    groups : np.ndarray [shape=(n_tracks,), dtype=object]
        Group (source track) of each file.
    encoder : dict
        Identity of the encoder that made the vectors.
    skipped : list of (path, reason)
    knn_options : dict
        The encoder's settings for :class:`~clapknn.vote.KNNTagger` (``encoder.knn_options()``,
        e.g. standardisation), used exactly as :class:`~clapknn.tagging.tagger.Tagger` uses them.
    """

    snippet_seconds: float
    hop_seconds: float
    vectors: np.ndarray
    track: np.ndarray
    paths: list[str]
    tags: list[tuple[str, ...]]
    groups: np.ndarray
    encoder: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    knn_options: dict = field(default_factory=dict)
    #: each snippet's start (seconds) and each track's decoded length: which snippets tagging reads
    #: of a query (:func:`clapknn.audio.snippet.sampled_windows`)
    starts: np.ndarray | None = None
    durations: np.ndarray | None = None

    @property
    def n_tracks(self) -> int:
        """Number of tracks (files) embedded."""
        return len(self.paths)

    def relabel(self, tags: Mapping[str, Sequence[str]], groups: Mapping[str, str] | None = None) -> "Embedded":
        """The same vectors with other tags (and groups), looked up by path; files without tags are
        dropped. Lets several labellings of one set share one embedding pass."""
        keep = [i for i, p in enumerate(self.paths) if tags.get(p)]
        remap = np.full(len(self.paths), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        mask = remap[self.track] >= 0
        new_groups = np.array(
            [(groups or {}).get(self.paths[i], self.groups[i]) for i in keep], dtype=object
        )
        return replace(
            self,
            vectors=self.vectors[mask],
            track=remap[self.track[mask]],
            paths=[self.paths[i] for i in keep],
            tags=[tuple(tags[self.paths[i]]) for i in keep],
            groups=new_groups,
            starts=None if self.starts is None else self.starts[mask],
            durations=None if self.durations is None else self.durations[keep],
        )


def embed_examples(
    examples,
    encoder="features",
    *,
    labels: str | Path | None = None,
    snippet_seconds: float = 10.0,
    hop_seconds: float | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    workers: int = DEFAULT_WORKERS,
    cache=None,
    progress: bool = False,
) -> Embedded:
    """Embed every snippet of every labelled file once.

    Parameters
    ----------
    examples : path or ExampleSet
        As for :func:`clapknn.build_index`.
    encoder : str or Encoder
    snippet_seconds, hop_seconds : float
        Snippet length and hop (hop defaults to the length).
    workers : int
        Decoding processes of the embedding engine (``workers`` of :func:`clapknn.embedding.encode.embed_files`,
        as ``clapknn evaluate --workers``); 0 decodes in a thread while the encoder runs.
    cache : bool, path or EmbeddingCache, optional
        The embedding cache (:mod:`clapknn.embedding.cache`; ``True`` for the default folder): files seen
        before with the same encoder and snippet settings are neither decoded nor encoded again.
    """
    from ..encoders import Encoder, get_encoder
    from ..labels import ExampleSet, load_examples

    example_set = examples if isinstance(examples, ExampleSet) else load_examples(examples, labels=labels)
    if not example_set.examples:
        raise LabelError(f"no labelled examples found in {examples}")
    enc = encoder if isinstance(encoder, Encoder) else get_encoder(encoder, **dict(encoder_options or {}))
    hop = float(snippet_seconds if hop_seconds is None else hop_seconds)
    paths = [Path(e.path) for e in example_set.examples]
    from ..embedding.encode import embed_files

    emb = embed_files(paths, enc, snippet_seconds=snippet_seconds, hop_seconds=hop, batch_size=batch_size,
                      hashes=False, progress=progress, desc=f"embedding {snippet_seconds:g} s", cache=cache,
                      workers=workers)
    vectors, file_ids, failures = emb.vectors, emb.snippets["file"].to_numpy(np.int64), emb.failures
    used = sorted(set(file_ids.tolist()))
    if not used:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in failures[:5])
        raise LabelError(f"no usable example: all {len(paths)} file(s) were skipped ({reasons})")
    remap = np.full(len(paths), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    ex = example_set.examples
    return Embedded(
        snippet_seconds=float(snippet_seconds),
        hop_seconds=hop,
        vectors=np.asarray(vectors, dtype=np.float32),
        track=remap[np.asarray(file_ids, dtype=np.int64)],
        paths=[str(paths[i]) for i in used],
        tags=[tuple(ex[i].tags) for i in used],
        groups=np.array([ex[i].group if ex[i].group else str(paths[i]) for i in used], dtype=object),
        encoder=enc.identity(),
        skipped=list(example_set.problems) + [tuple(x) for x in failures],
        knn_options=enc.knn_options() if hasattr(enc, "knn_options") else {},
        starts=emb.snippets["start"].to_numpy(np.float64),
        durations=emb.files["duration"].to_numpy(np.float64)[used],
    )


def query_windows(emb: Embedded, max_snippets: int | None) -> np.ndarray:
    """The snippets tagging reads of each track (all of them for embeddings made without their
    start times)."""
    if max_snippets is None or emb.starts is None or emb.durations is None:
        return np.ones(len(emb.track), dtype=bool)
    from ..audio.snippet import sampled_windows

    return sampled_windows(emb.track, emb.starts, emb.durations, max_snippets, emb.snippet_seconds, emb.hop_seconds)
