"""The kNN vote's search space: standardised per dimension and block-weighted, or chosen by
leave-one-group-out ("auto"); the features encoder asks for it and the Tagger honours it."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn.errors import ParameterError
from clapknn.vote import KNNTagger
from clapknn.vote.relevance import group_means, relevance_of


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
    assert est.loo_score_["p_value_plain"] == 1.0  # no shuffle gives the plain space less
    assert est.loo_score_["chance"] == pytest.approx(0.5)
    X2, _ = _plain_wins(rng)
    est2 = KNNTagger(5, standardize="auto", feature_blocks=[(0, 1, 3.0), (1, 6, 0.2)]).fit(X2, y, groups=groups)
    assert not est2.standardized_


def test_auto_without_evidence_keeps_the_standardized_space(rng):
    X, y = _dataset(rng, n_per_class=1)  # one example per tag: nothing to leave out
    est = KNNTagger(1, standardize="auto").fit(X, y)
    assert est.loo_score_["standardized"] == est.loo_score_["plain"] == 0.0
    assert est.loo_score_["p_value_plain"] == 1.0
    assert est.standardized_
    forced = KNNTagger(1, standardize=True).fit(X, y)
    np.testing.assert_allclose(est.to_search_space(X), forced.to_search_space(X), atol=1e-6)


def test_leave_one_out_keeps_a_group_out_of_its_own_vote(rng):
    """Copies of one file with random tags: a vote that sees a sample's own copies gives them a
    large share; one that leaves the group out is at chance."""
    base = rng.standard_normal((30, 8)).astype(np.float32)
    X = np.repeat(base, 3, axis=0) + 0.01 * rng.standard_normal((90, 8)).astype(np.float32)
    y = np.repeat(rng.choice(["a", "b"], 30), 3)
    grouped = KNNTagger(1, standardize="auto").fit(X, y, groups=np.repeat(np.arange(30), 3))
    leaky = KNNTagger(1, standardize="auto").fit(X, y)
    assert leaky.loo_score_["plain"] > grouped.loo_score_["plain"] + 0.15
    assert grouped.loo_score_["plain"] < 0.6


def test_loo_score_is_the_share_of_the_vote_for_the_own_tag():
    """Four files, tags a a b b, one snippet each: each sample's vote by its (at most 10) nearest
    others, similarity-weighted, whatever n_neighbors and weights the vote itself uses."""
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0]], dtype=np.float32)
    y = np.array(["a", "a", "b", "b"])
    U = _unit(X.astype(np.float64))
    sims = np.maximum(U @ U.T, 0.0)
    np.fill_diagonal(sims, 0.0)
    own = (sims * (y[:, None] == y[None, :])).sum(axis=1) / sims.sum(axis=1)
    for k, weights in ((1, "uniform"), (3, "distance"), (5, "similarity")):
        est = KNNTagger(k, weights=weights, standardize="auto").fit(X, list(y))
        assert est.loo_score_["plain"] == pytest.approx(own.mean(), rel=1e-5)
        assert est.loo_score_["chance"] == pytest.approx(0.5)


def _noise_switch_rate(seeds, **options) -> float:
    """Share of fits, one per seed, in which ``auto`` leaves its default (standardised) space on
    pure noise: 24 samples of 6 dimensions in two blocks, two tags dealt at random to 12 files of
    two snippets, so neither space can be better."""
    switched = 0
    for seed in seeds:
        r = np.random.default_rng(seed)
        X = r.standard_normal((24, 6)).astype(np.float32)
        y = np.repeat(r.permutation(np.repeat(["a", "b"], 6)), 2)
        est = KNNTagger(5, standardize="auto", feature_blocks=[(0, 3, 1.0), (3, 6, 1.0)], **options)
        switched += not est.fit(X, y, groups=np.arange(24) // 2).standardized_
    return switched / len(seeds)


@pytest.mark.parametrize("block_relevance", [True, False])
def test_auto_switch_rate_on_pure_noise_is_at_most_five_percent(block_relevance):
    """Over 200 seeds of pure noise the space changes in at most 5% of the fits (the permutation
    test's level is 2.5%); the test has teeth: taking the plain space whenever its gain is
    positive switches in about half of them."""
    import clapknn.vote.space as vote_space

    assert _noise_switch_rate(range(200), block_relevance=block_relevance) <= 0.05
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vote_space, "_ALPHA", 1.0)
        assert _noise_switch_rate(range(40), block_relevance=block_relevance) >= 0.25


def _plain_wins(rng):
    """Loud dimensions carry the class and a quiet one is noise: the plain space wins."""
    X, y = _dataset(rng)
    X[:, 2] = np.where(y == "a", 3.0, -3.0) + rng.standard_normal(len(y))
    X[:, 0] = 0.02 * rng.standard_normal(len(y))
    return X, y


def test_auto_takes_the_plain_space_only_past_every_shuffle(rng, monkeypatch):
    """The plain space is taken when its gain beats all 39 tag shuffles (p = 1/40 <= _ALPHA); a
    stricter level than any p-value the shuffles can give keeps the standardised space even then."""
    import clapknn.vote.space as vote_space

    X, y = _plain_wins(rng)
    groups = np.arange(len(y)) // 2
    blocks = [(0, 1, 3.0), (1, 6, 0.2)]
    est = KNNTagger(5, standardize="auto", feature_blocks=blocks).fit(X, y, groups=groups)
    assert not est.standardized_
    assert est.loo_score_["p_value_plain"] == pytest.approx(1 / 40)
    assert est.loo_score_["plain"] > est.loo_score_["standardized"]
    monkeypatch.setattr(vote_space, "_ALPHA", 0.01)
    assert KNNTagger(5, standardize="auto", feature_blocks=blocks).fit(X, y, groups=groups).standardized_


def test_auto_choice_ignores_sample_order_group_names_k_and_weights(rng):
    """The same examples give the same fitted space in any order, under any group names, for
    every k and weighting (what lets ``evaluate`` serve a whole k sweep from one fit)."""
    X, y = _plain_wins(rng)
    X[:, 0] += 0.01 * rng.standard_normal(len(y))  # a quiet signal too: a close call
    groups = np.arange(len(y)) // 2
    blocks = [(0, 1, 3.0), (1, 6, 1.0)]
    ref = KNNTagger(5, standardize="auto", feature_blocks=blocks, block_relevance=True).fit(X, y, groups=groups)
    perm = rng.permutation(len(y))
    names = np.array([f"song-{g * 7 % 23}" for g in groups])
    for k, weights, order, g in ((1, "uniform", perm, groups[perm]), (3, "distance", np.arange(len(y)), names),
                                 (20, "similarity", perm, names[perm])):
        est = KNNTagger(k, weights=weights, standardize="auto", feature_blocks=blocks, block_relevance=True)
        est.fit(X[order], y[order], groups=g)
        assert est.standardized_ == ref.standardized_
        assert est.loo_score_ == pytest.approx(ref.loo_score_)
        np.testing.assert_allclose(est.block_weights_, ref.block_weights_, rtol=1e-6)
        np.testing.assert_allclose(est.to_search_space(X), ref.to_search_space(X), atol=1e-6)


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
    rel, dims = est.block_relevance_, est.dim_relevance_
    assert rel.shape == (2,) and rel[0] > 3 * rel[1]
    assert dims.shape == (6,)
    # by hand: F of file means per dimension, tag a against the rest, its within-tag variance
    # shrunk towards its block's mean by 4 / (4 + files - 2); a block's relevance is the mean of
    # its dimensions' F to the power 0.75, a dimension's is its F shrunk towards the block's mean
    # by 10 / (10 + files - 2), to the power 0.5
    U = _unit(X.astype(np.float64))
    Z = (U - est.mean_) / est.scale_
    means = np.array([Z[g == f].mean(axis=0) for f in range(12)])
    pos = np.array([y[g == f][0] == "a" for f in range(12)])
    centre = means.mean(axis=0)
    between = sum(side.sum() * (means[side].mean(axis=0) - centre) ** 2 for side in (pos, ~pos))
    within = sum(((means[side] - means[side].mean(axis=0)) ** 2).sum(axis=0) for side in (pos, ~pos))
    var = within / (12 - 2)
    prior = np.repeat([var[:3].mean(), var[3:].mean()], 3)
    f = between / ((4 * prior + (12 - 2) * var) / (4 + 12 - 2))
    block_f = np.array([f[:3].mean(), f[3:].mean()])
    np.testing.assert_allclose(rel, block_f**0.75, rtol=1e-4)
    share = 10 / (10 + 12 - 2)
    want_dims = np.sqrt((1 - share) * f + share * np.repeat(block_f, 3))
    np.testing.assert_allclose(dims, want_dims, rtol=1e-4)
    # the space is the standardised one, dimensions times their relevance, blocks at unit length
    # times their weight and relevance
    W = Z * want_dims
    want = _unit(np.concatenate([rel[0] * _unit(W[:, :3]), rel[1] * _unit(W[:, 3:])], axis=1))
    np.testing.assert_allclose(est.to_search_space(X), want, atol=1e-5)
    # relevance helps here: queries from new files
    Q, yq, _ = _relevance_data(np.random.default_rng(5))
    flat = KNNTagger(3, standardize=True, feature_blocks=blocks).fit(X, y, groups=g)
    assert est.score(Q, yq) >= flat.score(Q, yq)
    assert flat.block_relevance_ is None and flat.dim_relevance_ is None


def test_dimension_relevance_finds_the_one_dimension_that_carries_the_tag(rng):
    """One dimension of a 6-dimension block carries the tag, the other five are noise of the same
    spread: with block relevance alone the block's cosine is mostly noise, with dimension relevance
    the informative dimension dominates it and queries from new files are tagged right."""

    def data(r, n_files):
        y_file = np.array(["a", "b"] * (n_files // 2))
        X, y, g = [], [], []
        for f in range(n_files):
            centre = 1.0 if y_file[f] == "a" else -1.0
            for _ in range(2):
                v = r.standard_normal(8)
                v[0] = centre + 0.3 * r.standard_normal()
                X.append(v)
                y.append(y_file[f])
                g.append(f)
        return np.array(X, dtype=np.float32), np.array(y), np.array(g)

    X, y, g = data(rng, 20)
    Q, yq, _ = data(np.random.default_rng(11), 200)
    blocks = [(0, 6, 1.0), (6, 8, 1.0)]
    est = KNNTagger(5, standardize=True, feature_blocks=blocks, block_relevance=True).fit(X, y, groups=g)
    assert est.dim_relevance_[0] > 3 * est.dim_relevance_[1:6].max()
    flat = KNNTagger(5, standardize=True, feature_blocks=blocks).fit(X, y, groups=g)
    assert est.score(Q, yq) > 0.9 > flat.score(Q, yq) + 0.1


def test_relevance_on_noise_tags_costs_no_more_than_noise(rng):
    """Tags that no dimension follows: the relevance-weighted space tags new files at chance, as
    the unweighted standardised space does (over many draws, no worse than it beyond noise)."""
    diffs = []
    for seed in range(30):
        r = np.random.default_rng(100 + seed)
        X = r.standard_normal((40, 12)).astype(np.float32)
        y = np.repeat(r.permutation(np.repeat(["a", "b"], 10)), 2)
        g = np.arange(40) // 2
        Q = r.standard_normal((200, 12)).astype(np.float32)
        yq = r.choice(["a", "b"], 200)
        blocks = [(0, 4, 1.0), (4, 8, 1.0), (8, 12, 1.0)]
        weighted = KNNTagger(5, standardize=True, feature_blocks=blocks, block_relevance=True).fit(X, y, groups=g)
        flat = KNNTagger(5, standardize=True, feature_blocks=blocks).fit(X, y, groups=g)
        diffs.append(weighted.score(Q, yq) - flat.score(Q, yq))
    diffs = np.array(diffs)
    assert abs(diffs.mean()) < 3 * diffs.std(ddof=1) / np.sqrt(len(diffs)) + 0.01


def test_leave_one_out_vote_searches_the_space_of_the_left_out_groups_relevance(rng, monkeypatch):
    """The standardised space's leave-one-group-out vote in ``auto`` compares a sample with the
    others in the search space built with the relevance measured without the sample's group."""
    import clapknn.vote.space as vote_space
    from clapknn.encoders.base import l2_normalize

    X, y, g = _relevance_data(rng)
    blocks = [(0, 3, 1.0), (3, 6, 0.5)]
    seen = []
    original = vote_space.loo_neighbours

    def spy(similarity, groups):
        seen.append(similarity)
        return original(similarity, groups)

    monkeypatch.setattr(vote_space, "loo_neighbours", spy)
    est = KNNTagger(3, standardize="auto", feature_blocks=blocks, block_relevance=True).fit(X, y, groups=g)
    similarity = seen[1]  # plain space first, then the standardised one with the real tags
    order = np.lexsort(X.T[::-1])  # the canonical order the choice works in
    Xo, yo, go = X[order], y[order], g[order]
    _, first, inv = np.unique(go, return_index=True, return_inverse=True)
    inv = np.argsort(np.argsort(first))[inv]
    Z = ((l2_normalize(Xo) - est.mean_) / est.scale_).astype(np.float64)
    means, has = group_means(Z, (yo[:, None] == est.classes_[None, :]).astype(float), inv, 12)
    block_rel, dim_rel = relevance_of(means, has, est._blocks, leave_one_out=True, dims=True)
    got = similarity(slice(0, len(Xo)))
    for i in range(len(Xo)):
        V = Z * dim_rel[inv[i]]
        T = _unit(np.concatenate([w * block_rel[inv[i], j] * _unit(V[:, a:b]) for j, (a, b, w) in enumerate(blocks)], axis=1))
        np.testing.assert_allclose(got[i], T[i] @ T.T, atol=1e-6)


def test_block_relevance_needs_two_files_on_each_side(rng):
    X, y, g = _relevance_data(rng, n_files=2)  # one file per tag
    est = KNNTagger(1, standardize=True, feature_blocks=[(0, 3, 1.0), (3, 6, 1.0)], block_relevance=True).fit(X, y, groups=g)
    np.testing.assert_array_equal(est.block_relevance_, [1.0, 1.0])


def test_two_files_per_tag_a_dimension_whose_files_happen_to_agree_does_not_take_the_relevance(monkeypatch):
    """Two files per tag: block 0 separates the tags, its files spread as music does; in block 1,
    one dimension splits the four files by tag with almost no spread inside a tag (chance, with
    two files a side), beside two noise dimensions. Its raw F ratio is enormous; with the
    within-tag variance moderated towards its block's, block 0 keeps the larger relevance."""
    from clapknn.vote import relevance

    sign = np.array([1.0, 1.0, -1.0, -1.0])
    means = np.empty((4, 6))
    spread = np.array([[0.3, -0.2, 0.25], [-0.3, 0.2, -0.25], [0.2, 0.3, -0.3], [-0.2, -0.3, 0.3]])
    means[:, :3] = sign[:, None] + spread
    means[:, 3] = sign * 0.3 + 1e-3 * np.arange(4)
    means[:, 4:] = [[0.5, -0.4], [-0.6, 0.3], [0.4, 0.7], [-0.3, -0.5]]
    has = (sign > 0)[:, None]
    blocks = [(0, 3, 1.0), (3, 6, 1.0)]
    rel = relevance_of(means, has, blocks)
    assert rel[0] > 2 * rel[1]
    monkeypatch.setattr(relevance, "_VARIANCE_PRIOR_DOF", 0.0)  # the raw F ratio: the chance dimension wins
    raw = relevance_of(means, has, blocks)
    assert raw[1] > 2 * raw[0]


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


def test_leave_one_out_relevance_is_measured_without_the_left_out_file(rng):
    """The leave-one-file-out vote that chooses the space weighs blocks by relevance measured on
    the other files only (in closed form): the left-out file's tag never helps its own vote."""
    X, y, g = _relevance_data(rng)
    est = KNNTagger(3, standardize=True, feature_blocks=[(0, 3, 1.0), (3, 6, 0.5)], block_relevance=True).fit(X, y, groups=g)
    _, inv = np.unique(g, return_inverse=True)
    Z = (_unit(X.astype(np.float64)) - est.mean_) / est.scale_
    means, has = group_means(Z, est.labels_, inv, 12)
    loo = relevance_of(means, has, est._blocks, leave_one_out=True)
    for left_out in range(12):
        others = np.arange(12) != left_out
        np.testing.assert_allclose(loo[left_out], relevance_of(means[others], has[others], est._blocks), rtol=1e-6)
        assert not np.allclose(loo[left_out], est.block_relevance_)


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
