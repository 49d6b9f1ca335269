"""Labelled examples: a folder per tag, or a CSV of ``path,tags``.

Folder layout::

    examples/
      happy/   a.wav  b.mp3 ...
      sad/     c.flac ...

(nested folders are scanned; a file's tag is the name of the top-level folder it sits in).

CSV layout: a header with ``path`` and ``tags`` columns, and optionally ``group`` (the source track
or album a file was cut from: :mod:`clapknn.evaluation` keeps a group on one side of every split);
other columns are ignored and named in a note. Several tags per row are separated by ``;`` (``|``
also works), e.g. ``happy;energetic``. A ``.tsv`` file is read tab-separated.
Relative paths are resolved against the CSV's folder. A file listed twice gets the union of its tags
(a note says so; one row per file and tag is a common way to write multi-label data). Rows with an
empty ``tags`` cell or an empty path are left out and reported with their line number.

Tags are case-sensitive (a note points out tags that differ only in case). Files whose names are not
valid UTF-8 are reported and left out: indexes and result tables store paths as UTF-8 text.
See ``docs/robustness.md`` for every label problem and what clapknn does about it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .audio.decode import AUDIO_EXTENSIONS
from .errors import LabelError

__all__ = ["Example", "ExampleSet", "collect_audio", "load_examples", "scan_audio", "split_tags", "tag_indicator"]

_TAG_SEPARATORS = (";", "|")


@dataclass(frozen=True)
class Example:
    """One labelled file."""

    path: Path
    tags: tuple[str, ...]
    group: str | None = None  # source track / album; None means the file is its own group


@dataclass
class ExampleSet:
    """Labelled examples plus the problems met while reading them.

    ``problems`` holds ``(where, reason)`` pairs for rows or files that were left out; ``notes``
    holds things the user should know that did not drop anything.
    """

    examples: list[Example]
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        """Sorted tag vocabulary."""
        return sorted({t for e in self.examples for t in e.tags})

    def __len__(self) -> int:
        return len(self.examples)


def split_tags(cell: str) -> tuple[str, ...]:
    """Split a tags cell on ``;`` or ``|``; strip blanks, drop empties, keep first-seen order."""
    text = cell or ""
    for sep in _TAG_SEPARATORS[1:]:
        text = text.replace(sep, _TAG_SEPARATORS[0])
    out: list[str] = []
    for t in text.split(_TAG_SEPARATORS[0]):
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return tuple(out)


def _shown(path: str | Path) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN`` escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _utf8_ok(path: str | Path) -> bool:
    """Whether a path is valid UTF-8. Indexes and tables store paths as UTF-8 text, so a file
    whose name holds other bytes (an old Latin-1 name, say) cannot be recorded and is skipped."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_BAD_NAME = "file name is not valid UTF-8; rename the file to use it"


def scan_audio(root: str | Path, *, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """All audio files under ``root`` (by extension), sorted, following symlinks once.

    A single file (or anything that is not a folder) is returned as a one-element list. Folders that
    cannot be read, folders met a second time through a symlink (loops included), and files whose
    names are not valid UTF-8 are added to ``problems`` instead of raising.
    """
    root = Path(root)
    if not root.is_dir() and (root.exists() or root.is_symlink()):
        # a file (or a broken link, a pipe, ...: the decoder says what is wrong with it)
        if not _utf8_ok(root):
            if problems is not None:
                problems.append((_shown(root), _BAD_NAME))
            return []
        return [root]
    if not root.exists():
        raise LabelError(f"{_shown(root)}: no such file or folder")
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()

    def onerror(err: OSError) -> None:
        if problems is not None:
            problems.append((_shown(err.filename), f"cannot read folder ({err.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder: do not walk it twice
            dirnames[:] = []
            if problems is not None:
                problems.append((_shown(dirpath), "folder already scanned (symlink loop or second link)"))
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                f = Path(dirpath) / name
                if _utf8_ok(f):
                    found.append(f)
                elif problems is not None:
                    problems.append((_shown(f), _BAD_NAME))
    return found


def tag_indicator(tag_lists: Sequence[Sequence[str]], classes: Sequence[str], *, dtype=np.int64) -> np.ndarray:
    """0/1 matrix ``(n, len(classes))``: 1 where row ``i``'s tags hold ``classes[j]``.

    Raises
    ------
    LabelError
        For a tag that is not one of ``classes``.
    """
    col = {t: j for j, t in enumerate(classes)}
    Y = np.zeros((len(tag_lists), len(classes)), dtype=dtype)
    for i, tags in enumerate(tag_lists):
        for t in tags:
            if t not in col:
                raise LabelError(f"tag {t!r} is not one of {list(classes)}")
            Y[i, col[t]] = 1
    return Y


def collect_audio(
    paths: str | Path | Sequence[str | Path], *, problems: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """The audio files named by ``paths``: files as they are, folders scanned (:func:`scan_audio`).

    A missing path, or a folder without audio, is added to ``problems`` (``(path, reason)``)
    instead of raising; the one home of "what files did the user name" for every command.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    problems = [] if problems is None else problems
    files: list[Path] = []
    for p in paths:
        p = Path(os.path.expanduser(p))  # Path.expanduser raises on '~x'
        if p.is_dir():
            found = scan_audio(p, problems=problems)
            if not found:
                problems.append((str(p), "no audio files found in folder"))
            files.extend(found)
        elif p.exists() or p.is_symlink():  # the decoder names a broken link or a loop
            files.extend(scan_audio(p, problems=problems))  # skips names that are not UTF-8
        else:
            problems.append((str(p), "no such file"))
    return files


def _from_folders(root: Path) -> ExampleSet:
    problems: list[tuple[str, str]] = []
    examples: list[Example] = []
    notes: list[str] = []
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        notes.append(f"{len(loose)} audio file(s) directly in {root} have no tag folder and were ignored")
    for tag_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _utf8_ok(tag_dir.name):
            problems.append((_shown(tag_dir), "tag folder name is not valid UTF-8; rename it to use its files"))
            continue
        found = scan_audio(tag_dir, problems=problems)
        if not found:
            notes.append(f"tag folder {tag_dir.name!r} holds no audio files; no examples for that tag")
        for f in found:
            examples.append(Example(f, (tag_dir.name,)))
    return ExampleSet(examples, problems, notes)


def _from_csv(csv_path: Path, base: Path | None) -> ExampleSet:
    base = base or csv_path.parent
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    merged: dict[Path, list[str]] = {}
    group_of: dict[Path, str] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if csv_path.suffix.lower() == ".tsv" else ",")
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "path" not in header or "tags" not in header:
                raise LabelError(
                    f"{csv_path}: needs a header with 'path' and 'tags' columns, found {reader.fieldnames or 'none'}"
                )
            reader.fieldnames = header
            extra = [h for h in header if h not in ("path", "tags", "group")]
            if extra:
                notes.append(f"{csv_path}: ignored column(s) {', '.join(extra)}")
            for row in reader:
                raw = (row.get("path") or "").strip()
                tags = split_tags(row.get("tags") or "")
                where = f"{csv_path}:{reader.line_num}"  # the line the row ends on
                if not raw:
                    problems.append((where, "empty path"))
                    continue
                if not tags:
                    problems.append((where, f"{raw}: no tags"))
                    continue
                if "\0" in raw or any("\0" in t for t in tags):
                    problems.append((where, f"{raw!r}: contains a NUL byte (is this a text file?)"))
                    continue
                p = Path(os.path.expanduser(raw))  # unlike Path.expanduser, leaves "~x.wav" alone
                p = Path(os.path.normpath(p if p.is_absolute() else base / p))
                if p in merged:
                    # one row per (file, tag) is a common way to write multi-label data: merge
                    new = [t for t in tags if t not in merged[p]]
                    if new:
                        notes.append(
                            f"{where}: {raw} is listed again with other tags; tags merged, it now carries "
                            f"{';'.join(merged[p] + new)} (a file with several tags makes the index multi-label)"
                        )
                    else:
                        notes.append(f"{where}: {raw} is listed again with the same tags; the repeat is ignored")
                    merged[p].extend(new)
                else:
                    merged[p] = list(tags)
                group = (row.get("group") or "").strip()
                if group and p not in group_of:
                    group_of[p] = group
    except UnicodeDecodeError as exc:
        raise LabelError(f"{csv_path}: not a UTF-8 text file ({exc.reason})") from exc
    except csv.Error as exc:
        raise LabelError(f"{csv_path}: malformed CSV ({exc})") from exc
    return ExampleSet([Example(p, tuple(t), group_of.get(p)) for p, t in merged.items()], problems, notes)


def load_examples(source: str | Path, *, labels: str | Path | None = None) -> ExampleSet:
    """Read labelled examples.

    Parameters
    ----------
    source : str or Path
        A folder with one sub-folder per tag, or a CSV file (``path,tags``).
    labels : str or Path, optional
        A CSV of labels; its relative paths are resolved against ``source`` when ``source`` is a
        folder, else against the CSV's own folder.

    Returns
    -------
    ExampleSet

    Raises
    ------
    LabelError
        When the source does not exist or the CSV is malformed. (Missing audio files are *not*
        detected here; the build reports them when it tries to read them.)
    """
    source = Path(source)
    if labels is not None:
        labels = Path(labels)
        if not labels.is_file():
            raise LabelError(f"{labels}: no such labels file")
        return _case_notes(_from_csv(labels, source if source.is_dir() else None))
    if not source.exists():
        raise LabelError(f"{source}: no such file or folder")
    if source.is_file():
        if source.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise LabelError(f"{source}: expected a folder of tag folders or a CSV of path,tags")
        return _case_notes(_from_csv(source, None))
    return _case_notes(_from_folders(source))


def _case_notes(examples: ExampleSet) -> ExampleSet:
    """Add a note for tags that differ only in letter case (they stay different tags)."""
    by_fold: dict[str, list[str]] = {}
    for t in examples.tags:
        by_fold.setdefault(t.casefold(), []).append(t)
    for variants in by_fold.values():
        if len(variants) > 1:
            examples.notes.append(
                f"tags {', '.join(map(repr, variants))} differ only in letter case; they are kept as different tags"
            )
    return examples
