"""Label next vs at random: accuracy after n rounds of labelling 10 tracks (EMOPIA quadrant renders).

A curator starts with a small index (``--start`` clips per tag) and a library. Each round they label
10 tracks of the library, either the first ten of the web app's "label next" queue
(:func:`clapknn.webapp.labelnext.label_next`, fed with the track scores and vectors the app has) or
ten drawn at random; the tracks become examples and the library is tagged again from its stored
vectors, as ``clapknn serve`` does. Accuracy (top tag against the human label) is measured on songs
that are never labelled.

Protocol: the suite's EMOPIA set (``bench/suite_sets.py``: rows with path, tags, group = song,
split). Within a split, the songs are dealt (per seed) into a library half and a test half; the
start clips are drawn per seed from the library. Queue settings (pool, coverage, density, balance,
space) are chosen on the ``dev`` split; the ``heldout`` split is only reported, with the setting chosen on dev. Everything
runs with the defaults of ``clapknn serve`` (features encoder, 10-s snippets, k=5, similarity
votes, mean pooling, the vote space ``auto`` picks).

    python bench/label_next.py                    # dev choice, then the heldout report
    python bench/label_next.py --seeds 20 --rounds 5 --out /tmp/label-next
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: Also run on heldout, for comparison: close to the queue before the coverage term (margin first,
#: cosine of the raw vectors).
REFERENCE = {"plain pool=8 coverage=1": dict(pool=8, coverage=1.0, density=0.0, balance=0.0, standardize=False, clusters=False)}


def embed(rows, cache):
    """Snippet vectors of every row's file (features encoder, 10-s snippets), through the cache."""
    from clapknn.embedding.encode import embed_files
    from clapknn.encoders import get_encoder
    from clapknn.options import DEFAULT_ENCODER, DEFAULT_SNIPPET_SECONDS

    enc = get_encoder(DEFAULT_ENCODER)
    emb = embed_files([r["path"] for r in rows], enc, snippet_seconds=DEFAULT_SNIPPET_SECONDS, hashes=True,
                      cache=cache, progress=True, desc="embedding EMOPIA")
    return enc, emb


def run_split(rows, enc, emb, *, seeds, rounds, per_round, start, settings):
    """Accuracy per (strategy, seed, round) on one split."""
    import pandas as pd

    from clapknn.index import Index
    from clapknn.options import DEFAULT_SNIPPET_SECONDS
    from clapknn.tagging.tagger import Tagger
    from clapknn.webapp.labelnext import label_next

    files = emb.files.reset_index(drop=True)
    used = np.flatnonzero(files["error"].to_numpy() == "")
    snip = emb.snippets
    file_of = snip["file"].to_numpy()
    tags = np.array([rows[i]["tags"] for i in range(len(rows))])
    groups = np.array([rows[i]["group"] for i in range(len(rows))])
    vocab = sorted(set(tags[used]))
    track_vec = np.zeros((len(rows), emb.vectors.shape[1]), np.float32)
    for i in used:
        track_vec[i] = emb.vectors[file_of == i].mean(axis=0)

    def tag_all(labelled: list[int], query: np.ndarray):
        mask = np.isin(file_of, labelled)
        meta = pd.DataFrame({
            "path": snip["path"][mask].to_numpy(), "start": snip["start"][mask].to_numpy(),
            "end": snip["end"][mask].to_numpy(), "tags": [(tags[f],) for f in file_of[mask]],
            "sha256": "", "kind": "audio", "group": [groups[f] for f in file_of[mask]],
        })
        index = Index.from_arrays(emb.vectors[mask], meta, encoder=enc.identity(),
                                  snippet_seconds=DEFAULT_SNIPPET_SECONDS, hop_seconds=DEFAULT_SNIPPET_SECONDS)
        tagger = Tagger(index, encoder=enc)
        qmask = np.isin(file_of, query)
        q = snip[qmask].copy()
        result = tagger.tag_vectors(emb.vectors[qmask], q, [str(i) for i in range(len(rows))])
        out = result.tracks.assign(row=result.tracks["path"].astype(int))
        scores = np.zeros((len(rows), len(vocab)))
        cols = [f"score:{t}" for t in tagger.tags]
        pos = [vocab.index(t) for t in tagger.tags]
        scores[np.ix_(out["row"].to_numpy(), pos)] = out[cols].to_numpy()
        top = np.array([""] * len(rows), dtype=object)
        top[out["row"].to_numpy()] = out["top"].to_numpy()
        return scores, top, bool(getattr(tagger.estimator, "standardized_", False))

    results = []
    song_names = sorted(set(groups[used]))
    for seed in range(seeds):
        rng = np.random.default_rng([7, seed])
        songs = rng.permutation(song_names)
        library_songs = set(songs[: len(songs) // 2])
        library = np.array([i for i in used if groups[i] in library_songs])
        test = np.array([i for i in used if groups[i] not in library_songs])
        first = []
        for t in vocab:
            have = [i for i in library if tags[i] == t]
            first += [int(i) for i in rng.choice(have, size=min(start, len(have)), replace=False)]
        for name, setting in [("random", None)] + list(settings.items()):
            pick_rng = np.random.default_rng([11, seed])
            labelled = list(first)
            query = np.concatenate([library, test])
            before = None
            for rnd in range(rounds + 1):
                scores, top, standardized = tag_all(labelled, query)
                acc = float(np.mean(top[test] == tags[test]))
                changed = float(np.mean(top[test] != before[test])) if before is not None else np.nan
                before = top
                results.append({"strategy": name, "seed": seed, "round": rnd, "labelled": len(labelled), "accuracy": acc,
                                "changed": changed, "standardized": standardized})
                if rnd == rounds:
                    break
                if setting is None:
                    free = np.array([i for i in library if i not in set(labelled)])
                    chosen = [int(i) for i in pick_rng.choice(free, size=min(per_round, len(free)), replace=False)]
                else:  # as the app asks: every library track, the examples excluded
                    is_example = np.isin(library, labelled)
                    rows_lib = label_next(scores[library], track_vec[library], n=per_round,
                                          exclude=np.flatnonzero(is_example), examples=track_vec[labelled], **setting)
                    chosen = [int(library[r]) for r in rows_lib]
                labelled += chosen
    return pd.DataFrame(results)


def summary(df, rounds):
    """mean ± sd over seeds of the accuracy after each round, per strategy."""
    g = df.groupby(["strategy", "round"])["accuracy"]
    mean, sd = g.mean().unstack(), g.std(ddof=1).unstack()
    lines = ["| strategy | " + " | ".join(f"round {r}" for r in range(rounds + 1)) + " |",
             "|---|" + "---:|" * (rounds + 1)]
    for s in mean.index:
        lines.append(f"| {s} | " + " | ".join(f"{mean.loc[s, r]:.3f} ± {sd.loc[s, r]:.3f}" for r in range(rounds + 1)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="emopia")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--start", type=int, default=1, help="clips per tag in the starting index")
    ap.add_argument("--out", help="folder for the per-run CSVs (default: the suite's cache folder)")
    ap.add_argument("--report", action="store_true", help="print the tables again from the CSVs of the last run")
    ap.add_argument("--only", help="run only these settings of the dev grid (comma-separated names), e.g. to extend "
                                   "an earlier run; the heldout report still uses the best of those run")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import suite_sets

    t0 = time.perf_counter()
    all_rows = suite_sets.load_set(args.set)
    cache = suite_sets.cache_root() / "embeddings"
    out = Path(args.out) if args.out else suite_sets.cache_root()
    out.mkdir(parents=True, exist_ok=True)
    grid = {
        "margin only": dict(pool=1, coverage=0.0),
        "plain pool=8 coverage=1": dict(pool=8, coverage=1.0, standardize=False),
        "plain coverage=3": dict(coverage=3.0, standardize=False),
        "k-centre (coverage=100)": dict(coverage=100.0),
        "coverage=3 balance=1": dict(coverage=3.0, balance=1.0),
    }
    grid.update({f"coverage={c:g} density={e:g}": dict(coverage=c, density=e)
                 for c, e in itertools.product((1.0, 3.0, 10.0), (0.0, 1.0))})
    grid.update({  # representativeness: typical tracks first, or the centres of the library's clusters
        "coverage=1 density=3": dict(coverage=1.0, density=3.0),
        "coverage=0.3 density=1": dict(coverage=0.3, density=1.0),
        "clusters then coverage=1 density=1": dict(coverage=1.0, density=1.0, clusters=True),
        "clusters then margin": dict(coverage=0.0, clusters=True),
    })
    base = dict(pool=0, coverage=0.0, density=0.0, balance=0.0, standardize=True, clusters=False)
    grid = {name: {**base, **setting} for name, setting in grid.items()}  # every setting spelt out, not the defaults
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in grid]
        if unknown:
            ap.error(f"not in the grid: {', '.join(unknown)}")
        grid = {n: grid[n] for n in names}
    if args.report:
        import pandas as pd

        dev, held = (pd.read_csv(out / f"label_next-{s}.csv") for s in ("dev", "heldout"))
        chosen = choose(dev)
        for name, df in (("dev", dev), ("heldout", held)):
            print(f"\n## {name}\n\n{summary(df, args.rounds)}")
        print(f"\nchosen on dev: {chosen}\n\n{paired(held, chosen, args.rounds)}")
        print(f"\n{paired(dev, chosen, args.rounds, split='dev')}\n\n{churn(held, args.rounds)}")
        return 0
    report = {}
    chosen = None
    for split in ("dev", "heldout"):
        rows = [r for r in all_rows if r["split"] == split]
        enc, emb = embed(rows, cache)
        settings = grid if split == "dev" else {chosen: grid[chosen], **REFERENCE}
        df = run_split(rows, enc, emb, seeds=args.seeds, rounds=args.rounds, per_round=args.per_round,
                       start=args.start, settings=settings)
        df.to_csv(out / f"label_next-{split}.csv", index=False)
        if split == "dev":
            chosen = choose(df)
        report[split] = (len(rows), len({r["group"] for r in rows}), df)
        print(f"\n## {split} ({len(rows)} clips, {len({r['group'] for r in rows})} songs; {args.seeds} seeds)\n")
        print(summary(df, args.rounds))
        if split == "dev":
            print(f"\nchosen on dev (best mean accuracy over rounds 1-{args.rounds}): {chosen}\n")
            print(paired(df, chosen, args.rounds, split="dev"))
    print()
    print(paired(report["heldout"][2], chosen, args.rounds))
    print(f"\n{churn(report['heldout'][2], args.rounds)}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


def churn(df, rounds) -> str:
    """Per strategy and round: the share of test tracks whose top tag the round's labels changed, and
    the share of seeds where the vote searched its standardised space (refitted on the examples)."""
    if "changed" not in df:
        return ""
    g = df.groupby(["strategy", "round"])
    changed, std = g["changed"].mean().unstack(), g["standardized"].mean().unstack()
    lines = ["| strategy | " + " | ".join(f"round {r}" for r in range(rounds + 1)) + " |", "|---|" + "---:|" * (rounds + 1)]
    for s in changed.index:
        cells = [("" if r == 0 else f"{changed.loc[s, r]:.2f} moved, ") + f"{std.loc[s, r]:.0%} std" for r in range(rounds + 1)]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "share of test tracks whose top tag changed in the round; share of seeds in the standardised space\n\n" + "\n".join(lines)


def choose(df) -> str:
    """The queue setting with the best mean accuracy over rounds 1.. (every round a curator stops at)."""
    part = df[(df["round"] > 0) & (df["strategy"] != "random")]
    return str(part.groupby("strategy")["accuracy"].mean().idxmax())


def paired(df, chosen: str, rounds: int, split: str = "heldout") -> str:
    """Per round, queue minus random on the same seeds (the same library, test songs and start):
    mean ± sd, the 95 % t interval of the mean and the seeds where the queue is ahead."""
    from scipy import stats

    lines = [f"{split}, {chosen} minus random, same seeds:",
             "| round | labelled | difference (mean ± sd) | 95 % interval | queue ahead |", "|---:|---:|---:|---:|---:|"]
    for r in range(1, rounds + 1):
        part = df[df["round"] == r]
        wide = part.pivot(index="seed", columns="strategy", values="accuracy")
        diff = wide[chosen] - wide["random"]
        n = int(part["labelled"].iloc[0])
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        lines.append(f"| {r} | {n} | {diff.mean():+.3f} ± {diff.std(ddof=1):.3f} | {diff.mean() - half:+.3f}..{diff.mean() + half:+.3f} "
                     f"| {int((diff > 0).sum())} of {len(diff)} seeds ({int((diff < 0).sum())} behind) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
