"""Index directory: round trip, validation, encoder mismatch, atomic writes; labels from folders/CSV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapknn import Index, Tagger, build_index, load_examples
from clapknn.encoders.features import FeaturesEncoder
from clapknn.errors import EncoderMismatchError, IndexFormatError, LabelError

from conftest import make_examples, tone, write_audio


def test_round_trip(built_index, tmp_path):
    index, root = built_index
    loaded = Index.load(root / "index")
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    pd.testing.assert_frame_equal(loaded.metadata.reset_index(drop=True), index.metadata.reset_index(drop=True))
    m = loaded.manifest
    assert m["format_version"] == 1 and m["dim"] == index.dim and m["n_vectors"] == len(index)
    assert m["encoder"]["name"] == "features" and m["snippet_seconds"] == 2.0 and m["hop_seconds"] == 2.0
    assert m["tags"] == ["calm", "energetic"] and m["n_files"] == 6
    assert {"index.faiss", "metadata.parquet", "vote.json"} <= set(m["checksums"]) <= {
        "index.faiss", "metadata.parquet", "vote.json", "vote.faiss"}
    assert "numpy" in m["versions"] and m["created"]
    # rows align with vector ids: each row's source file, re-embedded, gives that vector
    from clapknn.embedding.encode import embed_files

    for i in (0, 4, len(loaded) - 1):
        row = loaded.metadata.iloc[i]
        assert len(row["sha256"]) == 64 and row["kind"] == "audio" and row["end"] > row["start"]
        again = embed_files([row["path"]], FeaturesEncoder(), snippet_seconds=2.0, hashes=False)
        at = np.flatnonzero(np.isclose(again.snippets["start"].to_numpy(float), row["start"]))
        assert len(at) == 1
        np.testing.assert_allclose(loaded.vectors[i], again.vectors[at[0]], atol=1e-5)
    assert np.allclose(np.linalg.norm(loaded.vectors, axis=1), 1.0, atol=1e-5)


def test_same_input_same_vectors_across_batch_sizes(examples_dir, tmp_path):
    a = build_index(examples_dir, snippet_seconds=2.0, batch_size=1)
    b = build_index(examples_dir, snippet_seconds=2.0, batch_size=7)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_encoder_mismatch_names_the_difference(built_index):
    index, root = built_index
    with pytest.raises(EncoderMismatchError, match="sample_rate"):
        Tagger(Index.load(root / "index"), encoder=FeaturesEncoder(sample_rate=16000))


def test_an_index_of_another_features_recipe_says_to_rebuild(built_index, tmp_path):
    import json
    import shutil

    from clapknn.index import MANIFEST_FILE

    _, root = built_index
    old = tmp_path / "old"
    shutil.copytree(root / "index", old)
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    manifest["encoder"]["recipe"] -= 1  # as written by an earlier clapknn
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(EncoderMismatchError, match=r"recipe: index has .*rebuild it with this version of clapknn \(clapknn build"):
        Tagger(Index.load(old))
    # a difference that rebuilding does not mend gets no such advice
    with pytest.raises(EncoderMismatchError) as err:
        Tagger(Index.load(root / "index"), encoder=FeaturesEncoder(sample_rate=16000))
    assert "rebuild" not in str(err.value)


def test_load_errors(tmp_path, built_index):
    _, root = built_index
    with pytest.raises(IndexFormatError, match="no such index"):
        Index.load(tmp_path / "missing")
    (tmp_path / "notindex").mkdir()
    with pytest.raises(IndexFormatError, match="not a clapknn index"):
        Index.load(tmp_path / "notindex")
    copy = tmp_path / "copy"
    shutil.copytree(root / "index", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="version 99"):
        Index.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(root / "index", copy)
    with open(copy / "metadata.parquet", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(IndexFormatError, match="checksum"):
        Index.load(copy)


def test_failed_build_keeps_previous_index(examples_dir, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    first = build_index(examples_dir, out, snippet_seconds=2.0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(examples_dir, out, snippet_seconds=3.0)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert Index.load(out).snippet_seconds == first.snippet_seconds


def test_save_refuses_to_overwrite_a_non_index_folder(built_index, tmp_path):
    index, _ = built_index
    target = tmp_path / "music"
    target.mkdir()
    (target / "song.mp3").write_bytes(b"x")
    with pytest.raises(IndexFormatError, match="not a clapknn index"):
        index.save(target)
    assert (target / "song.mp3").exists()


def test_interrupted_swap_is_recovered(built_index, tmp_path):
    """A save killed between its two renames leaves the old index in .<name>.previous: load and
    the next save recover it."""
    index, _ = built_index
    out = tmp_path / "idx"
    index.save(out)
    out.rename(tmp_path / ".idx.previous")
    assert len(Index.load(out)) == len(index)
    index.save(out)
    assert out.is_dir() and not (tmp_path / ".idx.previous").exists()


def test_labels_from_csv(tmp_path):
    make_examples(tmp_path / "ex", per_tag=2)
    csv = tmp_path / "ex" / "labels.csv"
    csv.write_text(
        "path,tags,comment\n"
        "calm/calm_0.wav,calm;quiet,first\n"
        "energetic/energetic_0.wav, energetic | loud ,\n"
        ",calm,\n"
        "calm/calm_1.wav,,\n"
        "calm/calm_0.wav,soft,\n"
    )
    ex = load_examples(csv)
    assert [(e.path.name, e.tags) for e in ex.examples] == [
        ("calm_0.wav", ("calm", "quiet", "soft")),
        ("energetic_0.wav", ("energetic", "loud")),
    ]
    assert [w.rsplit(":", 1)[1] for w, _ in ex.problems] == ["4", "5"]
    assert any("comment" in n for n in ex.notes) and any("merged" in n for n in ex.notes)


@pytest.mark.parametrize(
    "content, match",
    [("file,label\na.wav,x\n", "'path' and 'tags'"), ("", "'path' and 'tags'"), (b"\xff\xfe\x00bad", "UTF-8")],
)
def test_bad_csv(tmp_path, content, match):
    f = tmp_path / "labels.csv"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LabelError, match=match):
        load_examples(f)


def test_missing_files_are_reported_and_build_goes_on(tmp_path):
    make_examples(tmp_path / "ex", per_tag=2)
    (tmp_path / "ex" / "labels.csv").write_text(
        "path,tags\ncalm/calm_0.wav,calm\nenergetic/energetic_0.wav,energetic\ngone.wav,calm\n"
    )
    index = build_index(tmp_path / "ex" / "labels.csv", snippet_seconds=2.0)
    skipped = index.report.skipped
    assert len(skipped) == 1 and skipped[0][0].endswith("gone.wav") and "no such file" in skipped[0][1]
    assert index.report.n_used == 2


def test_build_fails_when_nothing_is_usable(tmp_path):
    (tmp_path / "ex" / "calm").mkdir(parents=True)
    (tmp_path / "ex" / "calm" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    write_audio(tmp_path / "ex" / "calm" / "silence.wav", np.zeros(22050, dtype=np.float32))
    with pytest.raises(LabelError, match="no usable example"):
        build_index(tmp_path / "ex", snippet_seconds=1.0)
    with pytest.raises(LabelError, match="no labelled examples"):
        (tmp_path / "empty").mkdir()
        build_index(tmp_path / "empty")


def test_tag_array_and_files_agree(built_index, tmp_path):
    index, _ = built_index
    y = tone(880, 4.0, pulse_bpm=150.0, seed=9)
    path = write_audio(tmp_path / "q.wav", y, subtype="FLOAT")
    tagger = Tagger(index)
    from_file = tagger.tag(path).tracks
    from_array = tagger.tag_array(y, 22050).tracks
    assert from_file["top"].iat[0] == from_array["top"].iat[0] == "energetic"
    np.testing.assert_allclose(from_file["score"], from_array["score"], atol=1e-5)


def test_moved_checkpoint_with_same_hash_is_no_mismatch():
    from clapknn.index import describe_mismatch

    built = {"name": "clap", "checkpoint": "/old/ckpt.pt", "checkpoint_sha256": "ab" * 32}
    assert describe_mismatch(built, dict(built, checkpoint="/new/ckpt.pt")) == []
    other = dict(built, checkpoint="/new/ckpt.pt", checkpoint_sha256="cd" * 32)
    assert [d.split(":")[0] for d in describe_mismatch(built, other)] == ["checkpoint", "checkpoint_sha256"]


def test_groups_from_the_labels_csv_are_kept_and_left_out_together(tmp_path, monkeypatch):
    """A labels CSV's group column is stored per vector, survives save/load, and the vote's
    leave-one-out (the choice of space) leaves a whole group out rather than a file."""
    import clapknn.vote as vote
    from clapknn import build_index, load_index
    from clapknn.tagging.tagger import example_groups

    make_examples(tmp_path / "ex", per_tag=2)
    csv = tmp_path / "ex" / "labels.csv"
    csv.write_text(
        "path,tags,group\n"
        "calm/calm_0.wav,calm,album-a\n"
        "calm/calm_1.wav,calm,album-a\n"
        "energetic/energetic_0.wav,energetic,\n"
        "energetic/energetic_1.wav,energetic,album-b\n"
    )
    build_index(csv, tmp_path / "idx", snippet_seconds=2.0)
    index = load_index(tmp_path / "idx")
    by_file = index.metadata.groupby(index.metadata["path"].map(lambda p: Path(p).name))["group"].first()
    assert by_file.to_dict() == {"calm_0.wav": "album-a", "calm_1.wav": "album-a", "energetic_0.wav": "", "energetic_1.wav": "album-b"}
    groups = example_groups(index.metadata)
    names = index.metadata["path"].map(lambda p: Path(p).name).to_numpy()
    assert len(set(groups[np.isin(names, ["calm_0.wav", "calm_1.wav"])])) == 1  # one album
    assert len(set(groups[names == "energetic_0.wav"])) == 1 and groups[names == "energetic_0.wav"][0].startswith("file:")
    seen = {}
    fit = vote.KNNTagger.fit

    def spy(self, X, y, groups=None):
        seen["groups"] = groups
        return fit(self, X, y, groups)

    monkeypatch.setattr(vote.KNNTagger, "fit", spy)
    index.vote = None  # fitted here, as the build fitted it
    Tagger(index).estimator  # waits for the vote's fit (set up in a thread)
    np.testing.assert_array_equal(seen["groups"], groups)
    # an index without the column (built before it existed) groups by file
    old = index.metadata.drop(columns=["group"])
    assert len(set(example_groups(old))) == 4


# --------------------------------------------------------------------------- the saved vote
def _no_fit(monkeypatch):
    from clapknn.vote import KNNTagger

    def refused(self, *a, **k):
        raise AssertionError("the vote was fitted again")

    monkeypatch.setattr(KNNTagger, "fit", refused)


def _queries(index, n=7, seed=3):
    rng = np.random.default_rng(seed)
    q = index.vectors[rng.choice(len(index), size=n, replace=False)] + rng.normal(0, 0.05, (n, index.dim))
    return q.astype(np.float32)


def test_a_loaded_index_is_tagged_with_the_saved_vote_without_fitting(built_index, monkeypatch):
    index, root = built_index
    fresh = Index.load(root / "index")
    fresh.vote = None  # as an index saved without the vote: fitted on load
    fitted = Tagger(fresh).estimator  # the vote is set up in a thread: wait for its fit here
    loaded = Index.load(root / "index")
    assert loaded.vote is not None
    _no_fit(monkeypatch)
    restored = Tagger(loaded)
    assert restored.estimator.search_index is loaded.vote_index()  # the saved FAISS index is what is searched
    assert restored.estimator.standardized_ == fitted.standardized_
    q = _queries(loaded)
    np.testing.assert_allclose(restored.estimator.predict_proba(q), fitted.predict_proba(q), atol=1e-6)
    np.testing.assert_array_equal(restored.estimator.similarities(q)[1], fitted.similarities(q)[1])


def test_other_vote_settings_fit_again_and_the_others_do_not(built_index, monkeypatch):
    from clapknn.vote import KNNTagger

    index, root = built_index
    loaded = Index.load(root / "index")
    calls = []
    real_fit = KNNTagger.fit

    def counted(self, *a, **k):
        calls.append(self.get_params())
        return real_fit(self, *a, **k)

    monkeypatch.setattr(KNNTagger, "fit", counted)
    # .estimator waits for the vote, which the constructor sets up in a thread
    Tagger(loaded, threshold=0.3).estimator  # no fitted attribute depends on the threshold
    assert calls == []
    Tagger(loaded, space="plain").estimator  # another space
    assert len(calls) == 1 and calls[-1]["standardize"] is False
    Tagger(loaded, k=3, weights="uniform").estimator  # the "auto" choice of space does not depend on k or weights
    assert len(calls) == 1


def test_an_index_without_the_saved_vote_still_loads_and_tags_alike(built_index, tmp_path):
    index, root = built_index
    old = tmp_path / "old"
    shutil.copytree(root / "index", old)
    manifest = json.loads((old / "manifest.json").read_text())
    for name in ("vote.json", "vote.faiss"):
        manifest["checksums"].pop(name, None)
        (old / name).unlink(missing_ok=True)
    (old / "manifest.json").write_text(json.dumps(manifest))
    legacy = Index.load(old)
    assert legacy.vote is None and legacy.vote_index() is None
    q = _queries(legacy)
    np.testing.assert_allclose(
        Tagger(legacy).estimator.predict_proba(q), Tagger(Index.load(root / "index")).estimator.predict_proba(q), atol=1e-6
    )


def test_a_damaged_saved_vote_is_refused(built_index, tmp_path):
    index, root = built_index
    bad = tmp_path / "bad"
    shutil.copytree(root / "index", bad)
    (bad / "vote.json").write_text((bad / "vote.json").read_text().replace("true", "false", 1) + " ")
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.load(bad)


@pytest.mark.parametrize("standardize", [False, True, "auto"])
def test_fitted_state_round_trip_gives_the_fitted_votes(standardize, tmp_path):
    from clapknn.index import _from_json, _to_json
    from clapknn.vote import KNNTagger

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 12)).astype(np.float32)
    y = [["a"] if i % 3 else ["b", "c"] for i in range(120)]
    X[:, :4] += np.array([[2.0 if "a" in t else -2.0] for t in y], dtype=np.float32)
    groups = np.arange(120) // 4
    blocks = [(0, 4, 1.0), (4, 12, 0.5)]
    est = KNNTagger(5, standardize=standardize, feature_blocks=blocks, block_relevance=True).fit(X, y, groups=groups)
    state = _from_json(json.loads(json.dumps(_to_json(est.fitted_state()))))
    import faiss

    faiss.write_index(est.search_index, str(tmp_path / "v.faiss"))
    again = KNNTagger.from_fitted_state(state, y, search_index=faiss.read_index(str(tmp_path / "v.faiss")))
    q = rng.normal(size=(9, 12)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_proba(q), est.predict_proba(q))
    np.testing.assert_array_equal(again.predict(q), est.predict(q))
    assert again.standardized_ == est.standardized_ and list(again.classes_) == list(est.classes_)
    # the state depends on neither k nor weights (nor, with "auto", does the choice of space):
    # a restored tagger votes with another k as a tagger fitted with it does
    other = KNNTagger.from_fitted_state(state, y, search_index=est.search_index, n_neighbors=9, weights="uniform")
    refit = KNNTagger(9, weights="uniform", standardize=standardize, feature_blocks=blocks, block_relevance=True)
    np.testing.assert_allclose(other.predict_proba(q), refit.fit(X, y, groups=groups).predict_proba(q), atol=1e-6)
    assert not KNNTagger.state_fits(state, {**state["params"], "block_relevance": False})
    assert KNNTagger.state_fits(state, state["params"])
    assert not KNNTagger.state_fits({**state, "rules": KNNTagger.FIT_RULES + 1}, state["params"])  # other fitting rules


def test_a_vote_in_the_plain_space_shares_the_index_vectors(built_index):
    index, root = built_index
    loaded = Index.load(root / "index")
    loaded.set_vote(Tagger(loaded, space="plain").estimator)
    assert loaded.vote_index() is loaded.faiss_index  # one copy of the vectors, searched as saved
    loaded.set_vote(Tagger(loaded, space="standardized").estimator)
    assert loaded.vote_index() is not loaded.faiss_index and loaded.vote_index().ntotal == len(loaded)
