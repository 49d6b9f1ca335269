"""Vote: a scikit-learn k-nearest-neighbour classifier over embeddings (cosine similarity).

:class:`KNNTagger` is a scikit-learn classifier (``fit``/``predict``/``predict_proba``/
``kneighbors``, ``classes_``; it passes ``sklearn.utils.estimator_checks.check_estimator`` but for
:data:`EXPECTED_FAILED_CHECKS`). For single-label data, with ``weights="uniform"`` or
``weights="distance"``, the plain space (``standardize=False``, the default) and ``n_neighbors`` at
most the number of fitted samples, it gives the same predictions and probabilities as
``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k, weights=<the same>, metric="cosine")``, up to
float32 rounding (neighbours whose distances agree to about 1e-6 may come in either order). Its
default weighting, ``"similarity"``, has no scikit-learn counterpart. It also handles multi-label
data (each sample has a set of tags). Search is exact (FAISS ``IndexFlatIP`` over L2-normalised
vectors).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from ..encoders.base import l2_normalize
from ..errors import ParameterError
from ..labels import tag_indicator
from ..options import WEIGHTS
from .inputs import tag_collections, validated
from .relevance import group_means, relevance_of
from .scores import vote_scores
from .space import choose_space, search_space, standardisation

__all__ = ["EXPECTED_FAILED_CHECKS", "KNNTagger"]

#: The scikit-learn estimator checks :class:`KNNTagger` fails by design, with the reason (the
#: ``expected_failed_checks`` of ``check_estimator`` / ``parametrize_with_checks``).
EXPECTED_FAILED_CHECKS = {
    "check_classifiers_multilabel_output_format_predict_proba": (
        "multi-label scores are the share of neighbours carrying each tag, so a tag that every "
        "neighbour (or none) carries scores exactly 1 (or 0); the check wants every score strictly "
        "inside (0, 1)"
    ),
}
_TIE_MARGIN = 8  # extra neighbours fetched so ties at the k-th place are broken by id


class KNNTagger(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour tagger with cosine similarity.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours that vote. When larger than the number of fitted samples, all samples vote.
    weights : {"uniform", "distance", "similarity"}, default="similarity"
        How neighbours' votes are weighted (see :func:`vote_weights`).
    threshold : float, default=0.5
        Multi-label only: a tag is predicted when its score is at least this.
    standardize : {False, True, "auto"}, default=False
        ``True``: standardise every dimension on the fitted vectors (mean 0, unit spread; spreads
        are shrunk a little towards their pooled value so a nearly constant dimension cannot
        dominate) before the cosine search; queries get the same transform. ``"auto"``: the
        standardised space unless the plain one clearly does better on the fitted samples
        themselves: in a leave-one-group-out vote (see ``groups`` in :meth:`fit`; each sample's
        10 nearest samples of other groups, similarity-weighted), the plain space must give a
        larger mean share of a sample's vote to its own tags than the standardised one, by more
        than it does on every one of 39 shuffles of the groups' tags among the groups (a
        permutation test at level 1/40: on tags the vectors do not follow, the space changes
        at most 2.5% of the time). With one group per tag there is no evidence and the
        standardised space is kept. The choice is in :attr:`standardized_`; it depends on the
        fitted vectors, tags and groups only (not on ``n_neighbors``, ``weights``, the order of
        the samples or the groups' names). Encoders whose dimensions are hand-made features ask
        for it (``encoder.knn_options()``).
    feature_blocks : sequence of (start, stop, weight), optional
        In the standardised space: column blocks, each scaled to unit length and multiplied by its
        weight, so the cosine becomes a weighted mean of per-block cosines and no block outweighs
        another by its size. Columns outside every block are dropped.
    block_relevance : bool, default=False
        With ``feature_blocks``, in the standardised space: weigh blocks and the dimensions within
        them by their relevance to the fitted tags. A dimension's F ratio is the mean over the tags
        of the between-file / within-file variance ratio (the one-way ANOVA F statistic of file
        means, each tag against the rest), its within-file variance moderated: shrunk towards its
        block's mean variance by a prior worth four files, so that with two or three files per tag a
        dimension whose files happen to agree cannot take the vote. Each block's weight is
        multiplied by the mean F ratio of its dimensions to the power 0.75; within a block, each
        dimension is multiplied (before the block is scaled to unit length) by the square root of
        its F ratio shrunk towards the block's mean by the share ``10 / (10 + files - 2)``, so that
        with few files a dimension counts mostly as its block does and with many files as its own
        ratio says. A block, or a dimension, that separates the examples' tags counts more, one that
        does not counts less. A tag is measured when at least two files have it and two do not; with
        no such tag (one example per tag) every relevance is 1. No training: two means and two
        variances per dimension.

    Attributes
    ----------
    classes_ : np.ndarray
        Sorted tags (column order of :meth:`predict_proba`).
    multilabel_ : bool
        Whether ``y`` was multi-label.
    n_features_in_ : int
    feature_names_in_ : np.ndarray
        Column names, when ``X`` was a data frame with string column names.
    n_samples_fit_ : int
    labels_ : np.ndarray
        The fitted samples' tags, a 0/1 matrix ``(n_samples_fit_, len(classes_))``.
    mean_, scale_ : np.ndarray
        With ``standardize``: the per-dimension centre and spread of the fitted (unit) vectors.
    standardized_ : bool
        Whether the search uses the standardised space.
    blocks_ : np.ndarray
        With ``feature_blocks``: each block's ``(start, stop)`` columns, ``(n_blocks, 2)``.
    block_weights_ : np.ndarray
        With ``feature_blocks``: each block's weight in the standardised space (times its
        relevance, with ``block_relevance``).
    block_relevance_ : np.ndarray or None
        With ``block_relevance``: each block's relevance factor (``None`` otherwise).
    dim_relevance_ : np.ndarray or None
        With ``block_relevance``: each dimension's relevance factor within its block, ``(n_features_in_,)``
        (``None`` otherwise).
    loo_score_ : dict
        With ``standardize="auto"``: for each space, the mean share of a fitted sample's
        leave-one-group-out vote that goes to its own tags, that share for a random vote, and the
        permutation test's p-value for the plain space's gain (``{"standardized": ..., "plain":
        ..., "chance": ..., "p_value_plain": ...}``).

    Notes
    -----
    The fitted state is a function of ``X``, ``y``, ``groups`` and the space settings
    (``standardize``, ``feature_blocks``, ``block_relevance``) alone: estimators that differ only
    in ``n_neighbors``, ``weights`` or ``threshold`` search the same space.

    Neighbours are ordered by decreasing similarity; equal similarities are broken by the lower
    sample index. Ties between classes in :meth:`predict` go to the first class in ``classes_``.

    A scikit-learn classifier: ``check_estimator(KNNTagger(),
    expected_failed_checks=EXPECTED_FAILED_CHECKS)`` passes (:data:`EXPECTED_FAILED_CHECKS` lists
    the one check the multi-label scores cannot meet, and why). Unlike
    ``KNeighborsClassifier``, an ``n_neighbors`` larger than the fitted samples is capped, not
    refused, and ``y`` may also be a list of tag collections.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: str = "similarity",
        threshold: float = 0.5,
        standardize: bool | str = False,
        feature_blocks=None,
        block_relevance: bool = False,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.threshold = threshold
        self.standardize = standardize
        self.feature_blocks = feature_blocks
        self.block_relevance = block_relevance

    def to_search_space(self, X) -> np.ndarray:
        """Rows of ``X`` as the search compares them: unit vectors, standardised and block-weighted
        when :attr:`standardized_` (inner products of these rows are the similarities
        :meth:`similarities` gives).

        Parameters
        ----------
        X : array-like [shape=(n, n_features_in_)]

        Returns
        -------
        np.ndarray [shape=(n, d), dtype=float32]
        """
        return self._space(self._check_X(X), self.standardized_)

    def _space(self, X, standardized: bool) -> np.ndarray:
        if not standardized:
            return search_space(X)
        blocks = self.feature_blocks is not None
        return search_space(
            X, mean=self.mean_, scale=self.scale_, dim_relevance=getattr(self, "dim_relevance_", None),
            blocks=self.blocks_ if blocks else None, block_weights=self.block_weights_ if blocks else None,
        )

    # -------------------------------------------------------------- fitting
    def fit(self, X, y, groups=None) -> "KNNTagger":
        """Store L2-normalised ``X`` in an exact FAISS index with labels ``y``.

        Parameters
        ----------
        X : array-like [shape=(n, d)]
            Finite 2-D array (a 1-D one is refused, as in scikit-learn).
        y : array-like or list of collections
            Single-label: a 1-D array of class labels (a column vector ``(n, 1)`` is read as one,
            with scikit-learn's ``DataConversionWarning``; continuous values are refused).
            Multi-label: a list of tag collections, one per sample (e.g. ``[["calm"], ["calm",
            "dark"]]``), or a 2-D 0/1 indicator matrix (classes ``0..n_columns-1``).
        groups : array-like [shape=(n,)], optional
            One per row (e.g. the file a snippet comes from): keeps a sample's own group out of
            its leave-one-out vote with ``standardize="auto"``; by default each row is a group.

        Returns
        -------
        KNNTagger
            Itself, fitted.

        Raises
        ------
        ParameterError
            (a ``ValueError``) for a bad parameter, ``X`` or ``y``.
        """
        import faiss

        self._check_params()
        tag_lists = tag_collections(y)
        if tag_lists is not None:  # one collection of tags per sample
            X = validated(self, X)
            try:
                check_consistent_length(X, tag_lists)
            except ValueError as exc:
                raise ParameterError(str(exc)) from exc
            self.multilabel_ = True
            self.classes_ = np.array(sorted({t for tags in tag_lists for t in tags}))
            Y = tag_indicator(tag_lists, self.classes_, dtype=np.float64)
        else:
            X, y = validated(self, X, y, multi_output=True)
            if hasattr(y, "toarray"):  # a sparse indicator matrix
                y = y.toarray()
            if y.ndim == 2 and y.shape[1] == 1:  # a column vector of labels, as scikit-learn reads it
                y = column_or_1d(y, warn=True)
            try:
                check_classification_targets(y)
                if y.ndim == 2 and type_of_target(y) != "multilabel-indicator":
                    raise ValueError(f"a 2-D y must be a 0/1 indicator matrix (multi-label), got {type_of_target(y)} targets")
            except ValueError as exc:
                raise ParameterError(str(exc)) from exc
            self.multilabel_ = y.ndim == 2
            if self.multilabel_:
                Y = (y != 0).astype(np.float64)
                self.classes_ = np.arange(Y.shape[1])
            else:
                self.classes_, codes = np.unique(y, return_inverse=True)
                Y = np.zeros((len(y), len(self.classes_)))
                Y[np.arange(len(y)), codes] = 1.0
        self.labels_ = Y
        if self.feature_blocks is not None:
            self._blocks = [(int(a), int(b), float(w)) for a, b, w in self.feature_blocks]
            if not self._blocks or any(not (0 <= a < b <= X.shape[1]) or w < 0 for a, b, w in self._blocks):
                raise ParameterError(
                    f"feature_blocks must be (start, stop, weight) with 0 <= start < stop <= {X.shape[1]} "
                    f"and weight >= 0, got {self.feature_blocks!r}"
                )
        unit32 = l2_normalize(X) if self.standardize else None
        if self.standardize:
            self.mean_, self.scale_ = standardisation(unit32)
        groups = np.arange(len(X)) if groups is None else np.asarray(groups)
        if len(groups) != len(X):
            raise ParameterError(f"X has {len(X)} rows but groups has {len(groups)}")
        _, inv = np.unique(groups, return_inverse=True)
        self.block_relevance_ = None
        self.dim_relevance_ = None
        if self.feature_blocks is not None:
            self.blocks_ = np.array([(a, b) for a, b, _ in self._blocks], dtype=np.int64).reshape(-1, 2)
            self.block_weights_ = np.array([w for _, _, w in self._blocks])
            if self.block_relevance and self.standardize:
                Z = ((unit32 - self.mean_) / self.scale_).astype(np.float64)
                means, has = group_means(Z, Y, inv, int(inv.max()) + 1)
                self.block_relevance_, self.dim_relevance_ = relevance_of(means, has, self._blocks, dims=True)
                self.block_weights_ = self.block_weights_ * self.block_relevance_
        self.standardized_ = bool(self.standardize)
        if self.standardize == "auto":
            self.standardized_, self.loo_score_ = choose_space(
                X, Y, groups, space=self._space, mean=self.mean_, scale=self.scale_,
                blocks=getattr(self, "_blocks", None), relevance=self.block_relevance and self.feature_blocks is not None,
            )
        T = self._space(X, self.standardized_)
        self._index = faiss.IndexFlatIP(T.shape[1])
        self._index.add(T)
        self.n_samples_fit_ = X.shape[0]
        return self

    def _check_params(self) -> None:
        """Refuse parameter values outside the allowed ones (at fit: ``__init__`` only stores them)."""
        if not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1:
            raise ParameterError(f"n_neighbors must be a positive integer, got {self.n_neighbors!r}")
        if self.weights not in WEIGHTS:
            raise ParameterError(f"unknown weights {self.weights!r}; choose one of {', '.join(WEIGHTS)}")
        if self.standardize not in (False, True, "auto"):
            raise ParameterError(f"standardize must be False, True or 'auto', got {self.standardize!r}")

    def _check_X(self, X) -> np.ndarray:
        """Fitted, and ``X`` a finite 2-D array with the fitted number of columns: as float32."""
        check_is_fitted(self)
        return validated(self, X, reset=False)

    # -------------------------------------------------------------- neighbours
    def _search(self, X, n_neighbors) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, indices)`` of the nearest fitted samples of each row of ``X`` (validated
        here), similarity descending, equal similarities by ascending index. ``X=None``: the
        neighbours of each fitted sample, the sample itself left out (scikit-learn's rule: when it
        is not among its own nearest, because of duplicates, the nearest is dropped instead)."""
        check_is_fitted(self)
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ParameterError(f"n_neighbors must be a positive integer, got {k!r}")
        n = self.n_samples_fit_
        own = X is None
        T = self._index.reconstruct_n(0, n) if own else self._space(self._check_X(X), self.standardized_)
        k = min(int(k), n - 1 if own else n)
        fetch = min(n, k + own + _TIE_MARGIN)
        sims, ids = self._index.search(T, fetch)
        # deterministic order: similarity descending, then id ascending; faiss pads with -1
        sims = np.where(ids < 0, -np.inf, sims)
        order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -sims.astype(np.float64)), axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
        ids = np.take_along_axis(ids, order, axis=1)
        if own:
            keep = ids != np.arange(n)[:, None]
            keep[keep.all(axis=1), 0] = False  # a sample not among its own nearest: drop the nearest
            sims = sims[keep].reshape(n, fetch - 1)
            ids = ids[keep].reshape(n, fetch - 1)
        return sims[:, :k].astype(np.float64), ids[:, :k]

    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """Nearest fitted samples of each row of ``X``.

        Parameters
        ----------
        X : array-like [shape=(n, n_features_in_)], optional
            Queries. ``None``: the fitted samples, each without itself among its neighbours (as
            in scikit-learn).
        n_neighbors : int, optional
            Default: :attr:`n_neighbors`. Capped at the number of fitted samples (one less with
            ``X=None``).
        return_distance : bool, default=True

        Returns
        -------
        distances : np.ndarray [shape=(n, k)]
            Cosine distance ``1 - similarity``, ascending; only with ``return_distance``.
        indices : np.ndarray [shape=(n, k)]
        """
        sims, ids = self._search(X, n_neighbors)
        return (1.0 - sims, ids) if return_distance else ids

    def similarities(self, X=None, n_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, indices)`` of the nearest fitted samples, similarity descending
        (``X`` and ``n_neighbors`` as in :meth:`kneighbors`)."""
        return self._search(X, n_neighbors)

    # -------------------------------------------------------------- predictions
    def predict_proba(self, X) -> np.ndarray:
        """Per-class scores in [0, 1], columns in :attr:`classes_` order (``X=None``: of the fitted
        samples, each without itself among its neighbours, as :meth:`kneighbors`).

        Single-label rows sum to 1 (the weighted share of neighbours of each class); multi-label
        scores are the weighted share of neighbours that carry each tag.
        """
        sims, ids = self._search(X, None)
        return vote_scores(sims, self.labels_[ids], self.weights)

    def predict(self, X):
        """Single-label: the top class per row. Multi-label: a 0/1 indicator matrix of the classes
        whose score reaches :attr:`threshold`."""
        proba = self.predict_proba(X)
        if self.multilabel_:
            return (proba >= self.threshold).astype(int)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # multi-label (a 0/1 indicator y, or tag collections); not multi-output: a 2-D y of
        # several classes per column is refused
        tags.classifier_tags.multi_label = True
        return tags


    # -------------------------------------------------------------- saved state
    #: Parameters that change no fitted attribute (the ``"auto"`` choice of space is made with a
    #: leave-one-group-out vote of its own fixed size, whatever ``n_neighbors`` and ``weights`` are).
    _STATE_FREE = ("n_neighbors", "weights", "threshold")
    #: Version of what fitting computes from the same data and parameters: a saved state of another
    #: version is fitted again. Raise it with any change to the fitting rules (the space choice,
    #: the standardisation, the relevance).
    FIT_RULES = 4

    def fitted_state(self) -> dict:
        """What fitting computed, to save and restore without fitting again (:meth:`from_fitted_state`).

        Returns
        -------
        dict
            ``params``: :meth:`get_params`; ``attributes``: every fitted attribute (a name ending
            in ``_``) whose value is a numpy array, a number, a bool, a string, ``None``, or a list
            or dict of those; ``rules``: :attr:`FIT_RULES`. The labels and the search vectors
            (:attr:`search_index`) are not in it: the caller keeps those.
        """
        check_is_fitted(self)
        attributes = {
            k: v for k, v in vars(self).items()
            if k.endswith("_") and not k.startswith("_") and k != "labels_" and _plain_value(v)
        }
        return {"params": self.get_params(deep=False), "attributes": attributes, "rules": self.FIT_RULES}

    @property
    def search_index(self):
        """The FAISS index searched: the fitted vectors in the search space (:meth:`to_search_space`)."""
        check_is_fitted(self)
        return self._index

    @classmethod
    def state_fits(cls, state: dict, params: dict) -> bool:
        """Whether a saved :meth:`fitted_state` is what fitting with ``params`` would compute."""
        if state.get("rules") != cls.FIT_RULES:
            return False
        saved = _comparable(state.get("params", {}))
        wanted = _comparable(params)
        keys = (set(saved) | set(wanted)) - set(cls._STATE_FREE)
        return all(saved.get(k) == wanted.get(k) for k in keys)

    @classmethod
    def from_fitted_state(cls, state: dict, y, *, search_index, **params) -> "KNNTagger":
        """A fitted tagger from a saved :meth:`fitted_state`, the labels it was fitted on and the
        FAISS index of its search vectors (:attr:`search_index`), without fitting again.

        ``params`` override the saved parameters (those :meth:`state_fits` allows to differ:
        ``threshold``, ``n_neighbors`` and ``weights``).

        Raises
        ------
        ParameterError
            When the state does not fit ``params``, or the labels or the index do not match it.
        """
        merged = {**state["params"], **params}
        if not cls.state_fits(state, merged):
            raise ParameterError("the saved vote state was fitted with other settings")
        est = cls(**merged)
        est._check_params()
        for name, value in state["attributes"].items():
            setattr(est, name, value)
        tag_lists = tag_collections(y)
        if tag_lists is not None:
            est.labels_ = tag_indicator(tag_lists, est.classes_.tolist(), dtype=np.float64)
        elif np.ndim(y) == 2:
            est.labels_ = (np.asarray(y) != 0).astype(np.float64)
        else:
            est.labels_ = (np.asarray(y)[:, None] == est.classes_[None, :]).astype(np.float64)
        if len(est.labels_) != est.n_samples_fit_ or search_index.ntotal != est.n_samples_fit_:
            raise ParameterError(
                f"the saved vote state is of {est.n_samples_fit_} samples, got {len(est.labels_)} labels and "
                f"{search_index.ntotal} search vectors"
            )
        if est.feature_blocks is not None:
            est._blocks = [(int(a), int(b), float(w)) for a, b, w in est.feature_blocks]
            est._block_weights = np.array([w for _, _, w in est._blocks])
            if est.block_relevance_ is not None:
                est._block_weights = est._block_weights * np.asarray(est.block_relevance_)
        est._index = search_index
        return est


def _plain_value(v) -> bool:
    """Whether ``v`` is a numpy array, a number, a bool, a string, ``None``, or a list or dict of those."""
    if v is None or isinstance(v, (bool, int, float, str, np.ndarray, np.generic)):
        if isinstance(v, np.ndarray) and v.dtype.kind == "O":
            return all(isinstance(x, str) for x in v.ravel().tolist())
        return not isinstance(v, np.ndarray) or v.dtype.kind in "biufU"
    if isinstance(v, (list, tuple)):
        return all(_plain_value(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_value(x) for k, x in v.items())
    return False


def _comparable(params: dict) -> dict:
    """Parameters with tuples as lists and numpy scalars as numbers (as a saved state reads back)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    return {k: plain(v) for k, v in params.items()}
