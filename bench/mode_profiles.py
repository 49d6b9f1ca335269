"""Which pitch-class profile of a track tells major from minor best: a dev-part diagnostic.

For every track of a suite set whose tags are ``major`` / ``minor`` (``mode``, ``mode-extra``),
the track's profile is made several ways — the ``features`` encoder's snippet chroma (what the
``key_track`` block reads), semitone power from STFTs of three lengths, the key analysis's
constant-Q chroma of each 10-s snippet and of the whole clip — and reduced to one number, the best
major minus the best minor key-profile correlation. Printed per profile: the share of tracks whose
sign is right, the share with the best threshold, and two 10-shot learners in that one dimension
over 300 episodes of 10 examples per mode: a 3-NN, and the threshold that best fits the examples.

With ``--vote``, each profile is instead put where the vote reads the track's key: the ``key_track``
block of every vector of the track is made the key block of that profile (the other blocks as the
encoder made them), and the defaults of ``clapknn tag`` (``evaluate``'s 20 episodes, seed 0) are
scored on any dev part, each line the paired difference from the encoder's own ``key_track``.

    python bench/mode_profiles.py --set mode            # the mode set's dev part
    python bench/mode_profiles.py --set mode-extra      # other development pieces
    python bench/mode_profiles.py --vote --set mode,mode-extra,emopia-valence,emopia

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


def stft_profile(y: np.ndarray, n_fft: int, hop: int, *, top_midi: int | None = None, frame_max: bool = False,
                 magnitude: bool = False) -> np.ndarray:
    """Semitone power (``magnitude``: its square root, as a constant-Q magnitude; MIDI 33 up to
    ``top_midi``) folded to 12 classes, row 0 = C; each frame unit norm and averaged, or
    (``frame_max``) scaled to its maximum and summed over the frames within 40 dB of the loudest,
    as the key analysis does."""
    from clapknn.encoders import dsp
    from clapknn.encoders.feature_blocks import _PITCH_HI, _PITCH_LO, _semitone_filterbank

    S = dsp.stft_magnitude(y.astype(np.float32), n_fft, hop, dsp.hann(n_fft).astype(np.float32))
    P = _semitone_filterbank(SR, n_fft) @ (S.astype(np.float64) ** 2)
    if magnitude:
        P = np.sqrt(P)
    top = top_midi or _PITCH_HI
    n = ((top - _PITCH_LO) // 12) * 12
    ch = np.roll(P[:n].reshape(n // 12, 12, -1).sum(axis=0), _PITCH_LO % 12, axis=0)
    if frame_max:
        peak = ch.max(axis=0)
        loud = peak > 0.01 * peak.max()
        return np.where(loud, ch / np.maximum(peak, 1e-12), 0.0).sum(axis=1)
    return (ch / np.maximum(np.linalg.norm(ch, axis=0, keepdims=True), 1e-12)).mean(axis=1)


def _per_snippet(f):
    """A track profile: the mean of ``f(snippet, enc)`` over the track's 10-s snippets."""
    return lambda y, snips, enc: np.mean([f(s, enc) for s in snips], axis=0)


def _cqt_snippets(y, snips, enc):
    from clapknn.analysis.key import chromagram

    return np.sum([chromagram(s, SR, harmonic=False, tuning=0.0)[0].sum(axis=1) for s in snips], axis=0)


def _cqt_clip(y, snips, enc):
    from clapknn.analysis.key import chromagram

    return chromagram(y, SR)[0].sum(axis=1)


def _spectra(s, enc):
    from clapknn.encoders.feature_blocks import _Spectra

    return _Spectra(enc, s)


#: ``name: profile(y, snippets, enc)`` for each way of making a track's pitch-class profile.
PROFILES = {
    "the snippet chroma (features encoder)": _per_snippet(lambda s, enc: _spectra(s, enc).profile),
    "semitone power, 4096-point STFT": _per_snippet(lambda s, enc: stft_profile(s, 4096, 1024)),
    "semitone power, 8192-point STFT": _per_snippet(lambda s, enc: stft_profile(s, 8192, 2048)),
    "semitone power, 16384-point STFT": _per_snippet(lambda s, enc: stft_profile(s, 16384, 2048)),
    "8192-point, up to C6, frame maximum": _per_snippet(
        lambda s, enc: stft_profile(s, 8192, 2048, top_midi=84, frame_max=True)),
    "semitone magnitude, 4096-point, frame maximum": _per_snippet(
        lambda s, enc: stft_profile(s, 4096, 1024, frame_max=True, magnitude=True)),
    "octave-wise magnitude (the encoder's key_profile, recipe 10)": _per_snippet(
        lambda s, enc: _spectra(s, enc).key_profile),
    "constant-Q chroma of each snippet": _cqt_snippets,
    "constant-Q chroma of the clip (the rule's)": _cqt_clip,
}


def profiles_of(y: np.ndarray, enc) -> dict[str, np.ndarray]:
    snips = [y[i:i + SNIPPET] for i in range(0, max(len(y) - SNIPPET, 0) + 1, SNIPPET)]
    return {name: f(y, snips, enc) for name, f in PROFILES.items()}


def _track_profiles(name: str, paths: list[str], enc) -> dict[str, np.ndarray]:
    """``{profile name: (tracks, 12)}`` for the files ``paths``, cached in the suite's cache folder."""
    import soundfile as sf
    import soxr

    cache = suite_sets.cache_root() / "features" / f"profiles-{name}-{suite_sets.set_version(name)}-dev.npz"
    per: dict[str, list[np.ndarray]] = {}
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        names = [str(k) for k in z["names"]]
        # a cache made before a profile was added is made again
        if list(z["paths"]) == paths and names == list(PROFILES):
            return {k: z[f"p{i}"] for i, k in enumerate(names)}
    for path in paths:
        y, fs = sf.read(path, dtype="float32", always_2d=True)
        y = soxr.resample(y.mean(axis=1), fs, SR).astype(np.float32)
        for k, prof in profiles_of(y, enc).items():
            per.setdefault(k, []).append(prof)
    out = {k: np.array(v) for k, v in per.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), names=np.array(list(out)), **{f"p{i}": v for i, v in enumerate(out.values())})
    return out


def vote_with_profiles(names: list[str], shots: tuple[int, ...], episodes: int) -> None:
    """The defaults' accuracy with ``key_track`` made from each profile, paired against the encoder's."""
    import dataclasses

    from block_weights import accuracies, load, paired_line

    from clapknn.analysis.profiles import key_templates
    from clapknn.encoders.base import l2_normalize
    from clapknn.encoders.feature_blocks import key_values
    from clapknn.encoders.features import FeaturesEncoder, block_layout

    enc, templates = FeaturesEncoder(), key_templates()
    a, b = next((a, b) for n, a, b, _ in block_layout() if n == "key_track")
    for name in names:
        emb = load(name, "dev")
        profiles = _track_profiles(name, [str(p) for p in emb.paths], enc)
        base = accuracies(emb, shots, episodes)
        print(f"{name} (dev), the encoder's key_track: " + "  ".join(f"{s}: {base[s].mean():.3f}" for s in shots))
        V = emb.vectors.astype(np.float64)
        old = np.linalg.norm(V[:, a:b], axis=1, keepdims=True)
        for label, prof in profiles.items():
            c = prof - prof.mean(axis=1, keepdims=True)
            kv = key_values((templates @ (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).T).T)
            W = V.copy()
            new = kv[emb.track]
            W[:, a:b] = new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12) * old
            # no encoder identity: evaluate keeps these vectors as they are (no track context again)
            got = accuracies(dataclasses.replace(emb, vectors=l2_normalize(W).astype(np.float32), encoder={}),
                             shots, episodes)
            print(paired_line(label, got, base, width=60))
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="mode", help="a suite set tagged major / minor (default mode); with "
                    "--vote, any dev parts, comma-separated")
    ap.add_argument("--episodes", type=int, default=None, help="300 (20 with --vote)")
    ap.add_argument("--vote", action="store_true", help="the defaults' vote with key_track from each profile")
    ap.add_argument("--shots", default="1,5,10,20", help="with --vote")
    args = ap.parse_args()
    if args.vote:
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)
        vote_with_profiles([s for s in args.set.split(",") if s], tuple(int(s) for s in args.shots.split(",")),
                           args.episodes or 20)
        return
    args.episodes = args.episodes or 300

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
