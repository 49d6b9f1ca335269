"""The bad-input corpus: whatever a music folder holds, clapknn gets through it, names every file it
skips with a reason, and its exit code says whether anything was skipped.

The corpus is synthesised here (see :func:`write_corpus`); ``docs/robustness.md`` lists every input
and its outcome.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from clapknn.audio import decode, snippet
from clapknn.cli import main
from clapknn.errors import AudioError
from clapknn.index import Index
from clapknn.tagging.tagger import Tagger

from conftest import make_examples, tone

SR = 22050  # Hz
USED = None  # expectation: the file is tagged
EITHER = "either"  # expectation: tagged, or skipped with some reason (depends on the libsndfile build)


def _write(path: Path | bytes, y: np.ndarray, sr: int = SR, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path if isinstance(path, bytes) else str(path), y, sr, **kwargs)


def _flip(data: bytes, seed: int, n: int = 24, span: int = 200) -> bytes:
    """Invert ``n`` seeded bytes among the first ``span``: a header that no longer parses."""
    out = bytearray(data)
    for i in np.random.default_rng(seed).integers(0, min(span, len(out)), n):
        out[i] ^= 0xFF
    return bytes(out)


def write_corpus(root: Path) -> dict[str, str | None]:
    """Write the corpus under ``root``; return ``{name relative to root: expected skip reason}``.

    The reason is a regular expression the skip reason must match; :data:`USED` means the file
    must be tagged, :data:`EITHER` that either outcome is fine.
    """
    root.mkdir(parents=True, exist_ok=True)
    y = tone(440, 1.5)
    rng = np.random.default_rng(7)
    expect: dict[str, str | None] = {}

    # --- well-formed audio of every format, layout and odd size: all must be used
    good = {
        "good.wav": {}, "good.flac": {}, "good.ogg": {}, "good.mp3": {},
        "pcm_u8.wav": {"subtype": "PCM_U8"}, "pcm_24.wav": {"subtype": "PCM_24"},
        "float32.wav": {"subtype": "FLOAT"}, "float64.wav": {"subtype": "DOUBLE"},
        "pcm_24.aiff": {"subtype": "PCM_24"}, "flac_24.flac": {"subtype": "PCM_24"},
    }
    for name, kw in good.items():
        _write(root / name, y, **kw)
        expect[name] = USED
    _write(root / "six_channels.wav", np.stack([y * (0.5 + 0.1 * c) for c in range(6)], axis=1))
    _write(root / "rate_8k.wav", tone(440, 1.5, 8000), 8000)
    _write(root / "rate_96k.flac", tone(440, 1.5, 96000), 96000)
    _write(root / "clip_20ms.wav", y[: int(0.02 * SR)])  # repeat-padded to a full snippet
    _write(root / "one_sample.wav", np.array([0.5], np.float32))  # a full snippet of DC
    _write(root / "float_peak_20.wav", 20 * y, subtype="FLOAT")  # over full scale, but real audio
    _write(root / "dc_offset.wav", np.full(SR, 0.25, np.float32))
    _write(root / "square_clipped.wav", np.sign(y))
    _write(root / "Ünïcødé 音楽 🎵.wav", y)
    _write(root / "two  spaces, a comma; 'quotes' \"too\".flac", y)
    _write(root / "new\nline.wav", y)
    (root / "Dossier à accents").mkdir()
    _write(root / "Dossier à accents" / "piste 01.ogg", y)
    os.symlink("good.wav", root / "link_to_good.wav")
    for name in ("six_channels.wav", "rate_8k.wav", "rate_96k.flac", "clip_20ms.wav", "one_sample.wav",
                 "float_peak_20.wav", "dc_offset.wav", "square_clipped.wav", "Ünïcødé 音楽 🎵.wav",
                 "two  spaces, a comma; 'quotes' \"too\".flac", "new\nline.wav", "Dossier à accents/piste 01.ogg",
                 "link_to_good.wav"):
        expect[name] = USED

    # --- broken downloads: truncated and corrupt headers
    long_y = tone(440, 4.0, 44100)
    for ext in ("wav", "flac", "ogg", "mp3"):
        data = (root / f"good.{ext}").read_bytes()
        (root / f"zero_bytes.{ext}").write_bytes(b"")
        expect[f"zero_bytes.{ext}"] = r"^empty file \(0 bytes\)$"
        (root / f"header_only.{ext}").write_bytes(data[:20])
        expect[f"header_only.{ext}"] = r"^cannot decode audio \(.+\)$"
        (root / f"flipped_header.{ext}").write_bytes(_flip(data, seed=1))
        expect[f"flipped_header.{ext}"] = EITHER  # mp3 has no magic: the decoder resyncs on later frames
        (root / f"half.{ext}").write_bytes(data[: len(data) // 2])
    for ext in ("wav", "flac", "ogg"):
        data = (root / f"good.{ext}").read_bytes()
        (root / f"bad_magic.{ext}").write_bytes(b"XXXX" + data[4:])
        expect[f"bad_magic.{ext}"] = r"^cannot decode audio \(format not recognised\)$"
    expect["half.wav"] = USED  # the first half decodes
    expect["half.mp3"] = USED
    expect["half.ogg"] = r"no audio samples could be decoded|cannot decode audio"
    expect["half.flac"] = r"^cannot decode audio \(flac decoder lost sync\)$"  # broken inside the first block
    _write(root / "long.flac", long_y, 44100)
    data = (root / "long.flac").read_bytes()
    (root / "long.flac").unlink()
    (root / "cut_at_80_percent.flac").write_bytes(data[: int(len(data) * 0.8)])
    expect["cut_at_80_percent.flac"] = USED  # the blocks before the break are used

    # --- things that are not audio, under audio names
    (root / "notes.wav").write_text("these are my notes, not audio\n" * 40)
    expect["notes.wav"] = r"^cannot decode audio \(format not recognised\)$"
    (root / "cover.mp3").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.bytes(6000))
    expect["cover.mp3"] = r"^cannot decode audio \("
    (root / "404.flac").write_text("<html><body><h1>404 Not Found</h1></body></html>\n")
    expect["404.flac"] = r"^cannot decode audio \(format not recognised\)$"
    (root / "archive.m4a").write_bytes(b"PK\x03\x04" + rng.bytes(3000))
    expect["archive.m4a"] = r"^cannot decode audio \("
    (root / "noise_bytes.ogg").write_bytes(rng.bytes(20000))
    expect["noise_bytes.ogg"] = r"^cannot decode audio \(format not recognised\)$"
    (root / "tags_only.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x10\x00" + b"\x00" * 2048)
    expect["tags_only.mp3"] = r"^cannot decode audio \(|^no audio samples"
    wav = bytearray((root / "good.wav").read_bytes())
    wav[24:28] = (1).to_bytes(4, "little")  # the fmt chunk's sample rate
    (root / "claims_1_hz.wav").write_bytes(bytes(wav))  # resampled, 1.5 s would become 9 hours
    expect["claims_1_hz.wav"] = r"^sample rate 1 Hz is outside 1000-1000000 Hz; the header is corrupt$"
    mp3 = bytearray((root / "good.mp3").read_bytes())
    mp3[21:25] = b"\x7f\xff\xff\xff"  # the Xing frame count: the header claims ~2 years
    (root / "claims_years.mp3").write_bytes(bytes(mp3))
    expect["claims_years.mp3"] = USED  # the 1.5 s that exist are read window by window, then it stops
    _write(root / "no_frames.wav", np.zeros(0, np.float32))
    expect["no_frames.wav"] = r"no audio|cannot decode audio"

    # --- unusable samples
    bad = y.copy()
    bad[100] = np.nan
    _write(root / "nan.wav", bad, subtype="FLOAT")
    expect["nan.wav"] = r"^audio contains NaN or infinite samples$"
    bad = y.copy()
    bad[100] = np.inf
    _write(root / "inf.wav", bad, subtype="FLOAT")
    expect["inf.wav"] = r"^audio contains NaN or infinite samples$"
    _write(root / "peak_1e30.wav", 1e30 * y, subtype="FLOAT")
    expect["peak_1e30.wav"] = r"times full scale; the file is corrupt$"
    _write(root / "silence.wav", np.zeros(SR, np.float32))
    expect["silence.wav"] = r"^silent \(all 1 snippet\(s\) below -80 dBFS\)$"
    _write(root / "hiss_-110dBFS.wav", (3e-6 * rng.standard_normal(SR)).astype(np.float32), subtype="FLOAT")
    expect["hiss_-110dBFS.wav"] = r"^silent"

    # --- file-system oddities
    os.symlink("no_such_target.wav", root / "dangling_link.wav")
    expect["dangling_link.wav"] = r"^broken symbolic link"
    os.symlink("self_loop.mp3", root / "self_loop.mp3")
    expect["self_loop.mp3"] = r"^symbolic link loop$"
    os.mkfifo(root / "named_pipe.wav")
    expect["named_pipe.wav"] = r"^not a regular file"
    (root / "loops").mkdir()
    _write(root / "loops" / "inside.wav", y)
    expect["loops/inside.wav"] = USED
    os.symlink("..", root / "loops" / "back_up")  # walking it would find the whole corpus again
    expect["loops/back_up"] = r"already scanned \(symlink loop"
    latin1 = os.fsencode(root) + b"/caf\xe9 latin-1.wav"
    _write(latin1, y)
    expect["caf\\xe9 latin-1.wav"] = r"not valid UTF-8"
    # not audio by extension, or hidden: not looked at, not reported
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(100))
    (root / "README.txt").write_text("hello")
    _write(root / ".hidden.wav", y)
    return expect


# --------------------------------------------------------------------------- with and without ffmpeg
def _flush_audioread(monkeypatch) -> list:
    """A fresh backend list for audioread (it caches one per process), restored after the test."""
    import warnings

    import audioread

    monkeypatch.setattr(audioread, "BACKENDS", [])
    with warnings.catch_warnings():  # its backends import stdlib modules deprecated in Python 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        return audioread.available_backends(flush_cache=True)


@pytest.fixture
def ffmpeg_hidden(monkeypatch, tmp_path_factory):
    """Run as on a machine without ffmpeg, installed or not: stand-ins that fail go first on PATH
    (worker processes inherit it) and audioread's cached backend list is rebuilt."""
    from audioread import ffdec

    shims = tmp_path_factory.mktemp("no-ffmpeg")
    for name in ffdec.COMMANDS:
        (shims / name).write_text("#!/bin/sh\nexit 127\n")
        (shims / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ.get('PATH', '')}")
    assert ffdec.FFmpegAudioFile not in _flush_audioread(monkeypatch)


@pytest.fixture
def ffmpeg_required(monkeypatch):
    """Run with ffmpeg visible to audioread; skipped where ffmpeg is not installed."""
    from audioread import ffdec

    if shutil.which("ffmpeg") is None or ffdec.FFmpegAudioFile not in _flush_audioread(monkeypatch):
        pytest.skip("ffmpeg is not installed or does not run (apt-get install ffmpeg); this test covers the "
                    "fallback decoder")


@pytest.mark.parametrize("ffmpeg", ["hidden", "visible"])
def test_corpus_outcomes_do_not_depend_on_ffmpeg(corpus, built_index, ffmpeg, request):
    """Damaged files of the formats libsndfile reads get libsndfile's verdict whatever else is
    installed: ffmpeg salvaged part of ``bad_magic.flac`` and ``half.flac`` and misread ``404.flac``
    as "0 Hz" before. Only the m4a's reason (it needs ffmpeg) differs."""
    request.getfixturevalue("ffmpeg_hidden" if ffmpeg == "hidden" else "ffmpeg_required")
    root, expect = corpus
    index, _ = built_index
    result = Tagger(index).tag(root)
    seen = _outcomes(root, result)
    wrong = _check(expect, seen)
    assert not wrong, "\n".join(wrong)
    m4a = seen["archive.m4a"][0]
    if ffmpeg == "hidden":
        assert m4a == "cannot decode audio (format not recognised; reading .m4a files needs ffmpeg, which was not found)"
    else:
        assert m4a.startswith("cannot decode audio (format not recognised; ffmpeg: ")


def _ffmpeg_encode(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)], check=True,
                   timeout=120)
    return dst


def test_m4a_through_ffmpeg_windows_and_truncation(tmp_path, monkeypatch, ffmpeg_required, caplog):
    """A format only ffmpeg reads: windows equal the whole file; a truncated download is used for the
    part that decodes, and a warning says so for that file."""
    src = tmp_path / "src.wav"
    _write(src, np.stack([tone(440, 9.3, 44100), tone(660, 9.3, 44100)], axis=1), 44100)
    m4a = _ffmpeg_encode(src, tmp_path / "a.m4a", "-c:a", "aac", "-movflags", "+faststart")
    whole = list(snippet.iter_file_snippets(m4a, SR, 2.0))
    monkeypatch.setattr(snippet, "WHOLE_FILE_SECONDS", 3.0)
    windowed = list(snippet.iter_file_snippets(m4a, SR, 2.0))
    assert [s for s, _, _ in whole] == [s for s, _, _ in windowed] and len(whole) == 5
    for (_, _, a), (_, _, b) in zip(whole, windowed):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    data = m4a.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 2])
    y = decode.load(cut, sr=SR)
    assert 2.0 < y.size / SR < 8.0
    assert any("cut.m4a" in r.getMessage() and "truncated?" in r.getMessage() for r in caplog.records)


def test_m4a_without_ffmpeg_says_it_needs_ffmpeg(tmp_path, ffmpeg_hidden):
    path = tmp_path / "a.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    with pytest.raises(AudioError, match=r"reading \.m4a files needs ffmpeg, which was not found\)$"):
        decode.load(path, sr=SR)


# --------------------------------------------------------------------------- the decoder's own stderr
_MPG123_NOISE = re.compile(r"Illegal Audio-MPEG-Header|Trying to resync|Xing stream size|libmpg123|Skipped \d+ bytes")


def _damaged_mp3(path: Path) -> Path:
    """An mp3 written by soundfile with junk before and inside its frames (libmpg123 resyncs)."""
    y = tone(440, 3.0, 44100)
    _write(path, np.stack([y, 0.5 * y], axis=1), 44100)
    data = path.read_bytes()
    path.write_bytes(b"\x00junk" * 50 + data[:5000] + bytes(range(256)) * 3 + data[5000:])
    return path


def test_mp3_decoder_notes_stay_off_stderr(tmp_path, capfd):
    """libmpg123 writes "Note: Illegal Audio-MPEG-Header ... Trying to resync" and "Warning: Xing
    stream size off" to fd 2 by itself; decoding holds them back (what else is written meanwhile
    still comes out)."""
    path = _damaged_mp3(tmp_path / "damaged.mp3")
    sf.read(str(path))  # the input really makes libmpg123 talk
    assert _MPG123_NOISE.search(capfd.readouterr().err)
    assert decode.info(path).sample_rate == 44100
    y = decode.load(path, sr=SR)
    assert 2.5 < y.size / SR < 3.5
    windows = list(snippet.iter_file_snippets(path, SR, 1.0))
    assert len(windows) == 3
    with decode._decoder_stderr(path):
        os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 1.\n")
        os.write(2, b"a line of someone else's\n")
    err = capfd.readouterr().err
    assert not _MPG123_NOISE.search(err), err
    assert err == "a line of someone else's\n"


def test_bad_mp3s_get_one_line_each_and_nothing_else(tmp_path, built_index, capfd):
    """The CLI over damaged mp3s: each refused file is one line with its reason, and no decoder
    notes reach the terminal (fd 2), with either decoding engine."""
    _, session = built_index
    music = tmp_path / "music"
    _damaged_mp3(music / "damaged.mp3")
    good = (music / "damaged.mp3").read_bytes()
    (music / "cut_20_bytes.mp3").write_bytes(good[250:270])
    (music / "tags_only.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x10\x00" + b"\x00" * 2048)
    capfd.readouterr()
    for workers in ("0", "1"):
        rc = main(["tag", str(music), "--index", str(session / "index"), "--workers", workers])
        out, err = capfd.readouterr()
        assert rc == 1
        assert not _MPG123_NOISE.search(err), err
        lines = err.splitlines()
        assert lines[0] == "skipped 2 input(s):" and len(lines) == 3, err
        assert {line.split(": ", 1)[0].strip() for line in lines[1:]} == {
            str(music / "cut_20_bytes.mp3"), str(music / "tags_only.mp3")}
        assert "damaged.mp3" in out


def _key(root: Path, where: str) -> str:
    """A reported path as a corpus key (relative, undecodable bytes as ``\\xNN``)."""
    shown = os.fsencode(where).decode("utf-8", "backslashreplace") if "\\x" not in where else where
    return os.path.relpath(shown, os.fsencode(root).decode("utf-8", "backslashreplace"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "music"
    return root, write_corpus(root)


def _outcomes(root: Path, result) -> dict[str, list[str | None]]:
    seen: dict[str, list[str | None]] = {}
    for path in result.tracks["path"]:
        seen.setdefault(_key(root, path), []).append(USED)
    for where, reason in result.skipped:
        assert reason and reason.strip(), f"empty reason for {where}"
        seen.setdefault(_key(root, where), []).append(reason)
    return seen


def _check(expect: dict[str, str | None], seen: dict[str, list[str | None]]) -> list[str]:
    wrong = []
    for name, want in expect.items():
        got = seen.get(name)
        if not got or len(got) != 1:
            wrong.append(f"{name!r}: reported {got!r} (want exactly one outcome)")
            continue
        if want is EITHER:
            continue
        if want is USED and got[0] is not USED:
            wrong.append(f"{name!r}: skipped ({got[0]}) but should be used")
        elif want is not USED and (got[0] is USED or not re.search(want, got[0])):
            wrong.append(f"{name!r}: got {got[0]!r}, want /{want}/")
    wrong += [f"{name!r}: reported but not in the corpus" for name in set(seen) - set(expect)]
    return wrong


@pytest.mark.parametrize("engine", ["thread", "process", "cached"])
def test_every_input_is_used_or_skipped_with_its_reason(corpus, built_index, tmp_path, engine):
    """Each file gets exactly one outcome: tagged, or skipped with the expected reason, whichever
    embedding engine runs (decode thread, decode worker process, embedding cache)."""
    root, expect = corpus
    index, _ = built_index
    kwargs = {"thread": {}, "process": {"workers": 1}, "cached": {"cache": tmp_path / "cache"}}[engine]
    result = Tagger(index).tag(root, **kwargs)
    wrong = _check(expect, _outcomes(root, result))
    assert not wrong, "\n".join(wrong)
    assert np.isfinite(result.tracks.filter(like="score").to_numpy()).all()


def test_truncated_files_keep_what_decodes(corpus, caplog):
    root, _ = corpus
    y = decode.load(root / "cut_at_80_percent.flac", sr=44100)
    assert 2.5 < y.size / 44100 < 4.0  # some of the 4 s, not nothing
    y = decode.load(root / "half.mp3", sr=SR)
    assert 0.4 < y.size / SR < 1.2
    assert any("header announces" in r.getMessage() or "stopped after" in r.getMessage() for r in caplog.records)


def test_truncated_long_file_read_window_by_window(tmp_path, monkeypatch, caplog):
    """A long file cut short: the windows before the cut come out, then a warning, no error."""
    path = tmp_path / "mix.flac"
    _write(path, tone(330, 40.0, 8000), 8000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(snippet, "WHOLE_FILE_SECONDS", 5.0)  # 40 s counts as long: windowed reads
    got = list(snippet.iter_file_snippets(path, 8000, 4.0))
    assert 2 <= len(got) < 10 and all(a is not None for _, _, a in got)
    assert any("audio ends near" in r.getMessage() for r in caplog.records)


def test_cli_tag_lists_each_skipped_file_and_exits_1(corpus, built_index, tmp_path, capsys):
    root, expect = corpus
    _, session = built_index
    out = tmp_path / "tags.csv"
    rc = main(["tag", str(root), "--index", str(session / "index"), "--out", str(out)])  # not -q: list all
    err = capsys.readouterr().err
    skipped = {k for k, v in expect.items() if v is not USED and v is not EITHER}
    assert rc == 1
    assert re.search(r"skipped (\d+) input", err) and int(re.search(r"skipped (\d+) input", err)[1]) >= len(skipped)
    for name in skipped:
        assert os.path.basename(name.split("\n")[0]) in err, name
    # odd names survive the table: unicode, commas, quotes, a newline
    table = pd.read_csv(out)
    names = {os.path.relpath(p, root) for p in table["path"]}
    assert {"Ünïcødé 音楽 🎵.wav", "two  spaces, a comma; 'quotes' \"too\".flac", "new\nline.wav"} <= names


@pytest.mark.parametrize("fmt", [".json", ".parquet"])
def test_odd_names_round_trip_through_json_and_parquet(corpus, built_index, tmp_path, fmt):
    root, _ = corpus
    _, session = built_index
    out = tmp_path / f"tags{fmt}"
    files = [str(root / "Ünïcødé 音楽 🎵.wav"), str(root / "new\nline.wav"), str(root / "dangling_link.wav")]
    assert main(["tag", *files, "--index", str(session / "index"), "-q", "--out", str(out)]) == 1
    table = pd.read_json(out) if fmt == ".json" else pd.read_parquet(out)
    assert sorted(table["path"]) == sorted(files[:2])


def test_cli_subprocess_never_shows_a_traceback(corpus, built_index, tmp_path):
    """The real command over the corpus: exit 1, a skip list, no traceback; all-bad input: exit 2."""
    root, _ = corpus
    _, session = built_index
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "clapknn", "tag", str(root), "--index", str(session / "index"), "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "skipped" in run.stderr
    assert "Ünïcødé" in run.stdout

    only_bad = [str(root / n) for n in ("notes.wav", "nan.wav", "zero_bytes.wav")]
    examples = tmp_path / "bad_examples"
    for i, name in enumerate(only_bad):
        (examples / f"tag{i}").mkdir(parents=True)
        os.symlink(name, examples / f"tag{i}" / Path(name).name)
    cmd = [sys.executable, "-m", "clapknn", "build", str(examples), "--out", str(tmp_path / "idx"), "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("clapknn: error: no usable example") and len(run.stderr.splitlines()) == 1
    assert not (tmp_path / "idx").exists()


def test_tagging_only_bad_files_finishes_with_exit_1(corpus, built_index, capsys):
    """Every input skipped is still a finished run: an empty table, the reasons, exit 1."""
    root, _ = corpus
    _, session = built_index
    names = [str(root / n) for n in ("notes.wav", "silence.wav", "self_loop.mp3")]
    assert main(["tag", *names, "--index", str(session / "index"), "-q"]) == 1
    captured = capsys.readouterr()
    assert "(no track tagged)" in captured.out and "skipped 3 input(s)" in captured.err
    assert main(["tag", str(root / "nothing_here.wav"), "--index", str(session / "index"), "-q"]) == 2


def test_build_over_a_folder_with_bad_examples(corpus, tmp_path, capsys):
    """Bad files among the examples are skipped with reasons; the index holds the good ones."""
    root, _ = corpus
    examples = make_examples(tmp_path / "examples", per_tag=2, seconds=3.0)
    for name in ("notes.wav", "nan.wav", "half.flac", "self_loop.mp3"):
        os.symlink(root / name, examples / "calm" / name)
    _write(os.fsencode(examples / "calm") + b"/caf\xe9.wav", tone(220, 3.0))
    _write(examples / "lonely" / "only_one.wav", tone(220, 3.0))
    out = tmp_path / "idx"
    rc = main(["build", str(examples), "--out", str(out), "--snippet-seconds", "1", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "skipped 5 input(s)" in err
    for reason in ("not valid UTF-8", "symbolic link loop", "NaN", "format not recognised", "lost sync"):
        assert reason in err
    assert "note: tag 'lonely' has a single example" in err
    used = {Path(p).name for p in Index.load(out).metadata["path"]}
    assert used == {"calm_0.wav", "calm_1.wav", "energetic_0.wav", "energetic_1.wav", "only_one.wav"}


_UNREADABLE_SCRIPT = r"""
import os, pwd, sys
from clapknn.cli import main
from clapknn.errors import AudioError

work = sys.argv[1]
# one process (--workers 0): worker processes forked from a server started as root would not serve
# the run after dropping root
args = ["--index", os.path.join(work, "index"), "-q", "--workers", "0"]
# a first run imports every module the tag path needs: the interpreter itself may live where
# nobody can read (e.g. under /root), so nothing may be imported after dropping root
main(["tag", os.path.join(work, "warm.wav"), *args])
if os.geteuid() == 0:
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    assert os.geteuid() != 0
for stream in (sys.stdout, sys.stderr):
    print("=== unprivileged run", file=stream, flush=True)
sys.exit(main(["tag", os.path.join(work, "music"), *args]))
"""


def test_unreadable_file_is_skipped_with_permission_denied(built_index):
    """A file we may not read is reported ("Permission denied") and the run goes on.

    root reads any file whatever its mode, so when the tests run as root the command switches to the
    ``nobody`` user (after a first run has imported everything) in a world-readable scratch folder.
    """
    _, session = built_index
    work = Path(tempfile.mkdtemp(prefix="clapknn-perm-"))
    try:
        shutil.copytree(session / "index", work / "index")
        _write(work / "warm.wav", tone(440, 1.5))
        _write(work / "music" / "readable.wav", tone(440, 1.5))
        _write(work / "music" / "locked.wav", tone(440, 1.5))
        for p in [work, *work.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(work / "music" / "locked.wav", 0o000)
        run = subprocess.run([sys.executable, "-c", _UNREADABLE_SCRIPT, str(work)], capture_output=True,
                             text=True, cwd=work, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        out = run.stdout.split("=== unprivileged run")[-1]
        err = run.stderr.split("=== unprivileged run")[-1]
        assert run.returncode == 1, run.stderr
        assert "readable.wav" in out and "locked.wav" not in out
        assert re.search(r"locked\.wav: cannot open \(Permission denied\)", err), err
        assert "Traceback" not in run.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_very_long_file_is_read_window_by_window(tmp_path, monkeypatch):
    """A file longer than WHOLE_FILE_SECONDS is never decoded whole: every read is one snippet's
    worth, and every snippet is embedded. (Peak memory itself is measured by bench/startup.py.)"""
    from clapknn.embedding.encode import embed_files
    from clapknn.encoders.base import Encoder

    class Mean(Encoder):
        name, sample_rate, dim = "mean", 22050, 4

        def embed(self, x):
            v = np.stack([x.mean(1), x.std(1), np.abs(x).max(1), np.ones(len(x))], 1)
            return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    minutes, sr = 12, 4000
    assert minutes * 60 > snippet.WHOLE_FILE_SECONDS
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:  # written in 1-minute chunks
        t = np.arange(60 * sr) / sr
        for i in range(minutes):
            f.write((0.3 * np.sin(2 * np.pi * (200 + i) * t)).astype(np.float32))
    reads = []
    load = decode.load

    def recording_load(p, *args, **kwargs):
        y = load(p, *args, **kwargs)
        reads.append(y.size / kwargs.get("sr", 22050))
        return y

    monkeypatch.setattr(decode, "load", recording_load)
    emb = embed_files([path], Mean(), snippet_seconds=10.0, hashes=True)
    assert len(emb.vectors) == minutes * 6 and emb.files["duration"].iat[0] == pytest.approx(minutes * 60)
    assert len(reads) == minutes * 6 and max(reads) == pytest.approx(10.0)  # one window per read


def test_paths_that_look_like_home_directories(built_index, capsys):
    """``~name`` with no such user is a plain (missing) path, not a crash."""
    _, session = built_index
    assert main(["tag", "~no_such_user_x.wav", "--index", str(session / "index"), "-q"]) == 2
    assert main(["info", "~no_such_user_index"]) == 2
    err = capsys.readouterr().err
    assert "~no_such_user_x.wav: no such file" in err and "~no_such_user_index: no such index" in err


def test_fuzz_the_loader_briefly():
    """The fuzz script (fuzz/fuzz_decode.py) on a fixed, seeded set of 50 inputs: mutated files of
    every format either decode to sane audio or raise AudioError. (How many inputs a second it gets
    through is the script's own report, not a test.)"""
    script = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_decode.py"
    run = subprocess.run([sys.executable, str(script), "--inputs", "50", "--seed", "0", "--timeout", "120"],
                         capture_output=True, text=True, timeout=1800, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    found = re.search(r"fuzzed (\d+) inputs .* (\d+) failure", run.stdout)
    assert found and int(found[1]) >= 50 and found[2] == "0", run.stdout


# --------------------------------------------------------------------------- label problems
def _csv(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


def test_label_csv_problems_are_reported_by_line(tmp_path):
    from clapknn.labels import load_examples

    f = _csv(tmp_path, (
        "Path,TAGS,rating,comment\n"        # header names are case-insensitive; extra columns noted
        "a.wav,happy,5,\n"
        "b.wav,,3,no tags\n"                # line 3: empty tags
        ",sad,,\n"                           # line 4: empty path
        "c.wav, ; | ,,\n"                   # line 5: only separators
        "\"d\nsplit.wav\",sad,,\n"         # a quoted name over two lines (ends on line 7)
        "e.wav,;;,,\n"                       # line 8
    ))
    ex = load_examples(f)
    assert [e.path.name for e in ex.examples] == ["a.wav", "d\nsplit.wav"]
    assert [(w.rsplit(":", 1)[1], r) for w, r in ex.problems] == [
        ("3", "b.wav: no tags"), ("4", "empty path"), ("5", "c.wav: no tags"), ("8", "e.wav: no tags"),
    ]
    assert any("ignored column(s) rating, comment" in n for n in ex.notes)


def test_repeated_files_merge_their_tags_with_a_note(tmp_path):
    from clapknn.labels import load_examples

    f = _csv(tmp_path, "path,tags\na.wav,happy\n./a.wav,sad\nsub/../a.wav,happy\nb.wav,Happy\n")
    ex = load_examples(f)
    assert [(e.path.name, e.tags) for e in ex.examples] == [("a.wav", ("happy", "sad")), ("b.wav", ("Happy",))]
    notes = "\n".join(ex.notes)
    assert "labels.csv:3: ./a.wav is listed again with other tags; tags merged, it now carries happy;sad" in notes
    assert "multi-label" in notes
    assert "labels.csv:4: sub/../a.wav is listed again with the same tags; the repeat is ignored" in notes
    assert "'Happy', 'happy' differ only in letter case" in notes


def test_tsv_and_unusable_label_files(tmp_path):
    from clapknn.errors import LabelError
    from clapknn.labels import load_examples

    ex = load_examples(_csv(tmp_path, "path\ttags\na, b.wav\tx;y\n", "labels.tsv"))
    assert [(e.path.name, e.tags) for e in ex.examples] == [("a, b.wav", ("x", "y"))]
    ex = load_examples(_csv(tmp_path, "path,tags\na.wav,x\0y\nb\0.wav,z\nc.wav,z\n", "nul.csv"))
    assert [e.path.name for e in ex.examples] == ["c.wav"]
    assert [r for _, r in ex.problems] == ["'a.wav': contains a NUL byte (is this a text file?)",
                                           "'b\\x00.wav': contains a NUL byte (is this a text file?)"]
    with pytest.raises(AudioError, match="cannot contain a NUL byte"):
        decode.load("b\0.wav", sr=SR)
    for name, content, match in [
        ("latin1.csv", None, "not a UTF-8 text file"),
        ("noheader.csv", "a.wav,happy\n", "needs a header with 'path' and 'tags'"),
    ]:
        f = tmp_path / name
        if content is None:
            f.write_bytes("path,tags\ncafé.wav,x\n".encode("latin-1"))
        else:
            f.write_text(content)
        with pytest.raises(LabelError, match=match):
            load_examples(f)


def test_build_reports_label_problems_and_missing_files(tmp_path, capsys):
    examples = make_examples(tmp_path / "ex", per_tag=2, seconds=3.0)
    (examples / "empty_tag").mkdir()
    f = _csv(examples, (
        "path,tags,notes\n"
        "calm/calm_0.wav,calm\ncalm/calm_1.wav,calm\nenergetic/energetic_0.wav,energetic\n"
        "energetic/energetic_1.wav,\n"       # line 5: no tags
        "gone.wav,calm\n"                     # listed, but not on disk
        "calm/calm_0.wav,quiet\n"             # line 7: merged, the index becomes multi-label
    ))
    assert main(["build", str(f), "--out", str(tmp_path / "idx"), "--snippet-seconds", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "note: " in err and "ignored column(s) notes" in err and "tags merged" in err
    assert re.search(r"labels\.csv:5: energetic/energetic_1\.wav: no tags", err)
    assert re.search(r"gone\.wav: no such file", err) and "skipped 2 input(s)" in err
    assert "note: tag 'energetic' has a single example" in err and "note: tag 'quiet' has a single example" in err
    # the folder layout: an empty tag folder is a note, not an error
    capsys.readouterr()
    assert main(["build", str(examples), "--out", str(tmp_path / "idx2"), "--snippet-seconds", "1", "-q"]) == 0
    assert "tag folder 'empty_tag' holds no audio files" in capsys.readouterr().err
