"""The vote's scores: per-neighbour weights from similarities, and per-tag scores from the
neighbours' tags (the arithmetic :class:`~clapknn.vote.KNNTagger` votes with)."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..options import WEIGHTS

__all__ = ["vote_scores", "vote_weights"]


def vote_weights(similarities: np.ndarray, weights: str) -> np.ndarray:
    """Per-neighbour vote weights from cosine similarities ``(n_queries, k)``.

    - ``"uniform"``: every neighbour counts 1.
    - ``"distance"``: ``1 / (1 - similarity)`` (scikit-learn's inverse distance); when a query has
      neighbours at distance 0, only those count, each 1.
    - ``"similarity"``: ``max(similarity, 0)``; a query whose neighbours all have similarity <= 0
      falls back to uniform.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    if weights == "uniform":
        return np.ones_like(sims)
    if weights == "distance":
        dist = np.maximum(1.0 - sims, 0.0)
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        exact = np.isinf(w)
        rows = exact.any(axis=1)
        w[rows] = exact[rows].astype(np.float64)
        return w
    if weights == "similarity":
        w = np.maximum(sims, 0.0)
        dead = w.sum(axis=1) <= 0
        w[dead] = 1.0
        return w
    raise ParameterError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")


def vote_scores(similarities: np.ndarray, neighbor_labels: np.ndarray, weights: str = "similarity") -> np.ndarray:
    """Per-tag scores in [0, 1] from neighbours' label indicators.

    Parameters
    ----------
    similarities : np.ndarray [shape=(n, k)]
    neighbor_labels : np.ndarray [shape=(n, k, n_tags)]
        1 where neighbour ``j`` of query ``i`` has tag ``t``.
    weights : str
        See :func:`vote_weights`.

    Returns
    -------
    np.ndarray [shape=(n, n_tags)]
        Weighted share of neighbours carrying each tag.
    """
    w = vote_weights(similarities, weights)
    total = w.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    return np.einsum("nk,nkt->nt", w, neighbor_labels) / total
