"""Snippet sampling for tagging: which windows are kept, that only they are decoded, and that the
setting reaches the API, the command line and the embedding cache key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clapknn.audio import decode
from clapknn import options
from clapknn.embedding.cache import settings_key
from clapknn.errors import ParameterError
from clapknn.audio.snippet import cut, iter_file_snippets, sample_indices, snippet_starts
from conftest import SR, make_examples, tone, write_audio


def test_sample_indices_spread_over_the_middle():
    idx = sample_indices(24, 4)
    assert idx.tolist() == [3, 9, 14, 20]  # a 240-s track: windows at 30, 90, 140, 200 s
    assert sample_indices(24, 1).tolist() == [11]
    assert sample_indices(4, 2).tolist() == [1, 2]
    for count in range(2, 40):
        for n in range(1, count):
            got = sample_indices(count, n)
            assert len(got) == n
            assert np.all(np.diff(got) > 0)  # increasing, no repeats
            if n % 2 == 0 or count % 2:  # (an odd number of an even count has no middle window)
                assert got.tolist() == (count - 1 - got[::-1]).tolist()  # symmetric about the middle
            if 2 * n <= count and count > 2:
                assert got[0] > 0 and got[-1] < count - 1  # intro and outro left out


def test_sample_indices_keep_all_when_few():
    assert sample_indices(3, 4).tolist() == [0, 1, 2]
    assert sample_indices(3, 3).tolist() == [0, 1, 2]
    assert sample_indices(5, None).tolist() == [0, 1, 2, 3, 4]


def test_check_max_snippets():
    assert options.check_max_snippets(None) is None
    assert options.check_max_snippets("all") is None
    assert options.check_max_snippets(3) == 3
    assert options.parse_max_snippets("ALL") is None
    assert options.parse_max_snippets(" 6 ") == 6
    for bad in (0, -1, 2.5, "x", True):
        with pytest.raises(ParameterError):
            options.check_max_snippets(bad)
    with pytest.raises(ParameterError):
        options.parse_max_snippets("three")


def test_cut_samples_the_same_windows_as_the_grid():
    y = tone(220.0, 95.0)
    full = cut(y, SR, 10.0)
    part = cut(y, SR, 10.0, max_snippets=3)
    keep = sample_indices(len(full.starts), 3)
    np.testing.assert_array_equal(part.starts, full.starts[keep])
    np.testing.assert_array_equal(part.audio, full.audio[keep])


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory):
    """A 2-minute 44.1 kHz stereo FLAC whose pitch rises, so every window differs."""
    sr = 44100
    t = np.arange(int(120 * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * (200 + 3 * t) * t)
    y = np.stack([mono, 0.8 * mono], axis=1).astype(np.float32)
    return write_audio(tmp_path_factory.mktemp("long") / "long.flac", y, sr)


@pytest.fixture
def load_calls(monkeypatch):
    """The ``(offset, duration)`` of every ``decode.load`` call made while the test runs."""
    calls = []
    real = decode.load

    def spy(path, *, sr, offset=0.0, duration=None):
        calls.append((offset, duration))
        return real(path, sr=sr, offset=offset, duration=duration)

    monkeypatch.setattr(decode, "load", spy)
    return calls


def test_file_sampling_seeks_only_the_chosen_windows(long_flac, load_calls):
    calls = load_calls
    got = list(iter_file_snippets(long_flac, 22050, 10.0, max_snippets=3))
    assert [round(s, 3) for s, _, _ in got] == [20.0, 50.0, 90.0]  # of 12 windows: 2, 5, 9
    assert len(calls) == 3 and all(d == pytest.approx(10.0) for _, d in calls)  # never the whole file
    calls.clear()
    whole = list(iter_file_snippets(long_flac, 22050, 10.0))
    assert calls == [(0.0, None)]  # without sampling: one whole read
    by_start = {round(s, 3): a for s, _, a in whole}
    for s, _, a in got:  # a seeked window holds the samples of the whole decode (to float32 rounding)
        np.testing.assert_allclose(a, by_start[round(s, 3)], atol=2e-4)


def test_file_that_cannot_seek_is_decoded_once(long_flac, load_calls, monkeypatch):
    calls = load_calls
    # as for a format only the fallback decoder (ffmpeg) reads: libsndfile cannot open it
    monkeypatch.setattr(decode, "can_seek", lambda path: False)
    got = list(iter_file_snippets(long_flac, 22050, 10.0, max_snippets=3))
    assert calls == [(0.0, None)]
    assert [round(s, 3) for s, _, _ in got] == [20.0, 50.0, 90.0]


def test_short_file_keeps_every_window(tmp_path):
    path = write_audio(tmp_path / "short.wav", tone(330.0, 25.0))
    assert [s for s, _, _ in iter_file_snippets(path, SR, 10.0, max_snippets=4)] == snippet_starts(25.0, 10.0).tolist()
    assert [s for s, _, _ in iter_file_snippets(path, SR, 10.0, max_snippets=3)] == [0.0, 10.0, 15.0]


def test_cache_key_includes_the_sampling():
    ident = {"name": "features", "sample_rate": 22050, "dim": 8}
    every = settings_key(ident, 10.0, None)
    assert settings_key(ident, 10.0, None, None) == every  # every-snippet entries keep their key
    assert settings_key(ident, 10.0, None, 4) != every
    assert settings_key(ident, 10.0, None, 4) != settings_key(ident, 10.0, None, 2)


@pytest.fixture(scope="module")
def sampled_workspace(tmp_path_factory):
    from clapknn import build_index

    root = tmp_path_factory.mktemp("sampling")
    examples = make_examples(root / "examples", seconds=9.0)
    index = build_index(examples, root / "index", snippet_seconds=2.0)
    query = write_audio(root / "queries" / "long.wav", tone(880.0, 30.0, pulse_bpm=150.0))
    return index, root, query


def test_build_keeps_every_snippet_by_default(sampled_workspace):
    index, _, _ = sampled_workspace
    # 9-s examples, 2-s snippets: windows at 0, 2, 4, 6 and the end-aligned 7 s, all of them kept
    assert (index.metadata.groupby("path").size() == 5).all()


def test_tagger_samples_by_default_and_all_on_request(sampled_workspace):
    from clapknn import Tagger

    index, _, query = sampled_workspace
    default = Tagger(index).tag(query)
    assert int(default.tracks["n_snippets"].iat[0]) == options.DEFAULT_TAG_SNIPPETS
    every = Tagger(index, max_snippets="all").tag(query)
    assert int(every.tracks["n_snippets"].iat[0]) == 15
    two = Tagger(index, max_snippets=2).tag(query)
    assert two.snippets["start"].round(3).tolist() == [6.0, 22.0]  # windows 3 and 11 of 15
    with pytest.raises(ParameterError):
        Tagger(index, max_snippets=0)


def test_tag_array_samples_as_files_do(sampled_workspace):
    from clapknn import Tagger

    index, _, _ = sampled_workspace
    res = Tagger(index, max_snippets=3).tag_array(tone(880.0, 30.0, pulse_bpm=150.0), SR)
    assert res.snippets["start"].round(3).tolist() == [4.0, 14.0, 24.0]


def test_cli_snippets_option(sampled_workspace, tmp_path, capsys):
    import pandas as pd

    from clapknn.cli import main

    _, root, query = sampled_workspace
    out = tmp_path / "t.csv"
    assert main(["tag", str(query), "--index", str(root / "index"), "--snippets", "all", "--out", str(out), "-q"]) == 0
    assert int(pd.read_csv(out)["n_snippets"].iat[0]) == 15
    assert main(["tag", str(query), "--index", str(root / "index"), "--snippets", "3", "--out", str(out), "-q"]) == 0
    assert int(pd.read_csv(out)["n_snippets"].iat[0]) == 3
    capsys.readouterr()
    assert main(["tag", str(query), "--index", str(root / "index"), "--snippets", "none", "-q"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "snippets per track" in err and "Traceback" not in err
    assert main(["build", str(root / "examples"), "--out", str(tmp_path / "i2"), "--snippet-seconds", "2",
                 "--snippets", "1", "-q"]) == 0
    from clapknn import load_index

    assert (load_index(tmp_path / "i2").metadata.groupby("path").size() == 1).all()


def test_sampling_a_file_that_holds_less_than_its_header_says(tmp_path, caplog):
    """An mp3 whose frame count claims ~2 years: the sampled windows lie in the 25 s that decode
    (sampled over the claim, they would all fall past the end and the track would seem empty)."""
    import soundfile as sf

    path = tmp_path / "claims_years.mp3"
    t = np.arange(int(25 * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR, format="MP3")
    data = bytearray(path.read_bytes())
    data[21:25] = b"\x7f\xff\xff\xff"  # the Xing frame count
    path.write_bytes(bytes(data))
    assert decode.info(path).duration > 1e6  # the header's claim
    got = list(iter_file_snippets(path, 22050, 5.0, max_snippets=2))
    assert len(got) == 2 and all(a is not None for _, _, a in got)
    assert all(0 < s and e <= 25.5 for s, e, _ in got)  # in the middle of what decodes
    assert "audio ends near" in caplog.text


def test_tag_key_tempo_decodes_each_file_once(built_index, tmp_path, load_calls):
    """``tag --key-tempo``: the analysis takes the signal the engine decoded (same rate), so each
    file is read whole once, and the table is the one a separate analysis gives."""
    from clapknn import Tagger
    from clapknn.analysis import COLUMNS, analyze_files
    from clapknn.cli import main

    _, root = built_index
    folder = root / "examples" / "calm"
    files = sorted(folder.glob("*.wav"))
    result = Tagger(root / "index").tag(folder, key_tempo=True)
    assert load_calls.count((0.0, None)) == len(files) and len(load_calls) == len(files)
    expected = analyze_files([str(f) for f in files])
    got = result.tracks[list(COLUMNS)].sort_values("path").reset_index(drop=True)
    assert got.to_dict("records") == expected.sort_values("path").reset_index(drop=True).to_dict("records")
    load_calls.clear()
    out = tmp_path / "tags.csv"
    cmd = ["tag", str(folder), "--index", str(root / "index"), "--key-tempo", "--no-cache", "--out", str(out), "-q"]
    assert main(cmd + ["--workers", "0"]) == 0  # in this process, where the reads are recorded
    assert len(load_calls) == len(files)  # the command line too: one whole read per file
    assert main(cmd) == 0  # worker processes (the default) hand the decoded signal back for the analysis
    tracks = pd.read_csv(out).sort_values("path").reset_index(drop=True)
    assert tracks["bpm"].tolist() == expected.sort_values("path")["bpm"].tolist()
    assert "bpm" in out.read_text().splitlines()[0]


def test_tag_key_tempo_with_sampling_decodes_the_file_once(long_flac, tmp_path, load_calls):
    """Sampled tagging with ``key_tempo``: the file is decoded whole once (no seeking for the windows),
    the sampled windows are cut from that signal, and the analysis takes the same signal; the vectors
    are those a seeking read gives."""
    from clapknn import Tagger, build_index
    from clapknn.analysis import COLUMNS, analyze_files

    index = build_index(make_examples(tmp_path / "examples"), tmp_path / "index", snippet_seconds=10.0)
    load_calls.clear()
    result = Tagger(index, max_snippets=3).tag(long_flac, key_tempo=True, workers=0)
    assert load_calls == [(0.0, None)]  # one read of the whole file, nothing else
    expected = analyze_files([str(long_flac)])
    assert result.tracks[list(COLUMNS)].to_dict("records") == expected.to_dict("records")
    seeking = Tagger(index, max_snippets=3).tag(long_flac, workers=0)
    assert np.allclose(result.snippets["start"], seeking.snippets["start"])
    score_cols = [c for c in result.tracks.columns if c.startswith("score:")]
    # a window cut from the whole signal and one read by seeking differ only at the resampler's edges
    # (vector elements by up to 2e-3, in the spectral-contrast block): scores by about 1e-4
    assert np.allclose(result.tracks[score_cols].to_numpy(), seeking.tracks[score_cols].to_numpy(), atol=1e-3)


def test_embed_array_goes_through_the_engine(monkeypatch):
    """An in-memory signal is embedded by the engine, as files are: same vectors as ``cut`` + encoder
    (the track's vectors finished by its track context)."""
    from clapknn.embedding import engine
    from clapknn.embedding.encode import embed_array
    from clapknn.encoders import get_encoder

    seen = []
    real = engine.iter_embeddings

    def spy(paths, *args, **kwargs):
        seen.append(list(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(engine, "iter_embeddings", spy)
    enc = get_encoder("features")
    y = tone(220.0, 25.0)
    vectors, snippets = embed_array(np.stack([y, y], axis=1), SR, enc, snippet_seconds=10.0)
    assert len(seen) == 1 and isinstance(seen[0][0], engine.Signal)
    batch = cut(y, SR, 10.0, pad=enc.pad)
    np.testing.assert_allclose(vectors, enc.track_context(enc.embed(batch.audio)), atol=1e-6)
    assert snippets["start"].tolist() == batch.starts.tolist()
