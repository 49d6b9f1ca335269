"""The CLI through ``main(argv)``: build, tag, info, demo, exit codes and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clapknn.cli import main

from conftest import SR, make_examples, tone, write_audio


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_examples(root / "examples")
    q = root / "queries"
    write_audio(q / "slow.wav", tone(112, 5.0, pulse_bpm=60.0, seed=11))
    write_audio(q / "fast.wav", tone(900, 5.0, pulse_bpm=150.0, seed=12))
    assert main(["build", str(root / "examples"), "--out", str(root / "idx"), "--snippet-seconds", "2", "-q"]) == 0
    return root


def test_build_prints_summary(workspace, capsys):
    code = main(["build", str(workspace / "examples"), "--out", str(workspace / "idx2"), "--snippet-seconds", "2", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "6 file(s)" in out and "calm 3" in out and "energetic 3" in out


@pytest.mark.parametrize("ext", [".csv", ".json", ".parquet"])
def test_tag_writes_each_format(workspace, capsys, ext):
    out = workspace / f"tags{ext}"
    code = main(["tag", str(workspace / "queries"), "--index", str(workspace / "idx"), "--out", str(out), "-q"])
    assert code == 0
    df = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}[ext](out)
    by_name = {p.rsplit("/", 1)[-1]: t for p, t in zip(df["path"], df["top"])}
    assert by_name == {"fast.wav": "energetic", "slow.wav": "calm"}
    assert {"score:calm", "score:energetic", "n_snippets"} <= set(df.columns)


def test_tag_table_on_screen_and_explain(workspace, capsys):
    code = main(["tag", str(workspace / "queries" / "fast.wav"), "--index", str(workspace / "idx"), "--explain", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fast.wav" in out and "energetic" in out
    assert "nearest examples" in out and "energetic_" in out


def test_tag_per_snippet(workspace, capsys):
    out = workspace / "snips.csv"
    assert main(["tag", str(workspace / "queries"), "--index", str(workspace / "idx"), "--per-snippet", "--out", str(out), "-q"]) == 0
    df = pd.read_csv(out)
    # 5-s queries, 2-s snippets: 0 and 2 s, then the 1-s tail as a window aligned to the end (3-5 s)
    assert len(df) == 6 and list(df["start"]) == [0.0, 2.0, 3.0, 0.0, 2.0, 3.0]


def test_skipped_input_exit_code_1(workspace, capsys):
    bad = workspace / "queries_bad"
    bad.mkdir()
    (bad / "broken.mp3").write_bytes(b"not audio at all" * 10)
    write_audio(bad / "ok.wav", tone(900, 3.0, pulse_bpm=150.0))
    code = main(["tag", str(bad), "--index", str(workspace / "idx"), "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert "ok.wav" in captured.out
    assert "broken.mp3" in captured.err and "skipped 1" in captured.err


def test_info(workspace, capsys):
    assert main(["info", str(workspace / "idx")]) == 0
    out = capsys.readouterr().out
    assert "features" in out and "calm" in out and "2 s" in out
    # the vote the tagger will use: its space, the evidence for it, and what each block weighs
    assert re.search(r"vote: +k=5, similarity weights, (plain|standardised) space \(leave-one-out vote share", out)
    assert "relevance: " in out and "level" in out and "notes" in out
    assert main(["info", str(workspace / "idx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tags"]["calm"]["files"] == 3
    from clapknn import Tagger

    est = Tagger(workspace / "idx").estimator
    assert data["vote"]["space"] == ("standardised" if est.standardized_ else "plain")
    assert data["vote"]["loo_vote_share"]["plain"] == pytest.approx(est.loo_score_["plain"], abs=1e-4)
    assert len(data["vote"]["block_relevance"]) == len(est.block_relevance_)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tag", "nowhere.wav", "--index", "{idx}"], "nothing to tag"),
        (["tag", "{q}", "--index", "no_such_index"], "no such index"),
        (["tag", "{q}", "--index", "{idx}", "--out", "x.txt"], "unknown output format"),
        (["tag", "{q}", "--index", "{idx}", "-k", "0"], "k must be an integer of at least 1"),
        (["build", "no_such_folder"], "no such file or folder"),
        (["info", "{q}"], "not an index directory"),
        (["build", "{ex}", "--prompt", "calm=quiet"], "text branch"),
        (["build", "{ex}", "--prompt", "calm"], "TAG=TEXT"),
    ],
)
def test_user_errors_are_one_line(workspace, capsys, argv, message):
    fill = {"idx": str(workspace / "idx"), "q": str(workspace / "queries" / "slow.wav"), "ex": str(workspace / "examples")}
    argv = [a.format(**fill) for a in argv] + ["-q"] * (argv[0] != "info")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("clapknn: error:") and message in err and "Traceback" not in err


def test_help_imports_nothing_heavy():
    """Building the parser and importing the package pull in no heavy library (start-up time
    itself is measured by bench/startup.py, not asserted here)."""
    code = (
        "import sys; from clapknn.cli import build_parser; build_parser(); import clapknn;"
        "print([m for m in ('torch','librosa','faiss','pandas','laion_clap','sklearn') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    run = subprocess.run([sys.executable, "-m", "clapknn", "--help"], capture_output=True, text=True, check=True)
    assert "usage: clapknn" in run.stdout


def test_verbose_logs_clapknn_lines_only(tmp_path):
    """``-v`` shows clapknn's own log lines, not faiss's loader probes (a fresh process, as a user runs it)."""
    examples = make_examples(tmp_path / "examples", per_tag=2, seconds=3.0)
    write_audio(examples / "calm" / "silent.wav", np.zeros(3 * SR, np.float32))
    run = subprocess.run([sys.executable, "-m", "clapknn", "-v", "build", str(examples), "--out", str(tmp_path / "idx"),
                          "--snippet-seconds", "1", "-q"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr  # the silent file is skipped
    assert "clapknn: skipped" in run.stderr and "silent.wav" in run.stderr  # clapknn's INFO line
    assert "faiss" not in run.stderr.lower() and "avx" not in run.stderr.lower(), run.stderr


def test_demo_end_to_end(tmp_path, capsys, monkeypatch):
    """The demo leaves nothing in the folder it runs from; ``-q`` prints only the accuracy line."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "demo.csv"
    assert main(["demo", "-q", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) == 1 and text.startswith("accuracy: "), text
    assert list(work.iterdir()) == []
    df = pd.read_csv(out)
    assert len(df) == 18 and set(df["truth"]) == {"calm", "energetic", "happy", "nostalgic", "tender"}
    # chance is 0.2 and the largest mood is 4 of the 18; with two examples per mood the vote keeps
    # the standardised space, which is the weaker one on these clips (docs/evaluation.md)
    assert df["correct"].mean() > 0.3


def test_encoder_settings_are_checked(workspace, capsys):
    code = main(["build", str(workspace / "examples"), "--out", str(workspace / "idx3"), "--checkpoint", "x.pt", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "no setting 'checkpoint'" in err
    # runtime-only settings are harmless for an encoder that has no use for them
    assert main(["tag", str(workspace / "queries"), "--index", str(workspace / "idx"), "--threads", "1", "-q"]) == 0


def _api_defaults(fn) -> dict:
    import inspect

    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


def test_the_parsers_defaults_are_the_apis():
    """Every default the command line shows is the one the API function it calls uses, read from
    the functions' signatures (the parser takes them from clapknn.options; a number written again
    in the parser, or an API default changed alone, fails here)."""
    from clapknn.analysis import analyze_files
    from clapknn.cli import build_parser
    from clapknn.cli.common import max_snippets, snippet_seconds
    from clapknn.demo import run_demo
    from clapknn.embedding.ray import embed_with_ray
    from clapknn.evaluation import evaluate
    from clapknn.players import write_track_tags
    from clapknn.incremental import add_examples
    from clapknn.library import index_library, similar
    from clapknn.players import similar_playlist
    from clapknn.tagging.build import build_index
    from clapknn.tagging.tagger import Tagger
    from clapknn.webapp import serve
    from clapknn import options as opt

    parse = build_parser().parse_args
    tagger, tag, build = _api_defaults(Tagger), _api_defaults(Tagger.tag), _api_defaults(build_index)

    a = parse(["tag", "x.wav", "--index", "i"])
    for dest in ("k", "weights", "aggregate", "space", "threshold", "top_n", "hop_seconds", "batch_size"):
        assert getattr(a, dest) == tagger[dest], dest
    assert max_snippets(a, opt.DEFAULT_TAG_SNIPPETS) == tagger["max_snippets"]
    assert a.key_tempo == tag["key_tempo"] and a.explain == tag["explain"]
    # workers: the one deliberate difference, from clapknn.options too: "auto" on the command line
    # (worker processes for the features encoder), 0 in the API (everything in the calling process)
    assert a.workers == opt.DEFAULT_CLI_WORKERS == "auto" and tag["workers"] == opt.DEFAULT_WORKERS == 0
    assert a.tag_field == _api_defaults(write_track_tags)["field"]

    a = parse(["build", "examples"])
    assert (a.encoder or opt.DEFAULT_ENCODER) == build["encoder"] and snippet_seconds(a) == build["snippet_seconds"]
    assert max_snippets(a, opt.DEFAULT_BUILD_SNIPPETS) == build["max_snippets"]
    for dest in ("batch_size", "hop_seconds", "allow_single_tag"):
        assert getattr(a, dest) == build[dest], dest
    assert a.workers == opt.DEFAULT_CLI_WORKERS and build["workers"] == opt.DEFAULT_WORKERS

    a, ev = parse(["evaluate", "examples"]), _api_defaults(evaluate)
    assert [int(v) for v in a.shots.split(",")] == list(ev["shots"]) and [int(v) for v in a.k.split(",")] == list(ev["k"])
    assert tuple(a.weights.split(",")) == tuple(ev["weights"]) and float(a.snippet_seconds) == ev["snippet_seconds"]
    assert (a.episodes, a.folds, a.no_baselines) == (ev["n_episodes"], ev["folds"], not ev["baselines"])
    for dest in ("encoder", "aggregate", "space", "seed", "workers", "batch_size", "hop_seconds"):
        assert getattr(a, dest) == ev[dest], dest
    assert max_snippets(a, opt.DEFAULT_TAG_SNIPPETS) == ev["max_snippets"]

    assert parse(["analyze", "x.wav"]).profile == _api_defaults(analyze_files)["profile"]
    from clapknn.analysis import PROFILES
    from clapknn.ann import KINDS

    assert set(opt.KEY_PROFILES) == set(PROFILES) and tuple(opt.LIBRARY_KINDS) == tuple(KINDS)  # --profile, --kind choices
    a, lib = parse(["index-library", "music", "--out", "lib"]), _api_defaults(index_library)
    assert (a.encoder or opt.DEFAULT_ENCODER) == lib["encoder"] and snippet_seconds(a) == lib["snippet_seconds"]
    for dest in ("kind", "target_recall", "batch_size"):
        assert getattr(a, dest) == lib[dest], dest
    assert a.workers == opt.DEFAULT_CLI_WORKERS and lib["workers"] == opt.DEFAULT_WORKERS
    assert parse(["similar", "x.wav", "--library", "lib"]).k == _api_defaults(similar)["k"]
    a, ray = parse(["embed-ray", "music", "--out", "shards"]), _api_defaults(embed_with_ray)
    assert (a.files_per_task, a.batch_size, a.address) == (ray["files_per_task"], ray["batch_size"], ray["address"])
    a, app = parse(["serve", "--index", "i", "--library", "music"]), _api_defaults(serve)
    for dest in ("host", "port", "k", "batch_size", "quiet"):
        assert getattr(a, dest) == app[dest], dest
    assert a.workers == opt.DEFAULT_CLI_WORKERS and app["workers"] == opt.DEFAULT_WORKERS
    assert parse(["demo"]).per_tag == _api_defaults(run_demo)["per_tag"]
    a, add = parse(["add", "i", "examples"]), _api_defaults(add_examples)
    assert a.batch_size == add["batch_size"] and (a.workers, add["workers"]) == (opt.DEFAULT_CLI_WORKERS, opt.DEFAULT_WORKERS)
    a = parse(["playlist", "tags.csv"])
    assert a.k == tagger["k"] and a.max_tracks is None
    assert opt.DEFAULT_SIMILAR_TRACKS == _api_defaults(similar_playlist)["n"]  # what --like takes without --max-tracks
