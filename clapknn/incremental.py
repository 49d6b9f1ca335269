"""Change an index in place: add or remove labelled examples without rebuilding it.

Only the new files are decoded and encoded (with the embedding cache, only new *contents*); existing
vectors are kept as they are. The result is saved with :meth:`clapknn.index.Index.save`, so it is
atomic and the manifest (counts, tag vocabulary, checksums) always matches the files.

Concurrent updates of one index are serialised: the new examples are embedded first, then an update
lock (``.<name>.update-lock`` beside the index) is taken, the index is re-read, changed and saved,
so two ``clapknn add`` runs never lose each other's examples.

>>> from clapknn.incremental import add_examples, remove_examples
>>> add_examples("index/moods", "new_examples/")                        # doctest: +SKIP
>>> add_examples("index/moods", ["a.wav", "more/"], tags=["happy"])      # doctest: +SKIP
>>> remove_examples("index/moods", ["examples/sad/bad_take.wav"])       # doctest: +SKIP
>>> remove_examples("index/moods", tags=["ambient"])                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .encoders.base import Encoder
from .errors import LabelError, ParameterError
from .index import Index
from .options import DEFAULT_WORKERS
from .store import file_lock

__all__ = ["add_examples", "remove_examples", "UpdateReport"]

logger = logging.getLogger(__name__)

# manifest keys that Index.from_arrays recomputes; everything else is carried over on update
_RECOMPUTED = {
    "format_version", "encoder", "sample_rate", "snippet_seconds", "hop_seconds", "dim", "metric",
    "n_vectors", "n_files", "tags", "versions", "created", "checksums",
}


@dataclass
class UpdateReport:
    """What an update did.

    Attributes
    ----------
    added : list of str
        Files whose vectors were added (including replaced ones).
    replaced : list of str
        Files that were already in the index and got new vectors and tags.
    removed : list of str
        Files (or text prompts) whose rows were removed.
    untagged : list of (str, str)
        ``(file, tag)`` pairs where only a tag was removed (the file keeps its other tags).
    skipped : list of (str, str)
        ``(where, reason)`` for inputs that were left out or matched nothing.
    n_vectors_before, n_vectors_after : int
    """

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    untagged: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_vectors_before: int = 0
    n_vectors_after: int = 0


def _norm(p: str | os.PathLike) -> str:
    """A path as compared: absolute, symlinks resolved (so any spelling of one file matches)."""
    return os.path.normcase(os.path.realpath(os.path.expanduser(str(p))))


@contextlib.contextmanager
def _update_lock(path: Path) -> Iterator[None]:
    """Hold ``.<name>.update-lock`` beside the index for a read-modify-write."""
    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.update-lock"):
        yield


def _rebuilt(old: Index, vectors: np.ndarray, metadata, encoder_identity: dict[str, Any] | None = None) -> Index:
    """A new Index with ``old``'s settings and carried-over manifest fields; ``encoder_identity``
    (the same encoder, checked by the caller) updates where its files are, e.g. a moved checkpoint."""
    extra = {k: v for k, v in old.manifest.items() if k not in _RECOMPUTED}
    extra["created"] = old.manifest.get("created")
    extra["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    new = Index.from_arrays(
        vectors, metadata, encoder=encoder_identity or old.encoder_identity, snippet_seconds=old.snippet_seconds,
        hop_seconds=old.hop_seconds, extra=extra,
    )
    return new


def _same_settings(a: Index, b: Index) -> bool:
    from .encoders.base import comparable_identity

    return (
        comparable_identity(a.encoder_identity) == comparable_identity(b.encoder_identity)
        and a.snippet_seconds == b.snippet_seconds
        and a.hop_seconds == b.hop_seconds
    )


def _load(index: str | Path) -> tuple[Index, Path]:
    from .tagging.tagger import index_path

    p = index_path(index)
    return Index.load(p), p


def add_examples(
    index: str | Path,
    source: str | Path | Sequence[str | Path],
    *,
    tags: Sequence[str] | None = None,
    labels: str | Path | None = None,
    out: str | Path | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    cache=None,
    workers: int = DEFAULT_WORKERS,
    progress: bool = False,
    encoder: Encoder | None = None,
) -> tuple[Index, UpdateReport]:
    """Embed new labelled examples and add them to a saved index.

    Parameters
    ----------
    index : path
        The index directory (a bare name is looked up under ``index/`` too).
    source : path or sequence of paths
        Without ``tags``: one example set (a folder with a sub-folder per tag, or a CSV of
        ``path,tags``). With ``tags``: audio files and/or folders, every file labelled ``tags``.
    tags : sequence of str, optional
        Tags for every file of ``source``.
    labels : path, optional
        A CSV of ``path,tags`` (as in :func:`clapknn.build_index`).
    out : path, optional
        Save the result here instead of over ``index``.
    encoder_options : mapping, optional
        Runtime settings for the index's encoder (``checkpoint`` path, ``device``...).
    encoder : Encoder, optional
        An encoder already loaded (a long-running caller labelling one track at a time keeps its
        model in memory); it must have the index's identity. Default: rebuilt from the index's
        identity with ``encoder_options``.
    batch_size, cache, workers, progress
        As in :func:`clapknn.build_index`.

    Returns
    -------
    (Index, UpdateReport)
        A file that is already in the index (the same file by any path, or the same bytes) gets the
        new vectors and tags instead of its old ones.

    Raises
    ------
    LabelError
        When no usable example is found.
    """
    from .encoders import encoder_from_identity
    from .labels import Example, ExampleSet, collect_audio, load_examples
    from .tagging.build import build_index, fit_vote

    current, where = _load(index)
    target = Path(out).expanduser() if out is not None else where
    if tags is not None:
        tags = tuple(dict.fromkeys(t.strip() for t in tags if t and t.strip()))
        if not tags:
            raise ParameterError("--tag needs at least one non-empty tag")
        sources = [source] if isinstance(source, (str, Path)) else list(source)
        problems: list[tuple[str, str]] = []
        files = collect_audio(sources, problems=problems)
        example_set = ExampleSet([Example(f, tags) for f in dict.fromkeys(files)], problems)
    else:
        if not isinstance(source, (str, Path)):
            if len(source) != 1:
                raise ParameterError("without --tag, give one example set (a folder of tag folders or a CSV)")
            source = source[0]
        example_set = load_examples(source, labels=labels)
    if not example_set.examples:
        detail = "; ".join(f"{w}: {r}" for w, r in example_set.problems[:3])
        raise LabelError("no examples to add" + (f" ({detail})" if detail else ""))

    if encoder is None:
        encoder = encoder_from_identity(current.encoder_identity, **dict(encoder_options or {}))
    current.check_encoder(encoder.identity())
    fresh = build_index(
        example_set, None, encoder=encoder, snippet_seconds=current.snippet_seconds,
        hop_seconds=current.hop_seconds, batch_size=batch_size, progress=progress, cache=cache, workers=workers,
    )

    with _update_lock(target):
        base = Index.load(where)  # re-read: another update may have been saved meanwhile
        if not _same_settings(base, current):
            raise ParameterError(f"{target}: the index was rebuilt with other settings while examples were being added; run add again")
        fresh_audio = fresh.metadata[fresh.metadata["kind"] == "audio"]
        new_paths = list(dict.fromkeys(fresh_audio["path"].astype(str)))
        new_norm = {_norm(p) for p in new_paths}
        new_sha = {h for h in fresh_audio["sha256"].astype(str) if h}
        meta = base.metadata
        old_audio = (meta["kind"] == "audio").to_numpy()
        hit = np.array(
            [a and (_norm(p) in new_norm or h in new_sha) for a, p, h in zip(old_audio, meta["path"].astype(str), meta["sha256"].astype(str))],
            dtype=bool,
        )
        replaced = sorted(set(meta.loc[hit, "path"].astype(str)))
        import pandas as pd

        merged = pd.concat([meta[~hit], fresh.metadata], ignore_index=True)
        for col in merged.columns:  # columns only one side has (a newer clapknn's): empty, not NaN
            if merged[col].isna().any() and col not in ("start", "end"):
                merged[col] = merged[col].astype(object).where(merged[col].notna(), "")
        vectors = np.concatenate([base.vectors[~hit], fresh.vectors]) if len(base) else fresh.vectors
        updated = _rebuilt(base, vectors, merged, encoder.identity())  # checked against the index above
        updated.encoder = encoder
        fit_vote(updated)
        updated.save(target)

    report = UpdateReport(
        added=new_paths,
        replaced=replaced,
        skipped=list(fresh.report.skipped),
        notes=list(fresh.report.notes),
        n_vectors_before=len(base),
        n_vectors_after=len(updated),
    )
    updated.report = report
    return updated, report


def remove_examples(
    index: str | Path,
    paths: Sequence[str | Path] = (),
    *,
    tags: Sequence[str] = (),
    out: str | Path | None = None,
) -> tuple[Index, UpdateReport]:
    """Remove examples from a saved index.

    Parameters
    ----------
    index : path
    paths : sequence of paths
        Files to remove, or folders (every indexed file under them). A path is matched as written
        and by the file it names (absolute, symlinks resolved), from any working folder; a text
        prompt is matched by its text.
    tags : sequence of str
        Tags to remove: each is taken off every example; an example left with no tag is removed.
    out : path, optional
        Save the result here instead of over ``index``.

    Returns
    -------
    (Index, UpdateReport)
        ``report.skipped`` lists the paths and tags that matched nothing.

    Raises
    ------
    ParameterError
        When nothing is asked for, or when the removal would leave the index empty.
    """
    if not paths and not tags:
        raise ParameterError("name files or folders to remove, or --tag")
    _, where = _load(index)
    target = Path(out).expanduser() if out is not None else where
    report = UpdateReport()
    with _update_lock(target):
        base = Index.load(where)
        meta = base.metadata
        report.n_vectors_before = len(base)
        row_paths = meta["path"].astype(str).tolist()
        row_norm = [_norm(p) if k == "audio" else p for p, k in zip(row_paths, meta["kind"])]
        drop = np.zeros(len(meta), dtype=bool)
        for p in paths:
            raw, norm = str(p), _norm(p)
            prefix = norm.rstrip(os.sep) + os.sep
            m = np.array([rp == raw or rn == norm or rn.startswith(prefix) for rp, rn in zip(row_paths, row_norm)], dtype=bool)
            if not m.any():
                report.skipped.append((raw, "not in the index"))
            drop |= m
        new_tags = list(meta["tags"])
        for t in tags:
            has = np.array([t in ts for ts in new_tags], dtype=bool)
            if not has.any():
                report.skipped.append((f"tag {t!r}", "no example has this tag"))
                continue
            for i in np.flatnonzero(has):
                new_tags[i] = tuple(x for x in new_tags[i] if x != t)
                if not new_tags[i]:
                    drop[i] = True
                elif not drop[i]:
                    report.untagged.append((row_paths[i], t))
        report.removed = list(dict.fromkeys(np.asarray(row_paths, dtype=object)[drop].tolist()))
        report.untagged = sorted(set(report.untagged))
        if drop.all():
            raise ParameterError("this would remove every example and leave the index empty; build a new index instead")
        if not drop.any() and not report.untagged:
            report.n_vectors_after = len(base)
            base.report = report
            return base, report
        kept = meta[~drop].copy()
        kept["tags"] = [t for t, d in zip(new_tags, drop) if not d]
        updated = _rebuilt(base, base.vectors[~drop], kept.reset_index(drop=True))
        from .tagging.build import fit_vote

        fit_vote(updated)  # (needs no checkpoint: see fit_vote)
        updated.save(target)
    report.n_vectors_after = len(updated)
    updated.report = report
    return updated, report
