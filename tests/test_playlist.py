"""Mood playlists (.m3u8): written from tag results and library searches, then parsed back as a
media server would read them (every entry exists, best score first, relative paths resolve)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from clapknn.cli import main
from clapknn.errors import ParameterError
from clapknn.players import PlaylistEntry, read_m3u8, read_tag_table, similar_playlist, tag_playlists, write_m3u8
from conftest import STYLES, tone, write_audio


def _music(root: Path) -> Path:
    """A small library: three calm and two energetic songs in album folders."""
    for i in range(3):
        s = STYLES["calm"]
        write_audio(root / "Calm Album" / f"calm {i}.flac", tone(s["freq"] * (1 + 0.015 * i), 6.0, seed=20 + i, pulse_bpm=s["pulse_bpm"]))
    for i in range(2):
        s = STYLES["energetic"]
        write_audio(root / "Loud Album" / f"loud {i}.wav", tone(s["freq"] * (1 + 0.015 * i), 6.0, seed=30 + i, pulse_bpm=s["pulse_bpm"]))
    return root


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _entries(path: Path) -> list[str]:
    return [line for line in _lines(path) if line and not line.startswith("#")]


@pytest.fixture
def tagged(tmp_path, built_index):
    """The music folder, its tag table (TagResult.tracks) and a playlist folder inside the music."""
    from clapknn import Tagger

    index, _ = built_index
    music = _music(tmp_path / "music")
    tracks = Tagger(index).tag(music).tracks
    out = music / "Playlists"
    out.mkdir()
    return music, tracks, out


def test_one_playlist_per_tag_every_entry_exists_best_first(tagged):
    music, tracks, out = tagged
    playlists = tag_playlists(tracks, out)
    assert [p.name for p in playlists] == ["calm", "energetic"]
    assert sorted(os.listdir(out)) == ["calm.m3u8", "energetic.m3u8"]
    for p in playlists:
        lines = _lines(p.path)
        assert lines[0] == "#EXTM3U" and lines[1] == f"#PLAYLIST:{p.name}"
        assert lines[2].startswith("#EXTINF:6,")  # duration in whole seconds, then the title
        parsed = read_m3u8(p.path)
        expected = tracks[tracks["tags"].str.split(";").apply(lambda t: p.name in t)]
        assert len(parsed) == len(expected) > 0
        assert all(Path(e.path).is_file() for e in parsed)
        # best score for the tag first (ties by path)
        scores = dict(zip(expected["path"].map(os.path.abspath), expected[f"score:{p.name}"]))
        ranked = sorted(scores, key=lambda q: (-scores[q], q))
        assert [e.path for e in parsed] == ranked
    assert {Path(e.path).parent.name for e in read_m3u8(out / "calm.m3u8")} == {"Calm Album"}


def test_paths_are_relative_to_the_playlist_folder_unless_absolute(tagged):
    music, tracks, out = tagged
    tag_playlists(tracks, out)
    for line in _entries(out / "calm.m3u8"):
        assert not os.path.isabs(line) and line.startswith("../Calm Album/")
        assert (out / line).resolve().is_file()  # resolves from the playlist's own folder
    # the playlists and the music move together
    moved = music.parent / "moved"
    music.rename(moved)
    assert all(Path(e.path).is_file() for e in read_m3u8(moved / "Playlists" / "calm.m3u8"))
    tracks["path"] = [str(moved / Path(p).relative_to(music)) for p in tracks["path"]]
    tag_playlists(tracks, moved / "Playlists", relative=False)
    lines = _entries(moved / "Playlists" / "calm.m3u8")
    assert lines and all(os.path.isabs(line) and Path(line).is_file() for line in lines)
    # relative to another folder (MPD: playlist_directory elsewhere, paths from music_directory)
    tag_playlists(tracks, moved / "Playlists", relative_to=moved)
    lines = _entries(moved / "Playlists" / "calm.m3u8")
    assert lines and all(line.startswith("Calm Album/") and (moved / line).is_file() for line in lines)
    assert all(Path(e.path).is_file() for e in read_m3u8(moved / "Playlists" / "calm.m3u8", relative_to=moved))


def test_order_min_score_and_length_follow_the_scores(tmp_path):
    files = [write_audio(tmp_path / f"{n}.flac", tone(220, 1.0)) for n in ("a", "b", "c", "d")]
    table = pd.DataFrame({
        "path": [str(f) for f in files],
        "tags": ["calm", "calm", "calm;happy", "happy"],
        "score:calm": [0.6, 0.9, 0.7, 0.2],
        "score:happy": [0.1, 0.0, 0.55, 0.8],
    })
    names = lambda p: [Path(e.path).stem for e in read_m3u8(p)]  # noqa: E731
    calm, happy = tag_playlists(table, tmp_path)
    assert names(calm.path) == ["b", "c", "a"]
    assert names(happy.path) == ["d", "c"]
    calm, happy = tag_playlists(table, tmp_path, min_score=0.65, max_tracks=1)
    assert names(calm.path) == ["b"] and names(happy.path) == ["d"]
    (only,) = tag_playlists(table, tmp_path, tags=["happy"], prefix="mood - ")
    assert only.path.name == "mood - happy.m3u8" and names(only.path) == ["d", "c"]
    # the same input writes the same bytes
    first = only.path.read_bytes()
    tag_playlists(table, tmp_path, tags=["happy"], prefix="mood - ")
    assert only.path.read_bytes() == first


def test_a_missing_file_is_left_out_and_reported(tagged):
    music, tracks, out = tagged
    gone = music / "Calm Album" / "calm 1.flac"
    gone.unlink()
    calm = tag_playlists(tracks, out, tags=["calm"])[0]
    assert str(gone) not in [e.path for e in read_m3u8(calm.path)]
    assert len(calm) == 2 and calm.skipped == [(str(gone), "no such file (left out of the playlist)")]


def test_read_m3u8_round_trips_titles_and_non_ascii_names(tmp_path):
    song = write_audio(tmp_path / "Café Été" / "naïve, song.flac", tone(330, 1.5))
    out = write_m3u8([PlaylistEntry(str(song), 0.5, 1.5, "Artiste - Chanson, no. 1"), song], tmp_path / "liste.m3u8")
    assert "../" not in out.read_text(encoding="utf-8") and "Café Été/naïve, song.flac" in out.read_text(encoding="utf-8")
    back = read_m3u8(out)
    assert [e.path for e in back] == [str(song), str(song)]
    assert back[0].title == "Artiste - Chanson, no. 1" and back[0].duration == 2.0
    assert back[1].title == "naïve, song" and back[1].duration == 2.0  # from the file when not given


def test_cli_playlists_from_a_tag_table_in_each_format(tagged, monkeypatch, capsys, built_index):
    music, tracks, out = tagged
    _, root = built_index
    monkeypatch.chdir(music.parent)
    assert main(["tag", "music", "--index", str(root / "index"), "--out", "tags.csv", "-q"]) == 0
    assert main(["tag", "music", "--index", str(root / "index"), "--out", "tags.parquet", "-q"]) == 0
    assert main(["tag", "music", "--index", str(root / "index"), "--out", "tags.json", "-q"]) == 0
    written = {}
    for fmt in ("csv", "parquet", "json"):
        target = music.parent / f"lists-{fmt}"
        target.mkdir()
        assert main(["playlist", f"tags.{fmt}", "--out-dir", str(target)]) == 0
        written[fmt] = {p: (target / p).read_text(encoding="utf-8") for p in sorted(os.listdir(target))}
    assert written["csv"] == written["parquet"] == written["json"]
    assert list(written["csv"]) == ["calm.m3u8", "energetic.m3u8"]
    printed = capsys.readouterr().out
    assert "calm: 3 track(s)" in printed and "energetic: 2 track(s)" in printed
    # a table read from another folder: its relative paths are found next to the table
    elsewhere = music.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["playlist", "../tags.csv", "--out-dir", str(out), "--tags", "energetic"]) == 0
    assert [Path(e.path).name for e in read_m3u8(out / "energetic.m3u8")] == ["loud 0.wav", "loud 1.wav"]
    assert all(Path(e.path).is_file() for e in read_m3u8(out / "energetic.m3u8"))


def test_cli_playlists_from_an_index_and_a_music_folder(tagged, monkeypatch, built_index):
    music, tracks, out = tagged
    _, root = built_index
    monkeypatch.chdir(music)
    assert main(["playlist", ".", "--index", str(root / "index"), "--out-dir", "Playlists", "--min-score", "0.5", "-q"]) == 0
    calm = read_m3u8(out / "calm.m3u8")
    assert len(calm) == 3 and all(Path(e.path).is_file() for e in calm)


def test_cli_bad_input_is_one_clear_error(tagged, monkeypatch, capsys):
    music, tracks, out = tagged
    monkeypatch.chdir(music)
    tracks.to_csv("tags.csv", index=False)
    tracks[["path", "top"]].to_csv("notags.csv", index=False)
    Path("tags.txt").write_text("path,tags\n", encoding="utf-8")
    for argv, message in [
        (["playlist", "tags.csv", "--out-dir", "nowhere"], "nowhere: folder does not exist"),
        (["playlist", "tags.csv", "--out-dir", "Playlists", "--tags", "sad"], "no tag 'sad' in the table"),
        (["playlist", "notags.csv", "--out-dir", "Playlists"], "not a per-track tag table (no tags column)"),
        (["playlist", "missing.csv"], "missing.csv: no such file"),
        (["playlist", "tags.txt"], "tags.txt: unknown table format .txt"),
        (["playlist", "tags.csv", "--max-tracks", "0"], "max_tracks must be an integer of at least 1"),
        (["playlist", "tags.csv", "--min-score", "3"], "minimum score must lie between -1 and 1"),
        (["playlist", "--like", "calm 0.flac"], "--like SEED needs --library"),
        (["playlist"], "give a tag table"),
        (["playlist", "tags.csv", "--absolute", "--relative-to", "."], "--absolute and --relative-to exclude each other"),
        # checked before the tagging work
        (["playlist", ".", "--index", "no-such-index", "--min-score", "2"], "minimum score must lie between -1 and 1"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("clapknn: error: ") and message in err and "Traceback" not in err, (argv, err)
        assert err.count("\n") == 1


def test_more_like_these_ranks_the_library_by_similarity_to_the_seeds(tagged, monkeypatch, capsys):
    from clapknn.library import LibraryIndex, index_library

    music, tracks, out = tagged
    lib = index_library(music, music.parent / "library", cache=False)
    seeds = [music / "Calm Album" / "calm 0.flac", music / "Calm Album" / "calm 1.flac"]
    p = similar_playlist(lib, seeds, out / "more.m3u8", n=3)
    parsed = read_m3u8(p.path)
    names = [Path(e.path).name for e in parsed]
    assert len(parsed) == 3 and not set(names) & {s.name for s in seeds}
    assert names[0] == "calm 2.flac"  # the other calm song is nearest the calm seeds
    assert all(Path(e.path).is_file() for e in parsed)
    sims = [e.score for e in p.entries]
    assert sims == sorted(sims, reverse=True)
    # the score is the cosine similarity to the mean of the seeds' vectors
    import numpy as np

    centre = np.mean([lib.vector(lib.find(s)) for s in seeds], axis=0)
    centre /= np.linalg.norm(centre)
    v = lib.vector(lib.find(music / "Calm Album" / "calm 2.flac"))
    assert sims[0] == pytest.approx(float(v @ centre), abs=1e-5)
    with pytest.raises(ParameterError, match="not a track of the library"):
        similar_playlist(lib, [music.parent / "nope.flac"], out / "x.m3u8")
    # the command line: seeds by path, a library folder, --name
    monkeypatch.chdir(music)
    code = main(["playlist", "--like", "Calm Album/calm 0.flac", "--library", "../library", "--out-dir", "Playlists",
                 "--max-tracks", "2", "--name", "Quiet evening"])
    assert code == 0
    assert "Quiet evening: 2 track(s)" in capsys.readouterr().out
    lines = _entries(out / "Quiet evening.m3u8")
    assert len(lines) == 2 and all((out / line).resolve().is_file() for line in lines)
    assert LibraryIndex.load(music.parent / "library").find(music / "Calm Album" / "calm 2.flac") is not None


def test_read_tag_table_keeps_untagged_rows(tmp_path):
    pd.DataFrame({"path": ["x.flac"], "tags": [""], "score:calm": [0.1]}).to_csv(tmp_path / "t.csv", index=False)
    table = read_tag_table(tmp_path / "t.csv")
    assert table["tags"].tolist() == [""]
