"""The track table as the page asks for it: filter, search, sort and one page at a time."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import ParameterError

__all__ = ["query", "row_dict", "SORT_KEYS", "MAX_PER_PAGE"]

#: Columns a table can be sorted by (besides ``score:<tag>``).
SORT_KEYS = ("name", "top", "score", "margin", "example")
MAX_PER_PAGE = 500


def _num(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def row_dict(row, tags: Sequence[str]) -> dict[str, Any]:
    """One table row as JSON."""
    return {
        "id": int(row["id"]), "name": str(row["name"]), "top": str(row["top"]), "tags": str(row["tags"]),
        "score": _num(row["score"]), "margin": _num(row["margin"]), "low": bool(row["low"]),
        "scores": {t: _num(row[f"score:{t}"]) for t in tags}, "example": str(row["example"]),
        "snippet": [_num(row["snippet_start"]), _num(row["snippet_end"])], "changed": bool(row["changed"]),
        "n_snippets": int(row["n_snippets"]),
    }


def _parsed(name: str, value, convert, what: str):
    """A query parameter converted (``None`` when it is absent or empty), else one clear error."""
    if value in (None, ""):
        return None
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be {what}, got {value!r}") from None


def _float(name: str, value) -> float | None:
    out = _parsed(name, value, float, "a number")
    if out is not None and not math.isfinite(out):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return out


def _int(name: str, value, default: int, lo: int, hi: int) -> int:
    out = _parsed(name, value, int, "a whole number")
    if out is None:
        return default
    if not lo <= out <= hi:
        raise ParameterError(f"{name} must lie between {lo} and {hi}, got {out}")
    return out


def query(tracks, tags: Sequence[str], params) -> dict[str, Any]:
    """Filter, sort and page the track table.

    Parameters
    ----------
    tracks : pandas.DataFrame
        The session's table (:class:`clapknn.webapp.session.Curator`).
    tags : sequence of str
    params : mapping
        ``tag`` (top tag), ``min``/``max`` (score), ``q`` (name contains, case-insensitive),
        ``low`` (``1``: low-confidence only), ``changed`` (``1``: changed by the last label),
        ``sort`` (a :data:`SORT_KEYS` column or ``score:<tag>``), ``desc`` (``1``), ``page`` (from 1),
        ``per_page`` (at most :data:`MAX_PER_PAGE`).
    """
    keep = np.ones(len(tracks), dtype=bool)
    tag = params.get("tag") or ""
    if tag:
        if tag not in tags:
            raise ParameterError(f"no tag {tag!r} in the index; it has {', '.join(tags)}")
        keep &= (tracks["top"] == tag).to_numpy()
    lo, hi = _float("min", params.get("min")), _float("max", params.get("max"))
    if lo is not None:
        keep &= (tracks["score"] >= lo).to_numpy()
    if hi is not None:
        keep &= (tracks["score"] <= hi).to_numpy()
    text = (params.get("q") or "").strip().lower()
    if text:
        keep &= tracks["name"].str.lower().str.contains(text, regex=False).to_numpy()
    if params.get("low") in ("1", "true", True):
        keep &= tracks["low"].to_numpy()
    if params.get("changed") in ("1", "true", True):
        keep &= tracks["changed"].to_numpy()
    sort = params.get("sort") or "name"
    if sort not in SORT_KEYS and not (sort.startswith("score:") and sort[6:] in tags):
        raise ParameterError(f"cannot sort by {sort!r}; choose from {', '.join(SORT_KEYS)} or score:<tag>")
    desc = params.get("desc") in ("1", "true", True)
    chosen = tracks[keep]
    chosen = chosen.sort_values([sort, "name"], ascending=[not desc, True], kind="mergesort")
    per_page = _int("per_page", params.get("per_page"), 50, 1, MAX_PER_PAGE)
    pages = max(1, math.ceil(len(chosen) / per_page))
    page = _int("page", params.get("page"), 1, 1, 10**9)
    page = min(page, pages)
    part = chosen.iloc[(page - 1) * per_page : page * per_page]
    return {
        "total": int(len(chosen)), "page": page, "pages": pages, "per_page": per_page,
        "rows": [row_dict(r, tags) for _, r in part.iterrows()],
    }
