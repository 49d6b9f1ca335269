"""What each block of the ``features`` encoder costs, and what it is worth.

Two measurements, both of the encoder as it is in this checkout:

``cost`` (always)
    CPU time (``time.process_time``, so other processes on a shared machine do not count) per 10-s
    snippet at 22,050 Hz, median over the snippets and best of ``--repeats``: of each shared stage
    (the STFT, the semitone spectrum, the MFCCs, the spectral-contrast frames, the onset flux, the
    pitch-class profile), of each block from those stages, the whole :meth:`FeaturesEncoder.embed`,
    and what leaving each block out would save (the embed time of all blocks minus that of all
    the others: a stage shared by several blocks is only saved when all of them go). In the same run,
    a reference: the same stages with dense filter-bank products (as recipe 4 was first computed),
    and the ratio to it.
``ablation`` (``--sets``)
    Track accuracy of 5-shot episodes (``clapknn evaluate``'s episodes, defaults of ``clapknn tag``,
    both vote spaces) with every block, then with each block left out (its dimensions removed, the
    vector made again by :func:`clapknn.encoders.features.compose`), on the chosen part of the
    benchmark suite's sets (``bench/suite_sets.py``; ``--split dev`` by default: this is where
    blocks are chosen, never on the held-out parts).

Usage::

    python bench/features_cost.py                                  # cost on synthetic snippets
    python bench/features_cost.py --audio-set mode                 # cost on one suite set's audio
    python bench/features_cost.py --sets mode,emopia-valence       # also the ablation, dev parts
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from clapknn.encoders.features import FeaturesEncoder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SR = 22050
SNIPPET = 10 * SR
STAGES = ("S", "P", "mfcc", "contrast", "flux", "pitch", "chroma", "profile", "key_corr", "key_profile", "key_profile_corr")
#: The shared stages each block reads (directly or through another stage).
_PITCH = ("pitch", "chroma", "profile")
STAGES_OF = {
    "timbre": ("S", "P", "mfcc"), "timbre_var": ("S", "P", "mfcc"), "chroma": _PITCH, "chroma_var": _PITCH[:2],
    "contrast": ("S", "contrast"), "contrast_var": ("S", "contrast"), "spectral": ("S", "P"),
    "rhythm": ("S", "P", "flux"), "level": (), "tonal": _PITCH + ("key_corr",), "key": _PITCH + ("key_corr",),
    "harmony": _PITCH[:2], "notes": ("pitch",), "key_profile": ("key_profile",),
    "key_track": ("key_profile", "key_profile_corr"), "key_chroma_track": _PITCH + ("key_corr",),
}  # fmt: skip


def synthetic_snippets(n: int, seed: int = 0) -> np.ndarray:
    """Chords of decaying harmonic tones over a noise-burst pulse: something for every block."""
    rng = np.random.default_rng(seed)
    t = np.arange(SNIPPET) / SR
    out = []
    for _ in range(n):
        y = np.zeros(SNIPPET)
        step = rng.uniform(0.2, 0.8)
        for start in np.arange(0.0, 9.5, step):
            a = int(start * SR)
            seg = t[: SNIPPET - a]
            for midi in rng.choice(np.arange(40, 84), size=3, replace=False):
                f0 = 440.0 * 2 ** ((midi - 69) / 12)
                tone = sum(np.sin(2 * np.pi * f0 * h * seg) / h for h in range(1, 5) if f0 * h < SR / 2)
                y[a:] += tone * np.exp(-4.0 * seg)
            y[a : a + 300] += rng.normal(0, 0.5, min(300, SNIPPET - a))
        out.append((0.3 * y / np.abs(y).max()).astype(np.float32))
    return np.stack(out)


def audio_snippets(set_name: str, n: int) -> np.ndarray:
    """The first 10 s of ``n`` files of a suite set (dev part), looped when shorter."""
    import soundfile as sf

    import suite_sets
    from clapknn.audio.signal import resample

    rows = [r for r in suite_sets.load_set(set_name) if r["split"] == "dev"][:n]
    out = []
    for r in rows:
        y, sr = sf.read(r["path"], dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        if sr != SR:
            y = resample(y, sr, SR)
        out.append(np.resize(y, SNIPPET) if len(y) < SNIPPET else y[:SNIPPET])
    return np.stack(out)


def _cpu_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return 1000.0 * best


def _stage_times(enc, ys: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of each stage on a fresh snippet context whose earlier stages are done."""
    out = {}
    for s in STAGES:
        per = []
        for y in ys:
            def run(y=y, s=s):
                sp = enc._spectra(y)
                for d in STAGES[: STAGES.index(s)]:
                    getattr(sp, d)
                t = time.process_time()
                getattr(sp, s)
                return time.process_time() - t

            per.append(1000.0 * min(run() for _ in range(repeats)))
        out[s] = statistics.median(per)
    return out


def cost(ys: np.ndarray, repeats: int) -> None:
    from clapknn.encoders import features as F

    enc = F.FeaturesEncoder()
    enc.embed(ys[:1])  # filter banks built, librosa imported
    names = list(F.FEATURE_BLOCKS)

    stages = _stage_times(enc, ys, repeats)
    dense = F.FeaturesEncoder()
    dense.embed(ys[:1])
    for bank in ("mel", "mel_flux", "semitones"):
        dense._banks[bank] = dense._banks[bank].toarray()
    stages_dense = _stage_times(dense, ys, repeats)

    own = {}
    for name in names:
        per = []
        for y in ys:
            def run(y=y, name=name):
                sp = enc._spectra(y)
                for d in STAGES:
                    getattr(sp, d)
                t = time.process_time()
                F._BLOCK_FUNCS[name](sp)
                return time.process_time() - t

            per.append(1000.0 * min(run() for _ in range(repeats)))
        own[name] = statistics.median(per)

    total = statistics.median(_cpu_ms(lambda y=y: enc.embed(y[None]), repeats) for y in ys)
    total_dense = statistics.median(_cpu_ms(lambda y=y: dense.embed(y[None]), repeats) for y in ys)
    # what leaving a block out saves: its own time and that of the stages no other block uses
    users = {s: [n for n in names if s in STAGES_OF[n]] for s in STAGES}
    saved = {n: own[n] + sum(stages[s] for s in STAGES_OF[n] if users[s] == [n]) for n in names}

    print(f"CPU ms per 10-s snippet (median of {len(ys)} snippets, best of {repeats})")
    print("\nshared stages            this encoder   dense products   ratio")
    for s in STAGES:
        print(f"  {s:<22} {stages[s]:10.2f}   {stages_dense[s]:14.2f}   {stages[s] / max(stages_dense[s], 1e-9):5.2f}")
    print("\nblock                    own (stages done)   saved if left out")
    for n in names:
        print(f"  {n:<22} {own[n]:10.2f}          {saved[n]:10.2f}")
    print(f"\nembed, one snippet: {total:.1f} ms  (dense products, same run: {total_dense:.1f} ms; "
          f"ratio {total / total_dense:.2f})")


# --------------------------------------------------------------------------- ablation
class RawBlocks(FeaturesEncoder):
    """The features encoder with :meth:`embed` returning each snippet's raw blocks, concatenated in
    :data:`FEATURE_BLOCKS` order (nothing weighted or normalised)."""

    def embed(self, snippets):
        snippets = np.atleast_2d(np.asarray(snippets, dtype=np.float32))
        return np.stack([np.concatenate([np.asarray(b, np.float64) for b in self._blocks(y).values()])
                         for y in snippets]).astype(np.float32)

    def identity(self):
        ident = super().identity()
        ident["raw_blocks"] = True
        return ident


def variant(raw, names):
    """``Embedded`` of the encoder restricted to ``names`` from a raw-block ``Embedded``."""
    from clapknn.encoders import features as F
    from clapknn.encoders.base import l2_normalize

    layout = F.block_layout()
    blocks = {n: raw.vectors[:, a:b].astype(np.float64) for n, a, b, _ in layout}
    rows = [F.compose({n: blocks[n][i] for n in names}, names) for i in range(raw.vectors.shape[0])]
    vectors = l2_normalize(np.asarray(rows, dtype=np.float32))
    options = dict(raw.knn_options)
    options["feature_blocks"] = [(a, b, w) for _, a, b, w in F.block_layout(names)]
    return dataclasses.replace(raw, vectors=vectors, knn_options=options)


def ablation(sets: list[str], split: str, episodes: int, jobs: int, full_only: bool = False) -> None:
    import suite_sets
    from clapknn.encoders import features as F
    from clapknn.evaluation import embed_examples, evaluate
    from clapknn.labels import Example, ExampleSet
    from clapknn.options import DEFAULT_AGGREGATE, DEFAULT_K, DEFAULT_SNIPPET_SECONDS, DEFAULT_WEIGHTS

    names = list(F.FEATURE_BLOCKS)
    common = dict(shots=(5,), n_episodes=episodes, folds=0, k=DEFAULT_K, weights=DEFAULT_WEIGHTS,
                  aggregate=DEFAULT_AGGREGATE, seed=0, plots=False, baselines=False)

    def acc(emb, space):
        r = evaluate(emb, space=space, **common).runs
        return float(r[(r["protocol"] == "episodes") & (r["method"] == "knn")]["accuracy"].mean())

    print(f"\nABLATION: 5-shot track accuracy on the {split} parts, {episodes} episodes "
          "(defaults / plain / standardised); the rows below 'all blocks' leave one block out")
    raws: dict = {}
    for set_name in sets:
        rows = [r for r in suite_sets.load_set(set_name, jobs=jobs) if r["split"] == split]
        examples = ExampleSet([Example(Path(r["path"]), tuple(r["tags"].split(";")), r["group"]) for r in rows])
        key = tuple(sorted(r["path"] for r in rows))
        if key not in raws:  # the EMOPIA sets share their files: embed them once
            import hashlib
            import pickle

            digest = hashlib.sha1("\n".join(key).encode()).hexdigest()[:12]
            store = suite_sets.cache_root() / "features-raw" / f"recipe{F.RECIPE_VERSION}-{digest}.pkl"
            if store.exists():  # raw blocks of these files with this recipe, from an earlier run
                raws[key] = pickle.loads(store.read_bytes())
            else:
                raws[key] = embed_examples(examples, RawBlocks(), snippet_seconds=DEFAULT_SNIPPET_SECONDS,
                                           workers=jobs)
                store.parent.mkdir(parents=True, exist_ok=True)
                store.write_bytes(pickle.dumps(raws[key]))
        raw = raws[key].relabel({r["path"]: r["tags"].split(";") for r in rows},
                                {r["path"]: r["group"] for r in rows})
        print(f"\n  {set_name} ({raw.n_tracks} files)        auto    plain   std")
        full = None
        for left_out in [None] + ([] if full_only else names):
            keep = [n for n in names if n != left_out]
            emb = variant(raw, keep)
            got = [acc(emb, s) for s in ("auto", "plain", "standardized")]
            if full is None:
                full = got
                print(f"    {'all blocks':<22} " + "  ".join(f"{x:.3f}" for x in got))
            else:
                print(f"    - {left_out:<20} " + "  ".join(f"{x - f:+.3f}" for x, f in zip(got, full)))
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snippets", type=int, default=8, help="snippets to time (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    ap.add_argument("--audio-set", default=None, help="time on this suite set's audio (default: synthetic)")
    ap.add_argument("--sets", default="", help="comma-separated suite sets for the ablation (default none)")
    ap.add_argument("--split", choices=("dev", "heldout"), default="dev")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-cost", dest="do_cost", action="store_false", help="only the ablation")
    ap.add_argument("--full-only", action="store_true", help="only the row with every block")
    args = ap.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    if args.do_cost:
        ys = audio_snippets(args.audio_set, args.snippets) if args.audio_set else synthetic_snippets(args.snippets)
        cost(ys, args.repeats)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if sets:
        ablation(sets, args.split, args.episodes, args.jobs, args.full_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
