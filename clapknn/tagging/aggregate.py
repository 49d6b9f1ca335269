"""Aggregate: turn per-snippet tag scores into one score per track, and scores into tag lists."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ParameterError
from ..options import AGGREGATIONS  # one home: clapknn.options

__all__ = ["AGGREGATIONS", "aggregate", "select_tags"]

def aggregate(scores: np.ndarray, groups: np.ndarray, *, method: str = "mean", n_groups: int | None = None) -> np.ndarray:
    """Pool snippet scores by track.

    Parameters
    ----------
    scores : np.ndarray [shape=(n_snippets, n_tags)]
        Per-snippet scores in [0, 1].
    groups : np.ndarray [shape=(n_snippets,)]
        Track number (0..n_groups-1) of each snippet.
    method : {"mean", "max", "vote"}
        ``mean``: average score; ``max``: the best snippet's score per tag; ``vote``: share of the
        track's snippets whose top tag is each tag (ties to the first tag).
    n_groups : int, optional
        Number of tracks (defaults to ``groups.max() + 1``); tracks with no snippet get zeros.

    Returns
    -------
    np.ndarray [shape=(n_groups, n_tags)], values in [0, 1].
    """
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    if method not in AGGREGATIONS:
        raise ParameterError(f"unknown aggregation {method!r}; choose one of {', '.join(AGGREGATIONS)}")
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    n_tags = scores.shape[1] if scores.ndim == 2 else 0
    out = np.zeros((n_groups, n_tags))
    if scores.size == 0:
        return out
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    if method == "max":
        np.maximum.at(out, groups, scores)
        return out
    if method == "vote":
        onehot = np.zeros_like(scores)
        onehot[np.arange(len(scores)), np.argmax(scores, axis=1)] = 1.0
        scores = onehot
    np.add.at(out, groups, scores)
    nz = counts > 0
    out[nz] /= counts[nz, None]
    return out


def select_tags(
    scores: np.ndarray, tags: Sequence[str], *, threshold: float = 0.0, top_n: int | None = None
) -> list[list[str]]:
    """Tags per row whose score is at least ``threshold`` (and above 0), best first, at most ``top_n``.

    Ties are broken by tag order (the vocabulary is sorted, so alphabetically).
    """
    scores = np.asarray(scores, dtype=np.float64)
    out = []
    for row in scores:
        order = np.lexsort((np.arange(len(row)), -row))
        chosen = [tags[j] for j in order if row[j] >= threshold and row[j] > 0]
        out.append(chosen[:top_n] if top_n else chosen)
    return out
