"""The "label next" queue: the tracks whose labels would help the vote most.

A track is worth labelling when the vote is unsure of it (a small margin between its two best tag
scores) and when it is unlike the tracks already chosen (ten near-copies of one uncertain song
teach the index one thing). :func:`label_next` ranks the unlabelled tracks by margin, keeps the
``pool`` most uncertain ones, and picks from them greedily (maximal marginal relevance): each pick
maximises ``uncertainty - diversity * max similarity to the examples and the tracks picked so far``.

>>> order = label_next(scores, vectors, n=10, exclude=labelled)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["margins", "label_next", "DEFAULT_POOL", "DEFAULT_DIVERSITY", "DEFAULT_DENSITY", "LOW_MARGIN"]

#: Uncertain candidates the queue chooses from, as a multiple of the queue's length. This and the
#: diversity weight were chosen on EMOPIA's dev split (bench/label_next.py; docs/webapp.md).
DEFAULT_POOL = 8
#: Weight of the similarity penalty against the uncertainty (1 - margin).
DEFAULT_DIVERSITY = 1.0
#: Weight of the bonus for candidates in dense parts of the library (typical rather than odd tracks).
DEFAULT_DENSITY = 0.0
#: Tracks whose similarity makes a candidate's density.
DENSITY_NEIGHBOURS = 10
#: A track whose two best tag scores are closer than this is flagged as low-confidence.
LOW_MARGIN = 0.2


def margins(scores: np.ndarray) -> np.ndarray:
    """Per row of track scores ``(n_tracks, n_tags)``: best score minus second best (the best
    score itself when there is one tag)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        return np.zeros(len(scores))
    if scores.shape[1] == 1:
        return scores[:, 0].copy()
    part = -np.partition(-scores, 1, axis=1)
    return part[:, 0] - part[:, 1]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def label_next(
    scores: np.ndarray,
    vectors: np.ndarray,
    *,
    n: int = 10,
    exclude: Sequence[int] | np.ndarray = (),
    examples: np.ndarray | None = None,
    pool: int = DEFAULT_POOL,
    diversity: float = DEFAULT_DIVERSITY,
    density: float = DEFAULT_DENSITY,
) -> list[int]:
    """Rows of the tracks to label next, best first.

    Parameters
    ----------
    scores : ndarray of shape (n_tracks, n_tags)
        Track-level tag scores (``TagResult.tracks``' ``score:<tag>`` columns).
    vectors : ndarray of shape (n_tracks, dim)
        One vector per track (e.g. the mean of its snippet vectors).
    n : int
        Length of the queue.
    exclude : sequence of int
        Rows never proposed (tracks that are already examples).
    examples : ndarray of shape (n_examples, dim), optional
        Vectors of the index's examples: a candidate close to one is penalised like one close to a
        pick.
    pool : int
        Choose among the ``pool * n`` most uncertain tracks (at least ``n``).
    diversity : float
        Weight of the similarity penalty (0: the ``n`` smallest margins, ties by row).
    density : float
        Weight of a bonus for typical tracks: a candidate's mean similarity to its
        :data:`DENSITY_NEIGHBOURS` nearest tracks of the library (0: no bonus).

    Returns
    -------
    list of int
        At most ``n`` rows, none of them in ``exclude``. Deterministic: equal values go to the lower row.
    """
    scores = np.asarray(scores, dtype=np.float64)
    total = len(scores)
    if total == 0 or n <= 0:
        return []
    allowed = np.ones(total, dtype=bool)
    allowed[np.asarray(list(exclude), dtype=np.int64)] = False
    rows = np.flatnonzero(allowed)
    if not len(rows):
        return []
    uncertainty = 1.0 - margins(scores)
    order = rows[np.lexsort((rows, -uncertainty[rows]))]
    cand = order[: max(int(n), int(pool) * int(n))]
    unit = _unit(vectors[cand])
    bonus = np.zeros(len(cand))
    if density > 0 and len(cand) > 1:
        sims = _unit(vectors[rows]) @ unit.T  # (library, candidates)
        m = min(DENSITY_NEIGHBOURS + 1, len(rows))
        top = -np.sort(-sims, axis=0)[1:m]  # leave the candidate itself out
        bonus = density * top.mean(axis=0) if len(top) else bonus
    if diversity <= 0 and density <= 0 or len(cand) <= 1:
        return [int(r) for r in cand[:n]]
    # similarity of each candidate to what is already known: examples, then each pick
    closest = np.full(len(cand), -1.0)
    if examples is not None and len(examples):
        closest = np.max(unit @ _unit(examples).T, axis=1)
    chosen: list[int] = []
    free = np.ones(len(cand), dtype=bool)
    for _ in range(min(n, len(cand))):
        value = uncertainty[cand] + bonus - diversity * np.maximum(closest, 0.0)
        value[~free] = -np.inf
        best = int(np.argmax(value))  # first maximum: the more uncertain (lower row) on ties
        chosen.append(int(cand[best]))
        free[best] = False
        closest = np.maximum(closest, unit @ unit[best])
    return chosen
