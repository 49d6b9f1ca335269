"""The "label next" queue: the tracks whose labels would help the vote most.

With a handful of examples the vote mostly lacks *coverage*: whole regions of the library have no
example near them, so their tags are guesses however the margins look. A label helps most where it
stands for many unlabelled tracks that no example stands for yet. By default (the setting chosen on
EMOPIA's dev split, bench/label_next.py; docs/webapp.md) :func:`label_next` therefore does
cluster-based sampling: it cuts the library into (examples + ``n``) k-means clusters and asks, the
largest cluster first, for the most central track of each cluster that holds no example. When
fewer such clusters than ``n`` are left, the rest of the queue is filled greedily (k-centre greedy
with an uncertainty term): each pick maximises

    (1 - margin) + coverage * (distance to the nearest example or earlier pick)
                 + density * (typicality) - balance * (earlier picks with the same predicted tag)

Distances are measured in a space where every dimension is standardised on the library's own
tracks (so that no hand-made feature with a large range decides them alone, and so that the space
does not move when a label is added). Tracks are whole files (one vector per file), so two
snippets of one song are never proposed apart.

>>> order = label_next(scores, vectors, n=10, exclude=labelled)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "margins", "label_next", "library_space", "DEFAULT_POOL", "DEFAULT_COVERAGE", "DEFAULT_DENSITY",
    "DEFAULT_BALANCE", "DEFAULT_CLUSTERS", "LOW_MARGIN",
]

#: Candidates the queue chooses from, as a multiple of the queue's length, the most uncertain first
#: (0: every unlabelled track). This and the weights below were chosen on EMOPIA's dev split
#: (bench/label_next.py; docs/webapp.md).
DEFAULT_POOL = 0
#: Weight of the distance to the nearest example or earlier pick against the uncertainty (1 - margin).
DEFAULT_COVERAGE = 1.0
#: Weight of the bonus for candidates in dense parts of the library (typical rather than odd tracks).
DEFAULT_DENSITY = 1.0
#: Penalty per earlier pick with the same predicted top tag, in units of ``n / n_tags`` picks.
DEFAULT_BALANCE = 0.0
#: Whether the queue starts with the centres of the library's k-means clusters that hold no example.
DEFAULT_CLUSTERS = True
#: Tracks whose similarity makes a candidate's density.
DENSITY_NEIGHBOURS = 10
#: At most this many library tracks (evenly spaced rows) are compared with to measure density.
DENSITY_REFERENCE = 2000
#: At most this many library tracks (evenly spaced rows) fit the clusters; the others are assigned.
CLUSTER_FIT = 2000
#: A track whose two best tag scores are closer than this is flagged as low-confidence.
LOW_MARGIN = 0.2
_EPS = 1e-12


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


def library_space(vectors: np.ndarray, *others: np.ndarray, standardize: bool = True) -> list[np.ndarray]:
    """Unit rows of ``vectors`` (and of each array in ``others``) in the queue's search space.

    With ``standardize``: rows are made unit length, every dimension is centred and scaled by its
    mean and spread over ``vectors`` (the library; a dimension that does not vary keeps scale 1),
    and the rows are made unit length again, so that inner products are cosine similarities in a
    space that stays put while examples are added.
    """
    lib = _unit(vectors)
    out = [lib] + [_unit(o) for o in others]
    if not standardize or len(lib) < 2:
        return out
    centre = lib.mean(axis=0)
    spread = lib.std(axis=0)
    spread = np.where(spread > _EPS, spread, 1.0)
    return [_unit((o - centre) / spread) for o in out]


def _density(space: np.ndarray, cand: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean similarity of each candidate to its nearest library tracks (itself left out)."""
    ref = rows if len(rows) <= DENSITY_REFERENCE else rows[np.linspace(0, len(rows) - 1, DENSITY_REFERENCE).astype(int)]
    m = min(DENSITY_NEIGHBOURS, len(ref) - 1)
    if m <= 0:
        return np.zeros(len(cand))
    sims = space[cand].astype(np.float32) @ space[ref].T.astype(np.float32)  # (candidates, reference)
    sims[cand[:, None] == ref[None, :]] = -np.inf
    top = -np.partition(-sims, m - 1, axis=1)[:, :m]
    return top.mean(axis=1, dtype=np.float64)


def label_next(
    scores: np.ndarray,
    vectors: np.ndarray,
    *,
    n: int = 10,
    exclude: Sequence[int] | np.ndarray = (),
    examples: np.ndarray | None = None,
    pool: int = DEFAULT_POOL,
    coverage: float = DEFAULT_COVERAGE,
    density: float = DEFAULT_DENSITY,
    balance: float = DEFAULT_BALANCE,
    standardize: bool = True,
    clusters: bool = DEFAULT_CLUSTERS,
    facility: bool = False,
    doubt_power: float = 1.0,
    cold_start: int = 0,
    n_known: int | None = None,
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
        Vectors of the index's examples: a candidate near one covers little that is new. The rows
        of ``exclude`` count as examples too.
    pool : int
        Choose among the ``pool * n`` most uncertain tracks (at least ``n``); 0: among all of them.
    coverage : float
        Weight of a candidate's distance (1 - cosine similarity, in :func:`library_space`) to the
        nearest example or earlier pick (0: the ``n`` smallest margins, ties by row; large: k-centre
        greedy, farthest first).
    density : float
        Weight of a bonus for typical tracks: a candidate's mean similarity to its
        :data:`DENSITY_NEIGHBOURS` nearest tracks of the library (0: no bonus).
    balance : float
        Weight of a penalty per earlier pick whose predicted top tag is the candidate's, in units
        of ``n / n_tags`` picks (0: no penalty).
    standardize : bool
        Measure distances in the library-standardised space (False: cosine of ``vectors`` as given).
    clusters : bool
        Cluster-based sampling first: cut the library into (examples + ``n``) k-means clusters in
        that space and ask, largest cluster first, for the candidate nearest the centre of each
        cluster that holds no example; the rest of the queue is filled greedily as above.

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
    excluded = np.asarray(list(exclude), dtype=np.int64)
    allowed[excluded] = False
    rows = np.flatnonzero(allowed)
    if not len(rows):
        return []
    uncertainty = 1.0 - margins(scores)
    order = rows[np.lexsort((rows, -uncertainty[rows]))]
    cand = order[: max(int(n), int(pool) * int(n))] if pool > 0 else order
    if len(cand) <= 1 or (coverage <= 0 and density <= 0 and balance <= 0 and not clusters and not facility):
        return [int(r) for r in cand[:n]]
    known = [np.asarray(examples, dtype=np.float64)] if examples is not None and len(examples) else []
    space, *ex = library_space(np.asarray(vectors, dtype=np.float64), *known, standardize=standardize)
    unit = space[cand]
    # similarity of each candidate to what is already known: examples, excluded rows, then each pick
    closest = np.full(len(cand), -1.0)
    if ex:
        closest = np.maximum(closest, np.max(unit @ ex[0].T, axis=1))
    if len(excluded):
        closest = np.maximum(closest, np.max(unit @ space[excluded].T, axis=1))
    n_tags = scores.shape[1] if scores.ndim == 2 and scores.shape[1] else 1
    top = np.argmax(scores[cand], axis=1) if n_tags > 1 else np.zeros(len(cand), dtype=int)
    per_tag = np.zeros(n_tags)
    unit_cost = balance * n_tags / max(int(n), 1)
    chosen: list[int] = []
    free = np.ones(len(cand), dtype=bool)
    def take(best: int) -> None:
        nonlocal closest
        chosen.append(int(cand[best]))
        free[best] = False
        per_tag[top[best]] += 1
        closest = np.maximum(closest, unit @ unit[best])

    if facility:
        known = len(excluded) if n_known is None else int(n_known)
        power = 0.0 if known < cold_start else float(doubt_power)
        weights = np.clip(uncertainty[cand], 0.0, 1.0) ** power
        for best in _facility(space, cand, closest, weights, n):
            take(best)
        return chosen
    if clusters:
        for best in _cluster_centres(space, cand, excluded, ex[0] if ex else None, n):
            take(best)
    value = uncertainty[cand].copy()
    if density > 0 and len(chosen) < min(n, len(cand)):  # only when the cluster centres leave room
        value += density * _density(space, cand, np.arange(total))
    while len(chosen) < min(n, len(cand)):
        total_value = value + coverage * (1.0 - closest) - unit_cost * per_tag[top]
        total_value[~free] = -np.inf
        take(int(np.argmax(total_value)))  # first maximum: the more uncertain (lower row) on ties
    return chosen


def _facility(space, cand, known, weights, n) -> list[int]:
    """Positions in ``cand`` of ``n`` picks that greedily maximise the weighted facility-location
    value ``sum_j weights[j] * max(similarity of track j to its nearest example or pick)`` over the
    candidates ``j`` (rows of ``space``), starting from the similarity to what is ``known``."""
    unit = space[cand].astype(np.float32)
    sims = unit @ unit.T  # (candidates, candidates); a candidate is also a track to cover
    cur = known.astype(np.float32).copy()
    w = weights.astype(np.float32)
    picks: list[int] = []
    free = np.ones(len(cand), dtype=bool)
    for _ in range(min(n, len(cand))):
        gain = np.maximum(sims - cur[None, :], 0.0) @ w
        gain[~free] = -np.inf
        best = int(np.argmax(gain))  # first maximum: the lower position on ties
        picks.append(best)
        free[best] = False
        cur = np.maximum(cur, sims[best])
    return picks


def _cluster_centres(space, cand, excluded, examples, n) -> list[int]:
    """Positions in ``cand`` of the candidates nearest the centres of the k-means clusters of the
    library (examples + ``n`` of them) that hold no example, the largest cluster first."""
    from sklearn.cluster import KMeans

    n_known = len(excluded) + (len(examples) if examples is not None else 0)
    k = min(n_known + int(n), len(space))
    if k < 2:
        return []
    fit = space if len(space) <= CLUSTER_FIT else space[np.linspace(0, len(space) - 1, CLUSTER_FIT).astype(int)]
    km = KMeans(n_clusters=min(k, len(fit)), n_init=3, random_state=0).fit(fit)
    k = km.n_clusters
    labels = km.labels_ if fit is space else km.predict(space)
    covered = set(labels[excluded].tolist())
    if examples is not None and len(examples):
        covered |= set(km.predict(examples).tolist())
    sizes = np.bincount(labels, minlength=k)
    label_of = labels[cand]
    picks: list[int] = []
    for c in sorted(set(range(k)) - covered, key=lambda c: (-sizes[c], c)):
        inside = np.flatnonzero(label_of == c)
        if not len(inside):
            continue
        dist = np.linalg.norm(space[cand[inside]] - km.cluster_centers_[c], axis=1)
        picks.append(int(inside[np.argmin(dist)]))
        if len(picks) == n:
            break
    return picks


def track_space(tagger, vectors: np.ndarray, track_of: np.ndarray, n_tracks: int, *, space: str = "vote"):
    """Per track, one vector for the queue, and the examples' vectors in the same space:
    ``(tracks, examples, standardize)`` for :func:`label_next`.

    ``space="vote"``: the space the tagger's fitted vote searches (its snippets'
    :meth:`~clapknn.vote.KNNTagger.to_search_space` rows averaged per track; the examples' search
    vectors), compared as they are. ``"library"``: the encoder's vectors averaged per track, to be
    standardised on the library.
    """
    vectors = np.asarray(vectors)
    track_of = np.asarray(track_of, dtype=np.int64)
    index = tagger.index
    audio = (index.metadata["kind"] == "audio").to_numpy()
    if space == "vote":
        est = tagger.estimator
        rows = est.to_search_space(vectors) if len(vectors) else np.zeros((0, 1), np.float32)
        examples = est.search_index.reconstruct_n(0, est.n_samples_fit_)[audio]
        standardize = False
    elif space == "library":
        rows, examples, standardize = vectors, index.vectors[audio], True
    else:
        raise ValueError(f"unknown queue space {space!r}")
    tracks = np.zeros((n_tracks, rows.shape[1]), dtype=np.float64)
    np.add.at(tracks, track_of, rows)
    return tracks, examples, standardize


def queue(tagger, scores, vectors, track_of, *, n: int = 10, exclude=(), space: str = "vote", **settings) -> list[int]:
    """The label-next queue of a library tagged by ``tagger``: rows of ``scores`` (its tracks'
    tag scores, ``(n_tracks, n_tags)``), best first. ``vectors`` are the library's snippet vectors
    (as the encoder gives them) and ``track_of`` the track row of each; ``exclude`` the rows that
    are examples. ``settings`` go to :func:`label_next`."""
    tracks, examples, standardize = track_space(tagger, vectors, track_of, len(scores), space=space)
    n_known = int(tagger.index.metadata.loc[tagger.index.metadata["kind"] == "audio", "path"].nunique())
    return label_next(scores, tracks, n=n, exclude=exclude, examples=examples, standardize=standardize,
                      n_known=n_known, **settings)
