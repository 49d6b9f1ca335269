"""Journeys a user takes across commands, files and folders, through ``main(argv)``.

Every test changes the working directory between steps the way a user does (build in one folder,
tag from another, move the index), and checks what the user sees: exit codes, stdout, stderr.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clapknn.cli import main
from conftest import make_examples, tone, write_audio

SNIP = ["--snippet-seconds", "2"]


def run(capsys, argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user's home: ``music/examples`` (3 files per tag), ``music/query.wav``, and ``elsewhere/``."""
    music = tmp_path / "music"
    make_examples(music / "examples", per_tag=3)
    write_audio(music / "query.wav", tone(112.0, 6.0, seed=7, pulse_bpm=60.0))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(music)
    return tmp_path


def _n_vectors(index_dir: Path) -> int:
    return json.loads((index_dir / "manifest.json").read_text())["n_vectors"]


def test_index_built_with_relative_paths_works_from_another_folder(home, capsys, monkeypatch):
    # build in music/ with relative paths, then work from elsewhere/
    code, out, _ = run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])
    assert code == 0, out
    before = _n_vectors(home / "music" / "idx")
    monkeypatch.chdir(home / "elsewhere")
    idx = "../music/idx"

    # re-adding a file that is already in the index replaces it (the count stays), whatever the path spelling
    code, out, _ = run(capsys, ["add", idx, "../music/examples/calm/calm_0.wav", "--tag", "calm", "-q"])
    assert code == 0
    assert "1 of them already indexed (replaced)" in out
    assert _n_vectors(home / "music" / "idx") == before

    # --explain names the examples by paths that exist from here
    code, out, _ = run(capsys, ["tag", "../music/query.wav", "--index", idx, "--explain", "-q"])
    assert code == 0
    listed = [line.split()[-3] for line in out.splitlines() if line.strip().endswith("s") and " @ " in line]
    assert listed and all(Path(p).is_absolute() and Path(p).is_file() for p in listed), out

    # removing a folder by its absolute path finds its examples
    code, out, err = run(capsys, ["remove", idx, str(home / "music" / "examples" / "energetic")])
    assert code == 0, err
    assert "removed 3 example(s)" in out
    assert "not in the index" not in err


def test_moved_index_keeps_working(home, capsys, monkeypatch):
    assert run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])[0] == 0
    moved = home / "elsewhere" / "moods"
    shutil.move(str(home / "music" / "idx"), str(moved))
    monkeypatch.chdir(home / "elsewhere")

    code, out, _ = run(capsys, ["tag", "../music/query.wav", "--index", "moods", "-q"])
    assert code == 0 and "calm" in out
    code, out, _ = run(capsys, ["info", "moods"])
    assert code == 0 and "calm" in out
    # the examples are still found by the path they were built from
    code, out, _ = run(capsys, ["add", "moods", str(home / "music" / "examples" / "energetic"), "--tag", "energetic", "-q"])
    assert code == 0 and "3 of them already indexed (replaced)" in out
    code, out, err = run(capsys, ["remove", "moods", "../music/examples/calm/calm_2.wav"])
    assert code == 0 and "removed 1 example(s)" in out, err


def test_same_bytes_under_another_path_replace_the_example(home, capsys, monkeypatch):
    assert run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])[0] == 0
    before = _n_vectors(home / "music" / "idx")
    copy = home / "elsewhere" / "copy_of_calm_1.wav"
    shutil.copyfile(home / "music" / "examples" / "calm" / "calm_1.wav", copy)
    monkeypatch.chdir(home / "elsewhere")
    code, out, _ = run(capsys, ["add", "../music/idx", copy.name, "--tag", "calm", "-q"])
    assert code == 0 and "1 of them already indexed (replaced)" in out
    assert _n_vectors(home / "music" / "idx") == before


def test_info_on_an_index_of_an_earlier_features_recipe_is_a_report(home, capsys):
    assert run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])[0] == 0
    manifest = home / "music" / "idx" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["encoder"]["recipe"] = m["encoder"]["recipe"] - 1
    manifest.write_text(json.dumps(m))
    code, out, err = run(capsys, ["info", "idx"])
    assert code == 0 and "Traceback" not in err
    assert "calm" in out
    vote = [line for line in out.splitlines() if line.startswith("vote:")]
    assert vote and "rebuild" in vote[0]
    code, out, _ = run(capsys, ["info", "idx", "--json"])
    assert code == 0 and "rebuild" in json.loads(out)["vote"]["error"]
    # tagging with it is refused with the rebuild command
    code, _, err = run(capsys, ["tag", "query.wav", "--index", "idx", "-q"])
    assert code == 2 and err.startswith("clapknn: error:") and "clapknn build" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tag", "query.wav", "--index", "idx", "--hop-seconds", "0"], "hop must be a positive number"),
        (["tag", "query.wav", "--index", "idx", "--threshold", "2"], "threshold must lie between 0 and 1"),
        (["tag", "query.wav", "--index", "idx", "-k", "0"], "k must be an integer of at least 1"),
        (["tag", "query.wav", "--index", "idx", "--top-n", "-1"], "top_n must be an integer of at least 0"),
        (["tag", "query.wav", "--index", "idx", "--batch-size", "0"], "batch_size must be an integer of at least 1"),
        (["build", "examples", "--out", "other", "--snippet-seconds", "0"], "snippet length must be a positive number"),
        (["build", "examples", "--out", "other", "--hop-seconds", "-1"], "hop must be a positive number"),
        (["build", "examples", "--out", "other", "--from-shards", "shards", "--encoder", "clap", "--snippet-seconds", "5"],
         "--encoder, --snippet-seconds cannot apply"),
        (["similar", "query.wav", "--library", "lib", "-k", "0"], "k must be an integer of at least 1"),
        (["similar", "examples/calm/calm_0.wav", "--library", "lib", "--checkpoint", "x.pt"], "encoder 'features' has no setting 'checkpoint'"),
        (["tag", "query.wav", "--index", "idx", "--checkpoint", "x.pt"], "encoder 'features' has no setting 'checkpoint'"),
        (["index-library", "examples", "--out", "lib2", "--snippet-seconds", "0"], "snippet length must be a positive number"),
        (["tag", "query.wav", "--index", "idx", "--out", "no_such_folder/x.csv"], "does not exist"),
        (["analyze", "query.wav", "--out", "no_such_folder/x.csv"], "does not exist"),
    ],
)
def test_bad_values_are_refused_up_front_in_one_line(home, capsys, argv, message):
    assert run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])[0] == 0
    assert run(capsys, ["index-library", "examples", "--out", "lib", "-q", *SNIP])[0] == 0
    before = sorted(p.name for p in (home / "music").iterdir())
    code, out, err = run(capsys, argv + ["-q"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clapknn: error:") and message in lines[0], err
    assert err.count(message) == 1  # said once, not once per file
    # nothing was made: no half-built index, no output folder
    assert sorted(p.name for p in (home / "music").iterdir()) == before


def test_k_above_the_index_size_says_so_and_top_n_zero_means_no_limit(home, capsys):
    assert run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])[0] == 0
    n = _n_vectors(home / "music" / "idx")
    code, out, err = run(capsys, ["tag", "query.wav", "--index", "idx", "-k", "1000", "-q"])
    assert code == 0
    assert f"k=1000 is more than the index's {n} example vectors" in err
    # a track between the two styles scores both tags; --top-n 0 lists every tag above the threshold
    write_audio(home / "music" / "mixed.wav", tone(110.0, 6.0, pulse_bpm=60.0) + tone(880.0, 6.0, pulse_bpm=150.0))
    argv = ["tag", "mixed.wav", "--index", "idx", "-q", "-k", str(n), "--weights", "uniform", "--threshold", "0.01"]
    code, out, _ = run(capsys, argv + ["--top-n", "0"])
    assert code == 0 and ("calm;energetic" in out or "energetic;calm" in out), out
    code, out, _ = run(capsys, argv)  # default for one label per example: the best tag only
    assert "calm;energetic" not in out and "energetic;calm" not in out


def test_a_tag_whose_every_example_is_unreadable_is_named(home, capsys):
    ex = home / "music" / "examples"
    for f in (ex / "energetic").iterdir():
        f.write_bytes(b"not audio")
    write_audio(ex / "sad" / "sad_0.wav", tone(300.0, 6.0, seed=3))
    code, out, err = run(capsys, ["build", "examples", "--out", "idx", "-q", *SNIP])
    assert code == 1  # finished, files skipped
    assert "lost (every example skipped): energetic" in out
    assert "tag 'energetic' has no usable example (all 3 of its file(s) were skipped)" in err

    # with one tag left of several the build is refused (such an index tags everything alike) ...
    shutil.rmtree(ex / "sad")
    code, out, err = run(capsys, ["build", "examples", "--out", "idx2", "-q", *SNIP])
    assert code == 2 and "only tag 'calm' is left" in err and "format not recognised" in err
    assert not (home / "music" / "idx2").exists()
    # ... unless asked for
    code, out, _ = run(capsys, ["build", "examples", "--out", "idx2", "-q", "--allow-single-tag", *SNIP])
    assert code == 1 and (home / "music" / "idx2" / "manifest.json").is_file()


def test_readme_tour_from_a_fresh_folder(home, capsys, monkeypatch):
    """The README's five-minute tour, in order, in one working folder; then tagging from another."""
    assert run(capsys, ["build", "examples/", "--out", "index/moods", "-q", *SNIP])[0] == 0
    assert run(capsys, ["info", "index/moods"])[0] == 0
    code, out, _ = run(capsys, ["tag", "query.wav", "--index", "moods", "-q"])  # a bare name is looked up in index/
    assert code == 0 and "calm" in out
    code, _, err = run(capsys, ["tag", ".", "--index", "moods", "--out", "tags.csv", "-q"])
    assert code == 0 and (home / "music" / "tags.csv").is_file(), err
    monkeypatch.chdir(home / "elsewhere")
    code, out, _ = run(capsys, ["tag", "../music/query.wav", "--index", "../music/index/moods", "-q"])
    assert code == 0 and "calm" in out


def test_paths_with_spaces_and_non_ascii_names(tmp_path, capsys, monkeypatch):
    """Folders and files named as users name them, given relative and absolute, from other folders,
    with the index moved in between."""
    lib = tmp_path / "Ma musique à moi"
    make_examples(lib / "exemples", per_tag=3)
    (lib / "exemples" / "calm").rename(lib / "exemples" / "calme été")
    write_audio(lib / "à tagger" / "chanson lente n°1.wav", tone(112.0, 6.0, seed=7, pulse_bpm=60.0))
    monkeypatch.chdir(lib)
    code, out, err = run(capsys, ["build", "exemples", "--out", "index moods", "-q", *SNIP])
    assert code == 0, err
    shutil.move(str(lib / "index moods"), str(tmp_path / "déplacé index"))
    (tmp_path / "ailleurs").mkdir()
    monkeypatch.chdir(tmp_path / "ailleurs")
    code, out, err = run(capsys, ["tag", str(lib / "à tagger"), "--index", "../déplacé index", "--out", "résultats.csv", "-q"])
    assert code == 0, err
    import pandas as pd

    table = pd.read_csv("résultats.csv")
    assert table["tags"].tolist() == ["calme été"]
    assert Path(table["path"].iat[0]).name == "chanson lente n°1.wav"
    code, out, err = run(capsys, ["add", "../déplacé index", "../Ma musique à moi/exemples/calme été/calm_0.wav", "--tag", "calme été", "-q"])
    assert code == 0 and "1 of them already indexed (replaced)" in out, err
    code, out, err = run(capsys, ["remove", str(tmp_path / "déplacé index"), str(lib / "exemples" / "calme été")])
    assert code == 0 and "removed 3 example(s)" in out, err
