"""Property-based tests (hypothesis): snippet cutting, the kNN vote, label-file parsing and the index
round trip hold their contracts for any input hypothesis can think of, not just the examples we
wrote down."""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clapknn.audio import snippet
from clapknn.tagging.aggregate import aggregate, select_tags
from clapknn.errors import ParameterError
from clapknn.index import Index
from clapknn.labels import load_examples, split_tags
from clapknn.vote import KNNTagger, vote_scores

FAST = settings(max_examples=150, deadline=None)
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

seconds = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- snippets
@FAST
@given(duration=st.floats(min_value=-5.0, max_value=1000.0, allow_nan=False), length=seconds,
       hop=st.one_of(st.none(), seconds))
def test_snippet_starts_tile_the_track(duration, length, hop):
    starts = snippet.snippet_starts(duration, length, hop)
    step = length if hop is None else hop
    if duration <= 0:
        assert starts.size == 0
        return
    assert starts[0] == 0.0
    if duration < length:
        assert starts.tolist() == [0.0]  # one repeat-padded window
        return
    count = int(np.floor((duration - length) / step + 1e-9)) + 1
    regular = starts[:count]  # every hop...
    np.testing.assert_allclose(np.diff(regular), step, rtol=1e-6, atol=1e-5)
    assert regular[-1] + length <= duration + 1e-6  # every window lies inside the track
    assert regular[-1] + step + length > duration - 1e-6  # and no further regular window would fit
    leftover = duration - (regular[-1] + length)
    if starts.size > count:  # ...then the end-aligned tail window, only for a long enough tail
        assert starts.size == count + 1
        assert starts[-1] == pytest.approx(duration - length, abs=1e-6)
        assert leftover >= snippet.TAIL_MIN_FRACTION * length - 1e-6
    else:
        assert leftover < snippet.TAIL_MIN_FRACTION * length + 1e-6


@FAST
@given(length=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf)))
def test_snippet_length_must_be_positive_and_finite(length):
    with pytest.raises(ParameterError):
        snippet.snippet_starts(10.0, length)


@FAST
@given(
    y=hnp.arrays(np.float32, st.integers(0, 700), elements=st.floats(-1, 1, width=32)),
    sr=st.integers(10, 60),
    length=st.floats(0.1, 5.0),
    hop=st.one_of(st.none(), st.floats(0.1, 5.0)),
)
def test_cut_gives_full_windows_of_the_track_itself(y, sr, length, hop):
    b = snippet.cut(y, sr, length, hop)
    size = snippet.n_samples(length, sr)
    assume(size > 0)
    starts = snippet.snippet_starts(y.size / sr, length, hop)
    assert b.audio.shape == (len(b.starts), size) and b.audio.dtype == np.float32
    assert len(b.starts) + b.n_silent == len(starts)  # each window is kept or counted as silent
    assert set(b.starts.tolist()) <= set(starts.tolist())
    assert np.all(b.ends <= y.size / sr + 1e-9) and np.all(b.ends > b.starts)
    for s, row in zip(b.starts, b.audio):
        i = int(round(s * sr))
        if y.size >= size:  # an end-aligned tail window is moved back onto the track by rounding
            i = min(i, y.size - size)
        part = y[i : i + size]
        np.testing.assert_array_equal(row[: part.size], part)  # the track's own samples...
        if part.size < size:  # ...looped when the track is shorter than a window
            np.testing.assert_array_equal(row, np.tile(part, -(-size // part.size))[:size])
        assert np.sqrt(np.mean(row.astype(np.float64) ** 2)) >= snippet.SILENCE_RMS


@FAST
@given(y=hnp.arrays(np.float32, st.integers(0, 50), elements=st.floats(-1, 1, width=32)), size=st.integers(1, 200))
def test_repeat_pad(y, size):
    out = snippet.repeat_pad(y, size)
    assert out.shape == (size,)
    if y.size == 0:
        assert not out.any()
    else:
        np.testing.assert_array_equal(out, np.resize(y, size))


# --------------------------------------------------------------------------- the vote
@st.composite
def fitted_data(draw, multilabel: bool):
    """Seeded Gaussian vectors (ties have probability 0) with labels, plus queries."""
    n = draw(st.integers(1, 40))
    dim = draw(st.integers(2, 12))
    n_tags = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((n, dim)).astype(np.float32)
    Q = rng.standard_normal((draw(st.integers(1, 8)), dim)).astype(np.float32)
    names = [f"t{j}" for j in range(n_tags)]
    if multilabel:
        y = [tuple(t for t in names if rng.random() < 0.5) or (names[0],) for _ in range(n)]
    else:
        y = np.array([names[j] for j in rng.integers(0, n_tags, n)])
    return X, y, Q, rng


weights_st = st.sampled_from(["uniform", "distance", "similarity"])


@FAST
@given(data=fitted_data(multilabel=False), k=st.integers(1, 60), weights=weights_st)
def test_single_label_scores_are_a_distribution(data, k, weights):
    X, y, Q, _ = data
    p = KNNTagger(k, weights=weights).fit(X, y).predict_proba(Q)
    assert p.shape == (len(Q), len(np.unique(y)))
    assert np.all(p >= 0) and np.all(p <= 1 + 1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)


@FAST
@given(data=fitted_data(multilabel=True), k=st.integers(1, 60), weights=weights_st)
def test_multilabel_scores_are_in_0_1(data, k, weights):
    X, y, Q, _ = data
    p = KNNTagger(k, weights=weights).fit(X, y).predict_proba(Q)
    assert np.all(p >= 0) and np.all(p <= 1 + 1e-12)


@FAST
@given(data=fitted_data(multilabel=True), k=st.integers(1, 60), weights=weights_st)
def test_vote_does_not_depend_on_the_order_of_examples_or_queries(data, k, weights):
    X, y, Q, rng = data
    base = KNNTagger(k, weights=weights).fit(X, y).predict_proba(Q)
    perm = rng.permutation(len(X))
    shuffled = KNNTagger(k, weights=weights).fit(X[perm], [y[i] for i in perm]).predict_proba(Q)
    np.testing.assert_allclose(shuffled, base, atol=1e-6)
    qperm = rng.permutation(len(Q))
    np.testing.assert_allclose(KNNTagger(k, weights=weights).fit(X, y).predict_proba(Q[qperm]), base[qperm], atol=1e-12)


@FAST
@given(data=fitted_data(multilabel=False), extra=st.integers(0, 100), weights=weights_st)
def test_k_is_capped_at_the_number_of_examples(data, extra, weights):
    X, y, Q, _ = data
    n = len(X)
    capped = KNNTagger(n + extra, weights=weights).fit(X, y)
    np.testing.assert_allclose(capped.predict_proba(Q), KNNTagger(n, weights=weights).fit(X, y).predict_proba(Q))
    dist, ids = capped.kneighbors(Q)
    assert ids.shape == (len(Q), n) and sorted(ids[0].tolist()) == list(range(n))
    assert np.all(np.diff(dist, axis=1) >= -1e-6)  # nearest first


@FAST
@given(data=fitted_data(multilabel=False))
def test_k1_votes_for_the_nearest_example(data):
    X, y, Q, _ = data
    est = KNNTagger(1).fit(X, y)
    ids = est.kneighbors(Q, return_distance=False)[:, 0]
    assert est.predict(Q).tolist() == [y[i] for i in ids]


@FAST
@given(k=st.one_of(st.integers(max_value=0), st.floats(0.5, 3.5), st.none(), st.just("5")))
def test_bad_k_is_a_parameter_error(k):
    with pytest.raises(ParameterError):
        KNNTagger(k).fit(np.eye(3, dtype=np.float32), ["a", "b", "c"])


@FAST
@given(
    sims=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                    elements=st.floats(-1, 1)),
    n_tags=st.integers(1, 4),
    seed=st.integers(0, 1000),
    weights=weights_st,
)
def test_vote_scores_stay_in_0_1_for_any_similarities(sims, n_tags, seed, weights):
    """Including exact matches (similarity 1), all-negative and all-zero similarities."""
    labels = (np.random.default_rng(seed).random((*sims.shape, n_tags)) < 0.5).astype(np.float64)
    s = vote_scores(sims, labels, weights)
    assert s.shape == (sims.shape[0], n_tags)
    assert np.isfinite(s).all() and np.all(s >= 0) and np.all(s <= 1 + 1e-12)


@FAST
@given(
    scores=hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 5)), elements=st.floats(0, 1)),
    n_groups=st.integers(1, 6),
    seed=st.integers(0, 1000),
    method=st.sampled_from(["mean", "max", "vote"]),
)
def test_track_scores_stay_in_0_1_and_within_snippet_range(scores, n_groups, seed, method):
    groups = np.random.default_rng(seed).integers(0, n_groups, len(scores))
    out = aggregate(scores, groups, method=method, n_groups=n_groups)
    assert out.shape == (n_groups, scores.shape[1]) and np.all(out >= 0) and np.all(out <= 1 + 1e-12)
    for g in range(n_groups):
        mine = scores[groups == g]
        if len(mine) and method != "vote":
            assert np.all(out[g] <= mine.max(axis=0) + 1e-12) and np.all(out[g] >= mine.min(axis=0) - 1e-12)
    tags = [f"t{j}" for j in range(scores.shape[1])]
    for row, chosen in zip(out, select_tags(out, tags, threshold=0.3, top_n=2)):
        assert len(chosen) <= 2 and all(row[tags.index(t)] >= 0.3 for t in chosen)


# --------------------------------------------------------------------------- labels
tag_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12)


@FAST
@given(cell=st.text(max_size=60))
def test_split_tags_is_clean_and_idempotent(cell):
    tags = split_tags(cell)
    assert len(set(tags)) == len(tags)
    assert all(t and t == t.strip() and ";" not in t and "|" not in t for t in tags)
    assert split_tags(";".join(tags)) == tags


# names a folder can hold: unicode, spaces, commas, quotes; no separators or dot-only names
file_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\0"), min_size=1, max_size=16
).map(str.strip).filter(lambda s: s and s not in (".", "..")).map(lambda s: s + ".wav")
tag_names = tag_text.map(str.strip).filter(lambda t: t and ";" not in t and "|" not in t)


@SLOW
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(file_names, st.just(""), file_names.map(lambda n: "a\nb " + n), st.just("~x.wav")),
            st.lists(tag_names, max_size=3),
            st.text(max_size=5),
        ),
        max_size=12,
    )
)
def test_label_csv_round_trip(rows):
    """Any CSV the csv module writes reads back: tags merged per file in first-seen order, rows with
    an empty path or no tags reported with the line they end on, extra columns noted."""
    text = io.StringIO()
    w = csv.writer(text)  # "\r\n" ends rows, so a field holding "\r" or "\n" is quoted
    w.writerow(["path", "tags", "comment"])
    expected: dict[str, list[str]] = {}
    problems = []
    for name, tags, comment in rows:
        w.writerow([name, ";".join(tags), comment])
        line = len(re.findall(r"\r\n|\r|\n", text.getvalue()))  # line breaks as the csv reader counts them
        if not name:
            problems.append(line)
        elif not tags:
            problems.append(line)
        else:
            merged = expected.setdefault(name, [])
            merged.extend(t for t in tags if t not in merged)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "labels.csv"
        f.write_bytes(text.getvalue().encode("utf-8"))
        ex = load_examples(f)
    assert {e.path.name: list(e.tags) for e in ex.examples} == expected
    assert all(e.path.parent == Path(d) for e in ex.examples)
    assert [int(w.rsplit(":", 1)[1]) for w, _ in ex.problems] == problems
    assert any("ignored column(s) comment" in n for n in ex.notes)


# --------------------------------------------------------------------------- index round trip
@st.composite
def indexes(draw):
    n = draw(st.integers(1, 30))
    dim = draw(st.integers(1, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vocab = draw(st.lists(tag_names, min_size=1, max_size=4, unique=True))
    tags = [tuple(draw(st.lists(st.sampled_from(vocab), min_size=1, max_size=3, unique=True))) for _ in range(n)]
    paths = draw(st.lists(file_names, min_size=n, max_size=n))
    starts = draw(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=n, max_size=n))
    kind = draw(st.lists(st.sampled_from(["audio", "text"]), min_size=n, max_size=n))
    meta = pd.DataFrame({"path": paths, "start": starts, "end": [s + 10.0 for s in starts], "tags": tags,
                         "sha256": ["ab" * 32] * n, "kind": kind})
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    enc = {"name": draw(st.sampled_from(["features", "clap"])), "sample_rate": 48000, "dim": dim}
    hop = draw(st.floats(0.5, 20.0))
    return Index.from_arrays(vectors, meta, encoder=enc, snippet_seconds=10.0, hop_seconds=hop)


@SLOW
@given(index=indexes())
def test_index_round_trip(index):
    """Save then load gives back the same vectors, metadata and manifest, and the same neighbours."""
    with tempfile.TemporaryDirectory() as d:
        index.save(Path(d) / "idx")
        back = Index.load(Path(d) / "idx")
    np.testing.assert_array_equal(back.vectors, index.vectors)
    pd.testing.assert_frame_equal(back.metadata, index.metadata, check_dtype=False)
    assert back.manifest == index.manifest  # save records the checksums in the saved object too
    assert back.tags == sorted({t for ts in index.metadata["tags"] for t in ts})
    q = index.vectors[:3]
    np.testing.assert_array_equal(back.faiss_index.search(q, 2)[1], index.faiss_index.search(q, 2)[1])
