"""The kNN vote's search space: standardised per dimension and block-weighted, or chosen by
leave-one-group-out ("auto"); the features encoder asks for it and the Tagger honours it."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn.errors import ParameterError
from clapknn.vote import KNNTagger


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dataset(rng, n_per_class=20):
    """Class shown by one dimension with a tiny spread; the others are loud noise."""
    y = np.repeat(["a", "b"], n_per_class)
    X = rng.standard_normal((len(y), 6)).astype(np.float32)
    X[:, 0] = np.where(y == "a", 0.02, -0.02) + 0.002 * rng.standard_normal(len(y))
    X[:, 1] += 5.0  # a common offset, as fixed feature constants leave on a one-style collection
    return X, y


def test_standardized_space_is_zscore_then_weighted_unit_blocks(rng):
    X, y = _dataset(rng)
    blocks = [(0, 2, 2.0), (2, 6, 1.0)]
    est = KNNTagger(3, standardize=True, feature_blocks=blocks).fit(X, y)
    U = _unit(X.astype(np.float64))
    mu, sd = U.mean(axis=0), U.std(axis=0)
    scale = np.sqrt(sd**2 + (0.1 * np.sqrt(np.mean(sd**2))) ** 2)
    Z = (U - mu) / scale
    want = _unit(np.concatenate([2.0 * _unit(Z[:, :2]), 1.0 * _unit(Z[:, 2:])], axis=1))
    np.testing.assert_allclose(est.transform(X), want, atol=1e-5)
    assert est.standardized_
    sims, ids = est.similarities(X[:3], 2)
    np.testing.assert_allclose(sims[:, 0], np.sum(want[:3] * want[ids[:, 0]], axis=1), atol=1e-5)


def test_standardizing_finds_a_quiet_informative_dimension(rng):
    X, y = _dataset(rng)
    Q, yq = _dataset(np.random.default_rng(1))
    plain = KNNTagger(5).fit(X, y).score(Q, yq)
    std = KNNTagger(5, standardize=True, feature_blocks=[(0, 1, 3.0), (1, 6, 1.0)]).fit(X, y).score(Q, yq)
    assert std > 0.9 > 0.75 > plain


def test_auto_picks_the_space_that_wins_leave_one_group_out(rng):
    X, y = _dataset(rng)
    groups = np.arange(len(y)) // 2  # pairs of snippets from one file
    est = KNNTagger(5, standardize="auto", feature_blocks=[(0, 1, 3.0), (1, 6, 1.0)]).fit(X, y, groups=groups)
    assert est.standardized_
    assert est.loo_accuracy_["standardized"] > est.loo_accuracy_["plain"]
    assert est.loo_accuracy_["chance"] == pytest.approx(0.5)
    # loud dimensions that carry the class and a quiet one that is noise: plain wins
    X2 = X.copy()
    X2[:, 2] = np.where(y == "a", 3.0, -3.0) + rng.standard_normal(len(y))
    X2[:, 0] = 0.02 * rng.standard_normal(len(y))
    est2 = KNNTagger(5, standardize="auto", feature_blocks=[(0, 1, 3.0), (1, 6, 0.2)]).fit(X2, y, groups=groups)
    assert not est2.standardized_


def test_auto_without_evidence_keeps_the_plain_space(rng):
    X, y = _dataset(rng, n_per_class=1)  # one example per tag: nothing to leave out
    est = KNNTagger(1, standardize="auto").fit(X, y)
    assert est.loo_accuracy_["standardized"] == est.loo_accuracy_["plain"] == 0.0
    assert not est.standardized_
    np.testing.assert_allclose(est.transform(X), _unit(X), atol=1e-6)


def test_leave_one_out_keeps_a_group_out_of_its_own_vote(rng):
    """Copies of one file with random tags: only a vote that sees the copies gets them right."""
    base = rng.standard_normal((30, 8)).astype(np.float32)
    X = np.repeat(base, 3, axis=0) + 0.01 * rng.standard_normal((90, 8)).astype(np.float32)
    y = np.repeat(rng.choice(["a", "b"], 30), 3)
    grouped = KNNTagger(1, standardize="auto").fit(X, y, groups=np.repeat(np.arange(30), 3))
    leaky = KNNTagger(1, standardize="auto").fit(X, y)
    assert leaky.loo_accuracy_["plain"] == 1.0
    assert grouped.loo_accuracy_["plain"] < 0.8


@pytest.mark.parametrize("bad", [dict(standardize="yes"), dict(feature_blocks=[(0, 99, 1.0)]), dict(feature_blocks=[])])
def test_bad_space_settings_are_refused(rng, bad):
    X, y = _dataset(rng)
    with pytest.raises(ParameterError):
        KNNTagger(3, **bad).fit(X, y)


def test_tagger_uses_the_encoders_space_and_reloads_the_same_choice(built_index):
    from clapknn import Tagger, load_index
    from clapknn.encoders.features import FeaturesEncoder

    index, root = built_index
    options = FeaturesEncoder().knn_options()
    assert options["standardize"] == "auto" and options["feature_blocks"][-1][1] == FeaturesEncoder().dim
    first = Tagger(index)
    again = Tagger(load_index(root / "index"))
    assert first.estimator.standardize == "auto"
    assert first.estimator.standardized_ == again.estimator.standardized_
    assert first.estimator.loo_accuracy_ == again.estimator.loo_accuracy_
