"""Vote and aggregate: the kNN tagger equals scikit-learn's KNeighborsClassifier on single-label data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier

from clapknn.aggregate import aggregate, select_tags
from clapknn.errors import ParameterError
from clapknn.vote import KNNTagger, vote_scores


def _compare(X, y, Q, k, weights):
    ours = KNNTagger(k, weights=weights).fit(X, y)
    ref = KNeighborsClassifier(n_neighbors=k, weights=weights, metric="cosine", algorithm="brute").fit(X, y)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q), atol=1e-5)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    d_ours, i_ours = ours.kneighbors(Q)
    d_ref, i_ref = ref.kneighbors(Q)
    np.testing.assert_allclose(d_ours, d_ref, atol=1e-5)
    # same neighbours in the same order, except that two whose distances agree to float32
    # precision (1e-6) may come in either order (FAISS works in float32, scikit-learn in float64)
    differ = i_ours != i_ref
    X64 = X / np.linalg.norm(X, axis=1, keepdims=True)
    Q64 = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    rows = np.nonzero(differ)[0]
    exact_ours = 1.0 - np.sum(Q64[rows] * X64[i_ours[differ]], axis=1)
    exact_ref = 1.0 - np.sum(Q64[rows] * X64[i_ref[differ]], axis=1)
    np.testing.assert_allclose(exact_ours, exact_ref, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_sklearn_on_random_embeddings(k, weights, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 16)).astype(np.float32)
    y = rng.choice(["calm", "dark", "happy", "sad"], size=60)
    Q = rng.standard_normal((25, 16)).astype(np.float32)
    _compare(X, y, Q, k, weights)


@pytest.fixture(scope="module")
def real_embeddings():
    """Snippet embeddings of the real demo clips (features encoder), labelled by mood."""
    from clapknn.demo import demo_tracks
    from clapknn.encode import embed_files
    from clapknn.encoders import get_encoder

    tracks = demo_tracks()
    paths = [p for files in tracks.values() for p in files]
    moods = {p: m for m, files in tracks.items() for p in files}
    emb = embed_files(paths, get_encoder("features"), snippet_seconds=10.0)
    y = np.array([moods[type(paths[0])(p)] for p in emb.snippets["path"]])
    return emb.vectors, y, emb.snippets["file"].to_numpy()


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_equals_sklearn_on_real_embeddings(real_embeddings, k, weights):
    X, y, files = real_embeddings
    train = files % 2 == 0  # whole files on one side
    _compare(X[train], y[train], X[~train], k, weights)


def test_multilabel_scores_are_shares_of_neighbours():
    X = np.eye(4, dtype=np.float32)
    y = [["happy", "energetic"], ["happy"], ["sad"], ["sad", "calm"]]
    tagger = KNNTagger(2, weights="uniform").fit(X, y)
    assert tagger.multilabel_
    np.testing.assert_array_equal(tagger.classes_, ["calm", "energetic", "happy", "sad"])
    q = np.array([[1.0, 0.9, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(tagger.predict_proba(q), [[0.0, 0.5, 1.0, 0.0]])
    np.testing.assert_array_equal(tagger.predict(q), [[0, 1, 1, 0]])


def test_k_larger_than_index_uses_all_samples():
    X = np.eye(3, dtype=np.float32)
    tagger = KNNTagger(50, weights="uniform").fit(X, ["a", "b", "b"])
    dist, idx = tagger.kneighbors(X[:1])
    assert idx.shape == (1, 3)
    np.testing.assert_allclose(tagger.predict_proba(X[:1]), [[1 / 3, 2 / 3]])


def test_ties_broken_by_lower_index():
    X = np.ones((5, 3), dtype=np.float32)  # all identical
    tagger = KNNTagger(3, weights="uniform").fit(X, ["b", "a", "b", "a", "a"])
    _, idx = tagger.kneighbors(X[:1])
    np.testing.assert_array_equal(idx, [[0, 1, 2]])
    assert tagger.predict(X[:1])[0] == "b"  # 2 of the first three are "b"


def test_class_tie_goes_to_first_class():
    X = np.array([[1, 0], [0, 1]], dtype=np.float32)
    tagger = KNNTagger(2, weights="uniform").fit(X, ["z", "a"])
    assert tagger.predict(np.array([[1, 1]], dtype=np.float32))[0] == "a"


def test_similarity_weights_and_scores_in_unit_interval(rng):
    sims = rng.uniform(-1, 1, size=(20, 5))
    labels = (rng.uniform(size=(20, 5, 3)) > 0.5).astype(float)
    for w in ("uniform", "distance", "similarity"):
        s = vote_scores(sims, labels, w)
        assert np.all((s >= 0) & (s <= 1 + 1e-12))
    s = vote_scores(np.array([[0.9, 0.1]]), np.array([[[1, 0], [0, 1]]], dtype=float), "similarity")
    np.testing.assert_allclose(s, [[0.9, 0.1]])


def test_errors():
    with pytest.raises(NotFittedError):
        KNNTagger().predict(np.zeros((1, 2)))
    with pytest.raises(ParameterError):
        KNNTagger(0).fit(np.eye(2), ["a", "b"])
    with pytest.raises(ParameterError):
        KNNTagger(weights="loud").fit(np.eye(2), ["a", "b"])
    with pytest.raises(ParameterError):
        KNNTagger().fit(np.eye(2), ["a"])
    t = KNNTagger().fit(np.eye(2), ["a", "b"])
    with pytest.raises(ParameterError):
        t.predict(np.zeros((1, 3)))


def test_aggregate_methods():
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    groups = np.array([0, 0, 1])
    np.testing.assert_allclose(aggregate(scores, groups, method="mean"), [[0.65, 0.35], [0.2, 0.8]])
    np.testing.assert_allclose(aggregate(scores, groups, method="max"), [[0.9, 0.6], [0.2, 0.8]])
    np.testing.assert_allclose(aggregate(scores, groups, method="vote"), [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ParameterError):
        aggregate(scores, groups, method="median")


def test_select_tags_threshold_top_n_and_ties():
    scores = np.array([[0.5, 0.5, 0.0], [0.1, 0.7, 0.6]])
    assert select_tags(scores, ["a", "b", "c"], threshold=0.0) == [["a", "b"], ["b", "c", "a"]]
    assert select_tags(scores, ["a", "b", "c"], threshold=0.55, top_n=1) == [[], ["b"]]
