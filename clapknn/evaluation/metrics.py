"""The evaluation's track-level metrics, computed with ``sklearn.metrics``, their chance levels,
and the predictions they are taken of (as :class:`~clapknn.tagging.tagger.Tagger` makes them)."""

from __future__ import annotations

import warnings

import numpy as np

from ..options import DEFAULT_MULTILABEL_THRESHOLD

__all__ = ["METRICS", "MULTILABEL_THRESHOLD", "chance_levels", "predict_tags", "track_metrics"]

#: Track-level metrics in report order.
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "pr_auc")
#: As :class:`~clapknn.tagging.tagger.Tagger`: a tag is given when its track score reaches this.
MULTILABEL_THRESHOLD = DEFAULT_MULTILABEL_THRESHOLD


def chance_levels(y_true: np.ndarray, multilabel: bool) -> dict[str, float]:
    """Expected metrics of a guesser that ignores the audio, for query labels ``y_true``
    (a 0/1 matrix ``(n, n_tags)``).

    Single-label: a tag picked uniformly at random. Multi-label: each tag given with probability 1/2.
    PR-AUC chance is a tag's frequency; ROC-AUC chance is 0.5. Tags absent from the queries are left
    out of the macro averages, as in :func:`track_metrics`.
    """
    y = np.asarray(y_true, dtype=np.float64)
    n_tags = y.shape[1]
    prev = y.mean(axis=0)
    present = prev > 0
    q = 0.5 if multilabel else 1.0 / n_tags  # probability the guesser gives a tag
    f1 = np.where(present, 2 * prev * q / np.maximum(prev + q, 1e-12), 0.0)
    both = present & (prev < 1)
    return {
        "accuracy": q**n_tags if multilabel else 1.0 / n_tags,
        "balanced_accuracy": 0.5 if multilabel else 1.0 / n_tags,
        "macro_f1": float(f1.mean()),
        "roc_auc": 0.5,
        "pr_auc": float(prev[both].mean()) if both.any() else float("nan"),
    }


def track_metrics(
    y_true: np.ndarray, scores: np.ndarray, y_pred: np.ndarray, multilabel: bool
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of track predictions, with ``sklearn.metrics``.

    Parameters
    ----------
    y_true, y_pred : np.ndarray [shape=(n, n_tags)]
        0/1 true and predicted tags (one 1 per row when single-label).
    scores : np.ndarray [shape=(n, n_tags)]
        Track scores (for the ranking metrics).
    multilabel : bool

    Returns
    -------
    (metrics, per_tag)
        ``metrics``: :data:`METRICS` as floats (``nan`` when undefined, e.g. ROC-AUC with one class).
        Single-label: ``accuracy_score``, ``balanced_accuracy_score`` (mean recall over the tags
        present among the queries) and macro-F1 over all tags (``zero_division=0``) on the tag
        indices. Multi-label: subset accuracy (``accuracy_score``), the mean over tags of the
        binary ``balanced_accuracy_score``, and macro-F1 over all tags. ROC-AUC
        (``roc_auc_score``) and PR-AUC (``average_precision_score``) are per tag, one tag against
        the rest, macro-averaged over the tags that have both positive and negative queries.
        ``per_tag``: arrays ``precision``, ``recall``, ``f1``, ``support``
        (``precision_recall_fscore_support(average=None, zero_division=0)``), ``roc_auc``, ``pr_auc``.
    """
    from sklearn.metrics import (
        accuracy_score, average_precision_score, balanced_accuracy_score, precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = (np.asarray(y_true, dtype=np.int64) > 0).astype(np.int64)
    y_pred = (np.asarray(y_pred, dtype=np.int64) > 0).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n, n_tags = y_true.shape
    support = y_true.sum(axis=0)
    if n:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=None, labels=range(n_tags),
                                                     zero_division=0)
    else:
        p = r = f = np.zeros(n_tags)
    nan = float("nan")
    with warnings.catch_warnings():
        # balanced accuracy over the tags present among the queries: scikit-learn warns about a
        # predicted tag that no query has, and leaves it out, which is the definition used here
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        # a multi-label tag that every query (or none) has and is given: one class, recall 1
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        if not n:
            acc = bal = nan
        elif multilabel:
            acc = float(accuracy_score(y_true, y_pred))
            bal = float(np.mean([balanced_accuracy_score(y_true[:, j], y_pred[:, j]) for j in range(n_tags)]))
        else:
            t, q = y_true.argmax(axis=1), y_pred.argmax(axis=1)
            acc = float(accuracy_score(t, q))
            bal = float(balanced_accuracy_score(t, q)) if (support > 0).any() else nan
    roc = np.full(n_tags, np.nan)
    ap = np.full(n_tags, np.nan)
    ranked = np.flatnonzero((support > 0) & (support < n))  # tags with positive and negative queries
    if len(ranked) == 1:
        j = ranked[0]
        roc[j] = roc_auc_score(y_true[:, j], scores[:, j])
        ap[j] = average_precision_score(y_true[:, j], scores[:, j])
    elif len(ranked):  # one call per metric, one tag against the rest in each column
        roc[ranked] = roc_auc_score(y_true[:, ranked], scores[:, ranked], average=None)
        ap[ranked] = average_precision_score(y_true[:, ranked], scores[:, ranked], average=None)
    metrics = {
        "accuracy": acc,
        "balanced_accuracy": bal,
        "macro_f1": float(np.mean(f)),
        "roc_auc": float(np.nanmean(roc)) if np.isfinite(roc).any() else nan,
        "pr_auc": float(np.nanmean(ap)) if np.isfinite(ap).any() else nan,
    }
    per_tag = {"precision": p, "recall": r, "f1": f, "support": support, "roc_auc": roc, "pr_auc": ap}
    return metrics, per_tag


def predict_tags(scores: np.ndarray, multilabel: bool) -> np.ndarray:
    """0/1 predictions from track scores, as :class:`~clapknn.tagging.tagger.Tagger` makes them."""
    if multilabel:
        return ((scores >= MULTILABEL_THRESHOLD) & (scores > 0)).astype(np.int64)
    out = np.zeros(scores.shape, dtype=np.int64)
    if len(scores):
        out[np.arange(len(scores)), np.argmax(scores, axis=1)] = 1  # ties: first tag, as Tagger
    return out
