"""A weights-free encoder from compact MIR features (MFCC, chroma, spectral contrast, rhythm).

No model, no download: every number is computed with librosa from the snippet itself, so the whole
product runs offline. Each feature block is summarised over time by its mean and spread, each block
is scaled to unit length and weighted, and the concatenation is L2-normalised; so cosine similarity
gives every block the weight chosen here, whatever its units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Encoder, l2_normalize

__all__ = ["FeaturesEncoder", "FEATURE_BLOCKS"]

#: Version of the feature recipe; bump it whenever the vectors change, so old indexes are refused.
RECIPE_VERSION = 1

#: Blocks in the order they appear in the vector, with their relative weights.
FEATURE_BLOCKS: dict[str, float] = {
    "mfcc_mean": 1.0,
    "mfcc_std": 1.0,
    "chroma_mean": 1.0,
    "chroma_std": 0.5,
    "contrast_mean": 1.0,
    "contrast_std": 0.5,
    "spectral": 1.0,
    "rhythm": 1.0,
}

_N_MFCC = 20
_N_FFT = 2048
_HOP = 512
_TEMPO_BANDS = 8  # log-spaced bands of the tempogram, 30-300 BPM


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=1), x.std(axis=1)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


class FeaturesEncoder(Encoder):
    """Hand-crafted MIR features as an embedding.

    Parameters
    ----------
    sample_rate : int
        Rate (Hz) snippets are decoded at. 22,050 Hz keeps everything up to 11 kHz.

    Notes
    -----
    Deterministic and batch-independent: each snippet is processed on its own.
    """

    name = "features"

    def __init__(self, sample_rate: int = 22050) -> None:
        self.sample_rate = int(sample_rate)
        self.dim = self._block_sizes_total()

    @staticmethod
    def _block_sizes() -> dict[str, int]:
        return {
            "mfcc_mean": _N_MFCC - 1,
            "mfcc_std": _N_MFCC - 1,
            "chroma_mean": 12,
            "chroma_std": 12,
            "contrast_mean": 7,
            "contrast_std": 7,
            "spectral": 8,
            "rhythm": _TEMPO_BANDS + 3,
        }

    @classmethod
    def _block_sizes_total(cls) -> int:
        return sum(cls._block_sizes().values())

    def identity(self) -> dict[str, Any]:
        """The base identity plus the feature recipe version and STFT settings (so an index built
        with another recipe is refused)."""
        ident = super().identity()
        ident.update(recipe=RECIPE_VERSION, n_fft=_N_FFT, hop_length=_HOP, n_mfcc=_N_MFCC)
        return ident

    def _blocks(self, y: np.ndarray) -> dict[str, np.ndarray]:
        import librosa

        sr = self.sample_rate
        S = np.abs(librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP))
        power = S**2
        mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=64)
        log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None, amin=1e-10)
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=_N_MFCC)[1:]  # drop c0 (loudness)
        chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_chroma=12)
        contrast = librosa.feature.spectral_contrast(S=S, sr=sr)
        centroid = librosa.feature.spectral_centroid(S=S, sr=sr)[0]
        bandwidth = librosa.feature.spectral_bandwidth(S=S, sr=sr)[0]
        flatness = librosa.feature.spectral_flatness(S=S)[0]
        rms = librosa.feature.rms(S=S, frame_length=_N_FFT)[0]
        onset = librosa.onset.onset_strength(S=log_mel, sr=sr)
        tempogram = librosa.feature.tempogram(onset_envelope=onset, sr=sr, hop_length=_HOP)
        bpms = librosa.tempo_frequencies(tempogram.shape[0], sr=sr, hop_length=_HOP)
        edges = np.geomspace(30, 300, _TEMPO_BANDS + 1)
        tg = tempogram.mean(axis=1)
        bands = np.array([tg[(bpms >= lo) & (bpms < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])

        mfcc_mean, mfcc_std = _mean_std(mfcc)
        chroma_mean, chroma_std = _mean_std(chroma)
        contrast_mean, contrast_std = _mean_std(contrast)
        rms_db = 20 * np.log10(rms + 1e-6)
        nyq = sr / 2
        spectral = np.array(
            [
                centroid.mean() / nyq,
                centroid.std() / nyq,
                bandwidth.mean() / nyq,
                bandwidth.std() / nyq,
                np.log10(flatness.mean() + 1e-10) / 10,
                (rms_db.mean() + 60) / 60,
                rms_db.std() / 20,
                np.mean(np.abs(np.diff(rms_db))) / 6,
            ]
        )
        onset_n = onset / (onset.max() + 1e-9)
        rhythm = np.concatenate(
            [bands / (bands.sum() + 1e-9), [onset_n.mean(), onset_n.std(), (onset_n > 0.3).mean()]]
        )
        return {
            "mfcc_mean": mfcc_mean / 100.0,
            "mfcc_std": mfcc_std / 30.0,
            "chroma_mean": chroma_mean - chroma_mean.mean(),
            "chroma_std": chroma_std,
            "contrast_mean": (contrast_mean - 20.0) / 20.0,
            "contrast_std": contrast_std / 10.0,
            "spectral": spectral,
            "rhythm": rhythm,
        }

    def embed(self, snippets: np.ndarray) -> np.ndarray:
        """Feature vectors of mono snippets at :attr:`sample_rate`.

        ``(n, samples)`` (or one ``(samples,)`` snippet) → ``(n, dim)`` float32, L2-normalised rows.
        """
        snippets = np.atleast_2d(np.asarray(snippets, dtype=np.float32))
        out = np.zeros((snippets.shape[0], self.dim), dtype=np.float32)
        for i, y in enumerate(snippets):
            blocks = self._blocks(y)
            parts = [w * _unit(np.nan_to_num(blocks[k].astype(np.float64))) for k, w in FEATURE_BLOCKS.items()]
            out[i] = np.concatenate(parts)
        return l2_normalize(out)
