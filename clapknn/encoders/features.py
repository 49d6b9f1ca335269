"""A weights-free encoder from compact music features: loudness, timbre, tonality and rhythm.

No model, no download: every number is computed from the snippet itself with numpy and scipy, so
the whole product runs offline. The recipe (version :data:`RECIPE_VERSION`) was chosen by few-shot
evaluation on human-labelled mood data (EMOPIA; see ``docs/evaluation.md``):

- **level** — frame loudness in dBFS (mean and 10th/50th/90th percentiles): how loud, how dynamic;
- **contrast** — spectral contrast in 7 octave bands (mean and spread): peaks vs valleys, i.e. how
  tonal or noisy each register is;
- **tonal** — the pitch-class profile (from a semitone spectrum) rotated so the tonic of the
  estimated key comes first: the scale degrees used, whatever the key; major and minor differ here;
- **key** — correlations with the best major and best minor key profiles (Albrecht & Shanahan's,
  those of :mod:`clapknn.analysis`), their difference (mode) and the key clarity;
- **harmony** — magnitudes of the DFT of each frame's pitch-class profile (interval content:
  chromatic, whole-tone, diatonic...), averaged; transposition-invariant;
- **chroma** — the pitch-class profile itself (which notes, in absolute terms);
- **timbre** — MFCC 1-19 (no loudness term): mean and spread;
- **spectral** — brightness (centroid), width (bandwidth) and their variation, flatness;
- **onsets** — onset-flux statistics: how busy and how percussive;
- **tempo** — a tempogram folded into 8 log-spaced tempo bands (30-300 BPM);
- **notes** — how many notes start per second and how many sound at once, counted on the semitone
  spectrum (rises of a semitone band, peaks picked in time; bands within 20 and 30 dB of the
  loudest): note density and polyphony, measured relative to the snippet's own level, so they mean
  the same in a quiet recording and a loud master;
- **key_profile** — the pitch-class profile the key analysis would read (constant-Q-like magnitudes,
  each frame scaled to its maximum; not log-compressed): not searched (its weight in the
  standardised space is 0), carried for the track's key;
- **key_track**, **key_chroma_track** — the ``key`` block of the whole track, two readings of it:
  from the mean ``key_profile`` and from the mean ``chroma`` of every snippet read from it
  (:func:`track_context`, which the embedding engine applies to each track's vectors). The mode
  of a piece adds up over its snippets, where one window can mislead; the two profiles err on
  different pieces, and the vote weighs each by how well it follows the index's tags.

The blocks themselves are computed in :mod:`clapknn.encoders.feature_blocks`.

Each block is moved and scaled by fixed constants to values of order one, scaled to unit length
(except ``level``, whose size is the point) and weighted (:data:`FEATURE_BLOCKS`), and the whole
vector is L2-normalised: the cosine of two vectors is then about a weighted mean of per-block
cosines, i.e. of pattern similarities.

Fixed constants cannot suit every collection (solo piano and full mixes differ by tens of dB and in
every timbre statistic), so the encoder also offers the kNN vote a second space
(:meth:`FeaturesEncoder.knn_options`, used by :class:`~clapknn.tagging.tagger.Tagger` and
:mod:`clapknn.evaluation`): every dimension **standardised** on the index's own vectors, then each
dimension and each block weighted by its **relevance** to the index's tags (how far apart the tags'
files lie in it, relative to the spread within a tag: loudness counts for an energy vocabulary,
tonality for a happy/sad one, the mode dimension of the key block for major/minor), each block
scaled to unit length times its weight. The standardised space is used unless leave-one-group-out
(a file, or a labels CSV group) on the index's own examples shows the plain one clearly better
(``standardize="auto"`` in :class:`~clapknn.vote.KNNTagger`: a permutation test). On EMOPIA the standardised space is worth about ten points of accuracy; on the bundled
demo clips, whose moods follow absolute key and tempo, the plain one wins. The choice is recomputed
from the stored vectors whenever an index is loaded; ``clapknn tag --space`` forces one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dsp
from .base import Encoder, l2_normalize
from .feature_blocks import (
    _BLOCK_FUNCS, _BLOCK_SIZES, _HOP, _MAGNITUDE_BLOCKS, _N_FFT, _N_FFT_PITCH, _N_MELS, _N_MELS_FLUX, _N_MFCC,
    _N_FFT_KEY, _TEMPO_WIN, _Spectra, _contrast_bands, _key_filterbank, _semitone_filterbank, key_values,
)

__all__ = ["FeaturesEncoder", "FEATURE_BLOCKS", "RECIPE_VERSION"]

_QUIET = 0.05  # plain-vector weight of the blocks meant for the standardised space only

#: Version of the feature recipe; bump it whenever the vectors change, so old indexes are refused.
RECIPE_VERSION = 10

#: Blocks in vector order: ``name: (weight in the plain vector, weight in the standardised space)``.
#: The plain vector (the encoder's output) is a weighted set of unit-length patterns of timbre,
#: pitch classes, spectral shape and rhythm, plus loudness and note density in fixed units (between
#: mastered tracks, whose levels differ little, loudness hardly moves the cosine; between takes
#: recorded at one gain it carries energy); the blocks whose plain weight is tiny (tonality, key,
#: harmony) hardly move its cosine but count fully once the vote standardises every dimension on
#: the index (standardising undoes any fixed scale). ``key_track`` is the one block of the whole
#: track rather than of the snippet (:func:`track_context`).
FEATURE_BLOCKS: dict[str, tuple[float, float]] = {
    "timbre": (1.0, 1.0),
    "timbre_var": (1.0, 0.5),
    "chroma": (1.0, 1.0),
    "chroma_var": (0.5, 0.5),
    "contrast": (1.0, 1.0),
    "contrast_var": (0.5, 0.5),
    "spectral": (1.0, 1.0),
    "rhythm": (1.0, 1.0),
    "level": (1.0, 1.5),
    "tonal": (_QUIET, 1.0),
    "key": (_QUIET, 0.75),
    "harmony": (_QUIET, 1.0),
    "notes": (0.5, 1.0),
    "key_profile": (_QUIET, 0.0),
    "key_track": (_QUIET, 0.7),
    "key_chroma_track": (_QUIET, 0.7),
}

#: The blocks of the whole track (:func:`track_context`) and the per-snippet profile each is read from.
_TRACK_KEY_BLOCKS = {"key_track": "key_profile", "key_chroma_track": "chroma"}


class FeaturesEncoder(Encoder):
    """Hand-crafted music features as an embedding.

    Parameters
    ----------
    sample_rate : int
        Rate (Hz) snippets are decoded at. 22,050 Hz keeps everything up to 11 kHz.

    Notes
    -----
    Deterministic and batch-independent: each snippet is processed on its own, its intermediate
    results (STFT, semitone spectrum, MFCCs, contrast, onset flux, pitch-class and key profiles) computed
    once and shared by the blocks that read them. Filter banks are built on first use and kept on
    the instance. Both STFTs run in single precision (recipe 7; recipe 6's double-precision ones
    gave the same vectors to cosine 0.9999999 at 1.6x the cost): about 80 ms of CPU per 10-s
    snippet of music at 22,050 Hz in one process, 130 ms with recipe 6 in the same run; recipe
    10's key profile (seven 1024-point STFTs, one per octave) costs 3.4 ms of a later run's 55 ms
    (``bench/features_cost.py`` times every stage and block).
    A track shorter than one snippet is looped to the full length (:attr:`pad` ``"repeat"``: the
    last copy partial, no silence added), so loudness, rhythm and note statistics describe the
    music rather than a stretch of zeros; CLAP uses its own training rule instead (``"repeatpad"``).
    """

    name = "features"
    pad = "repeat"
    encodes_in_workers = True  # with decoding workers, each encodes the snippets it decodes
    worker_modules = (
        "scipy.sparse", "scipy.fft", "clapknn.analysis.profiles", "clapknn.encoders.features",
    )

    def __init__(self, sample_rate: int = 22050) -> None:
        self.sample_rate = int(sample_rate)
        self.dim = sum(_BLOCK_SIZES.values())
        self._banks: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # filter banks are rebuilt where unpickled
        state = dict(self.__dict__)
        state["_banks"] = {}
        return state

    def identity(self) -> dict[str, Any]:
        """The base identity plus the feature recipe version and STFT settings (so an index built
        with another recipe is refused)."""
        ident = super().identity()
        ident.update(recipe=RECIPE_VERSION, n_fft=_N_FFT, hop_length=_HOP, n_mfcc=_N_MFCC)
        return ident

    def knn_options(self) -> dict[str, Any]:
        """Settings for :class:`~clapknn.vote.KNNTagger`: search every dimension standardised on
        the indexed vectors, each dimension and block weighted by its relevance to the index's tags
        and each block at unit length times its weight, unless the plain vectors do clearly better
        leave-one-group-out on the index (``standardize="auto"``, ``block_relevance=True``)."""
        return {"standardize": "auto", "feature_blocks": self.feature_blocks(), "block_relevance": True}

    @staticmethod
    def feature_blocks() -> list[tuple[int, int, float]]:
        """``(start, stop, weight)`` of each block of :data:`FEATURE_BLOCKS` in the vector, with
        its weight in the standardised space."""
        return [(a, b, w) for _, a, b, w in block_layout()]

    # ------------------------------------------------------------------ features
    def _bank(self, name: str):
        """Filter banks and constant tables, built on first use. The mel and semitone banks are
        sparse matrices (each FFT bin feeds at most two filters), so projecting a spectrogram on
        them costs a small fraction of a dense product and gives the same sums."""
        if name not in self._banks:
            from scipy import sparse

            sr = self.sample_rate
            if name == "mel":
                self._banks[name] = sparse.csr_matrix(dsp.mel_filters(sr, _N_FFT, _N_MELS))
            elif name == "mel_flux":
                self._banks[name] = sparse.csr_matrix(dsp.mel_filters(sr, _N_FFT, _N_MELS_FLUX))
            elif name == "window":
                self._banks[name] = dsp.hann(_N_FFT).astype(np.float32)  # single-precision STFT
            elif name == "window_pitch":
                self._banks[name] = dsp.hann(_N_FFT_PITCH).astype(np.float32)
            elif name == "semitones":
                self._banks[name] = sparse.csr_matrix(_semitone_filterbank(sr, _N_FFT_PITCH))
            elif name == "key_semitones":
                self._banks[name] = sparse.csr_matrix(_key_filterbank(sr))
            elif name == "window_key":
                self._banks[name] = dsp.hann(_N_FFT_KEY).astype(np.float32)
            elif name == "keys":
                from ..analysis.profiles import key_templates

                self._banks[name] = key_templates()  # the analysis's default key profiles
            elif name == "freqs":
                self._banks[name] = np.fft.rfftfreq(_N_FFT, 1.0 / sr)
            elif name == "tempo_window":
                self._banks[name] = dsp.hann(_TEMPO_WIN)
            elif name == "contrast":
                self._banks[name] = _contrast_bands(sr, _N_FFT)
        return self._banks[name]

    @classmethod
    def track_context(cls, vectors: np.ndarray) -> np.ndarray:
        """The ``key_track`` block of every row made that of the whole track (:func:`track_context`)."""
        return track_context(vectors)

    def _spectra(self, y: np.ndarray) -> "_Spectra":
        """The shared intermediate results of one snippet (each computed once, on first use)."""
        return _Spectra(self, y)

    def _blocks(self, y: np.ndarray, names=None) -> dict[str, np.ndarray]:
        """The feature blocks of one snippet (``names``: only those), each moved and scaled to
        values of order one."""
        sp = self._spectra(y)
        return {name: _BLOCK_FUNCS[name](sp) for name in (FEATURE_BLOCKS if names is None else names)}

    def embed(self, snippets: np.ndarray) -> np.ndarray:
        """Feature vectors of mono snippets at :attr:`sample_rate`.

        ``(n, samples)`` (or one ``(samples,)`` snippet) → ``(n, dim)`` float32, L2-normalised rows.
        """
        snippets = np.atleast_2d(np.asarray(snippets, dtype=np.float32))
        out = np.zeros((snippets.shape[0], self.dim), dtype=np.float32)
        for i, y in enumerate(snippets):
            out[i] = compose(self._blocks(y))
        return l2_normalize(out)


def compose(blocks: dict[str, np.ndarray], names=None) -> np.ndarray:
    """The (not yet L2-normalised) vector of one snippet from its blocks: each block in
    :data:`FEATURE_BLOCKS` order (``names``: only those), a unit pattern or kept in its fixed units
    (:data:`_MAGNITUDE_BLOCKS`), times its plain weight."""
    parts = []
    for name, (weight, _) in FEATURE_BLOCKS.items():
        if names is not None and name not in names:
            continue
        v = np.nan_to_num(np.asarray(blocks[name], dtype=np.float64))
        if name in _MAGNITUDE_BLOCKS:  # the size is the point: keep it
            v = v / np.sqrt(v.size)
        else:  # a block is a pattern: unit length
            n = float(np.linalg.norm(v))
            v = v / n if n > 1e-12 else v
        parts.append(weight * v)
    return np.concatenate(parts)


def block_layout(names=None) -> list[tuple[str, int, int, float]]:
    """``(name, start, stop, standardised-space weight)`` of each block (``names``: only those, in
    vector order) in a vector made by :func:`compose`."""
    out, start = [], 0
    for name, (_, weight) in FEATURE_BLOCKS.items():
        if names is not None and name not in names:
            continue
        out.append((name, start, start + _BLOCK_SIZES[name], float(weight)))
        start += _BLOCK_SIZES[name]
    return out


def track_context(vectors: np.ndarray) -> np.ndarray:
    """The vectors of the snippets read from one track, their ``key_track`` and
    ``key_chroma_track`` blocks made those of the whole track: the key block
    (:func:`~clapknn.encoders.feature_blocks.key_values`) of the mean of the snippets' key profiles
    (the ``key_profile`` block: constant-Q-like, as the key analysis reads a piece) and of their
    pitch-class profiles (the ``chroma`` block), the same in every row.

    One 10-s window says the mode of tonal music less surely than several: a modulation, a
    cadence on the relative key or a passage on few notes mislead one window, not the mean. The
    profiles are read back from the ``key_profile`` and ``chroma`` blocks of each row (unit
    patterns: the direction is the snippet's centred profile, which is all a correlation needs), so
    this is a function of the vectors alone: whoever holds a track's vectors (the embedding engine, or an evaluation that
    votes on some windows of a track) gets the same result from the same rows. Each row is then
    L2-normalised again, as :meth:`FeaturesEncoder.embed` leaves it; rows of zeros stay zero.
    """
    out = np.asarray(vectors, dtype=np.float32)
    if out.ndim != 2 or len(out) == 0:
        return out
    V = out.astype(np.float64)
    layout = {name: (a, b) for name, a, b, _ in block_layout()}
    # every unit-pattern block has length (its plain weight / the row's norm before normalisation),
    # or 0 when the pattern was flat: the largest ratio gives the row's scale
    scale = np.max([np.linalg.norm(V[:, a:b], axis=1) / FEATURE_BLOCKS[name][0]
                    for name, (a, b) in layout.items() if name not in _MAGNITUDE_BLOCKS], axis=0)
    from ..analysis.profiles import key_templates

    for target, source in _TRACK_KEY_BLOCKS.items():
        a, b = layout[source]
        norms = np.linalg.norm(V[:, a:b], axis=1, keepdims=True)
        profile = np.divide(V[:, a:b], norms, out=np.zeros_like(V[:, a:b]), where=norms > 1e-12).mean(axis=0)
        profile = profile - profile.mean()
        n = float(np.linalg.norm(profile))
        corr = key_templates() @ (profile / n) if n > 1e-12 else np.zeros(24)
        weight, size = FEATURE_BLOCKS[target][0], _BLOCK_SIZES[target]
        a, b = layout[target]
        V[:, a:b] = scale[:, None] * (weight * key_values(corr) / np.sqrt(size))[None, :]
    return l2_normalize(V)
