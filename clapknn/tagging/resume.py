"""Resumable tagging: one CSV row per track as tracks complete, in flat memory (:func:`tag_to_csv`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedding.engine import FileEmbedding, iter_embeddings
from ..errors import ParameterError
from ..progress import progress_bar
from ..options import DEFAULT_WORKERS

__all__ = ["TagProgress", "tag_to_csv"]

logger = logging.getLogger(__name__)


@dataclass
class TagProgress:
    """What a :func:`tag_to_csv` run did.

    Attributes
    ----------
    out : Path
    n_files : int
        Audio files found under the inputs.
    n_already : int
        Files skipped because the results file already had them (``resume=True``).
    n_tagged : int
        Rows written by this run.
    n_cached : int
        Files whose vectors came from the embedding cache.
    skipped : list of (path, reason)
    """

    out: Path
    n_files: int = 0
    n_already: int = 0
    n_tagged: int = 0
    n_cached: int = 0
    skipped: list = None  # type: ignore[assignment]


def _done_paths(out: Path, columns: list[str]) -> set[str]:
    """Paths already in a results CSV; a half-written last line (a killed run) is cut off first."""
    import csv

    with open(out, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            logger.warning("%s: dropping a half-written last line left by an interrupted run", out)
            fh.truncate(cut)
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return set()
        if header != columns:
            raise ParameterError(
                f"{out}: its columns ({', '.join(header[:6])}...) are not this index's; "
                "resume into the file written with the same index, or choose another --out"
            )
        i = header.index("path")
        return {row[i] for row in reader if len(row) > i}


def tag_to_csv(
    tagger,
    paths,
    out: str | Path,
    *,
    resume: bool = True,
    cache=None,
    workers: int = DEFAULT_WORKERS,
    chunk_files: int = 64,
    progress: bool = False,
) -> TagProgress:
    """Tag audio files, appending one CSV row per track as tracks complete.

    Memory stays flat whatever the number of files: vectors are voted on and written in groups of
    ``chunk_files`` tracks, then dropped. Rows are flushed to disk after each group, so an
    interrupted run loses at most one group, and a rerun with ``resume=True`` skips every path
    already in ``out``. Files that could not be tagged are not written, so a rerun tries them again.

    Parameters
    ----------
    tagger : clapknn.Tagger
    paths : path or sequence of paths
        Audio files and/or folders.
    out : path
        A ``.csv`` file: the per-track table of :meth:`clapknn.Tagger.tag`.
    resume : bool
        Keep the rows already in ``out`` and tag only the other files (else ``out`` is replaced).
    cache, workers
        As in :func:`iter_embeddings`.
    chunk_files : int
        Tracks voted on and written together.

    Returns
    -------
    TagProgress
    """
    import os

    import pandas as pd

    out = Path(out).expanduser()
    if out.suffix.lower() != ".csv":
        raise ParameterError(f"{out}: resumable results are written as CSV; use a .csv file")
    files, problems = tagger.collect_files(paths)
    columns = ["path", "tags", "top", "score", "n_snippets"] + [f"score:{t}" for t in tagger.tags]
    done: set[str] = set()
    if resume and out.exists() and out.stat().st_size:
        done = _done_paths(out, columns)
    todo = [f for f in files if str(f) not in done]
    report = TagProgress(out, len(files), len(files) - len(todo), 0, 0, list(problems))
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if done or (resume and out.exists() and out.stat().st_size) else "w"
    bar = progress_bar(len(todo), "tagging", enabled=progress, unit="track")
    pending: list[FileEmbedding] = []

    with open(out, mode, newline="", encoding="utf-8") as fh:
        if mode == "w":
            import csv

            csv.writer(fh, lineterminator="\n").writerow(columns)

        def write(group: list[FileEmbedding]) -> None:
            ok = [fe for fe in group if not fe.error and fe.n_snippets]
            for fe in group:
                if fe.error:
                    report.skipped.append((fe.path, fe.error))
            if not ok:
                return
            vectors = np.concatenate([fe.vectors for fe in ok])
            snippets = pd.DataFrame(
                {
                    "file": np.repeat(np.arange(len(ok)), [fe.n_snippets for fe in ok]),
                    "path": np.repeat([fe.path for fe in ok], [fe.n_snippets for fe in ok]),
                    "start": np.concatenate([fe.starts for fe in ok]),
                    "end": np.concatenate([fe.ends for fe in ok]),
                }
            )
            tracks = tagger.tag_vectors(vectors, snippets, [fe.path for fe in ok]).tracks
            tracks[columns].to_csv(fh, header=False, index=False)
            fh.flush()
            os.fsync(fh.fileno())
            report.n_tagged += len(tracks)

        try:
            for fe in iter_embeddings(
                todo, tagger.encoder, snippet_seconds=tagger.index.snippet_seconds,
                hop_seconds=tagger.hop_seconds or tagger.index.hop_seconds, batch_size=tagger.batch_size,
                hashes=False, cache=cache, workers=workers, max_snippets=getattr(tagger, "max_snippets", None),
            ):
                report.n_cached += fe.cached
                pending.append(fe)
                bar.update(1)
                if len(pending) >= chunk_files:
                    write(pending)
                    pending = []
            write(pending)
        finally:
            bar.close()
    return report
