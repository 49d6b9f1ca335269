"""Playlists for media servers: one extended-M3U (``.m3u8``) file per tag, and "more like these".

Navidrome, Jellyfin, MPD, Logitech Media Server and most players import ``.m3u8`` files (UTF-8
M3U) found in the music folder; this module writes them from clapknn's results:

* :func:`tag_playlists`: one playlist per tag from a tag result (:attr:`TagResult.tracks
  <clapknn.tagging.tagger.TagResult.tracks>`, or the ``--out`` CSV / JSON / parquet of ``clapknn tag``,
  read with :func:`read_tag_table`). A track is in the playlist of each tag it was given (its
  ``tags`` column, after the tagger's threshold), best ``score:<tag>`` first; ``min_score`` and
  ``max_tracks`` trim the list.
* :func:`similar_playlist`: the library tracks nearest a few seed tracks (the cosine similarity of
  each track to the mean of the seeds' vectors), from a :class:`~clapknn.library.LibraryIndex`.

Each entry is an ``#EXTINF:<seconds>,<artist - title>`` line and the path: relative to the
playlist's folder by default (what a server that scans a music folder expects; the playlist and
the music can move together), or absolute. Files that no longer exist are left out and reported.
Playlists are written atomically; a playlist of the same name is replaced. :func:`read_m3u8` reads
one back (absolute paths).

>>> from clapknn.players import read_tag_table, tag_playlists
>>> tag_playlists(read_tag_table("tags.csv"), "~/Music/Playlists", min_score=0.6)   # doctest: +SKIP
[Playlist('calm', 12 tracks, ~/Music/Playlists/calm.m3u8), ...]
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from ..options import DEFAULT_SIMILAR_TRACKS  # tracks in a "more like these" playlist

__all__ = [
    "Playlist",
    "PlaylistEntry",
    "read_tag_table",
    "tag_playlists",
    "similar_playlist",
    "write_m3u8",
    "read_m3u8",
    "playlist_name",
    "check_limits",
    "describe",
    "DEFAULT_SIMILAR_TRACKS",
]

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')


@dataclass(frozen=True)
class PlaylistEntry:
    """One track of a playlist: its absolute ``path``, the ``score`` that ranked it (tag score or
    similarity), ``duration`` in seconds (``-1`` when unknown) and a display ``title``."""

    path: str
    score: float = float("nan")
    duration: float = -1.0
    title: str = ""


@dataclass
class Playlist:
    """A written playlist: its ``name`` (the tag, or the seeds), file ``path``, ``entries`` in
    order, and ``skipped`` ``(path, reason)`` for tracks left out (missing files)."""

    name: str
    path: Path
    entries: list[PlaylistEntry]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Playlist({self.name!r}, {len(self.entries)} tracks, {self.path})"


def playlist_name(name: str) -> str:
    """A file name (without ``.m3u8``) for a playlist called ``name``: path separators and other
    characters that file systems refuse become ``_``."""
    cleaned = _UNSAFE.sub("_", name).strip(" .")
    return cleaned or "playlist"


# --------------------------------------------------------------------------- reading results
def read_tag_table(path: str | Path):
    """A per-track table written by ``clapknn tag --out`` (``.csv``, ``.json`` or ``.parquet``).

    Returns
    -------
    pandas.DataFrame
        With ``path`` and ``tags`` as strings (an empty string for a track with no tag).

    Raises
    ------
    ParameterError
        Missing file, unknown extension, unreadable file, or no ``path`` / ``tags`` column.
    """
    from ..output import read_table

    df = read_table(path)
    p = Path(os.path.expanduser(str(path)))
    missing = {"path", "tags"} - set(df.columns)
    if missing:
        raise ParameterError(
            f"{path}: not a per-track tag table (no {', '.join(sorted(missing))} column); write one with clapknn tag --out"
        )
    df["path"] = df["path"].astype(str)
    df["tags"] = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in df["tags"]]
    df.attrs["source"] = str(p)
    return df


def _resolve(path: str, bases: Sequence[Path]) -> Path:
    """``path`` made absolute: as it is, or against the first of ``bases`` where it exists."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute():
        return Path(os.path.abspath(p))
    for base in bases:
        if (base / p).exists():
            return Path(os.path.abspath(base / p))
    return Path(os.path.abspath(bases[0] / p))


def _describe(path: Path) -> tuple[float, str]:
    """Duration (s, ``-1`` unknown) and ``artist - title`` (else the file name) of an audio file."""
    title = path.stem
    try:
        import mutagen

        audio = mutagen.File(str(path), easy=True)
    except Exception:  # noqa: BLE001 - a playlist entry needs no readable tags
        return -1.0, title
    if audio is None:
        return -1.0, title
    length = getattr(getattr(audio, "info", None), "length", None)
    duration = float(length) if length and math.isfinite(length) else -1.0
    tags = audio.tags or {}
    try:
        t, a = (tags.get("title") or [""])[0], (tags.get("artist") or [""])[0]
    except Exception:  # noqa: BLE001 - odd tag blocks: fall back to the file name
        t, a = "", ""
    if t:
        title = f"{a} - {t}" if a else str(t)
    return duration, title


# --------------------------------------------------------------------------- writing
def write_m3u8(
    entries: Sequence[PlaylistEntry | str | Path], out: str | Path, *, relative: bool = True,
    relative_to: str | Path | None = None, name: str | None = None,
) -> Path:
    """Write an extended M3U playlist (UTF-8) to ``out``, atomically.

    Parameters
    ----------
    entries : sequence of PlaylistEntry or paths
        In playlist order; plain paths get their duration and title from the file's tags.
    out : path
        The playlist file (its folder must exist); ``.m3u8`` is the usual extension.
    relative : bool
        Paths relative to the playlist's folder (default), else absolute. A track on another drive
        (Windows) is written absolute.
    relative_to : path, optional
        With ``relative``: paths relative to this folder instead (e.g. MPD's ``music_directory``
        for playlists kept in its ``playlist_directory``).
    name : str, optional
        Written as a ``#PLAYLIST:`` line (the name some players show).

    Returns
    -------
    Path
    """
    from ..options import check_output_path

    out = Path(os.path.abspath(check_output_path(out)))
    folder = Path(os.path.abspath(os.path.expanduser(str(relative_to)))) if relative_to is not None else out.parent
    lines = ["#EXTM3U"]
    if name:
        lines.append(f"#PLAYLIST:{name}")
    for e in entries:
        if not isinstance(e, PlaylistEntry):
            p = Path(os.path.abspath(os.path.expanduser(str(e))))
            e = PlaylistEntry(str(p), float("nan"), *_describe(p))
        where = e.path
        if relative:
            try:
                where = os.path.relpath(e.path, folder)
            except ValueError:  # another drive
                where = e.path
        title = " ".join(str(e.title).split())  # one line
        lines.append(f"#EXTINF:{int(round(e.duration)) if e.duration >= 0 else -1},{title}")
        lines.append(where.replace(os.sep, "/") if relative and os.sep != "/" else where)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def read_m3u8(path: str | Path, *, relative_to: str | Path | None = None) -> list[PlaylistEntry]:
    """The entries of an (extended) M3U playlist, paths made absolute against its folder (or
    against ``relative_to``, for a playlist written with that option).

    ``#EXTINF`` durations and titles are kept; other comment lines are ignored. URLs are kept as
    they are.
    """
    path = Path(os.path.expanduser(str(path)))
    text = path.read_text(encoding="utf-8-sig")
    base = Path(os.path.expanduser(str(relative_to))) if relative_to is not None else path.parent
    entries: list[PlaylistEntry] = []
    duration, title = -1.0, ""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#EXTINF:"):
            head, _, title = line[len("#EXTINF:"):].partition(",")
            try:
                duration = float(head.split()[0]) if head.split() else -1.0
            except ValueError:
                duration = -1.0
            continue
        if line.startswith("#"):
            continue
        if "://" in line:
            where = line
        else:
            p = Path(line)
            where = os.path.abspath(p if p.is_absolute() else base / p)
        entries.append(PlaylistEntry(where, float("nan"), duration, title))
        duration, title = -1.0, ""
    return entries


def _write(name: str, ranked: list[tuple[Path, float]], out: Path, *, relative: bool, relative_to, max_tracks: int | None) -> Playlist:
    entries, skipped = [], []
    for p, score in ranked:
        if max_tracks is not None and len(entries) >= max_tracks:
            break
        if not p.is_file():
            skipped.append((str(p), "no such file (left out of the playlist)"))
            continue
        entries.append(PlaylistEntry(str(p), float(score), *_describe(p)))
    write_m3u8(entries, out, relative=relative, relative_to=relative_to, name=name)
    return Playlist(name, out, entries, skipped)


def check_limits(min_score: float | None = None, max_tracks: int | None = None) -> None:
    """Refuse a minimum score outside [-1, 1] or a track count below 1 (``None``: no limit).

    Raises
    ------
    ParameterError
    """
    from ..options import check_int

    check_int("max_tracks", max_tracks, allow_none=True)
    if min_score is not None:
        try:
            ok = not isinstance(min_score, bool) and -1.0 <= float(min_score) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"minimum score must lie between -1 and 1, got {min_score!r}")


def tag_playlists(
    tracks,
    out_dir: str | Path,
    *,
    tags: Sequence[str] | None = None,
    min_score: float | None = None,
    max_tracks: int | None = None,
    relative: bool = True,
    relative_to: str | Path | None = None,
    prefix: str = "",
    base: str | Path | None = None,
) -> list[Playlist]:
    """One ``.m3u8`` playlist per tag, from a per-track tag table.

    Parameters
    ----------
    tracks : pandas.DataFrame
        ``TagResult.tracks`` or :func:`read_tag_table`: ``path``, ``tags`` (``;``-joined) and one
        ``score:<tag>`` column per tag.
    out_dir : path
        Folder for the playlists (it must exist): ``<prefix><tag>.m3u8`` each.
    tags : sequence of str, optional
        Only these tags (default: every tag that has a ``score:`` column).
    min_score : float, optional
        Leave out tracks whose score for the tag is below this.
    max_tracks : int, optional
        At most this many tracks per playlist (the best ones).
    relative, relative_to : bool, path
        Paths relative to ``out_dir`` (default) or to ``relative_to``, or absolute
        (:func:`write_m3u8`).
    prefix : str
        Put before each tag in the file name and the playlist name (e.g. ``"mood - "``).
    base : path, optional
        Folder that relative paths in ``tracks`` are relative to (default: the working folder,
        then the table's own folder for a table read with :func:`read_tag_table`).

    Returns
    -------
    list of Playlist
        One per tag, in tag order; a tag no track has gets an empty playlist, so a server's old
        playlist does not linger.

    Raises
    ------
    ParameterError
        A missing folder, a table without scores, an unknown tag, or a limit out of range.
    """
    check_limits(min_score, max_tracks)
    out_dir = Path(os.path.expanduser(str(out_dir)))
    if not out_dir.is_dir():
        raise ParameterError(f"{out_dir}: folder does not exist; create it first")
    missing = {"path", "tags"} - set(getattr(tracks, "columns", ()))
    if missing:
        raise ParameterError(f"tracks need 'path' and 'tags' columns; missing {sorted(missing)}")
    known = [c[len("score:"):] for c in tracks.columns if str(c).startswith("score:")]
    if not known:
        raise ParameterError("the table has no score:<tag> columns; use the per-track table of clapknn tag (not --per-snippet)")
    if tags:
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise ParameterError(f"no tag {', '.join(map(repr, unknown))} in the table; it has {', '.join(known)}")
        chosen = list(dict.fromkeys(tags))
    else:
        chosen = known
    bases = [Path(os.path.expanduser(str(base)))] if base is not None else [Path.cwd()]
    source = getattr(tracks, "attrs", {}).get("source")
    if base is None and source:
        bases.append(Path(source).parent)
    paths = [_resolve(str(p), bases) for p in tracks["path"]]
    given = [{t.strip() for t in str(cell).split(";") if t.strip()} for cell in tracks["tags"]]
    playlists = []
    for tag in chosen:
        scores = tracks[f"score:{tag}"].to_numpy(dtype=float)
        rows = [i for i in range(len(paths)) if tag in given[i] and (min_score is None or scores[i] >= min_score)]
        rows.sort(key=lambda i: (-scores[i], str(paths[i])))
        name = f"{prefix}{tag}"
        playlists.append(
            _write(name, [(paths[i], scores[i]) for i in rows], out_dir / f"{playlist_name(name)}.m3u8",
                   relative=relative, relative_to=relative_to, max_tracks=max_tracks)
        )
    return playlists


def similar_playlist(
    library,
    seeds: Sequence[str | Path],
    out: str | Path,
    *,
    n: int = DEFAULT_SIMILAR_TRACKS,
    min_similarity: float | None = None,
    include_seeds: bool = False,
    relative: bool = True,
    relative_to: str | Path | None = None,
    name: str | None = None,
    cache=True,
) -> Playlist:
    """A "more like these" playlist: the library tracks nearest the seed tracks.

    Each library track is ranked by its cosine similarity to the mean of the seeds' (unit)
    vectors. Seeds must be tracks of the library, found by path or, through the embedding cache's
    hash memo, by content (index the library again to add new tracks).

    Parameters
    ----------
    library : LibraryIndex or path
        Made by :func:`clapknn.library.index_library` (``clapknn index-library``).
    seeds : sequence of paths
    out : path
        The playlist file, or an existing folder to write ``<name>.m3u8`` in.
    n : int
        Tracks in the playlist (seeds not counted).
    min_similarity : float, optional
        Leave out tracks less similar than this (cosine, -1 to 1).
    include_seeds : bool
        Start the playlist with the seeds themselves.
    relative, relative_to, name
        As in :func:`write_m3u8` (the name defaults to ``more like <first seed>``).
    cache : bool, path or EmbeddingCache
        Used to find seeds by content when their path is not in the library.

    Raises
    ------
    ParameterError
        No seed, a seed that is not in the library, or a limit out of range.
    """
    from ..embedding.cache import resolve_cache
    from ..library import LibraryIndex
    from ..options import check_int

    check_int("n", n)
    check_limits(min_similarity, None)
    if not seeds:
        raise ParameterError("give at least one seed track")
    lib = library if isinstance(library, LibraryIndex) else LibraryIndex.load(library)
    ids: list[int] = []
    store = None
    for seed in seeds:
        p = Path(os.path.expanduser(str(seed)))
        i = lib.find(p)
        if i is None and p.is_file():
            store = store if store is not None else resolve_cache(cache)
            if store is not None:
                try:
                    i = lib.find(p, sha256=store.file_sha256(p))
                except OSError:
                    i = None
        if i is None:
            raise ParameterError(f"{seed}: not a track of the library (index it with clapknn index-library first)")
        if i not in ids:
            ids.append(i)
    vecs = np.stack([lib.vector(i) for i in ids]).astype(np.float32)
    sims, found = lib.search(vecs.mean(axis=0, keepdims=True), n + len(ids))
    lib_paths = lib.tracks["path"].astype(str)
    ranked: list[tuple[Path, float]] = []
    if include_seeds:
        ranked += [(Path(os.path.abspath(lib_paths.iat[i])), 1.0) for i in ids]
    count = 0
    for s, i in zip(sims[0].tolist(), found[0].tolist()):
        if i < 0 or i in ids or (min_similarity is not None and s < min_similarity):
            continue
        if count >= n:
            break
        ranked.append((Path(os.path.abspath(lib_paths.iat[i])), float(s)))
        count += 1
    title = name or f"more like {Path(str(seeds[0])).stem}" + (f" (+{len(ids) - 1})" if len(ids) > 1 else "")
    out = Path(os.path.expanduser(str(out)))
    if out.is_dir():
        out = out / f"{playlist_name(title)}.m3u8"
    return _write(title, ranked, out, relative=relative, relative_to=relative_to, max_tracks=None)


def describe(playlists: Sequence[Playlist]) -> list[str]:
    """One line per playlist for a person: name, track count, file."""
    return [f"{p.name}: {len(p)} track(s) -> {p.path}" for p in playlists]
