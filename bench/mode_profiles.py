"""Which pitch-class profile of a track tells major from minor best: a dev-part diagnostic.

For every track of a suite set whose tags are ``major`` / ``minor`` (``mode``, ``mode-extra``),
the track's profile is made several ways — the ``features`` encoder's snippet chroma (what the
``key_track`` block reads), semitone power from STFTs of three lengths, the key analysis's
constant-Q chroma of each 10-s snippet and of the whole clip — and reduced to one number, the best
major minus the best minor key-profile correlation. Printed per profile: the share of tracks whose
sign is right, the share with the best threshold, and two 10-shot learners in that one dimension
over 300 episodes of 10 examples per mode: a 3-NN, and the threshold that best fits the examples.

    python bench/mode_profiles.py --set mode            # the mode set's dev part
    python bench/mode_profiles.py --set mode-extra      # other development pieces

Development parts only: choices are made here, never on the held-out part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_sets  # noqa: E402

SR = 22050
SNIPPET = 10 * SR


def mode_value(profile: np.ndarray, templates: np.ndarray) -> float:
    """Best major minus best minor correlation of a 12-bin profile with the key templates."""
    c = profile - profile.mean()
    k = templates @ (c / (np.linalg.norm(c) + 1e-12))
    return float(k[:12].max() - k[12:].max())


def stft_profile(y: np.ndarray, n_fft: int, hop: int, *, top_midi: int | None = None, frame_max: bool = False) -> np.ndarray:
    """Semitone power (MIDI 33 up to ``top_midi``) folded to 12 classes, row 0 = C; each frame unit
    norm and averaged, or (``frame_max``) scaled to its maximum and summed over the frames within
    40 dB of the loudest, as the key analysis does."""
    from clapknn.encoders import dsp
    from clapknn.encoders.feature_blocks import _PITCH_HI, _PITCH_LO, _semitone_filterbank

    S = dsp.stft_magnitude(y.astype(np.float32), n_fft, hop, dsp.hann(n_fft).astype(np.float32))
    P = _semitone_filterbank(SR, n_fft) @ (S.astype(np.float64) ** 2)
    top = top_midi or _PITCH_HI
    n = ((top - _PITCH_LO) // 12) * 12
    ch = np.roll(P[:n].reshape(n // 12, 12, -1).sum(axis=0), _PITCH_LO % 12, axis=0)
    if frame_max:
        peak = ch.max(axis=0)
        loud = peak > 0.01 * peak.max()
        return np.where(loud, ch / np.maximum(peak, 1e-12), 0.0).sum(axis=1)
    return (ch / np.maximum(np.linalg.norm(ch, axis=0, keepdims=True), 1e-12)).mean(axis=1)


def profiles_of(y: np.ndarray, enc) -> dict[str, np.ndarray]:
    from clapknn.analysis.key import chromagram
    from clapknn.encoders.feature_blocks import _Spectra

    snips = [y[i:i + SNIPPET] for i in range(0, max(len(y) - SNIPPET, 0) + 1, SNIPPET)]
    mean = lambda f: np.mean([f(s) for s in snips], axis=0)  # noqa: E731
    return {
        "the snippet chroma (features encoder)": mean(lambda s: _Spectra(enc, s).profile),
        "semitone power, 4096-point STFT": mean(lambda s: stft_profile(s, 4096, 1024)),
        "semitone power, 8192-point STFT": mean(lambda s: stft_profile(s, 8192, 2048)),
        "semitone power, 16384-point STFT": mean(lambda s: stft_profile(s, 16384, 2048)),
        "8192-point, up to C6, frame maximum": mean(lambda s: stft_profile(s, 8192, 2048, top_midi=84, frame_max=True)),
        "constant-Q chroma of each snippet": np.sum(
            [chromagram(s, SR, harmonic=False, tuning=0.0)[0].sum(axis=1) for s in snips], axis=0),
        "constant-Q chroma of the clip (the rule's)": chromagram(y, SR)[0].sum(axis=1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="mode", help="a suite set tagged major / minor (default mode)")
    ap.add_argument("--episodes", type=int, default=300)
    args = ap.parse_args()

    import soundfile as sf
    import soxr

    from clapknn.analysis.profiles import key_templates
    from clapknn.encoders.features import FeaturesEncoder

    rows = [r for r in suite_sets.load_set(args.set) if r["split"] == "dev"]
    if not rows or {r["tags"] for r in rows} != {"major", "minor"}:
        raise SystemExit(f"{args.set}: needs a dev part tagged major / minor")
    enc, templates = FeaturesEncoder(), key_templates()
    values: dict[str, list[float]] = {}
    major = []
    for r in rows:
        y, fs = sf.read(r["path"], dtype="float32", always_2d=True)
        y = soxr.resample(y.mean(axis=1), fs, SR).astype(np.float32)
        major.append(r["tags"] == "major")
        for name, prof in profiles_of(y, enc).items():
            values.setdefault(name, []).append(mode_value(prof, templates))
    major = np.array(major)
    rng = np.random.default_rng(0)
    idx_ma, idx_mi = np.flatnonzero(major), np.flatnonzero(~major)
    episodes = [np.r_[rng.choice(idx_ma, 10, replace=False), rng.choice(idx_mi, 10, replace=False)]
                for _ in range(args.episodes)]
    print(f"{args.set} (dev): {len(major)} tracks, {major.mean():.2f} major")
    print(f"{'track profile from':45s} {'sign':>6s} {'best thr':>8s} {'10-shot 3-NN':>12s} {'10-shot thr':>11s}")
    for name, v in values.items():
        v = np.array(v)
        best = max(np.mean((v > t) == major) for t in v)
        knn, thr = [], []
        for ex in episodes:
            q = np.setdiff1d(np.arange(len(v)), ex)
            nn = np.argsort(np.abs(v[q][:, None] - v[ex][None, :]), axis=1, kind="stable")[:, :3]
            knn.append(np.mean((major[ex][nn].mean(axis=1) > 0.5) == major[q]))
            cand = np.sort(v[ex])
            t = cand[int(np.argmax([np.mean((v[ex] > c) == major[ex]) for c in cand]))]
            thr.append(np.mean((v[q] > t) == major[q]))
        print(f"{name:45s} {np.mean((v > 0) == major):6.3f} {best:8.3f} {np.mean(knn):12.3f} {np.mean(thr):11.3f}")


if __name__ == "__main__":
    main()
