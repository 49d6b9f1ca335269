"""The blocks of the :mod:`features <clapknn.encoders.features>` encoder: what each computes from a
snippet.

One :class:`_Spectra` object per snippet holds every intermediate result the blocks share (STFT,
semitone spectrum, MFCCs, contrast frames, onset flux, pitch-class profile), each computed on first
use; each block is a small function of it (:data:`_BLOCK_FUNCS`), moved and scaled by fixed
constants to values of order one. How the blocks are weighted and put together into a vector is
:mod:`clapknn.encoders.features`'s job.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from . import dsp

_N_FFT = 2048
_HOP = 512
_N_FFT_PITCH = 4096  # finer frequency grid for the semitone spectrum
_HOP_PITCH = 1024
_N_MFCC = 20
_N_MELS = 64
_N_MELS_FLUX = 128
_PITCH_LO, _PITCH_HI = 33, 105  # MIDI notes of the semitone spectrum: A1 (55 Hz) .. A7 (3.5 kHz)
_TEMPO_BANDS = 8  # log-spaced tempogram bands, 30-300 BPM
_TEMPO_WIN = 384  # onset frames (~8.9 s) per tempogram window, librosa's default
_TEMPO_STEP = 4  # tempogram frames averaged: every fourth
_FLOOR_DB = -100.0
# the key profile's octave-wise spectrum: C1 (32.7 Hz) up, one octave per halving of the rate,
# the same FFT size in each, so every octave gets the same number of cycles per window (constant Q)
_KEY_FMIN = 32.703195662574829
_KEY_OCTAVES = 7  # C1 .. B7, fewer when the rate cannot hold the top octave
_N_FFT_KEY = 1024  # at the top octave (C7-B7, 22.05 kHz) 46 ms; at C1 (344 Hz) 3 s
_HOP_KEY = 2048  # at the top octave; halved with the rate, so all octaves share frame times


# Fixed (centre, scale) per block, round numbers that bring typical music to order one. The vote
# standardises on the index anyway; these only keep the L2 normalisation from being dominated by
# one block.
_BLOCK_SIZES = {
    "timbre": _N_MFCC - 1, "timbre_var": _N_MFCC - 1, "chroma": 12, "chroma_var": 12, "contrast": 7,
    "contrast_var": 7, "spectral": 5, "rhythm": 5 + _TEMPO_BANDS, "level": 4, "tonal": 12, "key": 4, "harmony": 6,
    "notes": 7, "key_profile": 12, "key_track": 4, "key_chroma_track": 4,
}
#: Blocks kept in their fixed units (their size is the point); every other block is a unit pattern.
_MAGNITUDE_BLOCKS = ("level", "key", "harmony", "notes", "key_track", "key_chroma_track")
_MFCC_CENTRE = np.r_[130.0, -30.0, 15.0, np.zeros(_N_MFCC - 4)]
_MFCC_SCALE = np.r_[30.0, 20.0, 10.0, np.full(_N_MFCC - 4, 6.0)]
_MFCC_SD_CENTRE = np.r_[24.0, 14.0, 10.0, np.full(_N_MFCC - 4, 8.0)]
_MFCC_SD_SCALE = np.r_[16.0, 7.0, 4.0, np.full(_N_MFCC - 4, 3.0)]
_KEY_CENTRE = np.array([0.75, 0.65, 0.1, 0.8])
_KEY_SCALE = np.array([0.12, 0.11, 0.19, 0.08])
_NOTE_RISE_DB = (6.0, 10.0)  # a semitone band rising this much over two frames (93 ms) starts a note
_NOTES_CENTRE = np.array([4.5, 4.2, 0.5, 8.0, 3.3, 0.4, 2.3])
_NOTES_SCALE = np.array([0.5, 0.5, 0.2, 0.5, 0.5, 0.25, 0.5])


def _contrast_bands(sr: int, n_fft: int, n_bands: int = 6, fmin: float = 200.0, quantile: float = 0.02):
    """``(first bin, stop bin, bins per side)`` of librosa's spectral-contrast octave bands."""
    freq = np.fft.rfftfreq(n_fft, 1.0 / sr)
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    out = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        band = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == n_bands:
            band[idx[-1] + 1 :] = True
        bins = np.flatnonzero(band)
        lo, hi = int(bins[0]), int(bins[-1]) + 1
        side = int(max(np.rint(quantile * band.sum()), 1))
        if k < n_bands:
            hi -= 1
        out.append((lo, hi, side))
    return out


def _semitone_filterbank(sr: int, n_fft: int) -> np.ndarray:
    """Triangular filters one semitone wide on the FFT bins, MIDI ``_PITCH_LO`` .. ``_PITCH_HI - 1``."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    midi = 69 + 12 * np.log2(np.maximum(freqs, 1e-3) / 440.0)
    notes = np.arange(_PITCH_LO, _PITCH_HI)
    return np.maximum(0.0, 1.0 - np.abs(midi[None, :] - notes[:, None]))


def _key_octaves(sr: int) -> int:
    """How many octaves of the key profile's spectrum, from C1, fit below the Nyquist frequency."""
    n = _KEY_OCTAVES
    while n > 1 and _KEY_FMIN * 2**n >= sr / 2:
        n -= 1
    return n


def _key_filterbank(sr: int) -> np.ndarray:
    """Triangular semitone filters ``(12, 1 + _N_FFT_KEY // 2)`` on the FFT bins of the key
    spectrum's top octave at rate ``sr``. Every octave below it is read at half the rate of the one
    above, so the same filters pick its semitones out of the same FFT size."""
    top_c = _KEY_FMIN * 2 ** (_key_octaves(sr) - 1)
    freqs = np.fft.rfftfreq(_N_FFT_KEY, 1.0 / sr)
    semis = 12 * np.log2(np.maximum(freqs, 1e-3) / top_c)
    return np.maximum(0.0, 1.0 - np.abs(semis[None, :] - np.arange(12)[:, None]))


def _key_spectrum(y: np.ndarray, sr: int, bank: Any, window: np.ndarray) -> np.ndarray:
    """Pitch-class magnitude per frame ``(12, frames)``, row 0 = C, of a constant-Q-like spectrum:
    the semitone magnitudes of each octave from C1 up (the top octave at the rate ``sr``, each one
    below from the signal resampled at half the rate of the one above, with the same FFT size and
    filters), summed over the octaves. Low notes get long windows and high notes short ones, as in
    the key analysis's constant-Q chromagram, at a small part of its cost."""
    import soxr

    sig, hop, rows = np.asarray(y, dtype=np.float32), _HOP_KEY, []
    for o in range(_key_octaves(sr)):
        if o:
            sig = soxr.resample(sig, 2, 1, quality="HQ").astype(np.float32, copy=False)
            hop //= 2
        rows.append(bank @ dsp.stft_magnitude(sig, _N_FFT_KEY, hop, window).astype(np.float64))
    n = min(r.shape[1] for r in rows)
    return np.sum([r[:, :n] for r in rows], axis=0)


def _notes(pitch: np.ndarray, seconds: float) -> np.ndarray:
    """Note density and polyphony from a semitone power spectrogram ``(bands, frames)``: note
    starts per second at two rise thresholds, the share of frames where a note starts, the rise per
    second, the mean (and relative spread) of bands within 30 dB of the loudest, and of bands
    within 20 dB. Everything is relative to the loudest band, so a gain change leaves it unchanged."""
    db = 10.0 * np.log10(pitch + 1e-10)
    top = db.max()
    rise = db[:, 2:] - db[:, :-2]
    alive = db[:, 2:] > top - 40.0
    before = np.pad(rise, ((0, 0), (1, 0)), constant_values=-np.inf)[:, :-1]
    after = np.pad(rise, ((0, 0), (0, 1)), constant_values=-np.inf)[:, 1:]
    peak = alive & (rise >= before) & (rise >= after)
    seconds = max(seconds, 1e-3)
    starts = [np.log((peak & (rise > t)).sum() / seconds + 1.0) for t in _NOTE_RISE_DB]
    onset_frames = ((rise > _NOTE_RISE_DB[1]) & alive).any(axis=0).mean() if rise.size else 0.0
    flow = np.log((np.maximum(rise, 0.0) * alive).sum() / seconds + 1.0)
    active = (db > top - 30.0).sum(axis=0)
    loud = (db > top - 20.0).sum(axis=0)
    return np.array([
        *starts, onset_frames, flow,
        np.log(active.mean() + 1.0), active.std() / (active.mean() + 1.0), np.log(loud.mean() + 1.0),
    ])


class _Spectra:
    """Everything the blocks of one snippet share, computed on first use and kept: the STFT (and
    its power), the semitone spectrum, the MFCCs, the spectral-contrast frames, the onset flux, the
    pitch-class profile and the key profile. No intermediate result is computed twice, and a block
    that is not asked for costs nothing (``bench/features_cost.py`` times each one)."""

    def __init__(self, enc: Any, y: np.ndarray) -> None:  # enc: the FeaturesEncoder (its filter banks)
        self.enc = enc
        self.sr = enc.sample_rate
        self.y = np.asarray(y, dtype=np.float32)

    @cached_property
    def S(self) -> np.ndarray:
        """STFT magnitude, ``_N_FFT`` / ``_HOP`` (``(bins, frames)``, each frame's bins contiguous)."""
        return dsp.stft_magnitude(self.y, _N_FFT, _HOP, self.enc._bank("window"))

    @cached_property
    def P(self) -> np.ndarray:
        """STFT power (float64, C-ordered ``(bins, frames)``: the filter banks' sparse products read
        it without a copy)."""
        P = np.ascontiguousarray(self.S, dtype=np.float64)
        return np.square(P, out=P)

    @cached_property
    def mfcc(self) -> np.ndarray:
        """MFCC 1..19 of a 64-band log-mel spectrogram."""
        log_mel = dsp.power_to_db(self.enc._bank("mel") @ self.P, top_db=None)
        return dsp.mfcc(log_mel, _N_MFCC)[1:]

    @cached_property
    def contrast(self) -> np.ndarray:
        """Spectral contrast per frame in 7 octave bands (librosa's definition: the mean of the top
        and of the bottom 2 % of each band's bins, in dB), with a partial sort instead of a full one."""
        frames_bins = self.S.T  # each frame's bins contiguous: the partial sort reads them in place
        rows_peak, rows_valley = [], []
        for lo, hi, idx in self.enc._bank("contrast"):
            n = hi - lo
            part = np.partition(frames_bins[:, lo:hi], (idx - 1, n - idx), axis=1)
            rows_valley.append(part[:, :idx].mean(axis=1))
            rows_peak.append(part[:, n - idx :].mean(axis=1))
        return dsp.power_to_db(np.array(rows_peak)) - dsp.power_to_db(np.array(rows_valley))

    @cached_property
    def flux(self) -> np.ndarray:
        """Superflux-style onset strength on a 128-band log-mel spectrogram."""
        log_mel_f = dsp.power_to_db(self.enc._bank("mel_flux") @ self.P, top_db=None)
        return dsp.onset_strength(log_mel_f, lag=2, max_size=3, n_fft=_N_FFT, hop_length=_HOP)

    @cached_property
    def pitch(self) -> np.ndarray:
        """Semitone power spectrogram ``(bands, frames)`` from a finer STFT."""
        S_pitch = dsp.stft_magnitude(self.y, _N_FFT_PITCH, _HOP_PITCH, self.enc._bank("window_pitch"))
        return (self.enc._bank("semitones") @ np.square(S_pitch, out=np.empty_like(S_pitch, order="C"))).astype(np.float64)

    @cached_property
    def chroma(self) -> np.ndarray:
        """Pitch-class profile per frame (log-compressed semitone spectrum folded to 12 classes,
        row 0 = C, unit norm per frame)."""
        pitch = np.log1p(1000.0 * self.pitch / (self.pitch.max() + 1e-12))
        n_oct = (_PITCH_HI - _PITCH_LO) // 12
        # fold octaves; rows start at A (MIDI 33), so roll to put C first
        chroma = np.roll(pitch.reshape(n_oct, 12, -1).sum(axis=0), (_PITCH_LO % 12), axis=0)
        return chroma / np.maximum(np.linalg.norm(chroma, axis=0, keepdims=True), 1e-12)

    @cached_property
    def profile(self) -> np.ndarray:
        """The snippet's mean pitch-class profile."""
        return self.chroma.mean(axis=1)

    @cached_property
    def key_profile(self) -> np.ndarray:
        """The snippet's pitch-class profile for the track's key (``key_track``), made as the key
        analysis makes its own: a constant-Q-like magnitude spectrum (:func:`_key_spectrum`), each
        frame scaled to its maximum, summed over the frames within 40 dB of the loudest. The
        log-compressed :attr:`chroma` evens out the weights of the scale degrees that tell major
        from minor, and its one STFT cannot resolve the semitones of the bass."""
        ch = _key_spectrum(self.y, self.sr, self.enc._bank("key_semitones"), self.enc._bank("window_key"))
        peak = ch.max(axis=0)
        loud = peak > 0.01 * max(float(peak.max(initial=0.0)), 1e-12)
        return np.where(loud, ch / np.maximum(peak, 1e-12), 0.0).sum(axis=1)

    @cached_property
    def key_corr(self) -> np.ndarray:
        """Correlation of :attr:`profile` with the 24 key profiles."""
        return self._correlate(self.profile)

    @cached_property
    def key_profile_corr(self) -> np.ndarray:
        """Correlation of :attr:`key_profile` with the 24 key profiles."""
        return self._correlate(self.key_profile)

    def _correlate(self, profile: np.ndarray) -> np.ndarray:
        centred = profile - profile.mean()
        return self.enc._bank("keys") @ (centred / (np.linalg.norm(centred) + 1e-12))


def _level(sp: _Spectra) -> np.ndarray:
    rms = dsp.rms(sp.y, _N_FFT, _HOP).astype(np.float64)
    db = np.maximum(20.0 * np.log10(rms + 1e-10), _FLOOR_DB)
    return (np.array([db.mean(), *np.percentile(db, [10, 50, 90])]) + 30.0) / 15.0


def _timbre(sp: _Spectra) -> np.ndarray:
    return (sp.mfcc.mean(axis=1) - _MFCC_CENTRE) / _MFCC_SCALE


def _timbre_var(sp: _Spectra) -> np.ndarray:
    return (sp.mfcc.std(axis=1) - _MFCC_SD_CENTRE) / _MFCC_SD_SCALE


def _contrast(sp: _Spectra) -> np.ndarray:
    return (sp.contrast.mean(axis=1) - 24.0) / 5.0


def _contrast_var(sp: _Spectra) -> np.ndarray:
    return (sp.contrast.std(axis=1) - 5.0) / 2.0


def _spectral(sp: _Spectra) -> np.ndarray:
    S = sp.S
    freqs = sp.enc._bank("freqs")
    # first and second moments as products with the frequency axis (no (bins, frames) temporaries)
    S64 = S.astype(np.float64)  # each frame's bins contiguous, as S: the sums over bins run along them
    P = np.square(S64)
    mass = S64.sum(axis=0)
    total = mass + 1e-10
    centroid = (freqs @ S64) / total
    spread = (freqs**2 @ S64) / total - 2.0 * centroid**2 + centroid**2 * mass / total
    bandwidth = np.sqrt(np.maximum(spread, 0.0))
    S2 = S * S  # float32: the logarithm of every bin is the costly part
    flatness = np.exp(np.mean(np.log(S2 + np.float32(1e-12)), axis=0, dtype=np.float64)) / (P.mean(axis=0) + 1e-12)
    c_mean, b_mean = centroid.mean() + 1e-6, bandwidth.mean() + 1e-6
    return np.array(
        [
            np.log2(c_mean / 1000.0),
            centroid.std() / c_mean - 0.3,
            np.log2(b_mean / 1000.0),
            bandwidth.std() / b_mean - 0.3,
            np.log10(flatness.mean() + 1e-10) + 3.0,
        ]
    )


def _rhythm(sp: _Spectra) -> np.ndarray:
    flux, sr = sp.flux, sp.sr
    # librosa's tempogram (windowed autocorrelation of the flux around each frame, each scaled to
    # a maximum of 1), averaged over every _TEMPO_STEP-th frame only: its windows (~9 s) overlap so
    # much that the others add nothing to the mean
    win = _TEMPO_WIN
    n = flux.shape[-1]
    padded = np.pad(flux, (win // 2, win // 2), mode="linear_ramp", end_values=(0, 0))
    frames = dsp.frame(padded, win, 1)[:, :n:_TEMPO_STEP]
    ac = dsp.autocorrelate(frames * sp.enc._bank("tempo_window")[:, None], axis=0)
    tg = dsp.normalize_max(ac, axis=0).mean(axis=1)
    bpms = dsp.tempo_frequencies(win, sr=sr, hop_length=_HOP)
    edges = np.geomspace(30, 300, _TEMPO_BANDS + 1)
    bands = np.array([tg[(bpms >= lo) & (bpms < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    bands = bands / (bands.sum() + 1e-9)
    rhythm = np.array(
        [
            np.log(flux.mean() + 1e-3),
            np.log(np.median(flux) + 1e-3) + 1.5,
            4.0 * ((flux > 1.0).mean() - 0.2),
            4.0 * ((flux > 0.5).mean() - 0.3),
            np.log(np.percentile(flux, 90) + 1e-3) - 1.0,
        ]
    )
    return np.concatenate([rhythm, (bands - 1.0 / _TEMPO_BANDS) / 0.04])


def _notes_block(sp: _Spectra) -> np.ndarray:
    return (_notes(sp.pitch, len(sp.y) / sp.sr) - _NOTES_CENTRE) / _NOTES_SCALE


def _tonal(sp: _Spectra) -> np.ndarray:
    tonic = int(np.argmax(sp.key_corr)) % 12
    return (np.roll(sp.profile, -tonic) - sp.profile.mean()) / 0.1


def _chroma(sp: _Spectra) -> np.ndarray:
    return (sp.profile - sp.profile.mean()) / 0.1


def _key_profile_block(sp: _Spectra) -> np.ndarray:
    return sp.key_profile - sp.key_profile.mean()  # a unit pattern: its direction is what counts


def _chroma_var(sp: _Spectra) -> np.ndarray:
    return (sp.chroma.std(axis=1) - 0.1) / 0.05


def key_values(corr: np.ndarray) -> np.ndarray:
    """The ``key`` block from correlations with the 24 key profiles (``(24,)`` or ``(n, 24)``):
    the best major and the best minor correlation, their difference (the mode, whatever the tonic)
    and the best one (the key clarity), moved and scaled to order one."""
    corr = np.asarray(corr, dtype=np.float64)
    major, minor = corr[..., :12].max(axis=-1), corr[..., 12:].max(axis=-1)
    return (np.stack([major, minor, major - minor, corr.max(axis=-1)], axis=-1) - _KEY_CENTRE) / _KEY_SCALE


def _key(sp: _Spectra) -> np.ndarray:
    return key_values(sp.key_corr)


def _key_track(sp: _Spectra) -> np.ndarray:
    return key_values(sp.key_profile_corr)


def _harmony(sp: _Spectra) -> np.ndarray:
    return (np.abs(np.fft.rfft(sp.chroma, axis=0))[1:7].mean(axis=1) - 0.45) / 0.15


#: The function that computes each block from a snippet's :class:`_Spectra`.
_BLOCK_FUNCS = {
    "timbre": _timbre, "timbre_var": _timbre_var, "chroma": _chroma, "chroma_var": _chroma_var,
    "contrast": _contrast, "contrast_var": _contrast_var, "spectral": _spectral, "rhythm": _rhythm,
    "level": _level, "tonal": _tonal, "key": _key, "harmony": _harmony, "notes": _notes_block,
    "key_profile": _key_profile_block,
    # the track's key block: of the snippet alone here; the encoder's track_context replaces it by
    # that of all the snippets read from the track
    "key_track": _key_track, "key_chroma_track": _key,
}  # fmt: skip
