"""The features encoder's own signal processing (clapknn.encoders.dsp) gives librosa's values to
the last bit, so the recipe's vectors do not depend on which of the two computes them."""

import librosa
import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from clapknn.encoders import dsp

SR = 22050


def _signals():
    rng = np.random.default_rng(3)
    t = np.arange(SR * 10) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) * np.exp(-((t % 0.5) * 6))
    yield "noise", rng.standard_normal(SR * 10).astype(np.float32) * 0.1
    yield "chord", (0.2 * chord + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    yield "odd-length", rng.standard_normal(SR * 3 + 777).astype(np.float32)
    silent = np.zeros(SR * 2, dtype=np.float32)
    silent[SR:] = 0.3 * rng.standard_normal(SR).astype(np.float32)
    yield "half-silent", silent


SIGNALS = list(_signals())


@pytest.mark.parametrize("n_fft,hop", [(2048, 512), (4096, 1024)])
@pytest.mark.parametrize("name,y", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_stft_magnitude_equals_librosa(name, y, n_fft, hop):
    ours = dsp.stft_magnitude(y, n_fft, hop, dsp.hann(n_fft))
    ref = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("n_fft,hop", [(2048, 512), (4096, 1024)])
@pytest.mark.parametrize("name,y", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_single_precision_stft_is_librosa_to_float32_rounding(name, y, n_fft, hop):
    """A float32 window (the features encoder's recipe 7) transforms in single precision: same
    shape and dtype as librosa's, magnitudes within 1e-5 of the largest."""
    ours = dsp.stft_magnitude(y, n_fft, hop, dsp.hann(n_fft).astype(np.float32))
    ref = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= 1e-5 * max(float(ref.max()), 1e-12)


def test_hann_equals_scipy():
    for n in (384, 2048, 4096):
        assert np.array_equal(dsp.hann(n), scipy.signal.get_window("hann", n, fftbins=True))


@pytest.mark.parametrize("n_mels", [64, 128])
def test_mel_filters_equal_librosa(n_mels):
    ours = dsp.mel_filters(SR, 2048, n_mels)
    ref = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=n_mels)
    assert ours.dtype == ref.dtype and np.array_equal(ours, ref)


@pytest.mark.parametrize("name,y", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_mel_steps_equal_librosa(name, y):
    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)).astype(np.float64) ** 2
    mel = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128) @ S
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None, amin=1e-10)
    assert np.array_equal(dsp.power_to_db(mel, top_db=None), log_mel)
    assert np.array_equal(dsp.power_to_db(mel), librosa.power_to_db(mel))  # top_db=80
    assert np.array_equal(dsp.mfcc(log_mel, 20), librosa.feature.mfcc(S=log_mel, n_mfcc=20))
    for max_size in (1, 3):
        ref = librosa.onset.onset_strength(S=log_mel, sr=SR, lag=2, max_size=max_size)
        assert np.array_equal(dsp.onset_strength(log_mel, lag=2, max_size=max_size), ref)


def test_maximum_filter_edges_equal_scipy():
    x = np.random.default_rng(0).standard_normal((7, 5))
    ours = dsp.onset_strength(x, lag=1, max_size=3, n_fft=0)  # n_fft=0: no centring offset
    ref_max = scipy.ndimage.maximum_filter1d(x, 3, axis=0)
    expected = np.pad(np.maximum(0.0, x[:, 1:] - ref_max[:, :-1]).mean(axis=0), (1, 0))[: x.shape[1]]
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("name,y", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_rms_equals_librosa(name, y):
    assert np.array_equal(dsp.rms(y, 2048, 512), librosa.feature.rms(y=y, frame_length=2048, hop_length=512)[0])


def test_tempo_steps_equal_librosa():
    rng = np.random.default_rng(5)
    flux = np.abs(rng.standard_normal(431))
    padded = np.pad(flux, (192, 192), mode="linear_ramp", end_values=(0, 0))
    frames = dsp.frame(padded, 384, 1)[:, ::4]
    assert np.array_equal(frames, librosa.util.frame(padded, frame_length=384, hop_length=1)[:, ::4])
    windowed = frames * dsp.hann(384)[:, None]
    ac = dsp.autocorrelate(windowed, axis=0)
    assert np.array_equal(ac, librosa.autocorrelate(windowed, axis=0))
    ac[:, 0] = 0.0  # a slice below `tiny` is left as it is
    assert np.array_equal(dsp.normalize_max(ac, axis=0), librosa.util.normalize(ac, norm=np.inf, axis=0))
    assert np.array_equal(dsp.tempo_frequencies(384, SR, 512), librosa.tempo_frequencies(384, sr=SR, hop_length=512))


def test_encoder_workers_never_import_librosa():
    """The features encoder's worker modules and a first snippet load neither librosa nor numba
    (seconds of start-up per worker server)."""
    import subprocess
    import sys

    code = (
        "import importlib, sys, numpy as np\n"
        "from clapknn.encoders.features import FeaturesEncoder\n"
        "[importlib.import_module(m) for m in FeaturesEncoder.worker_modules]\n"
        "FeaturesEncoder().embed(np.random.default_rng(0).standard_normal((1, 22050)).astype(np.float32))\n"
        "print(sorted(m for m in ('librosa', 'numba') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
