"""Tags inside the audio files themselves, where music software reads mood (and genre).

Predicted tags are written into each file's own metadata with mutagen, in the field that beets,
MusicBrainz Picard, Jellyfin, Navidrome and TagLib-based players read mood from:

========================  ==============================  ========================================
container                 files                           mood field
========================  ==============================  ========================================
ID3v2                     .mp3, .wav, .aif/.aiff          ``TMOO`` text frame (the file's own ID3
                                                          version is kept; a new tag is v2.4)
Vorbis comment            .flac, .ogg/.oga, .opus, .spx   ``MOOD``
MP4 / iTunes              .m4a, .mp4, .m4b                ``----:com.apple.iTunes:MOOD`` (freeform)
ASF                       .wma                            ``WM/Mood``
APEv2                     .wv, .ape, .mpc                 ``Mood``
========================  ==============================  ========================================

``field="genre"`` writes the genre field instead (``TCON``, ``GENRE``, ``©gen``, ``WM/Genre``,
``Genre``); any other name is a custom text field (``TXXX:<name>``, a Vorbis comment ``<NAME>``,
``----:com.apple.iTunes:<name>``, ...).

WAV and AIFF get an ``ID3`` chunk, as Picard writes them; TagLib (Navidrome, Jellyfin's TagLib
path) and mutagen (beets) read it, some players ignore tags in WAV altogether. Raw ADTS ``.aac``
and other formats without a tag block of their own are reported as unsupported.

Rules
-----
* Existing values of the field are kept and the new ones appended (case-insensitively
  de-duplicated) unless ``replace=True``; every other tag in the file is left as it was.
* ``dry_run=True`` computes the change and writes nothing.
* The audio data is never touched: mutagen rewrites only the tag block (tests compare
  :func:`~clapknn.audio.digests.audio_digest` and the decoded samples before and after).
* Per-file problems (read-only file, unsupported format, unreadable tags) come back as a
  :class:`TagChange` whose ``status`` says so; nothing is raised for them.

>>> from clapknn.players import write_tags, read_tags
>>> write_tags("song.flac", ["calm", "dreamy"], dry_run=True).describe()   # doctest: +SKIP
'would set mood: (none) → calm; dreamy'
>>> read_tags("song.flac")                                                   # doctest: +SKIP
[]
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import FileTagError, ParameterError, first_line
from ..options import DEFAULT_TAG_FIELD

__all__ = [
    "TagChange",
    "STATUSES",
    "read_tags",
    "write_tags",
    "write_track_tags",
    "check_field",
    "STANDARD_FIELDS",
]

#: Every :attr:`TagChange.status`: the first three are successes.
STATUSES = ("written", "planned", "unchanged", "read-only", "unsupported", "failed")

#: The standard field of each container for the two named fields.
STANDARD_FIELDS = {
    "mood": {"id3": "TMOO", "vorbis": "MOOD", "mp4": "----:com.apple.iTunes:MOOD", "asf": "WM/Mood", "ape": "Mood"},
    "genre": {"id3": "TCON", "vorbis": "GENRE", "mp4": "\xa9gen", "asf": "WM/Genre", "ape": "Genre"},
}
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")


@dataclass(frozen=True)
class TagChange:
    """What writing tags into one file did (or, in a dry run, would do).

    Attributes
    ----------
    path : str
    status : str
        ``"written"`` (the file was changed), ``"planned"`` (dry run: it would be changed),
        ``"unchanged"`` (the field already holds these values, or there was nothing to write),
        ``"read-only"``, ``"unsupported"`` (a format without a tag block mutagen can write) or
        ``"failed"`` (the tags could not be read or saved; see ``reason``).
    field : str
        The field asked for (``"mood"``, ``"genre"`` or a custom name).
    before, after : tuple of str
        The field's values before and after (``after == before`` when nothing changes).
    container : str
        Where the values live, e.g. ``"ID3v2.4 TMOO"`` or ``"Vorbis comment MOOD"``.
    reason : str
        Why the file was not written (empty on success).
    """

    path: str
    status: str
    field: str = DEFAULT_TAG_FIELD
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    container: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True unless the file was read-only, unsupported or failed."""
        return self.status in ("written", "planned", "unchanged")

    @property
    def changed(self) -> bool:
        """True when the field's values differ after the change."""
        return self.before != self.after

    def describe(self) -> str:
        """One line for a person: the change, or why there was none."""
        before = "; ".join(self.before) or "(none)"
        after = "; ".join(self.after) or "(none)"
        where = f" [{self.container}]" if self.container else ""
        if self.status == "written":
            return f"set {self.field}: {before} → {after}{where}"
        if self.status == "planned":
            return f"would set {self.field}: {before} → {after}{where}"
        if self.status == "unchanged":
            return f"{self.field} unchanged: {after}{where}" + (f" ({self.reason})" if self.reason else "")
        return f"not written ({self.status}): {self.reason}"


# --------------------------------------------------------------------------- field access per container
class _Slot:
    """Read and set one field in a loaded mutagen file, whatever its container."""

    def __init__(self, audio: Any, field: str) -> None:
        from mutagen.apev2 import APEv2
        from mutagen.asf import ASFTags
        from mutagen.id3 import ID3
        from mutagen.mp4 import MP4Tags
        from mutagen._vorbis import VCommentDict

        self.audio = audio
        self.field = field
        tags = audio.tags
        std = STANDARD_FIELDS.get(field.lower())
        self.id3_version: tuple[int, ...] | None = None
        if isinstance(tags, ID3):
            self.kind = "id3"
            self.key = std["id3"] if std else f"TXXX:{field}"
            self.id3_version = tuple(tags.version[:2])
            version = "2.3" if self.id3_version == (2, 3) else "2.4"
            self.container = f"ID3v{version} {self.key}"
        elif isinstance(tags, VCommentDict):
            self.kind = "vorbis"
            self.key = std["vorbis"] if std else field.upper()
            self.container = f"Vorbis comment {self.key}"
        elif isinstance(tags, MP4Tags):
            self.kind = "mp4"
            self.key = std["mp4"] if std else f"----:com.apple.iTunes:{field}"
            self.container = f"MP4 {self.key}"
        elif isinstance(tags, ASFTags):
            self.kind = "asf"
            self.key = std["asf"] if std else field
            self.container = f"ASF {self.key}"
        elif isinstance(tags, APEv2):
            self.kind = "ape"
            self.key = std["ape"] if std else field
            self.container = f"APEv2 {self.key}"
        else:
            raise FileTagError(f"no writable tag block of a known kind ({type(tags).__name__})")

    def get(self) -> list[str]:
        tags = self.audio.tags
        if self.kind == "id3":
            values = [str(v) for frame in tags.getall(self.key) for v in frame.text]
            if self.id3_version == (2, 3):  # v2.3 has one string per frame: mutagen joins lists with "/"
                values = [part for v in values for part in v.split("/")]
        elif self.kind == "vorbis":
            values = list(tags[self.key]) if self.key in tags else []
        elif self.kind == "mp4":
            raw = tags.get(self.key, [])
            values = [bytes(v).decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]
        elif self.kind == "asf":
            values = [str(v) for v in tags.get(self.key, [])]
        else:
            values = [str(v) for v in tags[self.key]] if self.key in tags else []
        return _clean(values)

    def set(self, values: Sequence[str]) -> None:
        tags = self.audio.tags
        values = list(values)
        if self.kind == "id3":
            from mutagen import id3

            if self.key.startswith("TXXX:"):
                frame = id3.TXXX(encoding=id3.Encoding.UTF8, desc=self.key[5:], text=values)
            else:
                frame = getattr(id3, self.key)(encoding=id3.Encoding.UTF8, text=values)
            tags.setall(self.key, [frame])
        elif self.kind == "mp4":
            from mutagen.mp4 import AtomDataType, MP4FreeForm

            if self.key.startswith("----:"):
                tags[self.key] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
            else:
                tags[self.key] = values
        else:
            tags[self.key] = values

    def save(self) -> None:
        if self.kind != "id3":
            self.audio.save()
            return
        if self.id3_version == (2, 3):
            # Keep the file's ID3v2.3. mutagen read it as v2.4 and drops v2.4-only frames (TMOO among
            # them) when converting back, so set the field aside and restore it, as Picard does.
            tags = self.audio.tags
            kept = tags.getall(self.key)
            tags.delall(self.key)
            tags.update_to_v23()
            for frame in kept:
                tags.add(frame)
            self.audio.save(v2_version=3)
        else:
            self.audio.save(v2_version=4)


def _clean(values: Iterable[Any]) -> list[str]:
    """Strip, drop empties, and de-duplicate case-insensitively, keeping the first spelling."""
    out: list[str] = []
    seen: set[str] = set()
    for v in values:
        s = str(v).strip()
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def check_field(field: str) -> str:
    """Return ``field`` if it is a usable field name (``mood``, ``genre`` or a custom name).

    Raises
    ------
    ParameterError
        For anything but 1-64 letters, digits, spaces, ``_``, ``.`` or ``-`` (starting with a
        letter or digit).
    """
    if not isinstance(field, str) or not _FIELD_NAME.fullmatch(field):
        raise ParameterError(
            f"tag field must be 'mood', 'genre' or a name of letters, digits, space, '_', '.', '-' "
            f"(at most 64), got {field!r}"
        )
    return field


def _read_only_reason(path: Path) -> str:
    """Why ``path`` must not be written, or an empty string."""
    mode = path.stat().st_mode
    if not os.access(path, os.W_OK):
        return "read-only file (no write permission)"
    # root may write anything; a file whose mode has no write bit was still marked read-only by someone
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return f"read-only file (mode {stat.filemode(mode)})"
    return ""


def _open(path: Path) -> tuple[Any, str]:
    """Load ``path`` with mutagen, with an empty tag block added when it has none.

    Returns the file object and an empty string, or ``None`` and the reason it is unsupported.
    """
    import mutagen

    try:
        audio = mutagen.File(str(path))
    except mutagen.MutagenError as exc:
        raise FileTagError(f"cannot read tags ({first_line(exc)})") from exc
    if audio is None:
        return None, f"unsupported format ({path.suffix or 'no extension'}): not a file type mutagen can tag"
    if audio.tags is None:
        try:
            audio.add_tags()
        except Exception as exc:  # noqa: BLE001 - mutagen raises various types for "no tag support"
            return None, f"unsupported format ({type(audio).__name__}): {first_line(exc) or 'it has no tag block'}"
    return audio, ""


# --------------------------------------------------------------------------- public API
def read_tags(path: str | Path, *, field: str = DEFAULT_TAG_FIELD) -> list[str]:
    """The values of ``field`` (mood by default) stored in an audio file.

    Parameters
    ----------
    path : str or Path
    field : str
        ``"mood"``, ``"genre"`` or a custom field name (see the module docstring for the mapping).

    Returns
    -------
    list of str
        Empty when the file has no such field.

    Raises
    ------
    FileTagError
        Missing file, a format mutagen cannot tag, or unreadable tags.
    ParameterError
        A malformed field name.
    """
    check_field(field)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileTagError(f"{path}: no such file")
    try:
        audio, unsupported = _open(path)
    except FileTagError as exc:
        raise FileTagError(f"{path}: {exc}") from exc
    if audio is None:
        raise FileTagError(f"{path}: {unsupported}")
    try:
        return _Slot(audio, field).get()
    except FileTagError as exc:
        raise FileTagError(f"{path}: {exc}") from exc


def write_tags(
    path: str | Path,
    tags: str | Iterable[str],
    *,
    field: str = DEFAULT_TAG_FIELD,
    replace: bool = False,
    dry_run: bool = False,
) -> TagChange:
    """Write ``tags`` into the ``field`` (mood by default) of an audio file, in place.

    Only the tag block is rewritten; the audio data is left byte for byte as it was. Per-file
    problems are returned, not raised, so a batch goes on past them.

    Parameters
    ----------
    path : str or Path
    tags : str or iterable of str
        The values to write; a string is split on ``;`` (the form of ``TagResult.tracks["tags"]``).
    field : str
        ``"mood"`` (default), ``"genre"`` or a custom field name.
    replace : bool
        Replace the field's existing values instead of keeping them and appending the new ones.
    dry_run : bool
        Compute the change without writing anything (``status="planned"`` when it would write).

    Returns
    -------
    TagChange
        ``status`` is one of :data:`STATUSES`. Nothing is written when there are no tags to write
        or when the field already holds exactly the result.

    Raises
    ------
    ParameterError
        A malformed field name (the only error raised; file problems are in the result).
    """
    check_field(field)
    path = Path(path).expanduser()
    new = _clean(tags.split(";") if isinstance(tags, str) else tags)
    where = str(path)
    if not path.is_file():
        return TagChange(where, "failed", field, reason="no such file")
    try:
        audio, unsupported = _open(path)
        if audio is None:
            return TagChange(where, "unsupported", field, reason=unsupported)
        slot = _Slot(audio, field)
        before = tuple(slot.get())
    except FileTagError as exc:
        return TagChange(where, "failed", field, reason=str(exc))
    after = tuple(new) if replace else tuple(_clean([*before, *new]))
    if not new:
        return TagChange(where, "unchanged", field, before, before, slot.container, "no tags to write")
    if after == before:
        return TagChange(where, "unchanged", field, before, after, slot.container)
    read_only = _read_only_reason(path)
    if read_only:
        return TagChange(where, "read-only", field, before, before, slot.container, read_only)
    if dry_run:
        return TagChange(where, "planned", field, before, after, slot.container)
    try:
        slot.set(after)
        slot.save()
    except PermissionError as exc:
        return TagChange(where, "read-only", field, before, before, slot.container, f"read-only: {first_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - mutagen and the OS raise many types; report, go on
        return TagChange(where, "failed", field, before, before, slot.container, f"cannot save tags: {first_line(exc)}")
    try:
        check = tuple(read_tags(path, field=field))
    except FileTagError as exc:
        return TagChange(where, "failed", field, before, after, slot.container, f"written but not readable: {exc}")
    if check != after:
        return TagChange(
            where, "failed", field, before, check, slot.container,
            f"read back {'; '.join(check) or '(none)'} instead of {'; '.join(after)}",
        )
    return TagChange(where, "written", field, before, after, slot.container)


def write_track_tags(
    tracks: Any,
    *,
    field: str = DEFAULT_TAG_FIELD,
    replace: bool = False,
    dry_run: bool = False,
) -> list[TagChange]:
    """Write each track's tags into its file: :func:`write_tags` over a table or mapping.

    Parameters
    ----------
    tracks : pandas.DataFrame or mapping of path -> tags
        A frame with ``path`` and ``tags`` columns (``TagResult.tracks``: tags ``;``-joined) or a
        mapping ``{path: "a;b" or ["a", "b"]}``.
    field, replace, dry_run
        As in :func:`write_tags`.

    Returns
    -------
    list of TagChange
        One per track, in order.
    """
    check_field(field)
    if isinstance(tracks, Mapping):
        items = list(tracks.items())
    else:
        missing = {"path", "tags"} - set(getattr(tracks, "columns", ()))
        if missing:
            raise ParameterError(f"tracks need 'path' and 'tags' columns; missing {sorted(missing)}")
        items = list(zip(tracks["path"], tracks["tags"]))
    return [write_tags(p, t, field=field, replace=replace, dry_run=dry_run) for p, t in items]
