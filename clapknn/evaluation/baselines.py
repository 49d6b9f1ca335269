"""The baselines the kNN vote is compared with, on the same embeddings and splits: per-snippet
scores of the majority class of the support, the nearest class centroid (cosine) and a logistic
regression on standardised snippet vectors."""

from __future__ import annotations

import numpy as np

from ..encoders.base import l2_normalize

__all__ = ["BASELINES", "METHODS", "centroid_scores", "logreg_scores", "majority_scores"]

#: The baselines, in report order.
BASELINES = ("majority", "centroid", "logreg")
#: The kNN vote and the baselines, in report order.
METHODS = ("knn",) + BASELINES


def majority_scores(Y_support: np.ndarray, n_queries: int) -> np.ndarray:
    """Track scores of the majority class: every query gets the support's tag frequencies."""
    prior = np.asarray(Y_support).mean(axis=0).astype(np.float64)
    return np.tile(prior, (n_queries, 1))


def centroid_scores(X_s, Y_s, X_q, multilabel) -> np.ndarray:
    X_s, X_q = l2_normalize(X_s), l2_normalize(X_q)

    def centroids(mask_cols):
        C = np.zeros((Y_s.shape[1], X_s.shape[1]), dtype=np.float64)
        for j in range(Y_s.shape[1]):
            rows = mask_cols[:, j] > 0
            if rows.any():
                C[j] = X_s[rows].mean(axis=0)
        return l2_normalize(C)

    pos = X_q @ centroids(Y_s).T
    if not multilabel:
        return (pos + 1.0) / 2.0
    neg = X_q @ centroids(1 - Y_s).T
    return np.clip((pos - neg) / 2.0 + 0.5, 0.0, 1.0)


def logreg_scores(X_s, Y_s, X_q, multilabel, seed) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=1.0, max_iter=500, tol=1e-3, class_weight="balanced", random_state=seed),
        )

    out = np.zeros((len(X_q), Y_s.shape[1]))
    if multilabel:
        for j in range(Y_s.shape[1]):
            y = Y_s[:, j]
            if y.min() == y.max():
                out[:, j] = float(y[0])
            else:
                out[:, j] = model().fit(X_s, y).predict_proba(X_q)[:, 1]
        return out
    y = Y_s.argmax(axis=1)
    present = np.unique(y)
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    out[:, present] = model().fit(X_s, y).predict_proba(X_q)
    return out
