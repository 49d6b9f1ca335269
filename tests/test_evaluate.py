"""Evaluation logic: grouped splits never leak, metrics are scikit-learn's, episodes are seeded."""

from __future__ import annotations

import csv
import io
import json
import re

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from clapknn.errors import ParameterError
from clapknn.evaluation import (
    Embedded,
    chance_levels,
    evaluate,
    few_shot_episodes,
    grouped_folds,
    track_metrics,
)

from conftest import make_examples, tone, write_audio


def _dataset(seed: int, n_groups: int = 30, n_tags: int = 3, multilabel: bool = False):
    """Random tags on files that come in groups of 1-4 (tags vary within a group)."""
    rng = np.random.default_rng(seed)
    tags, groups = [], []
    names = [f"t{j}" for j in range(n_tags)]
    for g in range(n_groups):
        for _ in range(rng.integers(1, 5)):
            if multilabel:
                chosen = [t for t in names if rng.random() < 0.4] or [names[rng.integers(n_tags)]]
            else:
                chosen = [names[rng.integers(n_tags)]]
            tags.append(tuple(chosen))
            groups.append(f"g{g}")
    return tags, np.array(groups, dtype=object)


# --------------------------------------------------------------------------- splits
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shots", [1, 3])
@pytest.mark.parametrize("multilabel", [False, True])
def test_episodes_never_share_a_group(seed, shots, multilabel):
    tags, groups = _dataset(seed, multilabel=multilabel)
    for support, queries in few_shot_episodes(tags, groups, shots=shots, n_episodes=4, seed=seed):
        assert set(groups[support]).isdisjoint(groups[queries])
        assert len(set(groups[support])) == len(support)  # one support file per group
        counts = {t: sum(t in tags[i] for i in support) for t in {t for ts in tags for t in ts}}
        assert min(counts.values()) >= shots
        if not multilabel:
            assert all(c == shots for c in counts.values())
        assert {t for i in queries for t in tags[i]} == set(counts)  # every tag is queried
        # every file outside the support groups is a query
        assert set(queries) == {i for i in range(len(tags)) if groups[i] not in set(groups[support])}


def test_episodes_are_reproducible_with_a_seed():
    tags, groups = _dataset(0)
    a = few_shot_episodes(tags, groups, shots=2, n_episodes=5, seed=7)
    b = few_shot_episodes(tags, groups, shots=2, n_episodes=5, seed=7)
    c = few_shot_episodes(tags, groups, shots=2, n_episodes=5, seed=8)
    first3 = few_shot_episodes(tags, groups, shots=2, n_episodes=3, seed=7)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, first3))  # episode e does not depend on n_episodes
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    assert len({tuple(s) for s, _ in a}) > 1  # episodes differ from each other


def test_episodes_refuse_tags_with_too_few_groups():
    tags = [("a",), ("a",), ("b",), ("b",)]
    with pytest.raises(ParameterError, match="at least 2 groups"):
        few_shot_episodes(tags, ["g1", "g1", "g2", "g3"], shots=1, n_episodes=1)


@pytest.mark.parametrize("seed", range(4))
def test_folds_are_grouped_and_cover_every_file_once(seed):
    tags, groups = _dataset(seed, n_groups=25)
    folds = grouped_folds(tags, groups, n_folds=4, seed=seed)
    assert len(folds) == 4
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested) == list(range(len(tags)))
    for train, test in folds:
        assert set(groups[train]).isdisjoint(groups[test])
        assert len(train) + len(test) == len(tags)
    again = grouped_folds(tags, groups, n_folds=4, seed=seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))


# --------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", range(5))
def test_single_label_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, c = 40, 4
    t = rng.integers(0, c, n)
    scores = rng.dirichlet(np.ones(c), n)  # rows sum to 1, like kNN vote shares
    if seed % 2:
        scores = np.round(scores * 5) / 5  # many tied scores, as with a few neighbours
    p = scores.argmax(axis=1)
    y_true, y_pred = np.eye(c, dtype=int)[t], np.eye(c, dtype=int)[p]
    m, per = track_metrics(y_true, scores, y_pred, multilabel=False)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(t, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(t, p, average="macro"))
    prec, rec, _, _ = skm.precision_recall_fscore_support(t, p, labels=range(c), zero_division=0)
    np.testing.assert_allclose(per["precision"], prec)
    np.testing.assert_allclose(per["recall"], rec)
    roc = [skm.roc_auc_score(t == j, scores[:, j]) for j in range(c)]
    ap = [skm.average_precision_score(t == j, scores[:, j]) for j in range(c)]
    np.testing.assert_allclose(per["roc_auc"], roc)
    assert m["roc_auc"] == pytest.approx(np.mean(roc))
    assert m["pr_auc"] == pytest.approx(np.mean(ap))
    # scikit-learn's own macro one-vs-rest ROC-AUC agrees (it needs rows that sum to 1)
    if seed % 2 == 0:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(t, scores, multi_class="ovr"))


def test_metrics_on_a_known_confusion():
    # true a a a b b c ; predicted a a b b c c
    t = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    eye = np.eye(3, dtype=int)
    m, per = track_metrics(eye[t], eye[p].astype(float), eye[p], multilabel=False)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    np.testing.assert_allclose(per["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(per["recall"], [2 / 3, 0.5, 1.0])


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, c = 50, 3
    y_true = (rng.random((n, c)) < 0.4).astype(int)
    y_true[0] = 1
    y_true[1] = 0
    scores = np.clip(y_true * 0.3 + rng.random((n, c)) * 0.7, 0, 1)
    if seed % 2:
        scores = np.round(scores * 4) / 4
    y_pred = (scores >= 0.5).astype(int)
    m, per = track_metrics(y_true, scores, y_pred, multilabel=True)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, scores, average="macro"))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y_true, scores, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(
        np.mean([skm.balanced_accuracy_score(y_true[:, j], y_pred[:, j]) for j in range(c)])
    )
    np.testing.assert_allclose(per["recall"], skm.recall_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(per["precision"], skm.precision_score(y_true, y_pred, average=None, zero_division=0))


def test_ranking_metrics_are_nan_for_a_tag_without_negatives():
    y = np.array([[1, 0], [1, 0]])
    m, per = track_metrics(y, np.array([[0.9, 0.1], [0.8, 0.2]]), y, multilabel=False)
    assert np.isnan(per["roc_auc"]).all() and np.isnan(m["roc_auc"])
    assert m["accuracy"] == 1.0


@pytest.mark.parametrize("multilabel", [False, True])
def test_chance_levels_match_random_guessing(rng, multilabel):
    """The chance figures are what a guesser that ignores the audio scores on average."""
    n, c = 300, 3
    if multilabel:
        y = (rng.random((n, c)) < np.array([0.2, 0.5, 0.7])).astype(int)
    else:
        y = np.eye(c, dtype=int)[rng.choice(c, n, p=[0.5, 0.3, 0.2])]
    chance = chance_levels(y, multilabel)
    sims = []
    for _ in range(100):
        if multilabel:
            pred = (rng.random((n, c)) < 0.5).astype(int)
        else:
            pred = np.eye(c, dtype=int)[rng.integers(0, c, n)]
        sims.append(track_metrics(y, rng.random((n, c)), pred, multilabel)[0])
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "pr_auc"):
        observed = np.mean([s[name] for s in sims])
        assert observed == pytest.approx(chance[name], abs=0.015), name


# --------------------------------------------------------------------------- evaluate on vectors
def _embedded(tags, groups, vectors_per_file, rng, snippets=2, noise=0.05):
    vec, track = [], []
    for i, v in enumerate(vectors_per_file):
        for _ in range(snippets):
            vec.append(v + noise * rng.standard_normal(v.shape))
            track.append(i)
    return Embedded(
        snippet_seconds=10.0, hop_seconds=10.0, vectors=np.asarray(vec, dtype=np.float32),
        track=np.asarray(track), paths=[f"f{i}.wav" for i in range(len(tags))], tags=list(tags),
        groups=np.asarray(groups, dtype=object), encoder={"name": "test"},
    )


def test_grouping_stops_a_leak_that_file_level_splits_would_reward(rng):
    """Files of one group sound alike but their tags are random: only a leaky split can 'learn' them."""
    n_groups, per_group, dim = 40, 3, 16
    centres = rng.standard_normal((n_groups, dim))
    tags, groups, vecs = [], [], []
    for g in range(n_groups):
        tag = ("a",) if g % 2 else ("b",)
        for _ in range(per_group):
            tags.append(tag)
            groups.append(f"g{g}")
            vecs.append(centres[g])
    grouped = _embedded(tags, groups, vecs, rng)
    leaky = _embedded(tags, [f"file{i}" for i in range(len(tags))], vecs, rng)
    kw = dict(shots=(15,), n_episodes=8, folds=4, k=1, weights="uniform", baselines=False)
    honest = evaluate(grouped, **kw).rows(method="knn", k=1, weights="uniform").set_index("protocol")
    inflated = evaluate(leaky, **kw).rows(method="knn", k=1, weights="uniform").set_index("protocol")
    assert (honest["accuracy"] < 0.65).all(), honest["accuracy"]
    # cross-validation: every query has a same-group twin among the training files
    assert inflated.loc["cv", "accuracy"] > 0.9
    # episodes: only queries whose group has a support file are found
    assert inflated.loc["episodes", "accuracy"] > honest.loc["episodes", "accuracy"] + 0.15


def test_the_votes_space_choice_leaves_whole_groups_out(rng, monkeypatch):
    """In cross-validation the support holds several files of a group; the vote's leave-one-out
    (its choice of space) must leave the group out, as the split does, not just the file."""
    import clapknn.vote as vote

    n_groups, per_group = 12, 2
    tags = [("a",) if g % 2 else ("b",) for g in range(n_groups) for _ in range(per_group)]
    groups = [f"g{g}" for g in range(n_groups) for _ in range(per_group)]
    emb = _embedded(tags, groups, rng.standard_normal((len(tags), 6)), rng)
    emb = replace(emb, knn_options={"standardize": "auto"})
    seen = []
    fit = vote.KNNTagger.fit

    def spy(self, X, y, groups=None):
        seen.append(np.asarray(groups))
        return fit(self, X, y, groups)

    monkeypatch.setattr(vote.KNNTagger, "fit", spy)
    evaluate(emb, shots=(), folds=3, k=1, weights="uniform", baselines=False)
    assert len(seen) == 3
    for g in seen:
        # two files (four snippets) per group in the support: four rows share each id
        assert set(np.unique(g, return_counts=True)[1]) == {2 * per_group}


@pytest.mark.parametrize("standardize", [False, True])
def test_knn_scores_are_those_of_the_tagger_path(rng, standardize):
    """The evaluation's kNN track scores equal KNNTagger.predict_proba pooled by aggregate()."""
    from clapknn.tagging.aggregate import aggregate
    from clapknn.evaluation.run import knn_scores
    from clapknn.labels import tag_indicator
    from clapknn.vote import KNNTagger

    X_s = rng.standard_normal((30, 8)).astype(np.float32)
    tags_s = [("a",) if i % 3 else ("b", "c") for i in range(30)]
    X_q = rng.standard_normal((12, 8)).astype(np.float32)
    qgroups = np.repeat(np.arange(4), 3)
    Y_s = tag_indicator(tags_s, ["a", "b", "c"])
    options = {"standardize": True, "feature_blocks": [(0, 3, 1.5), (3, 8, 0.5)]} if standardize else {}
    got, _ = knn_scores(X_s, Y_s, X_q, (1, 5), ("uniform", "similarity"), qgroups, 4, "mean", options)
    for k in (1, 5):
        for w in ("uniform", "similarity"):
            est = KNNTagger(k, weights=w, **options).fit(X_s, [list(t) for t in tags_s])
            want = aggregate(est.predict_proba(X_q), qgroups, method="mean", n_groups=4)
            np.testing.assert_allclose(got[(k, w)], want)


def test_evaluate_is_reproducible_and_relabel_shares_vectors(rng):
    tags, groups = _dataset(3, n_groups=24, n_tags=2)
    vecs = [rng.standard_normal(8) + (3 if t == ("t0",) else 0) for t in tags]
    emb = _embedded(tags, groups, vecs, rng)
    a = evaluate(emb, shots=(1, 2), n_episodes=4, folds=0, k=(1, 3), seed=5)
    b = evaluate(emb, shots=(1, 2), n_episodes=4, folds=0, k=(1, 3), seed=5)
    np.testing.assert_array_equal(a.runs["balanced_accuracy"].to_numpy(), b.runs["balanced_accuracy"].to_numpy())
    knn = a.rows(method="knn", protocol="episodes", k=1, weights="uniform")
    assert (knn["balanced_accuracy"] > knn["chance_balanced_accuracy"] + 0.2).all()
    flipped = emb.relabel({p: ("x",) if t == ("t0",) else ("y",) for p, t in zip(emb.paths, emb.tags)})
    assert flipped.vectors is not emb.vectors and np.array_equal(flipped.vectors, emb.vectors)
    c = evaluate(flipped, shots=(1, 2), n_episodes=4, folds=0, k=(1, 3), seed=5)
    assert c.tags == ["x", "y"]
    np.testing.assert_allclose(c.runs["balanced_accuracy"], a.runs["balanced_accuracy"])


@pytest.mark.parametrize("multilabel", [False, True])
def test_evaluate_predictions_are_the_runs_queries_and_give_their_accuracy(rng, multilabel):
    """``predictions=True`` keeps one row per query track, setting and episode/fold: exactly the
    run's query tracks (each with its own group and true tags), and the share of ``correct`` rows of
    a run is that run's accuracy (subset accuracy for multi-label tags)."""
    tags, groups = _dataset(4, n_groups=24, n_tags=3, multilabel=multilabel)
    vecs = [rng.standard_normal(8) + 2.0 * np.array([t in ts for t in ("t0", "t1", "t2")] + [0] * 5) for ts in tags]
    emb = _embedded(tags, groups, vecs, rng)
    report = evaluate(emb, shots=(1, 2), n_episodes=3, folds=3, k=(1, 3), seed=2, predictions=True)
    pred = report.predictions
    keys = ["snippet_seconds", "protocol", "shots", "method", "k", "weights", "run"]
    assert len(pred) == int(report.runs["n_queries"].sum())
    by_run = pred.groupby(keys, dropna=False)["correct"].mean()
    runs = report.runs.set_index(keys)["accuracy"]
    assert len(by_run) == len(runs) and (by_run.reindex(runs.index) - runs).abs().max() < 1e-12
    truth = {p: ";".join(t for t in sorted(ts)) for p, ts in zip(emb.paths, emb.tags)}
    group_of = dict(zip(emb.paths, map(str, emb.groups)))
    assert all(pred["tags"] == pred["path"].map(truth)) and all(pred["group"] == pred["path"].map(group_of))
    assert all(pred["correct"] == (pred["tags"] == pred["predicted"]))
    episodes = few_shot_episodes(emb.tags, emb.groups, shots=2, n_episodes=3, seed=2)
    for run, (_, qry) in enumerate(episodes):
        rows = pred.query("protocol == 'episodes' and shots == 2 and method == 'knn' and k == 3 "
                          "and weights == 'similarity' and run == @run")
        assert sorted(rows["path"]) == sorted(emb.paths[i] for i in qry)
    assert evaluate(emb, shots=(1,), n_episodes=2, folds=0, k=(1,), seed=2).predictions is None


# --------------------------------------------------------------------------- end to end on audio
@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    """Synthesised examples listed in a CSV with a group column (pairs of files share a group)."""
    root = tmp_path_factory.mktemp("evaluate")
    make_examples(root / "audio", per_tag=6, seconds=3.0)
    rows = []
    for tag in ("calm", "energetic"):
        for i in range(6):
            rows.append((f"audio/{tag}/{tag}_{i}.wav", tag, f"{tag}-{i // 2}"))
    path = root / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "tags", "group"])
        w.writerows(rows)
    return path


def test_evaluate_end_to_end_writes_tables_and_plots(labelled_csv, tmp_path):
    from clapknn.labels import load_examples

    ex = load_examples(labelled_csv)
    assert {e.group for e in ex.examples} == {f"{t}-{g}" for t in ("calm", "energetic") for g in range(3)}
    report = evaluate(
        labelled_csv, shots=(1, 2), n_episodes=3, folds=3, k=(1, 5), weights=("uniform", "similarity"),
        snippet_seconds=(1.0, 1.5), out_dir=tmp_path / "out", cache=tmp_path / "cache",
    )
    assert report.dataset["n_groups"] == 6 and report.dataset["n_tracks"] == 12
    t = report.table
    assert set(t["method"]) == {"knn", "majority", "centroid", "logreg"}
    assert set(t["snippet_seconds"]) == {1.0, 1.5}
    assert set(t["protocol"]) == {"episodes", "cv"}
    knn = report.rows(method="knn", protocol="episodes", snippet_seconds=1.0)
    assert (knn["accuracy"] > 0.9).all()
    majority = report.rows(method="majority", protocol="episodes", snippet_seconds=1.0)
    np.testing.assert_allclose(majority["balanced_accuracy"], 0.5)
    assert (t["chance_accuracy"] == 0.5).all()
    for name in ("confusion", "learning_curve", "snippet_length", "embedding_map"):
        assert report.plots[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((tmp_path / "out" / "report.json").read_text())
    assert payload["dataset"]["n_tracks"] == 12 and len(payload["table"]) == len(t)
    text = report.text()
    assert "chance" in text and "logistic regression" in text and "snippet length" in text
    assert len([d for d in (tmp_path / "cache").iterdir() if (d / "settings.json").exists()]) == 2


def test_evaluate_rows_are_what_the_tagger_gives_for_every_k_weighting_and_length(labelled_csv, tmp_path):
    """Each (snippet length, k, weighting) row of an episode equals what ``clapknn tag`` does on
    the same split: an index built from the episode's support files, tagged with ``Tagger(k=...,
    weights=...)``; the vote's space is fitted on the examples alone, so a sweep cannot reuse
    another k's choice."""
    from pathlib import Path

    from clapknn import Tagger, build_index
    from clapknn.evaluation import METRICS
    from clapknn.evaluation.metrics import predict_tags
    from clapknn.labels import tag_indicator
    from clapknn.labels import Example, ExampleSet
    from clapknn.options import WEIGHTS

    cache = tmp_path / "cache"
    ks, lengths = (1, 3, 5), (1.0, 1.5)
    report = evaluate(labelled_csv, shots=(2,), n_episodes=2, folds=0, k=ks, weights=WEIGHTS, snippet_seconds=lengths,
                      space="auto", baselines=False, cache=cache, seed=3)
    base = report.embeddings[1.0]
    episodes = few_shot_episodes(base.tags, base.groups, shots=2, n_episodes=2, seed=3)
    checked = 0
    for length in lengths:
        for run, (sup, qry) in enumerate(episodes):
            support = ExampleSet([Example(Path(base.paths[i]), tuple(base.tags[i]), str(base.groups[i])) for i in sup])
            index = build_index(support, snippet_seconds=length, cache=cache)
            for k in ks:
                for w in WEIGHTS:
                    tagger = Tagger(index, k=k, weights=w)
                    assert tagger.estimator.standardized_ == bool(
                        report.spaces.query("snippet_seconds == @length and run == @run")["standardized"].iloc[0])
                    tracks = tagger.tag([base.paths[i] for i in qry], cache=cache).tracks
                    truth = dict(zip(base.paths, base.tags))
                    y_true = tag_indicator([truth[p] for p in tracks["path"]], report.tags)
                    scores = tracks[[f"score:{t}" for t in report.tags]].to_numpy(dtype=np.float64)
                    want, _ = track_metrics(y_true, scores, predict_tags(scores, False), False)
                    row = report.runs.query("snippet_seconds == @length and run == @run and method == 'knn' "
                                            "and k == @k and weights == @w")
                    assert len(row) == 1
                    for m in METRICS:
                        assert row[m].iloc[0] == pytest.approx(want[m], abs=1e-9, nan_ok=True), (length, run, k, w, m)
                    checked += 1
    assert checked == len(lengths) * len(episodes) * len(ks) * len(WEIGHTS)


def test_embeddings_are_read_back_from_the_cache(labelled_csv, tmp_path):
    from clapknn.encoders.features import FeaturesEncoder
    from clapknn.evaluation import embed_examples

    first = embed_examples(labelled_csv, snippet_seconds=1.0, cache=tmp_path)

    class Refuses(FeaturesEncoder):
        def embed(self, snippets):
            raise AssertionError("embedded again instead of reading the cache")

    again = embed_examples(labelled_csv, Refuses(), snippet_seconds=1.0, cache=tmp_path)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    assert again.paths == first.paths and list(again.groups) == list(first.groups)


def test_parallel_embedding_gives_the_same_vectors(labelled_csv):
    from clapknn.evaluation import embed_examples

    one = embed_examples(labelled_csv, snippet_seconds=1.5)
    two = embed_examples(labelled_csv, snippet_seconds=1.5, workers=2)
    np.testing.assert_array_equal(one.track, two.track)
    np.testing.assert_allclose(one.vectors, two.vectors, atol=1e-6)


def test_cli_evaluate(labelled_csv, tmp_path, capsys):
    from clapknn.cli import main

    code = main([
        "evaluate", str(labelled_csv), "--shots", "1,2", "--episodes", "2", "--folds", "0", "-k", "1,3",
        "--snippet-seconds", "1", "--out", str(tmp_path / "ev"), "--no-plots", "-q",
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "kNN (k=3, similarity)" in out or "kNN (k=1, similarity)" in out
    assert (tmp_path / "ev" / "summary.csv").exists()
    assert not list((tmp_path / "ev").glob("*.png"))


def test_cli_evaluate_writes_the_predictions_from_another_folder(labelled_csv, tmp_path, capsys, monkeypatch):
    """``--predictions`` writes predictions.csv beside the other tables (run from another working
    directory, the paths of the labels CSV resolved as given); without ``--out`` it is refused in
    one line, before anything is embedded."""
    from clapknn.cli import main

    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    code = main(["evaluate", str(labelled_csv), "--shots", "2", "--episodes", "2", "--folds", "0", "-k", "3",
                 "--snippet-seconds", "1", "--no-baselines", "--out", "ev out", "--no-plots", "--predictions", "-q"])
    assert code == 0
    capsys.readouterr()
    pred = pd.read_csv(work / "ev out" / "predictions.csv")
    runs = pd.read_csv(work / "ev out" / "runs.csv")
    assert len(pred) == runs["n_queries"].sum()
    assert set(pred["method"]) == {"knn"} and set(pred["predicted"]) <= {"calm", "energetic"}
    shares = pred.groupby(["weights", "run"])["correct"].mean()
    assert len(shares) == len(runs) == 2 * 3  # two episodes, each weighting
    assert shares.to_numpy() == pytest.approx(runs.set_index(["weights", "run"])["accuracy"].reindex(shares.index).to_numpy())
    assert main(["evaluate", str(labelled_csv), "--predictions", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_evaluate_reports_a_bad_setting(labelled_csv, capsys):
    from clapknn.cli import main

    assert main(["evaluate", str(labelled_csv), "--weights", "loud", "-q"]) == 2
    assert "clapknn: error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- small and odd example sets
def _small_set(root, per_tag=3, seconds=3.0, extra=None):
    """A folder per tag of synthesised clips (``extra``: {tag: n_files} for more tags)."""
    make_examples(root, per_tag=per_tag, seconds=seconds)
    for j, (tag, n) in enumerate((extra or {}).items()):
        for i in range(n):
            write_audio(root / tag / f"{tag}_{i}.wav", tone(330.0 * (1 + 0.3 * j) * (1 + 0.02 * i), seconds, seed=20 + i))
    return root


def _evaluate_cli(capsys, *argv):
    from clapknn.cli import main

    code = main(["evaluate", *map(str, argv), "-q"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_readme_command_on_three_files_per_tag(tmp_path, capsys):
    """The README's command on a set of 3 files per tag (the tour's 2-5): shot counts that need more
    files and the 5 folds are adapted with a note, and a report is written (plots included)."""
    examples = _small_set(tmp_path / "examples", per_tag=3, seconds=6.0)
    code, out, err = _evaluate_cli(capsys, examples, "--shots", "1,2,5", "-k", "1,3,5,10", "--snippet-seconds", "2,5,10",
                                   "--episodes", "3", "--out", tmp_path / "eval")
    assert code == 0, err
    assert "few-shot episodes" in out and "grouped 3-fold cross-validation" in out
    assert "note: shot count 5 skipped" in out and "groups per tag: calm 3, energetic 3" in out
    assert "note: cross-validation: 3 folds instead of 5" in out
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert set(summary["shots"].dropna()) == {1, 2} and set(summary["snippet_seconds"]) == {2, 5, 10}
    cv = summary[summary["protocol"] == "cv"]
    assert (cv["n_runs"] == 3).all()
    for name in ("confusion", "learning_curve", "snippet_length", "embedding_map"):
        assert (tmp_path / "eval" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["config"]["folds_run"] == 3


def test_two_files_per_tag_runs_one_shot_and_two_folds(tmp_path, capsys):
    examples = _small_set(tmp_path / "examples", per_tag=2)
    code, out, err = _evaluate_cli(capsys, examples, "--episodes", "2", "--no-plots")
    assert code == 0, err
    assert "note: shots 2, 5, 10, 20 skipped" in out and "2 folds instead of 5" in out
    assert "grouped 2-fold cross-validation" in out


@pytest.mark.parametrize("case", ["one file per tag", "all files in one group", "one tag", "shots too large"])
def test_sets_too_small_to_evaluate_give_one_line(tmp_path, capsys, case):
    examples = _small_set(tmp_path / "examples", per_tag=1 if case == "one file per tag" else 3)
    argv = [examples, "--episodes", "2", "--no-plots"]
    if case == "all files in one group":
        labels = tmp_path / "labels.csv"
        labels.write_text("path,tags,group\n" + "".join(
            f"{p.relative_to(examples)},{p.parent.name},album\n" for p in sorted(examples.rglob("*.wav"))))
        argv += ["--labels", labels]
    if case == "one tag":
        import shutil

        shutil.rmtree(examples / "energetic")
    if case == "shots too large":
        argv += ["--shots", "3,4", "--folds", "0"]
    code, out, err = _evaluate_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("clapknn: error: ") and err.count("\n") == 1, err
    expected = {
        "one file per tag": "groups per tag: calm 1, energetic 1",
        "all files in one group": "groups per tag: calm 1, energetic 1",
        "one tag": "at least two tags",
        "shots too large": "shots 3, 4 skipped",
    }[case]
    assert expected in err


def test_a_tag_with_a_single_file_is_left_out_with_a_note(tmp_path, capsys):
    examples = _small_set(tmp_path / "examples", per_tag=3, extra={"rare": 1})
    code, out, err = _evaluate_cli(capsys, examples, "--shots", "1", "--episodes", "2", "--folds", "2", "--no-plots")
    assert code == 0, err
    assert "note: tag(s) rare left out" in out
    assert "6 tracks in 6 groups, 2 tags" in out


def test_snippets_longer_than_the_files(tmp_path, capsys):
    """Each 3-s file gives one (short) snippet at 30 s: the evaluation runs on those."""
    examples = _small_set(tmp_path / "examples", per_tag=3)
    code, out, err = _evaluate_cli(capsys, examples, "--snippet-seconds", "1,30", "--shots", "1", "--episodes", "2",
                                   "--folds", "2", "--out", tmp_path / "eval", "--no-plots")
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert set(summary["snippet_seconds"]) == {1, 30}


@pytest.mark.parametrize("argv, message", [
    (["--folds", "1"], "folds must be 0 (none) or at least 2"),
    (["--shots", "0"], "shots must be positive"),
    (["--shots", "", "--folds", "0"], "nothing to evaluate"),
    (["--episodes", "0"], "n_episodes must be at least 1"),
    (["--snippet-seconds", "0"], "snippet length must be a positive number"),
    (["--hop-seconds", "-1"], "hop must be a positive number"),
    (["-k", "0"], "k must be positive"),
])
def test_bad_evaluate_settings_are_one_line_before_any_embedding(tmp_path, capsys, monkeypatch, argv, message):
    import clapknn.evaluation.run

    def refuse(*a, **k):
        raise AssertionError("embedded before the settings were checked")

    monkeypatch.setattr(clapknn.evaluation.run, "embed_examples", refuse)
    examples = _small_set(tmp_path / "examples", per_tag=3)
    code, out, err = _evaluate_cli(capsys, examples, *argv)
    assert code == 2 and err.startswith("clapknn: error: ") and err.count("\n") == 1 and message in err, err


def test_an_output_path_that_is_a_file_is_refused_first(tmp_path, capsys):
    examples = _small_set(tmp_path / "examples", per_tag=3)
    (tmp_path / "eval").write_text("keep")
    code, _, err = _evaluate_cli(capsys, examples, "--out", tmp_path / "eval")
    assert code == 2 and "is a file" in err and (tmp_path / "eval").read_text() == "keep"


def test_folds_adapt_to_the_smallest_tag():
    tags = [("a",)] * 6 + [("b",)] * 3
    groups = [f"g{i}" for i in range(9)]
    folds = grouped_folds(tags, groups, n_folds=5)
    assert len(folds) == 3
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(9))
    with pytest.raises(ParameterError, match="tag 'b' has 1 group"):
        grouped_folds([("a",)] * 4 + [("b",)], [f"g{i}" for i in range(5)], n_folds=2)


def test_progress_over_the_splits_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    """evaluate draws a bar over its episodes and folds on a terminal, nothing into a pipe or file."""
    examples = _small_set(tmp_path / "examples", per_tag=3)
    argv = [examples, "--shots", "1", "--episodes", "2", "--folds", "2", "--no-plots"]
    from clapknn.cli import main

    assert main(["evaluate", *map(str, argv)]) == 0
    assert capsys.readouterr().err == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["evaluate", *map(str, argv)]) == 0
    # 2 episodes + 2 folds; the bar says the first split is loading until it is done
    assert re.search(r"evaluating \(first split: loading\): +0%\|[^|]*\| 0/4 ", terminal.getvalue())
    drawn = len(terminal.getvalue())
    assert main(["evaluate", *map(str, argv), "-q"]) == 0
    assert terminal.getvalue()[drawn:] == ""


def test_evaluate_reads_the_query_windows_the_tagger_reads(labelled_csv, tmp_path):
    """With snippet sampling (at most N snippets per query track, as ``clapknn tag`` reads them),
    an episode's row equals ``Tagger(max_snippets=N)`` on the same split; the support keeps every
    snippet, as ``build_index`` does."""
    from pathlib import Path

    from clapknn import Tagger, build_index
    from clapknn.evaluation import METRICS
    from clapknn.evaluation.metrics import predict_tags
    from clapknn.labels import tag_indicator
    from clapknn.labels import Example, ExampleSet

    cache = tmp_path / "cache"
    report = evaluate(labelled_csv, shots=(2,), n_episodes=2, folds=0, k=(3,), weights=("similarity",),
                      snippet_seconds=(0.5,), baselines=False, cache=cache, seed=1, max_snippets=2)
    base = report.embeddings[0.5]
    assert np.bincount(base.track).max() > 2  # some track has more windows than are read
    for run, (sup, qry) in enumerate(few_shot_episodes(base.tags, base.groups, shots=2, n_episodes=2, seed=1)):
        support = ExampleSet([Example(Path(base.paths[i]), tuple(base.tags[i]), str(base.groups[i])) for i in sup])
        tagger = Tagger(build_index(support, snippet_seconds=0.5, cache=cache), k=3, max_snippets=2)
        tracks = tagger.tag([base.paths[i] for i in qry], cache=cache).tracks
        assert tracks["n_snippets"].max() <= 2
        truth = dict(zip(base.paths, base.tags))
        y_true = tag_indicator([truth[p] for p in tracks["path"]], report.tags)
        scores = tracks[[f"score:{t}" for t in report.tags]].to_numpy(dtype=np.float64)
        want, _ = track_metrics(y_true, scores, predict_tags(scores, False), False)
        row = report.runs.query("run == @run and method == 'knn'")
        for m in METRICS:
            assert row[m].iloc[0] == pytest.approx(want[m], abs=1e-9, nan_ok=True), (run, m)


def test_ranking_metrics_are_scikit_learns_per_tag():
    """ROC-AUC and PR-AUC per tag are ``roc_auc_score`` and ``average_precision_score`` of that
    tag against the rest, exactly; a tag every query has is left out (nan)."""
    rng = np.random.default_rng(4)
    y_true = (rng.random((30, 4)) < 0.5).astype(int)
    y_true[:, 3] = 1
    scores = np.round(rng.random((30, 4)) * 3) / 3
    _, per = track_metrics(y_true, scores, (scores >= 0.5).astype(int), multilabel=True)
    for j in range(3):
        assert per["roc_auc"][j] == skm.roc_auc_score(y_true[:, j], scores[:, j])
        assert per["pr_auc"][j] == skm.average_precision_score(y_true[:, j], scores[:, j])
    assert np.isnan(per["roc_auc"][3]) and np.isnan(per["pr_auc"][3])
