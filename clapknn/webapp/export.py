"""Export from the page: tags into the files (a dry-run list first), the tag table as CSV, and one
playlist per tag (:func:`clapknn.players.tag_playlists`)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..errors import ParameterError

__all__ = ["file_tags", "csv_text", "playlists", "TABLE_COLUMNS"]

#: The CSV's leading columns (then one ``score:<tag>`` per tag), as ``clapknn tag --out`` writes them.
TABLE_COLUMNS = ["path", "tags", "top", "score", "n_snippets"]


def _table(tracks, tags):
    return tracks[TABLE_COLUMNS + [f"score:{t}" for t in tags]]


def file_tags(tracks, tags, *, dry_run: bool = True, field: str = "mood", replace: bool = False) -> dict[str, Any]:
    """Write (or, with ``dry_run``, list) each track's tags in its file (:func:`clapknn.players.write_track_tags`)."""
    from ..players.tags import check_field, write_track_tags

    check_field(field)
    changes = write_track_tags(_table(tracks, tags), field=field, replace=bool(replace), dry_run=bool(dry_run))
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.status] = counts.get(c.status, 0) + 1
    rows = [
        {"path": c.path, "status": c.status, "before": list(c.before), "after": list(c.after), "what": c.describe()}
        for c in changes
    ]
    return {"dry_run": bool(dry_run), "field": field, "counts": counts, "changes": rows}


def csv_text(tracks, tags) -> str:
    """The tag table as CSV text."""
    buf = io.StringIO()
    _table(tracks, tags).to_csv(buf, index=False)
    return buf.getvalue()


def playlists(tracks, tags, library: Path, folder: str = "Playlists") -> dict[str, Any]:
    """One ``.m3u8`` per tag in ``library/folder`` (created; it must stay inside the library)."""
    from ..players.playlist import tag_playlists

    folder = (folder or "Playlists").strip()
    if os.path.isabs(folder) or ".." in Path(folder).parts or "\x00" in folder:
        raise ParameterError(f"{folder!r}: give a folder inside the library (no '..', not absolute)")
    base = os.path.realpath(library)
    out = Path(base) / folder
    real = os.path.realpath(out)
    if os.path.commonpath([base, real]) != base:
        raise ParameterError(f"{folder!r}: outside the library")
    out.mkdir(parents=True, exist_ok=True)
    written = tag_playlists(_table(tracks, tags), out, relative=True)
    return {
        "folder": str(out),
        "playlists": [{"name": p.name, "path": str(p.path), "tracks": len(p)} for p in written],
    }
