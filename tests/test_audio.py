"""Decode and snippet: boundaries, padding, silence, and the input formats users throw at us."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn import decode, snippet
from clapknn.errors import AudioError, ParameterError

from conftest import tone, write_audio


@pytest.mark.parametrize(
    "duration, length, hop, expected",
    [
        (30.0, 10.0, None, [0.0, 10.0, 20.0]),
        (29.9, 10.0, None, [0.0, 10.0]),
        (30.0, 10.0, 5.0, [0.0, 5.0, 10.0, 15.0, 20.0]),
        (4.0, 10.0, None, [0.0]),
        (10.0, 10.0, None, [0.0]),
        (0.0, 10.0, None, []),
        (3.0, 1.5, 1.0, [0.0, 1.0]),
    ],
)
def test_snippet_starts(duration, length, hop, expected):
    np.testing.assert_allclose(snippet.snippet_starts(duration, length, hop), expected)


@pytest.mark.parametrize("length, hop", [(0, None), (-1, None), (1.0, 0), (float("nan"), None), (1.0, -2.0)])
def test_bad_snippet_settings(length, hop):
    with pytest.raises(ParameterError):
        snippet.snippet_starts(10.0, length, hop)


def test_cut_boundaries_and_times(rng):
    sr = 100
    y = rng.standard_normal(2500).astype(np.float32)  # 25 s
    b = snippet.cut(y, sr, 10.0)
    assert b.audio.shape == (2, 1000)
    np.testing.assert_array_equal(b.audio[1], y[1000:2000])
    np.testing.assert_allclose(b.starts, [0, 10])
    np.testing.assert_allclose(b.ends, [10, 20])


def test_short_track_is_repeat_padded():
    sr = 100
    y = np.arange(1, 301, dtype=np.float32) / 300  # 3 s, no silence
    b = snippet.cut(y, sr, 10.0)
    assert b.audio.shape == (1, 1000)
    np.testing.assert_array_equal(b.audio[0, :300], y)
    np.testing.assert_array_equal(b.audio[0, 300:600], y)  # looped, not zero-padded
    assert b.ends[0] == pytest.approx(3.0)


def test_silent_snippets_are_skipped_and_counted(rng):
    sr = 100
    y = np.concatenate([np.zeros(1000), 0.3 * rng.standard_normal(1000), np.zeros(1000)]).astype(np.float32)
    b = snippet.cut(y, sr, 10.0)
    assert b.n_silent == 2
    np.testing.assert_allclose(b.starts, [10.0])


def test_cut_rejects_nan_and_stereo():
    with pytest.raises(ParameterError):
        snippet.cut(np.array([0.0, np.nan], dtype=np.float32), 10, 1.0)
    with pytest.raises(ParameterError):
        snippet.cut(np.zeros((2, 10), dtype=np.float32), 10, 1.0)


def test_file_snippets_match_array_snippets(tmp_path):
    """Reading windows from a file gives the same snippets as cutting the decoded array."""
    y = tone(220, 7.0)
    path = write_audio(tmp_path / "a.wav", y, subtype="FLOAT")
    got = list(snippet.iter_file_snippets(path, 22050, 3.0))
    ref = snippet.cut(decode.load(path, sr=22050), 22050, 3.0)
    assert [s for s, _, _ in got] == list(ref.starts)
    for (_, _, a), b in zip(got, ref.audio):
        np.testing.assert_array_equal(a, b)


def test_long_file_read_window_by_window_equals_whole(tmp_path, monkeypatch):
    y = tone(330, 9.0, sr=8000)
    path = write_audio(tmp_path / "long.wav", y, sr=8000, subtype="FLOAT")
    whole = list(snippet.iter_file_snippets(path, 8000, 2.0))
    monkeypatch.setattr(snippet, "WHOLE_FILE_SECONDS", 1.0)  # force windowed reads
    windowed = list(snippet.iter_file_snippets(path, 8000, 2.0))
    assert len(whole) == len(windowed) == 4
    for (s1, e1, a1), (s2, e2, a2) in zip(whole, windowed):
        assert (s1, e1) == (s2, e2)
        np.testing.assert_allclose(a1, a2, atol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, sr, channels",
    [
        ("stereo.wav", {}, 22050, 2),
        ("rate441.wav", {}, 44100, 1),
        ("u8.wav", {"subtype": "PCM_U8"}, 22050, 1),
        ("pcm24.flac", {"subtype": "PCM_24"}, 48000, 1),
        ("clip.mp3", {"format": "MP3"}, 44100, 2),
        ("clip.ogg", {"format": "OGG", "subtype": "VORBIS"}, 32000, 1),
    ],
)
def test_formats_decode_to_mono_at_target_rate(tmp_path, name, kwargs, sr, channels):
    y = tone(440, 2.0, sr=sr)
    data = np.stack([y, 0.5 * y], axis=1) if channels == 2 else y
    path = write_audio(tmp_path / name, data, sr=sr, **kwargs)
    out = decode.load(path, sr=22050)
    assert out.ndim == 1 and out.dtype == np.float32
    assert abs(out.size - 2.0 * 22050) < 0.05 * 22050  # mp3 encoders add a little padding
    assert 0.05 < np.sqrt(np.mean(out**2)) < 0.5
    info = decode.info(path)
    assert info.channels == channels and info.sample_rate == sr


def test_window_read(tmp_path):
    y = np.concatenate([tone(220, 2.0), tone(880, 2.0)])
    path = write_audio(tmp_path / "two.wav", y, subtype="FLOAT")
    part = decode.load(path, sr=22050, offset=2.0, duration=1.0)
    assert part.size == 22050
    np.testing.assert_allclose(part, y[2 * 22050 : 3 * 22050], atol=1e-6)


def test_decode_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "cover.mp3"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    for path, reason in [(empty, "empty"), (junk, "cannot decode"), (tmp_path / "nope.wav", "no such file")]:
        with pytest.raises(AudioError, match=reason):
            decode.load(path, sr=22050)


def test_nan_samples_rejected(tmp_path):
    y = tone(220, 1.0)
    y[100] = np.nan
    path = write_audio(tmp_path / "nan.wav", y, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        decode.load(path, sr=22050)
