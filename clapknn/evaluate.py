"""Evaluate: how good will tagging be on a labelled set, and with which settings?

Every file's snippets are embedded once per snippet length (:func:`embed_examples`); all splits,
neighbour counts, vote weightings and baselines then run on those cached vectors, so a full sweep
costs little more than one embedding pass.

Protocol (what :func:`evaluate` does):

- **Groups.** Each file belongs to a group (its source track or album: the ``group`` column of a
  labels CSV; by default the file itself). A group is never on both sides of a split.
- **Few-shot episodes** (:func:`few_shot_episodes`): ``n`` labelled files per tag, each from a
  different group, drawn at random; every file of a group that was not drawn is a query. Repeated
  ``n_episodes`` times per shot count; an episode depends only on ``(seed, shots, episode)``, so every
  method, setting and snippet length sees the same episodes.
- **Cross-validation** (:func:`grouped_folds`): stratified k-fold over groups; fewer folds (with a
  note) when some tag has fewer groups than folds were asked for.
- **Small sets.** Shot counts some tag cannot supply are left out with a note, and so is a tag whose
  files all come from one group (it can never be on both sides of a split); when nothing can be
  run, :func:`evaluate` raises a :class:`~clapknn.errors.ParameterError` saying why.
- **Predictions** are per track, exactly as ``clapknn tag`` makes them: per-snippet scores (kNN vote,
  or a baseline) pooled over the track's snippets by :func:`clapknn.tagging.aggregate.aggregate`.
- **Baselines** on the same embeddings and splits: ``majority`` (the most frequent tag of the
  support set), ``centroid`` (nearest class mean, cosine) and ``logreg`` (scikit-learn logistic
  regression on standardised snippet vectors).
- **Metrics** (track level): accuracy, balanced accuracy, macro-F1, per-tag precision and recall, and
  ROC-AUC and PR-AUC (average precision) per tag and macro. Each has a chance level beside it: the
  expected score of a guesser that ignores the audio (single-label: picks a tag uniformly at random;
  multi-label: gives each tag with probability 1/2), computed from the queries' own tag frequencies.

>>> from clapknn.evaluate import evaluate
>>> report = evaluate("examples/", shots=(1, 5), out_dir="eval")   # doctest: +SKIP
>>> print(report.text())                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import LabelError, ParameterError
from .options import (
    DEFAULT_AGGREGATE, DEFAULT_BATCH_SIZE, DEFAULT_K, DEFAULT_SNIPPET_SECONDS, DEFAULT_SPACE, DEFAULT_TAG_SNIPPETS,
    DEFAULT_WEIGHTS, EVAL_EPISODES, EVAL_FOLDS, EVAL_KS, EVAL_SHOTS, WEIGHTS, check_max_snippets, check_seconds,
)

__all__ = [
    "SHOTS",
    "METHODS",
    "METRICS",
    "Embedded",
    "EvaluationReport",
    "embed_examples",
    "evaluate",
    "few_shot_episodes",
    "grouped_folds",
    "fold_count",
    "track_metrics",
    "chance_levels",
]

logger = logging.getLogger(__name__)

#: Default shot counts (labelled files per tag) of the few-shot episodes.
SHOTS = EVAL_SHOTS
#: The kNN vote and the baselines, in report order.
METHODS = ("knn", "majority", "centroid", "logreg")
#: Track-level metrics in report order.
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "pr_auc")
_METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "bal.acc",
    "macro_f1": "macro-F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
}
_METHOD_LABELS = {"majority": "majority class", "centroid": "nearest centroid", "logreg": "logistic regression"}
_DEFAULT_KS = EVAL_KS
_MULTILABEL_THRESHOLD = 0.5  # as Tagger: a tag is given when its track score reaches this


# --------------------------------------------------------------------------- embeddings
@dataclass
class Embedded:
    """Snippet embeddings of a labelled set at one snippet length.

    Attributes
    ----------
    snippet_seconds, hop_seconds : float
    vectors : np.ndarray [shape=(n_snippets, dim), dtype=float32]
    track : np.ndarray [shape=(n_snippets,), dtype=int64]
        Row of :attr:`paths` each snippet comes from.
    paths : list of str
        The files that gave at least one vector.
    tags : list of tuple of str
        Tags of each file.
    groups : np.ndarray [shape=(n_tracks,), dtype=object]
        Group (source track) of each file.
    encoder : dict
        Identity of the encoder that made the vectors.
    skipped : list of (path, reason)
    knn_options : dict
        The encoder's settings for :class:`~clapknn.vote.KNNTagger` (``encoder.knn_options()``,
        e.g. standardisation), used exactly as :class:`~clapknn.tagging.tagger.Tagger` uses them.
    """

    snippet_seconds: float
    hop_seconds: float
    vectors: np.ndarray
    track: np.ndarray
    paths: list[str]
    tags: list[tuple[str, ...]]
    groups: np.ndarray
    encoder: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    knn_options: dict = field(default_factory=dict)
    #: each snippet's start (seconds) and each track's decoded length: which snippets tagging reads
    #: of a query (:func:`clapknn.audio.snippet.sampled_windows`)
    starts: np.ndarray | None = None
    durations: np.ndarray | None = None

    @property
    def n_tracks(self) -> int:
        """Number of tracks (files) embedded."""
        return len(self.paths)

    def relabel(self, tags: Mapping[str, Sequence[str]], groups: Mapping[str, str] | None = None) -> "Embedded":
        """The same vectors with other tags (and groups), looked up by path; files without tags are
        dropped. Lets several labellings of one set share one embedding pass."""
        keep = [i for i, p in enumerate(self.paths) if tags.get(p)]
        remap = np.full(len(self.paths), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        mask = remap[self.track] >= 0
        new_groups = np.array(
            [(groups or {}).get(self.paths[i], self.groups[i]) for i in keep], dtype=object
        )
        return replace(
            self,
            vectors=self.vectors[mask],
            track=remap[self.track[mask]],
            paths=[self.paths[i] for i in keep],
            tags=[tuple(tags[self.paths[i]]) for i in keep],
            groups=new_groups,
            starts=None if self.starts is None else self.starts[mask],
            durations=None if self.durations is None else self.durations[keep],
        )


def embed_examples(
    examples,
    encoder="features",
    *,
    labels: str | Path | None = None,
    snippet_seconds: float = 10.0,
    hop_seconds: float | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    n_jobs: int = 1,
    cache=None,
    progress: bool = False,
) -> Embedded:
    """Embed every snippet of every labelled file once.

    Parameters
    ----------
    examples : path or ExampleSet
        As for :func:`clapknn.build_index`.
    encoder : str or Encoder
    snippet_seconds, hop_seconds : float
        Snippet length and hop (hop defaults to the length).
    n_jobs : int
        Decoding processes of the embedding engine (``workers`` of :func:`clapknn.embedding.encode.embed_files`,
        as ``clapknn evaluate --workers``); 0 or 1 decode in a thread while the encoder runs.
    cache : bool, path or EmbeddingCache, optional
        The embedding cache (:mod:`clapknn.embedding.cache`; ``True`` for the default folder): files seen
        before with the same encoder and snippet settings are neither decoded nor encoded again.
    """
    from .encoders import Encoder, get_encoder
    from .labels import ExampleSet, load_examples

    example_set = examples if isinstance(examples, ExampleSet) else load_examples(examples, labels=labels)
    if not example_set.examples:
        raise LabelError(f"no labelled examples found in {examples}")
    enc = encoder if isinstance(encoder, Encoder) else get_encoder(encoder, **dict(encoder_options or {}))
    hop = float(snippet_seconds if hop_seconds is None else hop_seconds)
    paths = [Path(e.path) for e in example_set.examples]
    from .embedding.encode import embed_files

    emb = embed_files(paths, enc, snippet_seconds=snippet_seconds, hop_seconds=hop, batch_size=batch_size,
                      hashes=False, progress=progress, desc=f"embedding {snippet_seconds:g} s", cache=cache,
                      workers=int(n_jobs) if int(n_jobs) > 1 else 0)
    vectors, file_ids, failures = emb.vectors, emb.snippets["file"].to_numpy(np.int64), emb.failures
    used = sorted(set(file_ids.tolist()))
    if not used:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in failures[:5])
        raise LabelError(f"no usable example: all {len(paths)} file(s) were skipped ({reasons})")
    remap = np.full(len(paths), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    ex = example_set.examples
    return Embedded(
        snippet_seconds=float(snippet_seconds),
        hop_seconds=hop,
        vectors=np.asarray(vectors, dtype=np.float32),
        track=remap[np.asarray(file_ids, dtype=np.int64)],
        paths=[str(paths[i]) for i in used],
        tags=[tuple(ex[i].tags) for i in used],
        groups=np.array([ex[i].group if ex[i].group else str(paths[i]) for i in used], dtype=object),
        encoder=enc.identity(),
        skipped=list(example_set.problems) + [tuple(x) for x in failures],
        knn_options=enc.knn_options() if hasattr(enc, "knn_options") else {},
        starts=emb.snippets["start"].to_numpy(np.float64),
        durations=emb.files["duration"].to_numpy(np.float64)[used],
    )


def _query_windows(emb: Embedded, max_snippets: int | None) -> np.ndarray:
    """The snippets tagging reads of each track (all of them for embeddings made without their
    start times)."""
    if max_snippets is None or emb.starts is None or emb.durations is None:
        return np.ones(len(emb.track), dtype=bool)
    from .audio.snippet import sampled_windows

    return sampled_windows(emb.track, emb.starts, emb.durations, max_snippets, emb.snippet_seconds, emb.hop_seconds)


# --------------------------------------------------------------------------- splits
def _indicator(tags: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    from .labels import tag_indicator

    return tag_indicator(tags, classes)


def few_shot_episodes(
    tags: Sequence[Sequence[str]],
    groups: Sequence[Any],
    *,
    shots: int,
    n_episodes: int,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Few-shot episodes: ``(support, queries)`` arrays of file indices.

    Each tag gets ``shots`` support files, each from a different group (a file with several tags
    counts for each; tags are filled in a random order). Queries are all files whose group has no
    support file; files of a support group that were not drawn are left out. Episode ``e`` depends
    only on ``(seed, shots, e)``.

    Raises
    ------
    ParameterError
        When some tag has fewer than ``shots + 1`` groups, so it could not appear on both sides.
    """
    groups = np.asarray(groups, dtype=object)
    classes = sorted({t for ts in tags for t in ts})
    Y = _indicator(tags, classes)
    _, gid = np.unique(groups.astype(str), return_inverse=True)
    short = [f"{t} ({len(set(gid[Y[:, j] == 1]))})" for j, t in enumerate(classes) if len(set(gid[Y[:, j] == 1])) < shots + 1]
    if short:
        raise ParameterError(
            f"{shots} shot(s) per tag need at least {shots + 1} groups per tag; too few for: {', '.join(short)}"
        )
    out = []
    for e in range(n_episodes):
        rng = np.random.default_rng([int(seed), int(shots), e])
        for _attempt in range(100):
            support: list[int] = []
            used: set[int] = set()
            counts = np.zeros(len(classes), dtype=np.int64)
            for j in rng.permutation(len(classes)):
                for i in rng.permutation(np.flatnonzero(Y[:, j])):
                    if counts[j] >= shots:
                        break
                    if gid[i] in used:
                        continue
                    support.append(int(i))
                    used.add(int(gid[i]))
                    counts += Y[i]
            queries = np.flatnonzero(~np.isin(gid, list(used)))
            if (counts >= shots).all() and Y[queries].sum(axis=0).min() > 0:
                break
        else:  # pragma: no cover - needs pathological group/tag overlap
            raise ParameterError(f"could not draw a {shots}-shot episode with every tag among the queries")
        out.append((np.array(sorted(support), dtype=np.int64), queries.astype(np.int64)))
    return out


def _strata(tags: Sequence[Sequence[str]]) -> list[str]:
    """Each file's rarest tag (its only tag when single-label): what the folds stratify on."""
    freq: dict[str, int] = {}
    for ts in tags:
        for t in ts:
            freq[t] = freq.get(t, 0) + 1
    return [min(ts, key=lambda t: (freq[t], t)) for ts in tags]


def fold_count(tags: Sequence[Sequence[str]], groups: Sequence[Any], n_folds: int) -> tuple[int, str]:
    """The number of folds :func:`grouped_folds` makes for ``n_folds`` asked, and why it is fewer.

    A fold count can be no larger than the number of groups of any stratum (the rarest tag of each
    file), so that every stratum can be in every test fold.

    Returns
    -------
    (n, reason)
        ``n`` folds (below 2: no cross-validation is possible) and, when ``n < n_folds``, the
        reason (the stratum with the fewest groups), else ``""``.
    """
    groups = np.asarray(groups, dtype=object).astype(str)
    per: dict[str, set] = {}
    for s, g in zip(_strata(tags), groups):
        per.setdefault(s, set()).add(g)
    if not per:
        return 0, "no files"
    fewest = min(per, key=lambda s: (len(per[s]), s))
    n = min(int(n_folds), len(per[fewest]))
    reason = "" if n >= n_folds else f"tag {fewest!r} has {len(per[fewest])} group(s)"
    return n, reason


def grouped_folds(
    tags: Sequence[Sequence[str]], groups: Sequence[Any], *, n_folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold over groups: ``(train, test)`` arrays of file indices.

    Stratified on each file's rarest tag (its only tag when single-label), with scikit-learn's
    ``StratifiedGroupKFold``; ``n_folds`` is capped at the number of groups of the smallest
    stratum (:func:`fold_count`), so a small set gets fewer folds rather than an error.

    Raises
    ------
    ParameterError
        When some stratum has fewer than 2 groups (it could not be on both sides of a split).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n, reason = fold_count(tags, groups, n_folds)
    if n < 2:
        raise ParameterError(f"cross-validation needs at least 2 folds and 2 groups per tag; {reason or f'{n_folds} fold(s) asked'}")
    groups = np.asarray(groups, dtype=object).astype(str)
    cv = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        folds = [(np.asarray(tr, np.int64), np.asarray(te, np.int64))
                 for tr, te in cv.split(np.zeros(len(tags)), _strata(tags), groups)]
    return [(tr, te) for tr, te in folds if len(tr) and len(te)]


# --------------------------------------------------------------------------- metrics
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


def _roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve of binary ``y`` ranked by ``s`` (ties count one half): the
    Mann-Whitney statistic, equal to ``sklearn.metrics.roc_auc_score``."""
    from scipy.stats import rankdata

    pos = y > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (the step-wise area under the precision-recall curve, one step per
    distinct score), equal to ``sklearn.metrics.average_precision_score``."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], (y[order] > 0).astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per tag; 0 where undefined (scikit-learn's ``zero_division=0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return p, r, f


def track_metrics(
    y_true: np.ndarray, scores: np.ndarray, y_pred: np.ndarray, multilabel: bool
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of track predictions (computed directly; they equal scikit-learn's, see the tests).

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
        present among the queries) and ``f1_score(average="macro", labels=all tags,
        zero_division=0)`` on the tag indices. Multi-label: subset accuracy, the mean over tags of
        the binary balanced accuracy, and macro-F1 over all tags. ROC-AUC and PR-AUC (average
        precision) are per tag, one tag against the rest, macro-averaged over the tags that have
        both positive and negative queries.
        ``per_tag``: arrays ``precision``, ``recall``, ``f1``, ``support``, ``roc_auc``, ``pr_auc``.
    """
    y_true = np.asarray(y_true, dtype=np.int64) > 0
    y_pred = np.asarray(y_pred, dtype=np.int64) > 0
    scores = np.asarray(scores, dtype=np.float64)
    n, n_tags = y_true.shape
    tp = (y_true & y_pred).sum(axis=0).astype(np.float64)
    fp = (~y_true & y_pred).sum(axis=0).astype(np.float64)
    fn = (y_true & ~y_pred).sum(axis=0).astype(np.float64)
    support = y_true.sum(axis=0)
    p, r, f = _prf(tp, fp, fn)
    if multilabel:
        acc = float(np.mean((y_true == y_pred).all(axis=1))) if n else float("nan")
        tn = n - tp - fp - fn
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
            tnr = np.where(n - support > 0, tn / np.maximum(n - support, 1), np.nan)
        bal = float(np.mean(np.nanmean(np.stack([tpr, tnr]), axis=0)))
    else:
        acc = float(tp.sum() / n) if n else float("nan")
        bal = float(np.mean(r[support > 0])) if (support > 0).any() else float("nan")
    roc = np.full(n_tags, np.nan)
    ap = np.full(n_tags, np.nan)
    for j in range(n_tags):
        if 0 < support[j] < n:
            roc[j] = _roc_auc(y_true[:, j], scores[:, j])
            ap[j] = _average_precision(y_true[:, j], scores[:, j])
    metrics = {
        "accuracy": acc,
        "balanced_accuracy": bal,
        "macro_f1": float(f.mean()),
        "roc_auc": float(np.nanmean(roc)) if np.isfinite(roc).any() else float("nan"),
        "pr_auc": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
    }
    per_tag = {"precision": p, "recall": r, "f1": f, "support": support, "roc_auc": roc, "pr_auc": ap}
    return metrics, per_tag


def _predict(scores: np.ndarray, multilabel: bool) -> np.ndarray:
    """0/1 predictions from track scores, as :class:`~clapknn.tagging.tagger.Tagger` makes them."""
    if multilabel:
        return ((scores >= _MULTILABEL_THRESHOLD) & (scores > 0)).astype(np.int64)
    out = np.zeros(scores.shape, dtype=np.int64)
    if len(scores):
        out[np.arange(len(scores)), np.argmax(scores, axis=1)] = 1  # ties: first tag, as Tagger
    return out


# --------------------------------------------------------------------------- methods
def _track_scores(snippet_scores: np.ndarray, qgroups: np.ndarray, n: int, method: str) -> np.ndarray:
    from .tagging.aggregate import aggregate

    return aggregate(snippet_scores, qgroups, method=method, n_groups=n)


def _knn_scores(X_s, Y_s, X_q, ks, weights, qgroups, n_q, agg, options=None, groups=None):
    """Track scores for every (k, weighting), and the fitted estimator: ``({(k, weighting):
    scores}, estimator)``.

    The estimator is fitted as :class:`~clapknn.tagging.tagger.Tagger` fits it (``groups``: the file or
    group of each support snippet). What the fit decides from the examples (the search space,
    the block weights) does not depend on ``n_neighbors`` or ``weights``
    (:class:`~clapknn.vote.KNNTagger`), so one fit and one search with the largest k give, for
    every (k, weighting), the scores of a :class:`~clapknn.tagging.tagger.Tagger` made with that k and
    weighting.
    """
    from .vote import KNNTagger, vote_scores

    kmax = max(ks)
    est = KNNTagger(kmax, weights=weights[0], **dict(options or {}))
    est.fit(X_s, Y_s, groups=groups)  # indicator y: classes are its columns
    sims, ids = est.similarities(X_q, kmax)
    labels = Y_s[ids].astype(np.float64)
    out = {}
    for k in ks:
        kk = min(k, sims.shape[1])
        for w in weights:
            out[(k, w)] = _track_scores(vote_scores(sims[:, :kk], labels[:, :kk], w), qgroups, n_q, agg)
    return out, est


def _centroid_scores(X_s, Y_s, X_q, multilabel) -> np.ndarray:
    from .encoders.base import l2_normalize

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


def _logreg_scores(X_s, Y_s, X_q, multilabel, seed) -> np.ndarray:
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


# --------------------------------------------------------------------------- report
@dataclass
class EvaluationReport:
    """What :func:`evaluate` measured.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per setting (``snippet_seconds``, ``protocol`` "episodes"/"cv", ``shots``,
        ``method``, ``k``, ``weights``): the mean of each metric over episodes or folds, its
        standard deviation (``<metric>_sd``), its chance level (``chance_<metric>``) and ``n_runs``.
    runs : pandas.DataFrame
        One row per setting and episode/fold, with every metric and chance level.
    per_tag : pandas.DataFrame
        Per setting and tag: precision, recall, ROC-AUC, PR-AUC (mean and sd) and their chance levels.
    confusion : dict
        ``(snippet_seconds, protocol, shots, method, k, weights) -> (n_tags, n_tags)`` counts summed
        over episodes/folds (rows: true tag, columns: predicted; single-label only).
    tags : list of str
    multilabel : bool
    headline : dict
        The kNN setting the summary leads with (``k``, ``weights``, ``snippet_seconds``).
    config : dict
        The settings of the run.
    plots, files : dict of name -> Path
        What was written to ``out_dir``.
    notes, skipped : list
    spaces : pandas.DataFrame
        When the encoder lets the vote choose its space (``standardize="auto"``): per snippet
        length and episode/fold, the space chosen and the leave-one-group-out vote share of each.
    """

    table: Any
    runs: Any
    per_tag: Any
    confusion: dict
    tags: list[str]
    multilabel: bool
    headline: dict
    config: dict
    dataset: dict
    plots: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    embeddings: dict = field(default_factory=dict, repr=False)
    spaces: Any = None

    def rows(self, *, method: str | None = None, protocol: str | None = None, snippet_seconds=None,
             k: int | None = None, weights: str | None = None):
        """Rows of :attr:`table` matching the given settings (kNN rows default to the headline k
        and weighting; baselines have no k or weighting)."""
        t = self.table
        if protocol is not None:
            t = t[t["protocol"] == protocol]
        ss = self.headline["snippet_seconds"] if snippet_seconds is None else snippet_seconds
        t = t[np.isclose(t["snippet_seconds"], ss)]
        if method is not None:
            t = t[t["method"] == method]
            if method == "knn":
                t = t[(t["k"] == (k or self.headline["k"])) & (t["weights"] == (weights or self.headline["weights"]))]
        return t

    def best(self, metric: str = "balanced_accuracy", *, protocol: str = "episodes", shots: int | None = None):
        """The kNN setting with the highest mean ``metric`` (over all snippet lengths, k and
        weightings), at ``shots`` (default: the largest evaluated). Chosen on the evaluation
        itself, so its figure is optimistic; compare settings, not this number with others."""
        t = self.table[(self.table["method"] == "knn") & (self.table["protocol"] == protocol)]
        if protocol == "episodes":
            shots = int(t["shots"].max()) if shots is None else shots
            t = t[t["shots"] == shots]
        if not len(t):
            return None
        return t.loc[t[metric].idxmax()]

    # ------------------------------------------------------------------ text
    def text(self, metrics: Sequence[str] | None = None) -> str:
        """The report as plain text (what ``clapknn evaluate`` prints)."""
        metrics = list(metrics or (["accuracy", "balanced_accuracy", "macro_f1", "roc_auc"] if not self.multilabel
                                   else ["balanced_accuracy", "macro_f1", "roc_auc", "pr_auc"]))
        d, h = self.dataset, self.headline
        counts = ", ".join(f"{t} {n}" for t, n in d["tag_counts"].items())
        lines = [
            f"{d['n_tracks']} tracks in {d['n_groups']} groups, {len(self.tags)} tags "
            f"({'multi-label' if self.multilabel else 'single-label'}: {counts}); encoder {d['encoder']}",
            f"track-level scores, mean ± sd over episodes/folds; kNN k={h['k']} {h['weights']}, "
            f"{h['snippet_seconds']:g} s snippets; 'chance' = a guesser that ignores the audio",
        ]

        def fmt(row, m):
            v, sd = row[m], row[f"{m}_sd"]
            if not np.isfinite(v):
                return "-"
            return f"{v:.2f}±{sd:.2f}" if np.isfinite(sd) else f"{v:.2f}"

        def block(title, sub):
            out = [f"\n{title}", f"{'':<6}{'method':<24}" + "".join(f"{_METRIC_LABELS[m]:>13}" for m in metrics)]
            keys = sub[["protocol", "shots"]].drop_duplicates().itertuples(index=False)
            for protocol, shots in keys:
                rows = sub[(sub["protocol"] == protocol) & _same(sub["shots"], shots)]
                first = True
                for method in METHODS:
                    r = rows[rows["method"] == method]
                    if not len(r):
                        continue
                    r = r.iloc[0]
                    name = f"kNN (k={h['k']}, {h['weights']})" if method == "knn" else _METHOD_LABELS[method]
                    label = (f"{int(shots)}" if protocol == "episodes" else "cv") if first else ""
                    out.append(f"{label:<6}{name:<24}" + "".join(f"{fmt(r, m):>13}" for m in metrics))
                    first = False
                r = rows.iloc[0]
                out.append(f"{'':<6}{'chance':<24}" + "".join(
                    f"{r['chance_' + m]:>13.2f}" if np.isfinite(r["chance_" + m]) else f"{'-':>13}" for m in metrics))
            return out

        head = self.table[np.isclose(self.table["snippet_seconds"], h["snippet_seconds"])]
        head = head[(head["method"] != "knn") | ((head["k"] == h["k"]) & (head["weights"] == h["weights"]))]
        ep = head[head["protocol"] == "episodes"]
        if len(ep):
            n_ep = int(ep["n_runs"].max())
            lines += block(f"few-shot episodes ({n_ep} per row; shots = labelled files per tag)", ep)
        cv = head[head["protocol"] == "cv"]
        if len(cv):
            lines += block(f"grouped {self.config.get('folds_run') or self.config['folds']}-fold cross-validation", cv)

        knn = self.table[self.table["method"] == "knn"]
        proto = "episodes" if len(ep) else "cv"
        main_metric = "balanced_accuracy"
        ks, ws = sorted(knn["k"].unique()), list(dict.fromkeys(knn["weights"]))
        if len(ks) * len(ws) > 1:
            sub = knn[(knn["protocol"] == proto) & np.isclose(knn["snippet_seconds"], h["snippet_seconds"])]
            cols = sorted(sub["shots"].dropna().unique()) if proto == "episodes" else [np.nan]
            lines.append(f"\nkNN settings: {_METRIC_LABELS[main_metric]} by k and weighting "
                         f"({h['snippet_seconds']:g} s snippets{'; columns = shots' if proto == 'episodes' else ''})")
            lines.append(f"{'k':>4} {'weights':<11}" + "".join(f"{int(c) if np.isfinite(c) else 'cv':>8}" for c in cols))
            for k in ks:
                for w in ws:
                    vals = []
                    for c in cols:
                        r = sub[(sub["k"] == k) & (sub["weights"] == w) & ((sub["shots"] == c) if np.isfinite(c) else True)]
                        vals.append(f"{r[main_metric].iloc[0]:>8.2f}" if len(r) else f"{'-':>8}")
                    lines.append(f"{k:>4} {w:<11}" + "".join(vals))
        lengths = sorted(self.table["snippet_seconds"].unique())
        if len(lengths) > 1:
            sub = knn[(knn["protocol"] == proto) & (knn["k"] == h["k"]) & (knn["weights"] == h["weights"])]
            cols = sorted(sub["shots"].dropna().unique()) if proto == "episodes" else [np.nan]
            lines.append(f"\nsnippet length: kNN {_METRIC_LABELS[main_metric]} (k={h['k']}, {h['weights']}"
                         f"{'; columns = shots' if proto == 'episodes' else ''})")
            lines.append(f"{'seconds':>8}" + "".join(f"{int(c) if np.isfinite(c) else 'cv':>8}" for c in cols))
            for s in lengths:
                vals = []
                for c in cols:
                    r = sub[np.isclose(sub["snippet_seconds"], s) & ((sub["shots"] == c) if np.isfinite(c) else True)]
                    vals.append(f"{r[main_metric].iloc[0]:>8.2f}" if len(r) else f"{'-':>8}")
                lines.append(f"{s:>8g}" + "".join(vals))
        best = self.best(main_metric, protocol=proto)
        if best is not None:
            at = f" at {int(best['shots'])} shots" if proto == "episodes" else ""
            lines.append(
                f"\nbest kNN setting{at}: k={int(best['k'])}, {best['weights']}, {best['snippet_seconds']:g} s snippets: "
                f"{_METRIC_LABELS[main_metric]} {best[main_metric]:.2f} (chosen on this evaluation, so optimistic)"
            )
        pt = self.per_tag
        if len(pt):
            key = self._headline_key()
            sub = pt
            for col, v in zip(("snippet_seconds", "protocol", "shots", "method", "k", "weights"), key):
                sub = sub[_same(sub[col], v)]
            if len(sub):
                where = f"{int(key[2])} shots" if key[1] == "episodes" else "cross-validation"
                lines.append(f"\nper tag (kNN, {where}): mean ± sd; chance in brackets")
                lines.append(f"{'tag':<16}{'precision':>18}{'recall':>18}{'ROC-AUC':>12}{'PR-AUC':>18}")
                for _, r in sub.iterrows():
                    lines.append(
                        f"{str(r['tag'])[:15]:<16}"
                        f"{r['precision']:>7.2f}±{r['precision_sd']:.2f} [{r['chance_precision']:.2f}]"
                        f"{r['recall']:>7.2f}±{r['recall_sd']:.2f} [{r['chance_recall']:.2f}]"
                        f"{r['roc_auc']:>12.2f}"
                        f"{r['pr_auc']:>7.2f}±{r['pr_auc_sd']:.2f} [{r['chance_pr_auc']:.2f}]"
                    )
        if self.spaces is not None and len(self.spaces):
            sp = self.spaces[np.isclose(self.spaces["snippet_seconds"], h["snippet_seconds"])]
            parts = []
            for (protocol, shots), g in sp.groupby(["protocol", "shots"], dropna=False, sort=True):
                label = f"{int(shots)} shots" if protocol == "episodes" else "cv"
                parts.append(f"{label} {g['standardized'].mean():.0%}")
            lines.append("\nvote space chosen by leave-one-group-out on the examples (share standardised): " + ", ".join(parts))
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def _headline_key(self) -> tuple:
        h = self.headline
        ep = self.table[self.table["protocol"] == "episodes"]
        if len(ep):
            return (h["snippet_seconds"], "episodes", float(ep["shots"].max()), "knn", h["k"], h["weights"])
        return (h["snippet_seconds"], "cv", float("nan"), "knn", h["k"], h["weights"])

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``summary.csv``, ``runs.csv``, ``per_tag.csv``, ``report.json``, ``report.txt``
        and (with ``plots``) the PNG plots into ``out_dir``."""
        from .output import write_table

        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        self.files["summary"] = write_table(self.table, out / "summary.csv")
        self.files["runs"] = write_table(self.runs, out / "runs.csv")
        self.files["per_tag"] = write_table(self.per_tag, out / "per_tag.csv")
        payload = {
            "dataset": self.dataset,
            "config": self.config,
            "headline": self.headline,
            "tags": self.tags,
            "multilabel": self.multilabel,
            "notes": self.notes,
            "skipped": [list(s) for s in self.skipped],
            "table": json.loads(self.table.to_json(orient="records", double_precision=6)),
        }
        (out / "report.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        self.files["json"] = out / "report.json"
        (out / "report.txt").write_text(self.text() + "\n", encoding="utf-8")
        self.files["text"] = out / "report.txt"
        if plots:
            from .evaluate_plots import write_plots

            self.plots.update(write_plots(self, out))
        return dict(self.files)


# --------------------------------------------------------------------------- the run
def _same(column, value):
    """Boolean mask of ``column == value`` where NaN equals NaN."""
    if isinstance(value, float) and np.isnan(value):
        return column.isna()
    return column == value


def _as_tuple(value, kind=float) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (kind(value),)
    return tuple(kind(v) for v in value)


def evaluate(
    examples,
    *,
    labels: str | Path | None = None,
    encoder="features",
    encoder_options: Mapping[str, Any] | None = None,
    shots: int | Sequence[int] = SHOTS,
    n_episodes: int = EVAL_EPISODES,
    folds: int = EVAL_FOLDS,
    k: int | Sequence[int] = _DEFAULT_KS,
    weights: str | Sequence[str] = WEIGHTS,
    snippet_seconds: float | Sequence[float] = DEFAULT_SNIPPET_SECONDS,
    hop_seconds: float | None = None,
    aggregate: str = DEFAULT_AGGREGATE,
    space: str = DEFAULT_SPACE,
    baselines: bool = True,
    seed: int = 0,
    out_dir: str | Path | None = None,
    plots: bool = True,
    n_jobs: int = 1,
    cache=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    max_snippets: int | str | None = DEFAULT_TAG_SNIPPETS,
) -> EvaluationReport:
    """Measure few-shot kNN tagging (and baselines) on a labelled set.

    Parameters
    ----------
    examples : path, ExampleSet, Embedded or sequence of Embedded
        Labelled files (a folder per tag, or a CSV of ``path,tags[,group]``), or embeddings already
        made by :func:`embed_examples` (one per snippet length).
    labels : path, optional
        A CSV of ``path,tags[,group]`` for ``examples`` (as for :func:`clapknn.build_index`).
    encoder, encoder_options
        The embedding model (``"features"`` or ``"clap"``) and its settings.
    shots : int or sequence of int
        Labelled files per tag in the few-shot episodes; shot counts some tag cannot supply
        (fewer than ``shots + 1`` groups) are left out with a note. Empty: no episodes.
    n_episodes : int
        Episodes per shot count.
    folds : int
        Grouped stratified cross-validation folds; 0 for none. Capped, with a note, at the
        number of groups of the tag with the fewest (:func:`fold_count`).
    k, weights
        kNN settings to sweep (each k with each weighting).
    snippet_seconds : float or sequence of float
        Snippet lengths to sweep; each costs one embedding pass.
    hop_seconds : float, optional
        Hop between snippets (default: the snippet length).
    aggregate : {"mean", "max", "vote"}
        Snippet → track pooling, as ``clapknn tag --aggregate``.
    space : {"auto", "plain", "standardized"}
        The vote's search space, as ``clapknn tag --space`` (:func:`~clapknn.vote.space_options`).
    baselines : bool
        Also run the majority-class, nearest-centroid and logistic-regression baselines.
    seed : int
        Seeds the episodes and folds; the same seed gives the same splits.
    out_dir : path, optional
        Write tables, JSON, text and PNG plots here (see :meth:`EvaluationReport.save`).
    plots : bool
        Write the PNG plots (with ``out_dir``).
    n_jobs : int
        Processes for embedding (``features`` only).
    cache : bool, path or EmbeddingCache, optional
        Reuse embeddings across runs (see :func:`embed_examples`).
    progress : bool
        Progress bars (embedding, then the episodes and folds) on stderr, when it is a terminal.
    max_snippets : int or "all"
        Snippets read per query track, as :class:`clapknn.Tagger` reads them (the same default,
        spread by :func:`clapknn.audio.snippet.sample_indices`); the support files keep every snippet, as
        :func:`clapknn.build_index` does.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    LabelError
        When fewer than two tags have usable examples.
    ParameterError
        For bad settings, or when no shot count and no cross-validation can be run.
    """
    import pandas as pd

    from .tagging.aggregate import AGGREGATIONS
    from .vote import space_options

    shots_t = tuple(sorted(set(_as_tuple(shots, int)))) if shots is not None else ()
    ks = tuple(sorted(set(_as_tuple(k, int))))
    ws = tuple(dict.fromkeys(_as_tuple(weights, str)))
    if any(s < 1 for s in shots_t):
        raise ParameterError(f"shots must be positive integers, got {shots_t}")
    if not ks or any(v < 1 for v in ks):
        raise ParameterError(f"k must be positive integers, got {ks}")
    bad = [w for w in ws if w not in WEIGHTS]
    if bad or not ws:
        raise ParameterError(f"unknown weights {', '.join(map(repr, bad)) or '(none)'}; choose from {', '.join(WEIGHTS)}")
    if aggregate not in AGGREGATIONS:
        raise ParameterError(f"unknown aggregation {aggregate!r}; choose one of {', '.join(AGGREGATIONS)}")
    space_options({}, space)  # refuses an unknown space before any embedding
    if n_episodes < 1 and shots_t:
        raise ParameterError(f"n_episodes must be at least 1, got {n_episodes}")
    if folds < 0 or folds == 1:
        raise ParameterError(f"folds must be 0 (none) or at least 2, got {folds}")
    if not shots_t and not folds:
        raise ParameterError("nothing to evaluate: give some shots or folds >= 2")
    if not _as_tuple(snippet_seconds, float):
        raise ParameterError("give at least one snippet length")
    for length in _as_tuple(snippet_seconds, float):
        check_seconds("snippet length", length)
    check_seconds("hop", hop_seconds, allow_none=True)
    max_snippets = check_max_snippets(max_snippets)
    if out_dir is not None and Path(out_dir).expanduser().exists() and not Path(out_dir).expanduser().is_dir():
        raise ParameterError(f"the output folder {out_dir} is a file")

    # ---- embeddings, once per snippet length
    if isinstance(examples, Embedded):
        embedded = [examples]
    elif isinstance(examples, (list, tuple)) and examples and all(isinstance(e, Embedded) for e in examples):
        embedded = list(examples)
    else:
        from .encoders import Encoder, get_encoder
        from .labels import ExampleSet, load_examples

        example_set = examples if isinstance(examples, ExampleSet) else load_examples(examples, labels=labels)
        if not example_set.examples:
            raise LabelError(f"no labelled examples found in {examples if not isinstance(examples, ExampleSet) else 'the example set'}")
        enc = encoder if isinstance(encoder, Encoder) else get_encoder(encoder, **dict(encoder_options or {}))
        embedded = [
            embed_examples(example_set, enc, snippet_seconds=s, hop_seconds=hop_seconds, batch_size=batch_size,
                           n_jobs=n_jobs, cache=cache, progress=progress)
            for s in sorted(set(_as_tuple(snippet_seconds, float)))
        ]
    embedded.sort(key=lambda e: e.snippet_seconds)
    lengths = [e.snippet_seconds for e in embedded]
    if len(set(lengths)) != len(lengths):
        raise ParameterError(f"one embedding per snippet length, got lengths {lengths}")
    # every length must be scored on the same tracks, so the splits line up
    common = set(embedded[0].paths)
    for e in embedded[1:]:
        common &= set(e.paths)
    notes: list[str] = []
    if any(len(e.paths) != len(common) for e in embedded):
        dropped = max(len(e.paths) for e in embedded) - len(common)
        notes.append(f"{dropped} file(s) gave vectors at some snippet lengths only; left out of all")
        embedded = [e.relabel({p: t for p, t in zip(e.paths, e.tags) if p in common}) for e in embedded]
    base = embedded[0]
    order = {p: i for i, p in enumerate(base.paths)}
    for i, e in enumerate(embedded[1:], start=1):  # align track numbering with the first
        perm = np.array([order[p] for p in e.paths], dtype=np.int64)
        durations = None
        if e.durations is not None:
            durations = np.empty_like(e.durations)
            durations[perm] = e.durations
        embedded[i] = replace(e, track=perm[e.track], paths=list(base.paths), tags=list(base.tags), groups=base.groups,
                              durations=durations)
    tags = sorted({t for ts in base.tags for t in ts})
    if len(tags) < 2:
        why = ""
        if base.skipped:
            where, reason = base.skipped[0]
            why = f"; {len(base.skipped)} file(s) skipped, e.g. {Path(where).name}: {reason}"
        raise LabelError(f"evaluation needs at least two tags with usable examples, found {tags or 'none'}{why}")
    # a tag whose files all come from one group can be neither queried against its own examples
    # nor cross-validated: leave it out (when two tags or more remain) rather than every split
    gid = np.unique(np.asarray(base.groups).astype(str), return_inverse=True)[1]
    n_groups_of = {t: len({g for ts, g in zip(base.tags, gid) if t in ts}) for t in tags}
    thin = [t for t in tags if n_groups_of[t] < 2]
    if thin and len(tags) - len(thin) >= 2:
        keep = {p: tuple(t for t in ts if t not in thin) for p, ts in zip(base.paths, base.tags)}
        embedded = [e.relabel(keep) for e in embedded]
        base = embedded[0]
        tags = [t for t in tags if t not in thin]
        notes.append(f"tag(s) {', '.join(thin)} left out: files from a single group (source file), and a tag needs "
                     f"at least 2 to be both labelled and queried")
    multilabel = any(len(ts) > 1 for ts in base.tags)
    Y = _indicator(base.tags, tags)
    groups = base.groups
    headline = {
        "k": DEFAULT_K if DEFAULT_K in ks else ks[0],
        "weights": DEFAULT_WEIGHTS if DEFAULT_WEIGHTS in ws else ws[0],
        "snippet_seconds": 10.0 if 10.0 in lengths else lengths[0],
    }

    # ---- splits (file indices), shared by every length, method and setting
    splits: list[tuple[str, float, int, np.ndarray, np.ndarray]] = []
    too_few: list[int] = []
    for s in shots_t:
        try:
            for e, (sup, qry) in enumerate(few_shot_episodes(base.tags, groups, shots=s, n_episodes=n_episodes, seed=seed)):
                splits.append(("episodes", float(s), e, sup, qry))
        except ParameterError as exc:
            if "groups per tag" not in str(exc):
                notes.append(f"{s}-shot episodes skipped: {exc}")
            else:
                too_few.append(s)
    if too_few:
        gid = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
        per_tag = ", ".join(f"{t} {len(set(gid[Y[:, j] == 1]))}" for j, t in enumerate(tags))
        notes.append(f"{'shots' if len(too_few) > 1 else 'shot count'} {', '.join(map(str, too_few))} skipped: "
                     f"n shots need n + 1 groups per tag (source tracks: the group column, else the files); groups per tag: {per_tag}")
    n_folds_run = 0
    if folds:
        try:
            cv_splits = grouped_folds(base.tags, groups, n_folds=folds, seed=seed)
        except ParameterError as exc:
            notes.append(f"cross-validation skipped: {exc}")
        else:
            n_folds_run = len(cv_splits)
            if n_folds_run < folds:
                why = fold_count(base.tags, groups, folds)[1]
                notes.append(f"cross-validation: {n_folds_run} folds instead of {folds}" + (f" ({why})" if why else ""))
            for f, (tr, te) in enumerate(cv_splits):
                splits.append(("cv", float("nan"), f, tr, te))
    if not splits:
        raise ParameterError("no evaluation could be run: " + "; ".join(notes))

    # the space choice of the vote leaves out whole groups (source tracks), as the splits do
    group_ids = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    run_rows: list[dict] = []
    tag_rows: list[dict] = []
    space_rows: list[dict] = []
    confusion: dict[tuple, np.ndarray] = {}
    from .encoders import track_context
    from .progress import progress_bar

    bar = progress_bar(len(embedded) * len(splits), "evaluating", enabled=progress, unit="split")
    for emb in embedded:
        options = space_options(emb.knn_options, space)
        read = _query_windows(emb, max_snippets)
        # a query is tagged from the windows tagging reads, its track context made from those alone
        read_vectors, read_track = track_context(emb.encoder, emb.vectors, emb.track, read), emb.track[read]
        for protocol, n_shots, rep, sup, qry in splits:
            s_mask = np.isin(emb.track, sup)
            q_rows = np.isin(read_track, qry)
            X_s, X_q = emb.vectors[s_mask], read_vectors[q_rows]
            Y_s = Y[emb.track[s_mask]]
            q_tracks = np.unique(read_track[q_rows])
            qpos = np.searchsorted(q_tracks, read_track[q_rows])
            n_q = len(q_tracks)
            y_true = Y[q_tracks]
            chance = chance_levels(y_true, multilabel)
            results: dict[tuple, np.ndarray] = {}
            knn, est = _knn_scores(X_s, Y_s, X_q, ks, ws, qpos, n_q, aggregate, options,
                                   groups=group_ids[emb.track[s_mask]])
            if hasattr(est, "loo_score_"):
                space_rows.append({"snippet_seconds": emb.snippet_seconds, "protocol": protocol, "shots": n_shots,
                                   "run": rep, "standardized": bool(est.standardized_),
                                   "loo_standardized": est.loo_score_["standardized"],
                                   "loo_plain": est.loo_score_["plain"],
                                   "p_plain": est.loo_score_["p_value_plain"]})
            for (kk, w), sc in knn.items():
                results[("knn", kk, w)] = sc
            # the baselines work in the same space as the kNN search (standardised when it is)
            X_s, X_q = est.to_search_space(X_s), est.to_search_space(X_q)
            if baselines:
                prior = Y[sup].mean(axis=0).astype(np.float64)
                results[("majority", 0, "")] = np.tile(prior, (n_q, 1))
                results[("centroid", 0, "")] = _track_scores(_centroid_scores(X_s, Y_s, X_q, multilabel), qpos, n_q, aggregate)
                results[("logreg", 0, "")] = _track_scores(_logreg_scores(X_s, Y_s, X_q, multilabel, seed), qpos, n_q, aggregate)
            for (method, kk, w), sc in results.items():
                pred = _predict(sc, multilabel)
                m, per = track_metrics(y_true, sc, pred, multilabel)
                key = dict(snippet_seconds=emb.snippet_seconds, protocol=protocol, shots=n_shots, method=method,
                           k=kk, weights=w)
                run_rows.append({**key, "run": rep, "n_support": len(sup), "n_queries": n_q, **m,
                                 **{f"chance_{name}": v for name, v in chance.items()}})
                prev = y_true.mean(axis=0)
                q = 0.5 if multilabel else 1.0 / len(tags)
                for j, t in enumerate(tags):
                    tag_rows.append({**key, "run": rep, "tag": t, "precision": per["precision"][j],
                                     "recall": per["recall"][j], "roc_auc": per["roc_auc"][j],
                                     "pr_auc": per["pr_auc"][j], "support": int(per["support"][j]),
                                     "chance_precision": prev[j], "chance_recall": q,
                                     "chance_pr_auc": prev[j] if 0 < prev[j] < 1 else np.nan})
                if not multilabel:
                    ck = tuple(key.values())
                    cm = confusion.setdefault(ck, np.zeros((len(tags), len(tags)), dtype=np.int64))
                    np.add.at(cm, (y_true.argmax(axis=1), pred.argmax(axis=1)), 1)
            bar.update(1)

    bar.close()
    runs = pd.DataFrame(run_rows)
    keys = ["snippet_seconds", "protocol", "shots", "method", "k", "weights"]
    g = runs.groupby(keys, dropna=False, sort=False)
    table = g[list(METRICS)].mean()
    sd = g[list(METRICS)].std(ddof=0).add_suffix("_sd")
    ch = g[[f"chance_{m}" for m in METRICS]].mean()
    table = pd.concat([table, sd, ch, g.size().rename("n_runs"), g["n_queries"].mean()], axis=1).reset_index()
    table = table[keys + [c for m in METRICS for c in (m, f"{m}_sd")] + [f"chance_{m}" for m in METRICS] + ["n_runs", "n_queries"]]
    per_tag_runs = pd.DataFrame(tag_rows)
    gt = per_tag_runs.groupby(keys + ["tag"], dropna=False, sort=False)
    cols = ["precision", "recall", "roc_auc", "pr_auc"]
    per_tag = pd.concat(
        [gt[cols].mean(), gt[cols].std(ddof=0).add_suffix("_sd"),
         gt[["chance_precision", "chance_recall", "chance_pr_auc", "support"]].mean()], axis=1,
    ).reset_index()

    counts = {t: int(Y[:, j].sum()) for j, t in enumerate(tags)}
    enc_id = base.encoder or {}
    report = EvaluationReport(
        table=table,
        runs=runs,
        per_tag=per_tag,
        confusion=confusion,
        tags=tags,
        multilabel=multilabel,
        headline=headline,
        config=dict(shots=list(shots_t), n_episodes=n_episodes, folds=folds, folds_run=n_folds_run, k=list(ks), weights=list(ws),
                    snippet_seconds=lengths, hop_seconds=hop_seconds, aggregate=aggregate, space=space, baselines=baselines,
                    seed=seed),
        dataset=dict(n_tracks=base.n_tracks, n_groups=int(len(set(map(str, groups)))), tag_counts=counts,
                     encoder=enc_id.get("name", "?"), encoder_identity=enc_id),
        notes=notes,
        skipped=list(base.skipped),
        embeddings={e.snippet_seconds: e for e in embedded},
        spaces=pd.DataFrame(space_rows),
    )
    if out_dir is not None:
        report.save(out_dir, plots=plots)
    return report
