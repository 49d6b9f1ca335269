"""Labelled examples: a folder per tag, or a CSV of ``path,tags``.

Folder layout::

    examples/
      happy/   a.wav  b.mp3 ...
      sad/     c.flac ...

(nested folders are scanned; a file's tag is the name of the top-level folder it sits in).

CSV layout: a header with ``path`` and ``tags`` columns, and optionally ``group`` (the source track
or album a file was cut from: :mod:`clapknn.evaluate` keeps a group on one side of every split);
other columns are ignored and named in a note. Several tags per row are separated by ``;`` (``|``
also works), e.g. ``happy;energetic``.
Relative paths are resolved against the CSV's folder. A file listed twice gets the union of its tags
(a note says so). Rows with an empty ``tags`` cell or an empty path are errors reported with their
line number.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from .decode import AUDIO_EXTENSIONS
from .errors import LabelError

__all__ = ["Example", "ExampleSet", "load_examples", "scan_audio", "split_tags"]

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


def scan_audio(root: str | Path, *, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """All audio files under ``root`` (by extension), sorted, following symlinks once.

    A single file is returned as a one-element list. Folders that cannot be read, and symlink loops,
    are added to ``problems`` instead of raising.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.exists():
        raise LabelError(f"{root}: no such file or folder")
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()

    def onerror(err: OSError) -> None:
        if problems is not None:
            problems.append((str(err.filename), f"cannot read folder ({err.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink loop: do not walk it twice
            dirnames[:] = []
            if problems is not None:
                problems.append((dirpath, "symlink loop, skipped"))
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return found


def _from_folders(root: Path) -> ExampleSet:
    problems: list[tuple[str, str]] = []
    examples: list[Example] = []
    notes: list[str] = []
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        notes.append(f"{len(loose)} audio file(s) directly in {root} have no tag folder and were ignored")
    for tag_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in scan_audio(tag_dir, problems=problems):
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
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "path" not in header or "tags" not in header:
                raise LabelError(
                    f"{csv_path}: needs a header with 'path' and 'tags' columns, found {reader.fieldnames or 'none'}"
                )
            reader.fieldnames = header
            extra = [h for h in header if h not in ("path", "tags", "group")]
            if extra:
                notes.append(f"{csv_path}: ignored column(s) {', '.join(extra)}")
            for lineno, row in enumerate(reader, start=2):
                raw = (row.get("path") or "").strip()
                tags = split_tags(row.get("tags") or "")
                where = f"{csv_path}:{lineno}"
                if not raw:
                    problems.append((where, "empty path"))
                    continue
                if not tags:
                    problems.append((where, f"{raw}: no tags"))
                    continue
                p = Path(raw).expanduser()
                p = p if p.is_absolute() else base / p
                if p in merged:
                    new = [t for t in tags if t not in merged[p]]
                    if new:
                        notes.append(f"{where}: {raw} listed again; tags merged ({';'.join(merged[p] + new)})")
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
        return _from_csv(labels, source if source.is_dir() else None)
    if not source.exists():
        raise LabelError(f"{source}: no such file or folder")
    if source.is_file():
        if source.suffix.lower() in (".csv", ".tsv", ".txt"):
            return _from_csv(source, None)
        raise LabelError(f"{source}: expected a folder of tag folders or a CSV of path,tags")
    return _from_folders(source)
