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
    np.testing.assert_allclose(est.to_search_space(X), want, atol=1e-5)
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
    assert est.loo_score_["standardized"] > est.loo_score_["plain"]
    assert est.loo_score_["chance"] == pytest.approx(0.5)
    # loud dimensions that carry the class and a quiet one that is noise: plain wins
    X2 = X.copy()
    X2[:, 2] = np.where(y == "a", 3.0, -3.0) + rng.standard_normal(len(y))
    X2[:, 0] = 0.02 * rng.standard_normal(len(y))
    est2 = KNNTagger(5, standardize="auto", feature_blocks=[(0, 1, 3.0), (1, 6, 0.2)]).fit(X2, y, groups=groups)
    assert not est2.standardized_


def test_auto_without_evidence_keeps_the_plain_space(rng):
    X, y = _dataset(rng, n_per_class=1)  # one example per tag: nothing to leave out
    est = KNNTagger(1, standardize="auto").fit(X, y)
    assert est.loo_score_["standardized"] == est.loo_score_["plain"] == 0.0
    assert not est.standardized_
    np.testing.assert_allclose(est.to_search_space(X), _unit(X), atol=1e-6)


def test_leave_one_out_keeps_a_group_out_of_its_own_vote(rng):
    """Copies of one file with random tags: only a vote that sees the copies gets them right."""
    base = rng.standard_normal((30, 8)).astype(np.float32)
    X = np.repeat(base, 3, axis=0) + 0.01 * rng.standard_normal((90, 8)).astype(np.float32)
    y = np.repeat(rng.choice(["a", "b"], 30), 3)
    grouped = KNNTagger(1, standardize="auto").fit(X, y, groups=np.repeat(np.arange(30), 3))
    leaky = KNNTagger(1, standardize="auto").fit(X, y)
    assert leaky.loo_score_["plain"] == 1.0
    assert grouped.loo_score_["plain"] < 0.8


def test_loo_score_is_the_share_of_the_vote_for_the_own_tag():
    """Four files on a line, tags a a b b, one snippet each: by hand, uniform votes. The
    leave-one-out vote asks twice n_neighbors neighbours."""
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0]], dtype=np.float32)
    y = ["a", "a", "b", "b"]
    est = KNNTagger(1, weights="uniform", standardize="auto").fit(X, y)
    # each sample's two nearest others: one of its own tag and one of the other -> share 1/2
    assert est.loo_score_["plain"] == pytest.approx(0.5)
    # k=2 -> four neighbours, capped at the three others: one of three has the sample's tag
    est = KNNTagger(2, weights="uniform", standardize="auto").fit(X, y)
    assert est.loo_score_["plain"] == pytest.approx(1 / 3)
    assert est.loo_score_["chance"] == pytest.approx(0.5)


def _noise_switch_rate(seeds) -> float:
    """Share of fits, one per seed, in which ``auto`` takes the standardised space on pure noise
    (24 samples, two classes, files of two snippets: neither space can be better)."""
    switched = 0
    for seed in seeds:
        r = np.random.default_rng(seed)
        X = r.standard_normal((24, 6)).astype(np.float32)
        est = KNNTagger(5, standardize="auto", feature_blocks=[(0, 3, 1.0), (3, 6, 1.0)])
        switched += est.fit(X, np.repeat(["a", "b"], 12), groups=np.arange(24) // 2).standardized_
    return switched / len(seeds)


def test_auto_switch_rate_on_pure_noise_is_the_measured_one(monkeypatch):
    """On pure noise the rule takes the standardised space in 75 of 200 fits (37.5%; 37% over 400
    seeds), not rarely: a gain above half its standard error is common noise, and the per-file
    standard error the rule uses is about two thirds of the actual spread of the mean gain across
    data sets (per-file gains share neighbours, so they are not independent). Pinned here as it is
    (the rule is to be replaced); the margin still does something: without it (0) the rule
    switches about half the time."""
    import clapknn.vote as vote

    rate = _noise_switch_rate(range(200))
    assert 0.30 <= rate <= 0.45
    monkeypatch.setattr(vote, "_CHOICE_MARGIN", 0.0)
    assert _noise_switch_rate(range(200)) >= rate + 0.05


def test_auto_needs_the_gain_to_clear_the_margin(rng, monkeypatch):
    """The standardised space is taken only when its leave-one-out gain exceeds ``_CHOICE_MARGIN``
    standard errors: an unreachable margin keeps the plain space even where standardising wins
    clearly, and a negative one takes the standardised space on noise."""
    import clapknn.vote as vote

    X, y = _dataset(rng)
    groups = np.arange(len(y)) // 2
    blocks = [(0, 1, 3.0), (1, 6, 1.0)]
    monkeypatch.setattr(vote, "_CHOICE_MARGIN", 1e6)
    assert not KNNTagger(5, standardize="auto", feature_blocks=blocks).fit(X, y, groups=groups).standardized_
    monkeypatch.setattr(vote, "_CHOICE_MARGIN", -1e6)
    noise = np.random.default_rng(0).standard_normal((24, 6)).astype(np.float32)
    est = KNNTagger(5, standardize="auto", feature_blocks=[(0, 3, 1.0), (3, 6, 1.0)])
    assert est.fit(noise, np.repeat(["a", "b"], 12), groups=np.arange(24) // 2).standardized_


def _relevance_data(rng, n_files=12, per_file=3):
    """Block 0 (dims 0-2) separates the tags, block 1 (dims 3-5) is noise of the same spread."""
    y_file = np.array(["a", "b"] * (n_files // 2))
    centre = np.where(y_file == "a", 1.0, -1.0)
    X, y, g = [], [], []
    for f in range(n_files):
        for _ in range(per_file):
            v = rng.standard_normal(6)
            v[:3] = centre[f] + 0.5 * rng.standard_normal(3)
            X.append(v)
            y.append(y_file[f])
            g.append(f)
    return np.array(X, dtype=np.float32), np.array(y), np.array(g)


def test_block_relevance_weights_the_block_that_separates_the_tags(rng):
    X, y, g = _relevance_data(rng)
    blocks = [(0, 3, 1.0), (3, 6, 1.0)]
    est = KNNTagger(3, standardize=True, feature_blocks=blocks, block_relevance=True).fit(X, y, groups=g)
    rel = est.block_relevance_
    assert rel.shape == (2,) and rel[0] > 3 * rel[1]
    # the space is the standardised one with block weights times relevance
    U = _unit(X.astype(np.float64))
    Z = (U - est.mean_) / est.scale_
    want = _unit(np.concatenate([rel[0] * _unit(Z[:, :3]), rel[1] * _unit(Z[:, 3:])], axis=1))
    np.testing.assert_allclose(est.to_search_space(X), want, atol=1e-5)
    # by hand: F of file means, tag a against the rest, mean over the block's dims, square root
    means = np.array([Z[g == f].mean(axis=0) for f in range(12)])
    pos = np.array([y[g == f][0] == "a" for f in range(12)])
    centre = means.mean(axis=0)
    between = sum(side.sum() * (means[side].mean(axis=0) - centre) ** 2 for side in (pos, ~pos))
    within = sum(((means[side] - means[side].mean(axis=0)) ** 2).sum(axis=0) for side in (pos, ~pos))
    f = between / (within / (12 - 2))
    np.testing.assert_allclose(rel, [np.sqrt(f[:3].mean()), np.sqrt(f[3:].mean())], rtol=1e-4)
    # relevance helps here: queries from new files
    Q, yq, _ = _relevance_data(np.random.default_rng(5))
    flat = KNNTagger(3, standardize=True, feature_blocks=blocks).fit(X, y, groups=g)
    assert est.score(Q, yq) >= flat.score(Q, yq)
    assert flat.block_relevance_ is None


def test_block_relevance_needs_two_files_on_each_side(rng):
    X, y, g = _relevance_data(rng, n_files=2)  # one file per tag
    est = KNNTagger(1, standardize=True, feature_blocks=[(0, 3, 1.0), (3, 6, 1.0)], block_relevance=True).fit(X, y, groups=g)
    np.testing.assert_array_equal(est.block_relevance_, [1.0, 1.0])


def test_space_options_force_or_keep_the_encoders_choice():
    from clapknn.vote import space_options

    enc = {"standardize": "auto", "feature_blocks": [(0, 2, 1.0)], "block_relevance": True}
    assert space_options(enc, "auto") == enc
    assert space_options(enc, "plain")["standardize"] is False
    forced = space_options(enc, "standardized")
    assert forced["standardize"] is True and forced["feature_blocks"] == enc["feature_blocks"]
    assert space_options({}, "standardized") == {"standardize": True}
    assert enc["standardize"] == "auto"  # not changed in place
    with pytest.raises(ParameterError):
        space_options(enc, "whitened")


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
    assert first.estimator.standardize == "auto" and first.estimator.block_relevance
    assert first.estimator.standardized_ == again.estimator.standardized_
    assert first.estimator.loo_score_ == again.estimator.loo_score_
    forced = Tagger(index, space="standardized")
    assert forced.estimator.standardized_ and forced.estimator.block_relevance_ is not None
    assert not Tagger(index, space="plain").estimator.standardized_
    with pytest.raises(ParameterError):
        Tagger(index, space="nope")


def test_auto_measures_relevance_without_the_left_out_file(rng):
    """The leave-one-file-out vote that chooses the space weighs blocks by relevance measured on
    the other files only: the left-out file's tag never helps its own vote."""
    X, y, g = _relevance_data(rng)
    blocks = [(0, 3, 1.0), (3, 6, 0.5)]
    est = KNNTagger(3, standardize="auto", feature_blocks=blocks, block_relevance=True).fit(X, y, groups=g)
    _, inv = np.unique(g, return_inverse=True)
    Z = (_unit(X.astype(np.float64)) - est.mean_) / est.scale_
    means, has = est._group_means(Z, inv, 12)
    similarity = est._standardized_similarity(X, inv, (Z, means, has))
    for left_out in (0, 7):
        others = np.arange(12) != left_out
        rel = est._relevance_of(means[others], has[others])
        assert not np.allclose(rel, est.block_relevance_)
        T = _unit(np.concatenate([w * r * _unit(Z[:, a:b]) for (a, b, w), r in zip(blocks, rel)], axis=1))
        rows = np.flatnonzero(g == left_out)
        np.testing.assert_allclose(similarity(rows), T[rows] @ T.T, atol=1e-5)


def test_block_relevance_leaves_out_a_tag_it_cannot_measure(rng):
    """A tag on every file has nothing to be compared with: relevance comes from the other tags."""
    X, y, g = _relevance_data(rng)
    blocks = [(0, 3, 1.0), (3, 6, 1.0)]
    single = KNNTagger(3, standardize=True, feature_blocks=blocks, block_relevance=True).fit(X, y, groups=g)
    multi = KNNTagger(3, standardize=True, feature_blocks=blocks, block_relevance=True).fit(
        X, [[t, "everywhere"] for t in y], groups=g
    )
    assert single.block_relevance_[0] > 2 * single.block_relevance_[1]
    np.testing.assert_allclose(multi.block_relevance_, single.block_relevance_)
