"""The "label next" queue: the tracks whose labels would help the vote most.

With a handful of examples the vote mostly lacks *coverage*: whole regions of the library have no
example near them, so their tags are guesses however the margins look. A label helps most where it
stands for many unlabelled tracks that no example stands for yet. By default (the setting chosen on
EMOPIA's dev split, bench/label_next.py; docs/webapp.md) :func:`label_next` therefore asks for the
tracks that greedily maximise a **facility-location** value, how well the library is stood for by
its examples:

    sum over the library's tracks j of  max over examples and picks a of  exp(-(1 - cos(j, a)) / width)

so each pick is the track whose label brings the most tracks, not yet near any example, near one:
a typical track of an uncovered part of the library (not an outlier, as farthest-first would ask
for; not a near-copy of an earlier pick, as the smallest margins would). A pick's gain is divided by
``1 + balance * (earlier picks of its predicted tag) * n_tags / n``, so the ten are spread over the
tags the vote sees. Options measured beside it (``facility=False``): cluster-based sampling (the
centres of k-means clusters holding no example) and a greedy mix of doubt, coverage and density;
``doubt_power`` weights each track by the vote's doubt (1 - margin) to that power, and
``cold_start`` leaves that weight out while few examples are known.

Distances are measured in a space where every dimension is standardised on the library's own
tracks (so that no hand-made feature with a large range decides them alone, and so that the space
does not move when a label is added); :func:`queue` can also measure them in the space the fitted
vote searches (``space="vote"``; on EMOPIA's dev split it did no better). Tracks are whole files (one
vector per file), so two snippets of one song are never proposed apart.

>>> order = label_next(scores, vectors, n=10, exclude=labelled)     # doctest: +SKIP
>>> order = queue(tagger, scores, snippet_vectors, track_of, n=10, exclude=labelled)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "margins", "label_next", "library_space", "queue", "track_space", "DEFAULT_POOL", "DEFAULT_COVERAGE",
    "DEFAULT_DENSITY", "DEFAULT_BALANCE", "DEFAULT_CLUSTERS", "DEFAULT_FACILITY", "DEFAULT_WIDTH",
    "DEFAULT_DOUBT_POWER", "DEFAULT_SPACE", "LOW_MARGIN",
]

#: Whether the queue maximises the facility-location value (else: cluster centres and the greedy
#: mix below). This and the settings below were chosen on EMOPIA's dev split (bench/label_next.py;
#: docs/webapp.md).
DEFAULT_FACILITY = True
#: Facility location: the width of the closeness ``exp(-(1 - cosine) / width)`` (``None``: the cosine).
DEFAULT_WIDTH = 0.1
#: Facility location: each track to cover weighs ``(1 - margin) ** doubt_power`` (0: every track alike).
DEFAULT_DOUBT_POWER = 0.0
#: Penalty for earlier picks with the same predicted top tag (see :func:`label_next`).
DEFAULT_BALANCE = 1.0
#: The space :func:`queue` measures distances in: ``"library"`` (standardised on the library) or ``"vote"``.
DEFAULT_SPACE = "library"
#: Greedy mix: candidates, as a multiple of the queue's length, the most uncertain first (0: every track).
DEFAULT_POOL = 0
#: Greedy mix: weight of the distance to the nearest example or earlier pick against the doubt (1 - margin).
DEFAULT_COVERAGE = 1.0
#: Greedy mix: weight of the bonus for candidates in dense parts of the library (typical rather than odd tracks).
DEFAULT_DENSITY = 1.0
#: Without facility location: whether the queue starts with the centres of the library's k-means
#: clusters that hold no example.
DEFAULT_CLUSTERS = True
#: Tracks whose similarity makes a candidate's density.
DENSITY_NEIGHBOURS = 10
#: At most this many library tracks (evenly spaced rows) are compared with to measure density.
DENSITY_REFERENCE = 2000
#: At most this many library tracks (evenly spaced rows) fit the clusters; the others are assigned.
CLUSTER_FIT = 2000
#: Facility location: at most this many tracks (evenly spaced rows) are covered, and at most
#: :data:`FACILITY_CANDIDATES` can be picked (a queue of 10,000+ tracks stays well under a second).
FACILITY_COVER = 2000
FACILITY_CANDIDATES = 5000
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
    facility: bool = DEFAULT_FACILITY,
    width: float | None = DEFAULT_WIDTH,
    doubt_power: float = DEFAULT_DOUBT_POWER,
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
        cluster that holds no example; the rest of the queue is filled greedily as above
        (without ``facility``).
    facility : bool
        Pick greedily the tracks that most raise the facility-location value (the module's
        docstring) over every candidate; ``pool`` still limits the candidates, ``balance`` divides
        each gain; ``clusters``, ``coverage`` and ``density`` are then unused.
    width : float or None
        Facility location: closeness ``exp(-(1 - cosine) / width)`` (``None``: the cosine).
    doubt_power : float
        Facility location: each track to cover weighs ``(1 - margin) ** doubt_power`` (0: alike).
    cold_start : int
        Facility location: while fewer than this many tracks are known (``n_known``, default the
        rows of ``exclude``), every track weighs alike whatever ``doubt_power`` says.
    n_known : int, optional
        How many labelled tracks (example files) the vote has.

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
        for best in _facility(space, cand, closest, weights, n, width=width, top=top, balance=balance, n_tags=n_tags):
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


def _evenly(rows: np.ndarray, most: int) -> np.ndarray:
    """``rows`` when there are at most ``most`` of them, else ``most`` of them evenly spaced."""
    return rows if len(rows) <= most else rows[np.linspace(0, len(rows) - 1, most).astype(int)]


def _facility(space, cand, known, weights, n, *, width=None, top=None, balance=0.0, n_tags=1) -> list[int]:
    """Positions in ``cand`` of ``n`` picks that greedily maximise the weighted facility-location
    value ``sum_j weights[j] * closeness of track j to its nearest example or pick`` over the
    tracks ``j`` to cover (the candidates, at most :data:`FACILITY_COVER` of them evenly spaced),
    starting from the closeness to what is ``known`` (one value per candidate).

    Closeness is the cosine similarity in ``space``, or with ``width`` ``exp(-(1 - similarity) /
    width)``. With ``balance``, a candidate's gain is divided by ``1 + balance * (earlier picks of
    its predicted tag, ``top``) * n_tags / n``. At most :data:`FACILITY_CANDIDATES` candidates
    (evenly spaced) can be picked.
    """
    pickable = _evenly(np.arange(len(cand)), FACILITY_CANDIDATES)
    cover = _evenly(np.arange(len(cand)), FACILITY_COVER)
    sims = space[cand[pickable]].astype(np.float32) @ space[cand[cover]].T.astype(np.float32)
    cur = known[cover].astype(np.float32)
    if width:
        sims = np.exp((sims - 1.0) / np.float32(width))
        cur = np.exp((cur - 1.0) / np.float32(width))
    w = weights[cover].astype(np.float32)
    per_tag = np.zeros(n_tags)
    picks: list[int] = []
    free = np.ones(len(pickable), dtype=bool)
    for _ in range(min(n, len(pickable))):
        gain = (np.maximum(sims - cur[None, :], 0.0) @ w).astype(np.float64)
        if balance and top is not None:
            gain /= 1.0 + balance * per_tag[top[pickable]] * n_tags / max(n, 1)
        gain[~free] = -np.inf
        best = int(np.argmax(gain))  # first maximum: the lower position on ties
        picks.append(int(pickable[best]))
        free[best] = False
        if top is not None:
            per_tag[top[pickable[best]]] += 1
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


def track_space(tagger, vectors: np.ndarray, track_of: np.ndarray, n_tracks: int, *, space: str = DEFAULT_SPACE):
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


def queue(tagger, scores, vectors, track_of, *, n: int = 10, exclude=(), space: str = DEFAULT_SPACE, **settings) -> list[int]:
    """The label-next queue of a library tagged by ``tagger``: rows of ``scores`` (its tracks'
    tag scores, ``(n_tracks, n_tags)``), best first. ``vectors`` are the library's snippet vectors
    (as the encoder gives them) and ``track_of`` the track row of each; ``exclude`` the rows that
    are examples. ``settings`` go to :func:`label_next`."""
    tracks, examples, standardize = track_space(tagger, vectors, track_of, len(scores), space=space)
    n_known = int(tagger.index.metadata.loc[tagger.index.metadata["kind"] == "audio", "path"].nunique())
    return label_next(scores, tracks, n=n, exclude=exclude, examples=examples, standardize=standardize,
                      n_known=n_known, **settings)
