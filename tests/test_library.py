"""Library-wide similarity: index kinds, measured recall, save/load, similar, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapknn.cli import main
from clapknn.errors import IndexFormatError, ParameterError
from clapknn.ann import FLAT_MAX, HNSW_MAX, choose_kind, ivf_lists, recall_at_k
from clapknn.library import LibraryIndex, index_library, similar

from conftest import STYLES, tone, write_audio


def clustered(n: int, d: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Points around 40 fixed centres (the same for every seed), normalised."""
    centers = np.random.default_rng(1234).standard_normal((clusters, d))
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tracks(n: int) -> pd.DataFrame:
    return pd.DataFrame({"path": [f"/music/t{i:05d}.wav" for i in range(n)], "sha256": [f"{i:064x}" for i in range(n)],
                         "duration": 30.0, "n_snippets": 3})


IDENT = {"name": "test", "sample_rate": 1, "dim": 32}


def test_kind_follows_size():
    assert choose_kind(1) == choose_kind(FLAT_MAX) == "flat"
    assert choose_kind(FLAT_MAX + 1) == choose_kind(HNSW_MAX) == "hnsw"
    assert choose_kind(HNSW_MAX + 1) == choose_kind(10**7) == "ivf"
    assert ivf_lists(1_000_000) == 1024 and ivf_lists(100) == 64 and ivf_lists(10**12) == 16384


def test_recall_at_k():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(truth, truth, 3) == 1.0
    assert recall_at_k(np.array([[1, 2, 9], [7, 8, 9]]), truth, 3) == pytest.approx(1 / 3)
    assert recall_at_k(np.array([[1, -1, -1]]), np.array([[1, 2, 3]]), 3) == pytest.approx(1 / 3)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_build_measures_recall_and_round_trips(kind, tmp_path):
    x = clustered(4000)
    lib = LibraryIndex.from_vectors(x, tracks(len(x)), encoder=IDENT, snippet_seconds=10, hop_seconds=10, kind=kind, target_recall=0.9)
    m = lib.manifest
    assert m["kind"] == kind and m["n_tracks"] == 4000
    assert m["recall_at_10"] >= 0.9
    if kind == "flat":
        assert m["recall_at_10"] == 1.0 and m["recall_queries"] == 0
    else:
        assert m["recall_queries"] == 200
        assert ("efSearch" if kind == "hnsw" else "nprobe") in m["params"]
    # a held-out query: compare with exact search
    q = clustered(50, seed=7)
    _, ids = lib.search(q, 10)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert recall_at_k(ids, exact, 10) >= 0.85
    lib.save(tmp_path / "lib")
    back = LibraryIndex.load(tmp_path / "lib")
    np.testing.assert_array_equal(back.search(q, 10)[1], ids)
    np.testing.assert_allclose(back.vector(17), x[17], atol=1e-6)
    assert back.find("/music/t00017.wav") == 17 and back.find("/elsewhere.wav", sha256=f"{17:064x}") == 17
    assert back.find("/elsewhere.wav") is None


def test_tampered_or_foreign_directories_are_refused(tmp_path, built_index):
    x = clustered(300)
    lib = LibraryIndex.from_vectors(x, tracks(300), encoder=IDENT, snippet_seconds=10, hop_seconds=10)
    lib.save(tmp_path / "lib")
    with open(tmp_path / "lib" / "tracks.parquet", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(IndexFormatError, match="checksum"):
        LibraryIndex.load(tmp_path / "lib")
    _, root = built_index
    with pytest.raises(IndexFormatError, match="not a clapknn library"):
        LibraryIndex.load(root / "index")
    with pytest.raises(IndexFormatError):
        LibraryIndex.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="refusing"):
        lib.save(tmp_path / "other")
    with pytest.raises(ParameterError):
        LibraryIndex.from_vectors(x, tracks(299), encoder=IDENT, snippet_seconds=10, hop_seconds=10)


def test_the_library_store_has_the_index_guarantees(tmp_path):
    """Checksums are mandatory, a save killed between its renames is recovered, a reader takes the lock."""
    import json
    import os

    lib = LibraryIndex.from_vectors(clustered(50), tracks(50), encoder=IDENT, snippet_seconds=10, hop_seconds=10, kind="flat")
    lib.save(tmp_path / "lib")
    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    manifest["checksums"].pop("tracks.parquet")
    (tmp_path / "lib" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="no checksum for tracks.parquet"):
        LibraryIndex.load(tmp_path / "lib")
    lib.save(tmp_path / "lib")
    os.rename(tmp_path / "lib", tmp_path / ".lib.previous")  # as a save killed between its two renames leaves it
    assert len(LibraryIndex.load(tmp_path / "lib")) == 50
    lib.save(tmp_path / "lib")  # the next save puts it back, then replaces it
    assert not (tmp_path / ".lib.previous").exists() and len(LibraryIndex.load(tmp_path / "lib")) == 50


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    """Four tracks per style, plus a broken file."""
    root = tmp_path_factory.mktemp("music")
    for tag, style in STYLES.items():
        for i in range(4):
            y = tone(style["freq"] * (1 + 0.03 * i), 4.0, seed=10 + i, pulse_bpm=style["pulse_bpm"])
            write_audio(root / tag / f"{tag}_{i}.wav", y)
    (root / "broken.wav").write_bytes(b"RIFF....WAVEnope")
    return root


def test_index_library_and_similar(music, tmp_path, monkeypatch):
    lib = index_library(music, tmp_path / "lib", snippet_seconds=2.0, cache=tmp_path / "cache")
    assert len(lib) == 8 and lib.kind == "flat"
    assert [Path(p).name for p, _ in lib.skipped] == ["broken.wav"]

    import clapknn.embedding.encode

    def no_embedding(*a, **k):
        raise AssertionError("a track of the library must not be embedded again")

    monkeypatch.setattr(clapknn.embedding.encode, "embed_files", no_embedding)
    query = music / "calm" / "calm_0.wav"
    table = similar(tmp_path / "lib", query, k=3)
    assert list(table["rank"]) == [1, 2, 3]
    assert str(query) not in set(table["path"])  # the track itself is left out
    assert all("calm" in Path(p).name for p in table["path"])
    assert table["similarity"].is_monotonic_decreasing
    monkeypatch.undo()

    outside = write_audio(tmp_path / "new" / "q.wav", tone(STYLES["energetic"]["freq"] * 1.05, 4.0, seed=99, pulse_bpm=150.0))
    table = similar(tmp_path / "lib", outside, k=4, cache=False)
    assert len(table) == 4 and all("energetic" in Path(p).name for p in table["path"])
    copy = write_audio(tmp_path / "copy" / "same.wav", tone(STYLES["calm"]["freq"], 4.0, seed=10, pulse_bpm=60.0))
    table = similar(tmp_path / "lib", copy, k=2, cache=tmp_path / "cache")  # same bytes as calm_0: found by hash
    assert str(music / "calm" / "calm_0.wav") not in set(table["path"])


def test_cli_index_library_and_similar(music, tmp_path, capsys):
    rc = main(["index-library", str(music), "--out", str(tmp_path / "lib"), "--snippet-seconds", "2",
               "--cache", str(tmp_path / "cache"), "-q"])
    out = capsys.readouterr()
    assert rc == 1  # the broken file was skipped
    assert "indexed 8 track(s)" in out.out and "broken.wav" in out.err
    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    assert manifest["kind"] == "flat" and manifest["n_tracks"] == 8

    rc = main(["similar", str(music / "energetic" / "energetic_1.wav"), "--library", str(tmp_path / "lib"), "-k", "2",
               "--out", str(tmp_path / "sim.csv"), "--no-cache"])
    out = capsys.readouterr()
    assert rc == 0 and "energetic_" in out.out
    table = pd.read_csv(tmp_path / "sim.csv")
    assert list(table.columns) == ["rank", "path", "similarity", "duration"] and len(table) == 2

    rc = main(["similar", str(tmp_path / "missing.wav"), "--library", str(tmp_path / "lib"), "--no-cache"])
    assert rc == 2 and "clapknn: error:" in capsys.readouterr().err
    rc = main(["similar", str(music / "calm" / "calm_1.wav"), "--library", str(tmp_path / "nolib")])
    assert rc == 2
