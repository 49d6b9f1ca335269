"""The vote's search space: the plain or the standardised space (space options, the
standardisation, the transform), and the ``standardize="auto"`` choice between them (a
leave-one-group-out vote and a permutation test; docs/evaluation.md, "The vote's space")."""

from __future__ import annotations

import numpy as np

from ..encoders.base import l2_normalize
from ..errors import ParameterError
from ..options import SPACES
from .relevance import group_means, relevance_of
from .scores import vote_weights

__all__ = ["choose_space", "search_space", "space_options", "standardisation"]

_SHRINK = 0.1  # standardisation: spreads are shrunk towards their pooled value by this share
# standardize="auto": samples that take part in the leave-one-group-out test, at most (evenly
# spread); with block relevance each shuffle of the test computes the n x n similarities in the
# space of each group's own relevance
_LOO_MAX = 800
# neighbours in each leave-one-out vote: fixed, so the choice is the same for every k and weighting
# of the vote it serves
_LOO_NEIGHBOURS = 10
# the plain space is taken only when its leave-one-out gain over the standardised one is matched by
# at most this share of the tag shuffles (a permutation test's level: on tags the vectors do not
# follow, the space switches at most this often)
_ALPHA = 0.025
_PERMUTATIONS = 39  # tag shuffles of the test (with _ALPHA = 0.025: the gain must beat all 39)
_PERMUTATION_SEED = 0  # the shuffles are drawn with this seed: the same examples, the same choice


def space_options(options, space: str = "auto") -> dict:
    """:class:`KNNTagger` settings for a search space, from an encoder's own (``encoder.knn_options()``).

    ``"auto"``: the encoder's settings as they are (the features encoder: choose between the plain
    and the standardised space on the index, see ``standardize``); ``"plain"``: the encoder's
    vectors as they are; ``"standardized"``: every dimension standardised on the index (with the
    encoder's blocks and relevance weighting, if any).
    """
    options = dict(options or {})
    if space == "plain":
        options["standardize"] = False
    elif space == "standardized":
        options["standardize"] = True
    elif space != "auto":
        raise ParameterError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    return options


def standardisation(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` of unit vectors ``(n, d)``, per dimension, float32: spreads are shrunk
    towards their pooled value by the share :data:`_SHRINK` so that a nearly constant dimension
    cannot dominate; all vectors equal (nothing to standardise against): scale 1."""
    unit = unit.astype(np.float64)
    sd = unit.std(axis=0)
    pooled = float(np.sqrt(np.mean(sd**2)))
    mean = unit.mean(axis=0).astype(np.float32)
    scale = (np.sqrt(sd**2 + (_SHRINK * pooled) ** 2) + 1e-12).astype(np.float32)
    if pooled == 0.0:
        scale = np.ones_like(scale)
    return mean, scale


def search_space(X, *, mean=None, scale=None, dim_relevance=None, blocks=None, block_weights=None) -> np.ndarray:
    """Rows of ``X`` as the search compares them, float32: unit vectors; with ``mean`` and
    ``scale``, standardised, times ``dim_relevance`` (when given), each column block ``(start,
    stop)`` of ``blocks`` scaled to unit length times its weight in ``block_weights`` (columns
    outside every block dropped), and scaled to unit length again."""
    X = l2_normalize(np.asarray(X, dtype=np.float32))
    if mean is None:
        return X
    X = (X - mean) / scale
    if dim_relevance is not None:
        X = X * np.asarray(dim_relevance, dtype=np.float32)
    if blocks is not None:
        X = np.concatenate([w * l2_normalize(X[:, a:b]) for (a, b), w in zip(blocks, block_weights)], axis=1)
    return l2_normalize(X)


def loo_neighbours(similarity, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's :data:`_LOO_NEIGHBOURS` nearest samples of other groups and their vote
    weights (similarity weighting; 0 where a sample has fewer such neighbours):
    ``(ids, weights)``, both ``(n, k)``. ``similarity(r)`` gives the similarities of samples
    ``r`` to every sample."""
    n = len(groups)
    k = max(1, min(_LOO_NEIGHBOURS, n - 1))
    ids = np.zeros((n, k), dtype=np.int64)
    wts = np.zeros((n, k))
    for start in range(0, n, 256):
        r = slice(start, min(n, start + 256))
        sims = similarity(r).astype(np.float64)
        sims[groups[r][:, None] == groups[None, :]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (sims.shape[0], 1))
        s = np.take_along_axis(sims, top, axis=1)
        by = np.lexsort((top, -s), axis=1)  # similarity descending, then the lower index
        top, s = np.take_along_axis(top, by, axis=1), np.take_along_axis(s, by, axis=1)
        valid = np.isfinite(s)
        ids[r] = top
        wts[r] = vote_weights(np.where(valid, s, 0.0), "similarity") * valid
    return ids, wts


def group_shares(ids: np.ndarray, wts: np.ndarray, Y: np.ndarray, inv: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per group: the mean, over its samples, of the share of a sample's leave-one-group-out
    vote (neighbours ``ids`` with weights ``wts``) that goes to the sample's own tags ``Y``."""
    votes = np.einsum("mk,mkt->mt", wts, Y[ids])
    shares = (votes * (Y > 0)).sum(axis=1) / np.maximum(votes.sum(axis=1), 1e-12)
    return np.bincount(inv, weights=shares, minlength=len(counts)) / counts


def choose_space(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, *, space, mean: np.ndarray, scale: np.ndarray,
                 blocks, relevance: bool) -> tuple[bool, dict]:
    """``standardize="auto"``: whether to search the standardised space (see
    :class:`~clapknn.vote.KNNTagger`'s ``standardize``), and the evidence (its ``loo_score_``).

    ``space(X, standardized)`` gives the rows as the search compares them; ``mean`` and ``scale``
    are the standardisation; ``blocks`` the column blocks ``(start, stop, weight)``, with
    ``relevance`` their relevance weighting (measured without each left-out group).

    The statistic is the plain space's mean gain over the standardised one, over the groups, in
    the share of each sample's leave-one-group-out vote that goes to its own tags. Its null
    distribution is that of the same statistic with the groups' tags shuffled among the groups
    (:data:`_PERMUTATIONS` shuffles, a fixed seed): on tags that the vectors do not follow, the
    shuffled tags are as likely as the real ones, so the plain space is taken with probability
    at most :data:`_ALPHA`, whatever the dependence between groups. At most :data:`_LOO_MAX`
    samples, evenly spread, take part.
    """
    # samples in lexicographic order of their vectors, groups numbered in the order they come
    # in: the choice depends on the examples, not on the order they were given in or on the
    # groups' names
    order = np.lexsort(X.T[::-1])
    X, Y, groups = X[order], Y[order], np.asarray(groups)[order]
    if len(X) > _LOO_MAX:
        keep = np.linspace(0, len(X) - 1, _LOO_MAX).round().astype(np.int64)
        X, Y, groups = X[keep], Y[keep], groups[keep]
    _, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    inv = np.argsort(np.argsort(first))[inv]
    groups = inv
    n_groups = int(inv.max()) + 1
    counts = np.bincount(inv, minlength=n_groups).astype(np.float64)
    _, has = group_means(X[:, :1].astype(np.float64), Y, inv, n_groups)
    # the permuted tags: every sample takes the tags of the group its group is dealt
    rng = np.random.default_rng(_PERMUTATION_SEED)
    deals = [np.arange(n_groups)] + [rng.permutation(n_groups) for _ in range(_PERMUTATIONS)]
    labels = [Y] + [has[d][inv].astype(np.float64) for d in deals[1:]]

    plain = space(X, False)
    p_ids, p_w = loo_neighbours(lambda r: plain[r] @ plain.T, groups)
    if relevance:  # the standardised neighbours depend on the tags through the weights
        Z = ((l2_normalize(X) - mean) / scale).astype(np.float64)
        means, _ = group_means(Z, Y, inv, n_groups)
        Z2 = Z**2
        base = np.array([w for _, _, w in blocks])
    else:
        std = space(X, True)
        s_ids, s_w = loo_neighbours(lambda r: std[r] @ std.T, groups)
    stats, scores = [], None
    for d, Yd in zip(deals, labels):
        if relevance:
            # relevance measured without the left-out group: its own tags never weigh its vote
            block_rel, dim_rel = relevance_of(means, has[d], blocks, leave_one_out=True, dims=True)
            w2 = (base * block_rel) ** 2  # (groups, blocks)
            v2 = dim_rel**2  # (groups, dims)

            def similarity(r, w2=w2, v2=v2):
                # the search space of the left-out groups' weights: a weighted mean of per-block
                # cosines of the dimension-weighted vectors
                g = inv[r]
                sims = np.zeros((len(g), len(Z)))
                norm_r = np.zeros(len(g))
                norm_all = np.zeros((len(g), len(Z)))
                for j, (a, b, _) in enumerate(blocks):
                    weighted = Z[r, a:b] * v2[g, a:b]
                    dots = weighted @ Z[:, a:b].T
                    q_r = (weighted * Z[r, a:b]).sum(axis=1)  # squared norms of the rows r
                    q_all = v2[g, a:b] @ Z2[:, a:b].T  # ... and of every sample, under r's weights
                    on = (q_r[:, None] > 1e-24) & (q_all > 1e-24)
                    cos = np.where(on, dots / np.sqrt(np.maximum(q_r[:, None] * q_all, 1e-48)), 0.0)
                    sims += w2[g, j][:, None] * cos
                    norm_r += w2[g, j] * (q_r > 1e-24)
                    norm_all += w2[g, j][:, None] * (q_all > 1e-24)
                return sims / np.sqrt(np.maximum(norm_r, 1e-24))[:, None] / np.sqrt(np.maximum(norm_all, 1e-24))

            s_ids, s_w = loo_neighbours(similarity, groups)
        sp = group_shares(p_ids, p_w, Yd, inv, counts)
        ss = group_shares(s_ids, s_w, Yd, inv, counts)
        stats.append(float(np.mean(sp - ss)))
        if scores is None:
            scores = {"standardized": float(ss.mean()), "plain": float(sp.mean())}
    observed, null = stats[0], np.array(stats[1:])
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))
    loo_score = {**scores, "p_value_plain": p_value}
    # the share a random vote gives a sample's own tags (reported; leave-one-out on a few
    # balanced examples falls below it in both spaces, as leaving a sample out leaves its tag short)
    loo_score["chance"] = float(np.mean(Y.sum(axis=1))) / max(Y.shape[1], 1)
    # no evidence (one group per tag: every left-out vote goes to other tags) or a gain that
    # shuffled tags match often keeps the standardised space
    return not (observed > 0 and p_value <= _ALPHA), loo_score
