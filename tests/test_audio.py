"""Decode and snippet: boundaries, padding, silence, and the input formats users throw at us."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn.audio import decode, signal, snippet
from clapknn.errors import AudioError, ParameterError

from conftest import tone, write_audio


@pytest.mark.parametrize(
    "duration, length, hop, expected",
    [
        (30.0, 10.0, None, [0.0, 10.0, 20.0]),
        (29.9, 10.0, None, [0.0, 10.0, 19.9]),  # the 9.9-s tail gets a window aligned to the end
        (29.6, 10.0, None, [0.0, 10.0, 19.6]),
        (25.0, 10.0, None, [0.0, 10.0, 15.0]),  # a tail of exactly half a snippet counts
        (24.9, 10.0, None, [0.0, 10.0]),  # a shorter tail does not
        (30.0, 10.0, 5.0, [0.0, 5.0, 10.0, 15.0, 20.0]),
        (32.0, 10.0, 5.0, [0.0, 5.0, 10.0, 15.0, 20.0]),  # with a hop, the tail is under hop < half
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
    assert b.audio.shape == (3, 1000)
    np.testing.assert_array_equal(b.audio[1], y[1000:2000])
    np.testing.assert_array_equal(b.audio[2], y[1500:2500])  # the 5-s tail: a window ending at 25 s
    np.testing.assert_allclose(b.starts, [0, 10, 15])
    np.testing.assert_allclose(b.ends, [10, 20, 25])


def test_tail_of_a_29_6_s_track_is_used_and_timed_truthfully(rng):
    """A 29.6-s track: 3 snippets, the last one holding the track's last 10 s (19.6-29.6 s)."""
    sr = 1000
    y = rng.standard_normal(29600).astype(np.float32)
    b = snippet.cut(y, sr, 10.0)
    np.testing.assert_allclose(b.starts, [0.0, 10.0, 19.6])
    np.testing.assert_allclose(b.ends, [10.0, 20.0, 29.6])
    np.testing.assert_array_equal(b.audio[2], y[-10000:])
    short_tail = snippet.cut(y[:24000], sr, 10.0)  # a 4-s tail is under half a snippet: not used
    np.testing.assert_allclose(short_tail.starts, [0.0, 10.0])


def test_file_snippets_use_the_same_tail_rule_as_arrays(tmp_path):
    """Building (files) and tagging (files or arrays) cut the same windows, tail included."""
    y = tone(220, 7.6)
    path = write_audio(tmp_path / "a.wav", y, subtype="FLOAT")
    got = list(snippet.iter_file_snippets(path, 22050, 3.0))
    ref = snippet.cut(y, 22050, 3.0)
    np.testing.assert_allclose([s for s, _, _ in got], [0.0, 3.0, 4.6])
    np.testing.assert_allclose([s for s, _, _ in got], ref.starts)
    np.testing.assert_allclose([e for _, e, _ in got], ref.ends)
    for (_, _, a), b in zip(got, ref.audio):
        np.testing.assert_array_equal(a, b)


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
    assert len(whole) == len(windowed) == 5  # 4 windows and the 1-s tail (8-9 s)
    for (s1, e1, a1), (s2, e2, a2) in zip(whole, windowed):
        assert (s1, e1) == (s2, e2)
        np.testing.assert_allclose(a1, a2, atol=1e-6)


@pytest.mark.parametrize("target_sr", [22050, 48000])
def test_windowed_resampling_gives_the_whole_file_samples(tmp_path, monkeypatch, target_sr):
    """A 44.1-kHz file across the whole-file threshold: read window by window (each resampled on
    its own), it gives the snippets of the whole file resampled at once, to float32 rounding."""
    y = tone(440, 14.6, sr=44100, seed=3) + 0.05 * np.random.default_rng(1).standard_normal(int(14.6 * 44100)).astype(np.float32)
    path = write_audio(tmp_path / "long.flac", y, sr=44100, subtype="PCM_24")
    whole = list(snippet.iter_file_snippets(path, target_sr, 3.0, 2.5))
    monkeypatch.setattr(snippet, "WHOLE_FILE_SECONDS", 5.0)  # 14.6 s now counts as long
    windowed = list(snippet.iter_file_snippets(path, target_sr, 3.0, 2.5))
    assert len(whole) == len(windowed) == 6  # 0, 2.5, ..., 10 s and the 1.6-s tail: 11.6 s
    for (s1, e1, a1), (s2, e2, a2) in zip(whole, windowed):
        assert (s1, e1) == (s2, e2)
        np.testing.assert_allclose(a2, a1, rtol=0, atol=1e-6)
    # any window of decode.load is the matching slice of the whole file
    full = decode.load(path, sr=target_sr)
    for offset in (0.0, 1.23, 7.0, 12.5):
        part = decode.load(path, sr=target_sr, offset=offset, duration=1.0)
        i = int(round(offset * target_sr))
        np.testing.assert_allclose(part, full[i : i + target_sr], rtol=0, atol=1e-6)


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


# --------------------------------------------------------------------------- the array boundary
def test_stereo_arrays_tag_like_their_mono_mix_in_either_layout(built_index):
    """soundfile's ``(n, 2)`` and librosa's ``(2, n)`` are both stereo: same result as the mono mix
    (``(n, 2)`` used to be averaged over time, giving a silent 2-sample "track")."""
    from clapknn import Tagger

    index, _ = built_index
    left = tone(880, 4.0, pulse_bpm=150.0, seed=9)
    right = tone(880, 4.0, pulse_bpm=150.0, seed=10)
    mono = Tagger(index).tag_array((left + right) / 2, 22050).tracks
    for layout in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        got = Tagger(index).tag_array(layout, 22050)
        assert not got.skipped
        assert list(got.tracks["top"]) == list(mono["top"]) == ["energetic"]
        np.testing.assert_allclose(got.tracks["score"], mono["score"], atol=1e-6)
        assert got.tracks["n_snippets"].iat[0] == mono["n_snippets"].iat[0] == 2


@pytest.mark.parametrize("shape", [(4, 6), (8, 8), (1, 5), (1000, 1200), (0, 0)])
def test_ambiguous_array_shapes_are_refused_with_how_to_pass_them(shape):
    with pytest.raises(ParameterError) as err:
        signal.as_mono(np.zeros(shape, np.float32))
    assert str(shape) in str(err.value) and "(n_samples, n_channels)" in str(err.value)


def test_embed_array_refuses_what_files_refuse():
    from clapknn.embedding.encode import embed_array
    from clapknn.encoders import get_encoder

    enc = get_encoder("features")
    y = tone(440, 2.0)
    with pytest.raises(ParameterError, match=r"\(3, 4\)"):
        embed_array(np.zeros((3, 4)), 22050, enc)
    with pytest.raises(ParameterError, match="1-D"):
        embed_array(np.zeros((2, 2, 100)), 22050, enc)
    with pytest.raises(ParameterError, match="dtype"):
        embed_array(y.astype(complex), 22050, enc)
    for bad, what in [(np.nan, "NaN"), (np.inf, "infinite")]:
        z = np.stack([y, y], axis=1)
        z[5, 1] = bad
        with pytest.raises(AudioError, match=what):
            embed_array(z, 22050, enc)
    with pytest.raises(AudioError, match="times full scale"):
        embed_array(1e30 * y, 22050, enc)
    with pytest.raises(ParameterError, match="sample rate"):
        embed_array(y, 0, enc)


@pytest.mark.parametrize("subtype, dtype", [("PCM_16", "int16"), ("PCM_32", "int32"), ("PCM_U8", "int16")])
def test_integer_arrays_are_scaled_like_soundfile(tmp_path, subtype, dtype):
    import soundfile as sf

    path = write_audio(tmp_path / "pcm.wav", np.stack([tone(440, 0.5), tone(660, 0.5)], axis=1), subtype=subtype)
    ints, _ = sf.read(str(path), dtype=dtype)
    floats, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_allclose(signal.as_mono(ints), floats.mean(axis=1), rtol=0, atol=1e-7)
    u8 = np.array([0, 128, 255], np.uint8)  # unsigned 8-bit PCM is offset at mid-range
    np.testing.assert_allclose(signal.as_mono(u8), [-1.0, 0.0, 127 / 128])


def test_files_and_arrays_share_one_validator(tmp_path):
    """A decoded file goes through signal.as_mono too: its reasons are the array's, with the path."""
    y = tone(220, 1.0)
    y[100] = np.inf
    path = write_audio(tmp_path / "inf.wav", y, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"inf\.wav: audio contains NaN or infinite samples$"):
        decode.load(path, sr=22050)
    with pytest.raises(AudioError, match=r"^audio: audio contains NaN or infinite samples$"):
        signal.as_mono(y)


def test_embedding_cache_key_names_the_snippet_rules(monkeypatch):
    """Vectors cut under other windowing rules (no tail window) are not taken from the cache."""
    import clapknn.embedding.cache as cache

    ident = {"name": "features", "sample_rate": 22050}
    key = cache.settings_key(ident, 10.0, None)
    monkeypatch.setattr(cache, "SNIPPET_RULES", snippet.SNIPPET_RULES - 1)
    assert cache.settings_key(ident, 10.0, None) != key


@pytest.mark.parametrize("seed", range(40))
def test_as_mono_either_refuses_or_gives_finite_mono(seed):
    """Random shapes and dtypes: a ParameterError/AudioError, or 1-D float32 of the sample axis's
    length; never another exception, never a silently transposed mix."""
    r = np.random.default_rng(seed)
    ndim = int(r.integers(1, 4))
    shape = tuple(int(r.choice([0, 1, 2, 3, 8, 9, 50])) for _ in range(ndim))
    dtype = r.choice(["float32", "float64", "float16", "int16", "int32", "uint8", "complex64", "bool"])
    y = (r.standard_normal(shape) * (100 if dtype.startswith(("int", "uint")) else 0.3)).astype(dtype)
    try:
        out = signal.as_mono(y)
    except (ParameterError, AudioError):
        return
    assert out.ndim == 1 and out.dtype == np.float32 and np.isfinite(out).all()
    if ndim == 2:
        channels = [n for n in shape if 1 <= n <= signal.MAX_ARRAY_CHANNELS]
        assert len(channels) == 1 and out.size == shape[1 - shape.index(channels[0])]
    else:
        assert ndim == 1 and out.size == shape[0]


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_to_mono_is_the_float32_mean_of_the_channels(channels):
    from clapknn.audio.signal import to_mono

    y = np.random.default_rng(channels).standard_normal((5000, channels)).astype(np.float32)
    got = to_mono(y)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (5000,)
    np.testing.assert_array_equal(got, y.mean(axis=1, dtype=np.float32))
    np.testing.assert_array_equal(to_mono(y[:, 0]), y[:, 0])
