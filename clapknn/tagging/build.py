"""Building an index from labelled examples: embed them, keep their metadata, fit the vote once and
save it with the index (:func:`build_index`, :func:`fit_vote`).

>>> from clapknn import build_index
>>> index = build_index("examples/", "index/moods")            # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..embedding.encode import EmbeddedFiles, embed_files
from ..encoders import Encoder, encoder_from_identity, get_encoder
from ..errors import LabelError, ParameterError
from ..index import Index, example_metadata
from ..labels import ExampleSet, load_examples
from ..options import (
    DEFAULT_BATCH_SIZE, DEFAULT_BUILD_SNIPPETS, DEFAULT_SNIPPET_SECONDS, DEFAULT_WORKERS, ENCODERS, check_choice, check_int, check_max_snippets,
    check_snippets, check_workers,
)


from .tagger import Tagger

__all__ = ["BuildReport", "build_index", "fit_vote"]

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What a build used and what it left out."""

    files: Any  # pandas.DataFrame: path, tags, duration, n_snippets, n_silent, sha256, error
    problems: list[tuple[str, str]] = field(default_factory=list)  # label rows left out
    notes: list[str] = field(default_factory=list)
    lost_tags: list[str] = field(default_factory=list)  # tags whose every example was skipped

    @property
    def n_used(self) -> int:
        """Example files that were used (decoded and not silent)."""
        return int((self.files["error"] == "").sum()) if len(self.files) else 0

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(where, reason)`` for every label row and file that was left out."""
        bad = self.files[self.files["error"] != ""] if len(self.files) else self.files
        return list(self.problems) + list(zip(bad["path"], bad["error"])) if len(bad) else list(self.problems)


def _resolve_encoder(encoder: str | Encoder, options: Mapping[str, Any] | None) -> Encoder:
    if isinstance(encoder, Encoder):
        return encoder
    return get_encoder(check_choice("encoder", encoder, ENCODERS), **dict(options or {}))


def _lost_tags(example_set: ExampleSet, meta, allow_single_tag: bool, skipped: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The tags whose every example was skipped, and a note on each; refuses an index left with one
    tag of several."""
    given = example_set.tags
    kept = {t for ts in meta["tags"] for t in ts}
    lost = [t for t in given if t not in kept]
    notes = []
    for t in lost:
        n = sum(t in e.tags for e in example_set.examples)
        notes.append(f"tag {t!r} has no usable example (all {n} of its file(s) were skipped); the index has no {t!r}")
    if lost and len(kept) == 1 and len(given) > 1 and not allow_single_tag:
        lost_files = {str(e.path) for e in example_set.examples if set(e.tags) & set(lost)}
        why = "; ".join([f"{Path(w).name}: {r}" for w, r in skipped if str(w) in lost_files][:3])
        raise LabelError(
            f"only tag {next(iter(kept))!r} is left: every example of {', '.join(map(repr, lost))} was skipped ({why}), "
            "and an index of one tag gives that tag to everything (fix the files, or allow a one-tag index "
            "with --allow-single-tag)"
        )
    return lost, notes


def build_index(
    examples: str | Path | ExampleSet,
    out: str | Path | None = None,
    *,
    labels: str | Path | None = None,
    encoder: str | Encoder = "features",
    encoder_options: Mapping[str, Any] | None = None,
    snippet_seconds: float = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    prompts: Mapping[str, str | Sequence[str]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    cache=None,
    workers: int | str = DEFAULT_WORKERS,
    allow_single_tag: bool = False,
    max_snippets: int | str | None = DEFAULT_BUILD_SNIPPETS,
) -> Index:
    """Embed labelled examples and make an index (saved to ``out`` when given).

    Parameters
    ----------
    examples : path or ExampleSet
        A folder with one sub-folder per tag, a CSV of ``path,tags``, or an :class:`ExampleSet`.
    out : path, optional
        Directory to save the index to (atomically).
    labels : path, optional
        A CSV of ``path,tags`` whose relative paths are resolved against ``examples``.
    encoder : str or Encoder
        ``"features"`` (weights-free, default) or ``"clap"``, or a built encoder.
    encoder_options : mapping, optional
        Keyword settings for the encoder (e.g. ``{"checkpoint": "630k-audioset-best"}``).
    snippet_seconds, hop_seconds : float
        Snippet length and hop (hop defaults to the length).
    prompts : mapping tag -> text (or texts), optional
        Text anchors embedded with the encoder's text branch (CLAP only), stored as ``kind="text"``.
    batch_size : int
    progress : bool
        Show a progress bar on a terminal.
    cache : bool, path or EmbeddingCache, optional
        Embedding cache (:mod:`clapknn.embedding.cache`): unchanged files are neither decoded nor encoded.
    workers : int or "auto"
        Decoding processes (0: a thread of this process; ``"auto"``: one per core for an encoder that
        encodes in them, such as ``features``, else 0; :func:`clapknn.embedding.workers.resolve_workers`).
    allow_single_tag : bool
        Build even when every example of all tags but one was skipped (by default that is refused:
        such an index gives its one tag to everything).
    max_snippets : int or "all", optional
        At most this many snippets per example file (default: every snippet).

    Returns
    -------
    Index
        With a :class:`BuildReport` in ``index.report``. Example paths are stored absolute, so the
        index works from any folder and after it is moved.

    Raises
    ------
    ParameterError
        For a snippet length, hop, batch size or worker count out of range (before any file is read).
    LabelError
        When no usable example is left, or only one tag of several.
    """
    import pandas as pd

    snippet_seconds, hop = check_snippets(snippet_seconds, hop_seconds)
    check_int("batch_size", batch_size)
    check_workers(workers)
    max_snippets = check_max_snippets(max_snippets)
    example_set = examples if isinstance(examples, ExampleSet) else load_examples(examples, labels=labels)
    enc = _resolve_encoder(encoder, encoder_options)
    if not example_set.examples and not prompts:
        raise LabelError(f"no labelled examples found in {examples}")
    paths = [e.path for e in example_set.examples]
    # stored absolute (not resolved through symlinks, so they read as the user laid them out)
    stored = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
    emb: EmbeddedFiles = embed_files(
        paths, enc, snippet_seconds=snippet_seconds, hop_seconds=hop, batch_size=batch_size,
        progress=progress, desc="building", cache=cache, workers=workers, max_snippets=max_snippets,
    )
    tags_of = [e.tags for e in example_set.examples]
    files = emb.files.copy()
    files.insert(1, "tags", [";".join(t) for t in tags_of])
    meta = example_metadata(
        emb.snippets, list(files["sha256"]), tags_of, [e.group or "" for e in example_set.examples], stored
    )
    vectors = emb.vectors
    if prompts:
        texts, text_tags = [], []
        for tag, value in prompts.items():
            for text in [value] if isinstance(value, str) else list(value):
                texts.append(text)
                text_tags.append((tag,))
        if not hasattr(enc, "embed_text"):
            raise ParameterError(f"encoder {enc.name!r} has no text branch; text prompts need --encoder clap")
        tv = np.asarray(enc.embed_text(texts), dtype=np.float32)
        meta = pd.concat(
            [meta, pd.DataFrame({"path": texts, "start": 0.0, "end": 0.0, "tags": text_tags, "sha256": "", "kind": "text", "group": ""})],
            ignore_index=True,
        )
        vectors = np.concatenate([vectors, tv]) if len(vectors) else tv
    report = BuildReport(files, list(example_set.problems), list(example_set.notes))
    if len(meta) == 0:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in report.skipped[:5])
        raise LabelError(f"no usable example: all {len(paths)} file(s) were skipped ({reasons})")
    report.lost_tags, lost_notes = _lost_tags(example_set, meta, allow_single_tag, report.skipped)
    report.notes += lost_notes
    index = Index.from_arrays(
        vectors, meta, encoder=enc.identity(), snippet_seconds=snippet_seconds, hop_seconds=hop,
        report=report, encoder_object=enc,
    )
    fit_vote(index)
    if out is not None:
        index.save(out)
    return index


def fit_vote(index: Index) -> bool:
    """Fit the vote with the default tagging settings on a just-built index and keep it in the index
    (:meth:`Index.set_vote`), so that it is saved and every later :class:`Tagger` with those
    settings starts without fitting. Returns whether it was fitted.

    The index's :attr:`~clapknn.index.Index.encoder` says which vote its vectors want; without one,
    the weights-free features encoder is built from the identity (cheap), and any other encoder's
    vote is left to be fitted when the index is loaded (CLAP's plain space is one FAISS add), so that
    no checkpoint is needed here.
    """
    if not len(index):
        return False
    if index.encoder is None:
        if index.encoder_identity.get("name") != "features":
            return False
        index.encoder = encoder_from_identity(index.encoder_identity)
    index.set_vote(Tagger(index).estimator)
    return True
