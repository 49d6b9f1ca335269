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
    assert set(m["checksums"]) == {"index.faiss", "metadata.parquet"}
    assert "numpy" in m["versions"] and m["created"]
    # rows align with vector ids: each row's source file, re-embedded, gives that vector
    from clapknn.encode import embed_files

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
    from clapknn.tagger import example_groups

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
    Tagger(index)
    np.testing.assert_array_equal(seen["groups"], groups)
    # an index without the column (built before it existed) groups by file
    old = index.metadata.drop(columns=["group"])
    assert len(set(example_groups(old))) == 4
