"""clapknn add / remove: change an index without rebuilding it; manifest and metadata stay consistent."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapknn import build_index
from clapknn.errors import LabelError, ParameterError
from clapknn.incremental import add_examples, remove_examples
from clapknn.index import Index

from conftest import STYLES, make_examples, tone, write_audio

SNIP = 2.0


@pytest.fixture
def two_sets(tmp_path: Path):
    """All examples (3 per tag) and the index of the first two per tag."""
    full = make_examples(tmp_path / "ex", per_tag=3, seconds=4.0)
    first = tmp_path / "first.csv"
    rows = [f"{p},{p.parent.name}" for p in sorted(full.rglob("*.wav")) if not p.stem.endswith("_2")]
    first.write_text("path,tags\n" + "\n".join(rows) + "\n")
    build_index(first, tmp_path / "idx", snippet_seconds=SNIP)
    return full, tmp_path / "idx"


def _sorted(index: Index):
    order = np.lexsort((index.metadata["start"].to_numpy(), index.metadata["path"].astype(str).to_numpy()))
    meta = index.metadata.iloc[order].reset_index(drop=True)
    return index.vectors[order], meta[["path", "start", "end", "tags", "sha256", "kind"]]


def _check_consistent(path: Path) -> Index:
    idx = Index.load(path)  # verifies checksums and counts
    m = idx.manifest
    assert m["n_vectors"] == len(idx) == len(idx.metadata)
    assert m["n_files"] == idx.metadata.loc[idx.metadata["kind"] == "audio", "path"].nunique()
    assert m["tags"] == sorted({t for ts in idx.metadata["tags"] for t in ts})
    return idx


def test_add_equals_a_full_build(two_sets, tmp_path, monkeypatch):
    full, idx_path = two_sets
    created = json.loads((idx_path / "manifest.json").read_text())["created"]
    import clapknn.tagging.build

    embedded: list[str] = []
    real = clapknn.tagging.build.embed_files

    def spy(paths, *a, **k):
        embedded.extend(str(p) for p in paths)
        return real(paths, *a, **k)

    monkeypatch.setattr(clapknn.tagging.build, "embed_files", spy)
    for tag in STYLES:
        _, report = add_examples(idx_path, [full / tag / f"{tag}_2.wav"], tags=[tag])
        assert report.added == [str(full / tag / f"{tag}_2.wav")] and not report.replaced
    assert sorted(Path(p).name for p in embedded) == ["calm_2.wav", "energetic_2.wav"]  # nothing re-embedded
    monkeypatch.setattr(clapknn.tagging.build, "embed_files", real)

    updated = _check_consistent(idx_path)
    assert updated.manifest["created"] == created and "updated" in updated.manifest
    reference = build_index(full, snippet_seconds=SNIP)
    va, ma = _sorted(updated)
    vb, mb = _sorted(reference)
    pd.testing.assert_frame_equal(ma.assign(path=ma["path"].astype(str)), mb.assign(path=mb["path"].astype(str)))
    np.testing.assert_allclose(va, vb, atol=1e-6)


def test_add_replaces_a_file_already_indexed(two_sets):
    full, idx_path = two_sets
    before = Index.load(idx_path)
    f = full / "calm" / "calm_0.wav"
    n_rows = int((before.metadata["path"].astype(str) == str(f)).sum())
    _, report = add_examples(idx_path, [f], tags=["calm", "soft"])
    assert report.replaced == [str(f)]
    after = _check_consistent(idx_path)
    assert len(after) == len(before)
    rows = after.metadata[after.metadata["path"].astype(str) == str(f)]
    assert len(rows) == n_rows and all(t == ("calm", "soft") for t in rows["tags"])
    assert "soft" in after.tags


def test_add_an_example_set_folder_and_new_tag(two_sets, tmp_path):
    _, idx_path = two_sets
    more = tmp_path / "more"
    write_audio(more / "noisy" / "n0.wav", (0.2 * np.random.default_rng(1).standard_normal(4 * 22050)).astype(np.float32))
    write_audio(more / "noisy" / "n1.wav", (0.2 * np.random.default_rng(2).standard_normal(4 * 22050)).astype(np.float32))
    updated, report = add_examples(idx_path, more, out=tmp_path / "copy")
    assert len(report.added) == 2 and report.n_vectors_after == report.n_vectors_before + 4
    copy = _check_consistent(tmp_path / "copy")
    assert "noisy" in copy.tags
    assert "noisy" not in Index.load(idx_path).tags  # out= left the original alone


def test_add_nothing_usable_is_an_error(two_sets, tmp_path):
    _, idx_path = two_sets
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError):
        add_examples(idx_path, [tmp_path / "empty"], tags=["x"])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    with pytest.raises(LabelError):
        add_examples(idx_path, [bad], tags=["x"])
    with pytest.raises(ParameterError):
        add_examples(idx_path, [bad], tags=["  "])
    _check_consistent(idx_path)


def test_remove_by_file_folder_and_tag(two_sets, tmp_path):
    full, idx_path = two_sets
    add_examples(idx_path, [full / "calm" / "calm_2.wav"], tags=["calm", "soft"])
    before = Index.load(idx_path)

    idx, report = remove_examples(idx_path, [full / "calm" / "calm_0.wav", tmp_path / "nowhere.wav"])
    assert report.removed == [str(full / "calm" / "calm_0.wav")]
    assert report.skipped == [(str(tmp_path / "nowhere.wav"), "not in the index")]
    assert len(idx) == len(before) - 2

    idx, report = remove_examples(idx_path, tags=["soft"])
    assert report.untagged == [(str(full / "calm" / "calm_2.wav"), "soft")] and not report.removed
    assert "soft" not in _check_consistent(idx_path).tags

    idx, report = remove_examples(idx_path, [full / "energetic"])  # a folder
    assert sorted(Path(p).name for p in report.removed) == ["energetic_0.wav", "energetic_1.wav"]
    after = _check_consistent(idx_path)
    assert after.tags == ["calm"] and after.manifest["n_files"] == 2

    with pytest.raises(ParameterError, match="empty"):
        remove_examples(idx_path, tags=["calm"])
    with pytest.raises(ParameterError):
        remove_examples(idx_path)
    assert len(Index.load(idx_path)) == len(after)  # a refused removal changed nothing


def test_remove_then_tag_still_works(two_sets):
    from clapknn import Tagger

    full, idx_path = two_sets
    remove_examples(idx_path, [full / "calm" / "calm_1.wav"])
    result = Tagger(idx_path).tag(full / "energetic" / "energetic_2.wav")
    assert result.tracks["top"].iat[0] == "energetic"


def test_concurrent_adds_keep_both(two_sets, tmp_path):
    full, idx_path = two_sets
    errors = []

    def run(tag):
        try:
            add_examples(idx_path, [full / tag / f"{tag}_2.wav"], tags=[tag])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in STYLES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    idx = _check_consistent(idx_path)
    names = {Path(p).name for p in idx.metadata["path"]}
    assert {"calm_2.wav", "energetic_2.wav"} <= names


def test_cli_add_and_remove(two_sets, tmp_path, capsys):
    from clapknn.cli import main

    full, idx_path = two_sets
    rc = main(["add", str(idx_path), str(full / "calm" / "calm_2.wav"), str(tmp_path / "missing.wav"),
               "--tag", "calm", "-q", "--no-cache"])
    captured = capsys.readouterr()
    assert rc == 1 and "added 1 file(s)" in captured.out and "missing.wav" in captured.err
    rc = main(["add", str(idx_path), str(full / "calm" / "calm_2.wav"), "--tag", "calm", "-q", "--cache", str(tmp_path / "c")])
    assert rc == 0 and "already indexed (replaced)" in capsys.readouterr().out
    rc = main(["remove", str(idx_path), str(full / "calm" / "calm_2.wav")])
    captured = capsys.readouterr()
    assert rc == 0 and "removed 1 example(s)" in captured.out and "calm_2.wav" in captured.out
    assert main(["remove", str(idx_path), str(tmp_path / "nope.wav")]) == 1
    capsys.readouterr()
    assert main(["remove", str(idx_path), "--tag", "calm", "--tag", "energetic"]) == 2
    assert "empty" in capsys.readouterr().err
    _check_consistent(idx_path)


def test_add_with_a_loaded_encoder_uses_it_and_refuses_another(two_sets, monkeypatch):
    """A caller that keeps its model loaded (the web app) passes it: no encoder is rebuilt from the
    index's identity, the vectors are the same, and an encoder of another identity is refused."""
    import clapknn.encoders as encoders
    from clapknn.encoders import get_encoder
    from clapknn.errors import EncoderMismatchError

    full, idx_path = two_sets
    f = full / "calm" / "calm_0.wav"
    loaded = get_encoder("features")

    def no_rebuild(*a, **k):
        raise AssertionError("the encoder was rebuilt")

    monkeypatch.setattr(encoders, "encoder_from_identity", no_rebuild)
    updated, _ = add_examples(idx_path, [f], tags=["calm", "soft"], encoder=loaded)
    monkeypatch.undo()
    rows = updated.metadata["path"].astype(str) == str(f)
    again, _ = add_examples(idx_path, [f], tags=["calm", "soft"])
    np.testing.assert_array_equal(updated.vectors[rows.to_numpy()], again.vectors[(again.metadata["path"].astype(str) == str(f)).to_numpy()])

    class Other:  # an encoder of another recipe
        def identity(self):
            return {**loaded.identity(), "recipe": -1}

    with pytest.raises(EncoderMismatchError):
        add_examples(idx_path, [f], tags=["calm"], encoder=Other())
