"""Key and tempo analysis on synthesised audio with known key and tempo (clapknn.analysis)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clapknn import analysis
from clapknn.analysis import (
    KEY_NAMES,
    PROFILES,
    analyze_file,
    analyze_files,
    estimate_key,
    estimate_tempo,
    key_scores,
    pitch_class,
)
from clapknn.errors import AudioError, ParameterError

SR = 22050  # Hz
MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


def midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def note(midi: float, seconds: float, sr: int = SR, *, amp: float = 1.0) -> np.ndarray:
    """An additive-synthesis tone: 6 harmonics falling off as 1/h, short attack, exponential decay."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = midi_hz(midi)
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 7) if f0 * h < sr / 2)
    env = np.minimum(t / 0.01, 1.0) * np.exp(-1.5 * t)
    return (amp * env * y).astype(np.float32)


def chord(midis, seconds: float) -> np.ndarray:
    return sum(note(m, seconds) for m in midis)


def key_piece(tonic: int, mode: str, *, cents: float = 0.0) -> np.ndarray:
    """Scale up and down, then a I-IV-V-I (i-iv-V-i) cadence with the roots in the bass."""
    scale = MAJOR if mode == "major" else HARMONIC_MINOR
    base = 60 + tonic + cents / 100.0
    third, sixth = (4, 9) if mode == "major" else (3, 8)
    cadence = ([0, third, 7], [5, sixth, 12], [7, 11, 14], [0, third, 7])
    parts = [note(base + d, 0.25) for d in list(scale) + [12] + list(reversed(scale))]
    parts += [chord([base + d for d in triad] + [base + triad[0] - 24], 0.8) for triad in cadence]
    y = np.concatenate(parts)
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def click_track(bpm: float, seconds: float = 12.0, sr: int = SR, *, accent_every: int = 1) -> np.ndarray:
    """Short decaying noise bursts at ``bpm`` (every ``accent_every``-th one louder)."""
    rng = np.random.default_rng(0)
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    burst = (rng.standard_normal(int(0.03 * sr)) * np.exp(-np.arange(int(0.03 * sr)) / (0.005 * sr))).astype(np.float32)
    for i, t in enumerate(np.arange(0.1, seconds - 0.1, 60.0 / bpm)):
        s = int(t * sr)
        y[s : s + burst.size] += burst * (1.0 if i % accent_every == 0 else 0.4)
    return 0.5 * y / np.max(np.abs(y))


def drum_groove(bpm: float, seconds: float = 12.0, sr: int = SR) -> np.ndarray:
    """Kick on 1 and 3, snare (noise) on 2 and 4, quiet hats on the eighths: a backbeat."""
    rng = np.random.default_rng(1)
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    n = int(0.08 * sr)
    t = np.arange(n) / sr
    # a kick is a low thump plus the beater's click
    kick = np.sin(2 * np.pi * 60 * t) * np.exp(-t / 0.03) + 0.5 * rng.standard_normal(n) * np.exp(-t / 0.003)
    snare = rng.standard_normal(n) * np.exp(-t / 0.02)
    hat = rng.standard_normal(n) * np.exp(-t / 0.005) * 0.3
    beat = 60.0 / bpm
    for i, start in enumerate(np.arange(0.1, seconds - 0.2, beat / 2)):
        s = int(start * sr)
        sound = hat if i % 2 else (kick if (i // 2) % 2 == 0 else snare)
        y[s : s + n] += sound.astype(np.float32)
    return 0.5 * y / np.max(np.abs(y))


# --------------------------------------------------------------------------- key


@pytest.mark.parametrize(
    "tonic,mode",
    [(0, "major"), (7, "major"), (3, "major"), (6, "major"), (9, "minor"), (2, "minor"), (1, "minor"), (5, "minor")],
)
def test_key_of_scales_and_cadences(tonic, mode):
    est = estimate_key(key_piece(tonic, mode), SR)
    assert (est.tonic, est.mode) == (tonic, mode)
    assert est.confidence > 0
    assert set(est.scores) == set(KEY_NAMES) and len(est.scores) == 24
    assert max(est.scores, key=est.scores.get) == est.label


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_finds_the_key(profile):
    for tonic, mode in ((4, "major"), (11, "minor")):
        est = estimate_key(key_piece(tonic, mode), SR, profile=profile)
        assert (est.tonic, est.mode, est.profile) == (tonic, mode, profile)


def test_key_of_detuned_recording_and_tuning_estimate():
    # A piece played 35 cents sharp: the tuning estimate sees it and the key is still right.
    est = estimate_key(key_piece(2, "major", cents=35), SR)
    assert est.label == "D major"
    assert 0.2 <= est.tuning <= 0.5


def test_key_in_sliding_windows():
    y = key_piece(10, "major")
    est = estimate_key(y, SR, window=2.0, hop=1.0)
    assert est.label == "Bb major"


def test_key_names_spelling():
    assert estimate_key(key_piece(1, "minor"), SR).label == "C# minor"
    assert estimate_key(key_piece(3, "major"), SR).label == "Eb major"


def test_key_scores_rotations():
    # A pitch-class profile equal to the E minor template correlates 1.0 with E minor.
    minor = np.asarray(PROFILES["krumhansl"][1])
    scores = key_scores(np.roll(minor, 4), profile="krumhansl")
    assert scores.shape == (24,)
    assert KEY_NAMES[int(np.argmax(scores))] == "E minor"
    assert scores.max() == pytest.approx(1.0)
    # batch of profiles, and a flat profile scores zero everywhere
    both = key_scores(np.stack([np.roll(minor, 4), np.ones(12)]), profile="krumhansl")
    assert both.shape == (2, 24) and np.allclose(both[1], 0.0)


def test_key_of_silence_is_none():
    est = estimate_key(np.zeros(SR * 2, dtype=np.float32), SR)
    assert est.key is None and est.mode is None and est.confidence == 0.0 and est.label is None


def test_key_of_very_short_audio():
    est = estimate_key(chord([60, 64, 67], 0.3).astype(np.float32), SR)
    assert est.label == "C major"


@pytest.mark.parametrize(
    "y,kwargs",
    [
        (np.zeros((2, 1000), dtype=np.float32), {}),
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), {}),
        (np.zeros(1000, dtype=np.int16), {}),
        (np.zeros(1000, dtype=np.float32), {"profile": "bogus"}),
        (np.zeros(1000, dtype=np.float32), {"window": 0}),
    ],
)
def test_key_bad_input(y, kwargs):
    with pytest.raises(ParameterError):
        estimate_key(y, SR, **kwargs)


def test_pitch_class_names():
    assert [pitch_class(n) for n in ("C", "c#", "Db", "Bb", "B", "Cb")] == [0, 1, 1, 10, 11, 11]
    with pytest.raises(ParameterError, match="H"):
        pitch_class("H")


# --------------------------------------------------------------------------- tempo


@pytest.mark.parametrize("bpm", [60, 90, 120, 150, 174])
def test_tempo_of_click_tracks(bpm):
    est = estimate_tempo(click_track(bpm), SR)
    assert est.bpm == pytest.approx(bpm, rel=0.02)
    assert 0.0 <= est.confidence <= 1.0
    # beats: one per click, evenly spaced at the beat period
    assert est.beats.size >= 0.7 * 12 * bpm / 60
    assert np.median(np.diff(est.beats)) == pytest.approx(60.0 / bpm, rel=0.03)


def test_beats_fall_on_the_clicks():
    bpm = 100.0
    est = estimate_tempo(click_track(bpm), SR)
    clicks = np.arange(0.1, 11.9, 60.0 / bpm)
    error = np.abs(est.beats[:, None] - clicks[None, :]).min(axis=1)
    assert np.median(error) < 0.03


def test_backbeat_groove_is_not_halved():
    # Kick and snare alternate on the beats: the autocorrelation's strongest period is two beats
    # (kick to kick); the octave check must still report the beat.
    for bpm in (110, 160):
        assert estimate_tempo(drum_groove(bpm), SR).bpm == pytest.approx(bpm, rel=0.03)


def test_weak_offbeats_are_not_doubled():
    # Strong beats with faint clicks halfway between (over a faint noise floor, as in any recording):
    # the tempo is the strong pulse.
    beats = click_track(80)
    y = beats + 0.2 * click_track(160)[: beats.size] + 0.01 * np.random.default_rng(0).standard_normal(beats.size)
    assert estimate_tempo(y.astype(np.float32), SR).bpm == pytest.approx(80, rel=0.03)


def test_tempo_of_silence_and_short_audio_is_none():
    assert estimate_tempo(np.zeros(SR * 5, dtype=np.float32), SR).bpm is None
    assert estimate_tempo(click_track(120, seconds=0.5), SR).bpm is None


def test_tempo_from_a_precomputed_envelope():
    y = click_track(130)
    env = analysis.onset_envelope(y, SR)
    est = estimate_tempo(np.zeros(1, dtype=np.float32), SR, onset_env=env, beats=False)
    assert est.bpm == pytest.approx(130, rel=0.02) and est.beats.size == 0


@pytest.mark.parametrize(
    "kwargs", [{"min_bpm": 200, "max_bpm": 100}, {"min_bpm": 0}, {"prior_octaves": 0}, {"n_multiples": 0}]
)
def test_tempo_bad_parameters(kwargs):
    with pytest.raises(ParameterError):
        estimate_tempo(click_track(120, seconds=3), SR, **kwargs)


# --------------------------------------------------------------------------- files and CLI


@pytest.fixture
def song(tmp_path):
    """A 12-s file in A minor at 120 BPM: the cadence repeated over a click track."""
    import soundfile as sf

    tonal = np.tile(key_piece(9, "minor"), 2)
    clicks = click_track(120, seconds=tonal.size / SR)[: tonal.size]
    path = tmp_path / "song.wav"
    sf.write(str(path), (0.6 * tonal + 0.4 * clicks).astype(np.float32), SR)
    return path


def test_analyze_file(song):
    row = analyze_file(song, beats=True)
    assert row["path"] == str(song)
    assert (row["key"], row["mode"]) == ("A", "minor")
    assert row["bpm"] == pytest.approx(120, rel=0.03)
    assert 0 <= row["tempo_confidence"] <= 1 and row["key_confidence"] > 0
    assert len(row["beats"]) > 10


def test_analyze_files_table_and_errors(song, tmp_path):
    table = analyze_files([song], profile="temperley")
    assert list(table.columns) == list(analysis.COLUMNS)
    assert len(table) == 1 and table.loc[0, "key"] == "A"
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError):
        analyze_files([song, missing])
    table = analyze_files([missing, song], errors="skip")
    assert list(table["path"]) == [str(song)]
    assert table.attrs["skipped"] == [(str(missing), "no such file")]
    with pytest.raises(ParameterError):
        analyze_files([song], errors="ignore")


def test_cli_analyze(song, tmp_path, capsys):
    from clapknn.cli import main

    out = tmp_path / "keys.json"
    assert main(["analyze", str(song), "--profile", "krumhansl", "--out", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["key"] == "A" and rows[0]["mode"] == "minor"
    assert rows[0]["bpm"] == pytest.approx(120, rel=0.03)
    # a folder is scanned; a missing file is listed and makes the exit code 1
    assert main(["analyze", str(tmp_path), str(tmp_path / "nope.wav"), "-q"]) == 1
    captured = capsys.readouterr()
    assert "song.wav" in captured.out and "key_confidence" in captured.out
    assert "nope.wav: no such file" in captured.err


def test_cli_analyze_nothing_to_do(tmp_path, capsys):
    from clapknn.cli import main

    assert main(["analyze", str(tmp_path / "nope.wav")]) == 2
    assert "clapknn: error: nothing to analyse" in capsys.readouterr().err


def test_cli_tag_with_key_tempo(built_index, tmp_path):
    from clapknn.cli import main

    _, root = built_index
    out = tmp_path / "tags.json"
    code = main(["tag", str(root / "examples" / "calm"), "--index", str(root / "index"), "--key-tempo", "--out", str(out), "-q"])
    assert code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 3
    for r in rows:
        assert {"key", "mode", "bpm", "key_confidence", "tempo_confidence"} <= set(r)
        # the "calm" examples are single tones (no key to speak of) pulsing at 60 BPM
        assert r["mode"] in ("major", "minor")
        assert r["bpm"] == pytest.approx(60, rel=0.04) or r["bpm"] == pytest.approx(120, rel=0.04)


class _Terminal:
    """A stand-in stderr that says it is a terminal (and keeps what is written to it)."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def isatty(self):
        return True

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass


def test_cli_analyze_draws_a_progress_bar_on_terminals_only(song, tmp_path, capsys, monkeypatch):
    """Without -q, the bar goes to a terminal; into a pipe or file (captured stderr here) nothing but
    the summary line is written."""
    from clapknn.cli import main

    assert main(["analyze", str(song), "--out", str(tmp_path / "keys.csv")]) == 0
    err = capsys.readouterr().err
    assert err == f"wrote 1 row(s) to {tmp_path / 'keys.csv'}\n"
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["analyze", str(song), "--out", str(tmp_path / "keys.csv")]) == 0
    drawn = terminal.buffer.getvalue()
    assert "analyse" in drawn  # the bar, drawn because stderr is a terminal
    assert main(["analyze", str(song), "--out", str(tmp_path / "keys.csv"), "-q"]) == 0
    assert terminal.buffer.getvalue()[len(drawn):] == f"wrote 1 row(s) to {tmp_path / 'keys.csv'}\n"  # -q: no bar
