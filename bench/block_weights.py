"""Standardised-space block weights of the ``features`` encoder, compared on the suite's dev parts.

For each chosen set (``bench/suite_sets.py``; the ``dev`` part by default: weights are chosen there,
never on the held-out parts), track accuracy of the defaults of ``clapknn tag`` (``evaluate``'s
episodes, k = 5, similarity weighting, mean pooling, ``space="auto"``) on the cached embeddings:
first with some blocks left out (``--base-without``: their dimensions removed, the rows made unit
length again), then with the encoder's blocks and the weights as they are, then with each variant of
``--variants``. Every line after the first is the paired difference from the first over the same
episodes, ± its standard error.

A variant is ``block:weight[+block:weight...]``, the standardised-space weights it changes (the
vectors stay the same: these weights are the vote's, not the encoder's).

Usage::

    python bench/block_weights.py --sets mode,composer --base-without key_track
    python bench/block_weights.py --sets composer --variants harmony:0.5,harmony:1.5 --shots 1,5,10
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_sets  # noqa: E402

SETS = ("emopia", "emopia-valence", "emopia-arousal", "mode", "instrument", "meter", "composer", "energy")


def load(name: str, split: str):
    from clapknn.evaluation import embed_examples
    from clapknn.labels import Example, ExampleSet

    rows = [r for r in suite_sets.load_set(name, jobs=1) if r["split"] == split]
    examples = ExampleSet([Example(Path(r["path"]), tuple(r["tags"].split(";")), r["group"]) for r in rows])
    return embed_examples(examples, "features", snippet_seconds=10.0, workers=0,
                          cache=suite_sets.cache_root() / "embeddings")


def without(emb, names: set[str]):
    """The embeddings with the blocks ``names`` removed (the other blocks' weights as they are)."""
    from clapknn.encoders.base import l2_normalize
    from clapknn.encoders.features import block_layout

    layout = block_layout()
    keep = np.concatenate([np.arange(a, b) for n, a, b, _ in layout if n not in names])
    blocks, start = [], 0
    for (n, a, b, _), (_, _, w) in zip(layout, emb.knn_options["feature_blocks"]):
        if n not in names:
            blocks.append((start, start + b - a, w))
            start += b - a
    options = dict(emb.knn_options, feature_blocks=blocks)
    # no encoder identity: a track voted on some of its windows keeps its vectors as they are
    return dataclasses.replace(emb, vectors=l2_normalize(emb.vectors[:, keep]), knn_options=options, encoder={})


def reweighted(emb, variant: str):
    """The embeddings with the standardised-space weights of ``variant`` (``block:w[+block:w]``)."""
    from clapknn.encoders.features import block_layout

    change = {}
    for part in variant.split("+"):
        name, weight = part.split(":")
        change[name] = float(weight)
    names = [n for n, *_ in block_layout()]
    unknown = sorted(set(change) - set(names))
    if unknown:
        raise SystemExit(f"unknown block(s) {', '.join(unknown)}; the blocks: {', '.join(names)}")
    blocks = [(a, b, change.get(n, w)) for n, (a, b, w) in zip(names, emb.knn_options["feature_blocks"])]
    return dataclasses.replace(emb, knn_options=dict(emb.knn_options, feature_blocks=blocks))


def accuracies(emb, shots, episodes: int) -> dict[int, np.ndarray]:
    from clapknn.evaluation import evaluate

    r = evaluate(emb, space="auto", shots=shots, n_episodes=episodes, folds=0, k=5, weights="similarity",
                 aggregate="mean", seed=0, plots=False, baselines=False).runs
    r = r[(r["protocol"] == "episodes") & (r["method"] == "knn")]
    return {s: r[r["shots"] == s].sort_values("run")["accuracy"].to_numpy() for s in shots}


def paired_line(label: str, got: dict[int, np.ndarray], base: dict[int, np.ndarray], width: int = 28) -> str:
    """One printed line: per shot count, the mean accuracy and its paired difference from ``base``
    over the same episodes, ± its standard error."""
    cells = []
    for s in got:
        d = got[s] - base[s]
        cells.append(f"{s}: {got[s].mean():.3f} ({d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f})")
    return f"   {label:<{width}} " + "  ".join(cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--split", choices=("dev", "heldout"), default="dev")
    ap.add_argument("--shots", default="1,5,10")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--base-without", default="", help="blocks left out of the first line (comma-separated)")
    ap.add_argument("--variants", default="", help="comma-separated block:weight[+block:weight] variants")
    args = ap.parse_args(argv)
    shots = tuple(int(s) for s in args.shots.split(","))
    left_out = {s for s in args.base_without.split(",") if s}
    variants = [v for v in args.variants.split(",") if v]

    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    for name in [s for s in args.sets.split(",") if s]:
        emb = load(name, args.split)
        base = accuracies(without(emb, left_out) if left_out else emb, shots, args.episodes)
        head = f"without {', '.join(sorted(left_out))}" if left_out else "as it is"
        print(f"{name} ({args.split}), {head}: " + "  ".join(f"{s}: {base[s].mean():.3f}" for s in shots))
        rows = ([("as it is", emb)] if left_out else []) + [(v, reweighted(emb, v)) for v in variants]
        for label, e in rows:
            print(paired_line(label, accuracies(e, shots, args.episodes), base))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
