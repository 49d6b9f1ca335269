"""The weights-free features encoder: layout of its vector, and the note-density / polyphony block
measured on synthesised notes."""

from __future__ import annotations

import numpy as np
import pytest

from clapknn.encoders.features import _BLOCK_SIZES, FEATURE_BLOCKS, FeaturesEncoder

SR = 22050
NAMES = list(FEATURE_BLOCKS)


def _tone(midi: float, seconds: float, sr: int = SR) -> np.ndarray:
    """A decaying harmonic tone, roughly a plucked or struck string."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5) if f0 * h < sr / 2)
    return y * np.exp(-3.0 * t)


def _notes(per_second: float, chord: int = 1, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """Notes starting ``per_second`` times a second, ``chord`` pitches at a time."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * SR))
    step = 1.0 / per_second
    for start in np.arange(0.0, seconds - 0.1, step):
        a = int(start * SR)
        for pitch in rng.choice(np.arange(48, 84), size=chord, replace=False):
            tone = _tone(float(pitch), min(1.0, seconds - start))
            y[a : a + len(tone)] += tone[: len(y) - a]
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def _block(vector: np.ndarray, name: str) -> np.ndarray:
    start = sum(_BLOCK_SIZES[n] for n in NAMES[: NAMES.index(name)])
    return vector[start : start + _BLOCK_SIZES[name]]


def test_blocks_tile_the_vector_and_rows_are_unit_length():
    enc = FeaturesEncoder()
    blocks = enc.feature_blocks()
    assert blocks[0][0] == 0 and blocks[-1][1] == enc.dim
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    v = enc.embed(np.stack([_notes(2.0), _notes(6.0, chord=3)]))
    assert v.shape == (2, enc.dim) and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v, enc.embed(np.stack([_notes(2.0), _notes(6.0, chord=3)])))


def test_note_block_counts_notes_and_voices_whatever_the_level():
    enc = FeaturesEncoder()
    sparse, dense, chords = _notes(1.5), _notes(8.0), _notes(1.5, chord=4)
    b = {name: enc._blocks(y)["notes"] for name, y in (("sparse", sparse), ("dense", dense), ("chords", chords))}
    # starts per second (both thresholds) and share of frames with a start: more notes, more starts
    assert (b["dense"][:3] > b["sparse"][:3]).all()
    # bands sounding within 30 dB and 20 dB of the loudest: more voices, more bands
    assert b["chords"][4] > b["sparse"][4] and b["chords"][6] > b["sparse"][6]
    # relative to the snippet's own level: a 40 dB quieter copy gives the same block (up to the odd
    # rise that lands the other side of a threshold in float32)
    np.testing.assert_allclose(enc._blocks(dense * 0.01)["notes"], b["dense"], atol=0.05)


@pytest.mark.parametrize("name", ["level", "notes"])
def test_level_moves_with_gain_and_notes_do_not(name):
    enc = FeaturesEncoder()
    y = _notes(4.0, chord=2)
    loud, quiet = enc._blocks(y)[name], enc._blocks(y * 0.1)[name]
    if name == "level":
        assert (loud > quiet).all()
    else:
        np.testing.assert_allclose(loud, quiet, atol=0.05)


def _cadence(tonic: int, mode: str, seconds: float = 10.0) -> np.ndarray:
    """I-IV-V-I (i-iv-V-i) chords over their roots, repeated for ``seconds``."""
    third, sixth = (4, 9) if mode == "major" else (3, 8)
    triads = ([0, third, 7], [5, sixth, 12], [7, 11, 14], [0, third, 7])
    y = np.zeros(int(seconds * SR))
    step = 0.6
    for i, start in enumerate(np.arange(0.0, seconds - 0.1, step)):
        a = int(start * SR)
        for d in triads[i % 4] + [triads[i % 4][0] - 12]:
            tone = _tone(60.0 + tonic + d, min(step, seconds - start))
            y[a : a + len(tone)] += tone[: len(y) - a]
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def test_asking_for_some_blocks_gives_those_blocks_unchanged():
    enc = FeaturesEncoder()
    y = _notes(4.0, chord=3)
    full = enc._blocks(y)
    some = enc._blocks(y, ["key", "rhythm", "level"])
    assert list(some) == ["key", "rhythm", "level"]
    for name, v in some.items():
        np.testing.assert_array_equal(v, full[name])


def test_shared_spectra_are_computed_once_per_snippet(monkeypatch):
    from clapknn.encoders import dsp

    calls = []
    real = dsp.stft_magnitude
    monkeypatch.setattr(dsp, "stft_magnitude", lambda y, n_fft, *a: calls.append(n_fft) or real(y, n_fft, *a))
    FeaturesEncoder().embed(_notes(3.0)[None])
    # one STFT for every block of the 2048-point grid, one finer one for the semitone spectrum, and
    # one 1024-point one per octave of the key profile's spectrum (seven octaves from C1 at 22.05 kHz)
    assert sorted(calls) == [1024] * 7 + [2048, 4096]


def test_contrast_is_librosas_spectral_contrast():
    import librosa

    enc = FeaturesEncoder()
    sp = enc._spectra(_notes(5.0, chord=2))
    np.testing.assert_allclose(sp.contrast, librosa.feature.spectral_contrast(S=sp.S, sr=SR), atol=1e-3)


def test_key_profiles_are_the_analysis_defaults():
    """The encoder's key bank is the analysis's default key templates, those key_scores correlates with."""
    from clapknn.analysis import DEFAULT_PROFILE, PROFILES, key_scores
    from clapknn.analysis.profiles import key_templates
    from clapknn.encoders.features import FeaturesEncoder

    bank = FeaturesEncoder()._bank("keys")
    np.testing.assert_array_equal(bank, key_templates(DEFAULT_PROFILE))
    rng = np.random.default_rng(0)
    x = rng.random((5, 12))
    centred = x - x.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(centred @ bank.T, key_scores(x, profile=DEFAULT_PROFILE), atol=1e-12)
    assert DEFAULT_PROFILE in PROFILES


@pytest.mark.parametrize("tonic", [0, 2, 7, 9])
def test_key_block_tells_major_from_minor_in_any_key(tonic):
    enc = FeaturesEncoder()
    major, minor = enc._blocks(_cadence(tonic, "major"))["key"], enc._blocks(_cadence(tonic, "minor"))["key"]
    # dimension 2: best major correlation minus best minor one (scaled)
    assert major[2] > minor[2]
    assert major[0] > minor[0] and minor[1] > major[1]
    # the tonal block puts the estimated tonic first, whatever the key: same cadence, same pattern
    a, b = enc._blocks(_cadence(0, "major"))["tonal"], enc._blocks(_cadence(tonic, "major"))["tonal"]
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_recipe_is_in_the_identity():
    from clapknn.encoders.features import RECIPE_VERSION

    assert FeaturesEncoder().identity()["recipe"] == RECIPE_VERSION


def test_profile_block_keeps_the_weights_of_the_pitch_classes():
    """The ``key_profile`` block (what the track's key is read from) is a pitch-class profile of
    magnitudes, as the key analysis's constant-Q chromagram is, not log-compressed as ``chroma``
    is: a C-G fifth with a quiet E (a twentieth of their amplitude) gives E about a twentieth of
    C's and G's share, where the compressed chroma lifts it to over a tenth of theirs."""
    y = np.zeros(int(10 * SR))
    for midi, amp in ((60, 1.0), (67, 1.0), (64, 0.05)):
        t = np.arange(len(y)) / SR
        y += amp * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)
    y = (0.3 * y / np.abs(y).max()).astype(np.float32)
    blocks = FeaturesEncoder()._blocks(y, ["chroma", "key_profile"])
    for name, low, high in (("key_profile", 0.03, 0.08), ("chroma", 0.1, 1.0)):
        v = blocks[name] - blocks[name].min()  # the least-sounding class at 0
        e_share = v[4] / max(v[0], v[7])  # E against C and G
        assert low <= e_share <= high, (name, e_share)


@pytest.mark.parametrize("midi", [26, 29, 34, 47, 83, 98])
def test_profile_block_finds_the_pitch_class_of_low_and_high_notes(midi):
    """The key profile's spectrum is read octave by octave (each octave at half the rate of the one
    above, the same FFT size), so a note from the bass below A1, where the snippet chroma's
    semitone spectrum starts, to the sixth octave lands on its own pitch class, with its two
    neighbours far below it."""
    t = np.arange(int(10 * SR)) / SR
    y = (0.3 * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)).astype(np.float32)
    p = FeaturesEncoder()._blocks(y, ["key_profile"])["key_profile"]
    p = p - p.min()
    pc = midi % 12
    assert int(np.argmax(p)) == pc
    assert max(p[(pc - 1) % 12], p[(pc + 1) % 12]) < 0.2 * p[pc]


def _track_key(vectors: np.ndarray, name: str = "key_track") -> np.ndarray:
    from clapknn.encoders.features import block_layout

    (a, b), = [(a, b) for n, a, b, _ in block_layout() if n == name]
    return vectors[:, a:b]


@pytest.mark.parametrize("target, source", [("key_track", "key_profile"), ("key_chroma_track", "chroma")])
def test_track_key_blocks_are_the_key_of_the_whole_track(target, source):
    """``key_track`` and ``key_chroma_track`` hold, in every row of a track, the key block of the
    mean of its snippets' ``key_profile`` and ``chroma`` profiles: three snippets of an A minor
    cadence and one of C major (a passage in the relative major) read minor as a track, where the
    C major snippet alone reads major. The other blocks keep their values; rows stay unit length."""
    from clapknn.analysis.profiles import key_templates
    from clapknn.encoders.feature_blocks import key_values
    from clapknn.encoders.features import FEATURE_BLOCKS, block_layout, track_context

    enc = FeaturesEncoder()
    minor = _cadence(9, "minor")
    snippets = [minor, np.roll(minor, SR), _cadence(0, "major"), minor[::-1].copy()]
    V = enc.embed(np.stack(snippets))
    T = track_context(V)
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1.0, atol=1e-6)
    layout = {n: (a, b) for n, a, b, _ in block_layout()}
    a, b = layout[source]
    scale = np.linalg.norm(T[:, a:b], axis=1, keepdims=True) / FEATURE_BLOCKS[source][0]
    key = _track_key(T, target) / scale  # each row's scale taken out
    np.testing.assert_allclose(key, key[:1].repeat(len(key), 0), atol=1e-5)
    profile = (V[:, a:b] / np.linalg.norm(V[:, a:b], axis=1, keepdims=True)).mean(axis=0)
    profile = (profile - profile.mean()) / np.linalg.norm(profile - profile.mean())
    corr = key_templates() @ profile
    assert corr[12:].max() > corr[:12].max()  # the track is in minor
    want = key_values(corr) * FEATURE_BLOCKS[target][0] / 2.0
    ratio = key[0] / want
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # the same block, up to the row scale
    own = enc._blocks(snippets[2])["key"]
    assert own[0] > own[1]  # the C major snippet alone: best major above best minor
    # everything but the track's key blocks is unchanged, up to the rows' common scale
    rest = np.ones(V.shape[1], dtype=bool)
    for name in ("key_track", "key_chroma_track"):
        rest[slice(*layout[name])] = False
    for v, t in zip(V, T):
        np.testing.assert_allclose(t[rest] / np.linalg.norm(t[rest]), v[rest] / np.linalg.norm(v[rest]), atol=1e-6)
    # one snippet is its own track: the blocks are its own key blocks
    np.testing.assert_allclose(track_context(V[2:3]), V[2:3], atol=1e-6)


def test_the_engine_gives_every_snippet_its_tracks_key():
    """Embedding a signal puts the track's key block (:func:`track_context` of its snippets) into
    each of its vectors, the same in all of them."""
    from clapknn.embedding.encode import embed_array
    from clapknn.encoders.features import track_context

    enc = FeaturesEncoder()
    parts = [_cadence(9, "minor"), _cadence(0, "major"), _cadence(9, "minor")]
    vectors, snippets = embed_array(np.concatenate(parts), SR, enc, snippet_seconds=10.0)
    assert len(snippets) == 3
    np.testing.assert_allclose(vectors, track_context(enc.embed(np.stack(parts))), atol=1e-6)
    alone = enc.embed(np.stack(parts))
    assert not np.allclose(_track_key(vectors), _track_key(alone), atol=1e-4)  # not each snippet's own key


def test_a_track_voted_on_some_windows_gets_the_context_of_those():
    """``clapknn.encoders.track_context``: the kept rows, each track that lost rows finished again
    from the rows it keeps (what tagging those windows alone gives); the other tracks untouched."""
    from clapknn.encoders import track_context as kept_context
    from clapknn.encoders.features import track_context

    enc = FeaturesEncoder()
    V = track_context(enc.embed(np.stack([_cadence(9, "minor"), _cadence(0, "major"), _cadence(2, "major")])))
    other = enc.embed(np.stack([_cadence(7, "minor")]))
    X = np.concatenate([V, other])
    tracks, keep = np.array([0, 0, 0, 1]), np.array([True, True, False, True])
    out = kept_context(enc.identity(), X, tracks, keep)
    np.testing.assert_allclose(out[:2], track_context(V[:2]), atol=1e-6)
    assert not np.allclose(out[:2], V[:2], atol=1e-4)  # the context did change
    np.testing.assert_array_equal(out[2], other[0])
    np.testing.assert_array_equal(kept_context(enc.identity(), X, tracks, np.ones(4, bool)), X)
