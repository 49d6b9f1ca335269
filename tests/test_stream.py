"""Resumable tagging: rows are written as tracks complete; a rerun skips what is done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapknn import Tagger
from clapknn.cli import main
from clapknn.errors import ParameterError
from clapknn.tagging.resume import tag_to_csv

from conftest import STYLES, tone, write_audio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Five tracks per style (3 s) and one undecodable file."""
    root = tmp_path_factory.mktemp("corpus")
    for tag, style in STYLES.items():
        for i in range(5):
            write_audio(root / tag / f"{tag}_{i}.wav", tone(style["freq"] * (1 + 0.02 * i), 3.0, seed=20 + i, pulse_bpm=style["pulse_bpm"]))
    (root / "zz_broken.wav").write_bytes(b"RIFF....WAVEjunk")
    return root


class Interrupt(Exception):
    pass


def test_streamed_rows_match_tag(built_index, corpus, tmp_path):
    index, _ = built_index
    tagger = Tagger(index)
    expected = tagger.tag(corpus).tracks
    report = tag_to_csv(tagger, corpus, tmp_path / "r.csv", chunk_files=3)
    got = pd.read_csv(tmp_path / "r.csv")
    assert report.n_tagged == len(got) == 10 and report.n_already == 0
    assert [Path(p).name for p, _ in report.skipped] == ["zz_broken.wav"]
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got[["path", "tags", "top"]], expected[["path", "tags", "top"]].astype(object), check_dtype=False)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-9)


def test_interrupted_run_resumes_without_redoing(built_index, corpus, tmp_path, monkeypatch):
    index, _ = built_index
    tagger = Tagger(index, batch_size=1)
    real = tagger.encoder.embed
    calls = {"n": 0}

    def dying(batch):
        calls["n"] += 1
        if calls["n"] > 5:
            raise Interrupt("killed")
        return real(batch)

    monkeypatch.setattr(tagger.encoder, "embed", dying)
    out = tmp_path / "r.csv"
    with pytest.raises(Interrupt):
        tag_to_csv(tagger, corpus, out, chunk_files=2)
    first = pd.read_csv(out)
    assert 0 < len(first) < 10, "complete groups were written before the interruption"
    with open(out, "a") as fh:
        fh.write("/half/written,calm,ca")  # what a kill during a write leaves

    monkeypatch.setattr(tagger.encoder, "embed", real)
    counted = {"n": 0}

    def counting(batch):
        counted["n"] += len(batch)
        return real(batch)

    monkeypatch.setattr(tagger.encoder, "embed", counting)
    report = tag_to_csv(tagger, corpus, out, chunk_files=2)
    assert report.n_already == len(first) and report.n_tagged == 10 - len(first)
    # two 2-s snippets per remaining 3-s track (0-2 s and the end-aligned 1-3 s); nothing redone
    assert counted["n"] == 2 * (10 - len(first))
    final = pd.read_csv(out)
    assert len(final) == 10 and final["path"].is_unique and "/half/written" not in set(final["path"])
    reference = Tagger(index).tag(corpus).tracks.set_index("path").loc[final["path"]]
    assert list(final["top"]) == list(reference["top"])

    again = tag_to_csv(tagger, corpus, out)
    assert again.n_tagged == 0 and again.n_already == 10 and len(again.skipped) == 1  # the broken file is retried


def test_resume_refuses_a_foreign_file(built_index, corpus, tmp_path):
    index, _ = built_index
    out = tmp_path / "other.csv"
    out.write_text("path,mood\n/x.wav,happy\n")
    with pytest.raises(ParameterError, match="columns"):
        tag_to_csv(Tagger(index), corpus, out)
    with pytest.raises(ParameterError, match="CSV"):
        tag_to_csv(Tagger(index), corpus, tmp_path / "r.parquet")
    tag_to_csv(Tagger(index), corpus, out, resume=False)  # without resume the file is replaced
    assert len(pd.read_csv(out)) == 10


def test_cli_tag_resume(built_index, corpus, tmp_path, capsys):
    _, root = built_index
    out = tmp_path / "r.csv"
    args = ["tag", str(corpus), "--index", str(root / "index"), "--out", str(out), "--resume", "-q", "--no-cache"]
    assert main(args) == 1  # the broken file is skipped
    assert "tagged 10 of 11" in capsys.readouterr().err
    assert main(args + ["--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "tagged 0 of 11" in err and "10 already" in err
    assert len(pd.read_csv(out)) == 10
    assert main(["tag", str(corpus), "--index", str(root / "index"), "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(args + ["--explain"]) == 2


# ----------------------------------------------------------------------------- progress


def test_rate_estimate_leaves_the_first_item_out():
    from clapknn.progress import RateEstimate

    now = [0.0]
    est = RateEstimate(30, clock=lambda: now[0])
    now[0] = 8.0  # the first file: model loading and warm-up
    est.tick()
    assert est.rate is None and est.remaining is None
    for _ in range(4):  # then one file per second
        now[0] += 1.0
        est.tick()
    assert est.rate == pytest.approx(1.0)
    assert est.remaining == pytest.approx(25.0)  # not 25 x (12 s / 5 files)
    now[0] += 2.0
    est.tick(2)
    assert est.rate == pytest.approx(1.0) and est.done == 7


def test_progress_bar_says_loading_then_rate_and_time_left(monkeypatch):
    import io
    import sys

    from clapknn.progress import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    now = [0.0]
    bar = progress_bar(10, "tagging", enabled=True, unit="track")
    bar.estimate.clock = lambda: now[0]
    bar._bar.refresh()
    assert "tagging (first track: loading)" in err.getvalue()
    for t in (5.0, 5.5, 6.0, 6.5):
        now[0] = t
        bar.update(1)
    assert bar.postfix() == "2.00 tracks/s, 00:03 left"
    bar._bar.refresh()
    assert "2.00 tracks/s, 00:03 left" in err.getvalue().rsplit("\r", 1)[-1]
    bar.close()


def test_progress_bar_off_when_not_a_terminal(capsys):
    from clapknn.progress import progress_bar

    with progress_bar(3, "tagging", enabled=True) as bar:
        bar.update(3)
    assert bar.n == 3
    assert capsys.readouterr().err == ""
