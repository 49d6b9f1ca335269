"""Label next vs at random: accuracy after n rounds of labelling 10 tracks (EMOPIA quadrant renders).

A curator starts with a small index (``--start`` clips per tag) and a library. Each round they label
10 tracks of the library, either the ten of the web app's "label next" queue (the same function the
app calls, :func:`clapknn.webapp.labelnext.queue`, fed with the tagger, track scores and snippet
vectors the app has) or ten drawn at random; the tracks become examples (with their human labels)
and the library is tagged again from its stored vectors, as ``clapknn serve`` does. Accuracy (top
tag against the human label) is measured on songs that are never labelled.

Protocol: the suite's EMOPIA set (``bench/suite_sets.py``: rows with path, tags, group = song,
split). Within a split, the songs are dealt (per seed) into a library half and a test half; the
start clips are drawn per seed from the library. The queue and random share each seed's library,
test songs and start, so their difference is paired. Queue settings are chosen on the ``dev``
split (the best mean accuracy over rounds 1..n); the ``heldout`` split is only reported, with the
setting chosen on dev. Everything runs with the defaults of ``clapknn serve`` (features encoder,
10-s snippets, k=5, similarity votes, mean pooling, the vote space ``auto`` picks; examples carry
no group, as labels given in the app do).

    python bench/label_next.py --split dev --seeds 40          # the dev grid; prints the choice
    python bench/label_next.py --split heldout --seeds 100     # the dev choice on heldout (--only: others beside it)
    python bench/label_next.py --report --out DIR             # the tables again from the CSVs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

#: The settings measured on dev (keyword arguments of clapknn.webapp.labelnext.queue). "library":
#: distances in the library-standardised space; "vote": in the space the fitted vote searches.
GRID = {
    "clusters first (library)": dict(space="library", clusters=True, coverage=1.0, density=1.0),
    "clusters first (vote)": dict(space="vote", clusters=True, coverage=1.0, density=1.0),
    "margin only": dict(space="vote", clusters=False, pool=1, coverage=0.0, density=0.0),
    "k-centre (vote)": dict(space="vote", clusters=False, coverage=100.0, density=0.0),
    "margin + coverage + density (vote)": dict(space="vote", clusters=False, coverage=1.0, density=1.0),
    "facility (library)": dict(space="library", facility=True, doubt_power=0.0),
    "facility (vote)": dict(space="vote", facility=True, doubt_power=0.0),
    "facility x doubt (vote)": dict(space="vote", facility=True, doubt_power=1.0),
    "facility x doubt^2 (vote)": dict(space="vote", facility=True, doubt_power=2.0),
    "facility x doubt (library)": dict(space="library", facility=True, doubt_power=1.0),
    "facility x doubt from 24 (vote)": dict(space="vote", facility=True, doubt_power=1.0, cold_start=24),
    "facility balance=1 (library)": dict(space="library", facility=True, doubt_power=0.0, balance=1.0),
    "facility x doubt from 24 (library)": dict(space="library", facility=True, doubt_power=1.0, cold_start=24),
    "facility width=0.1 (library)": dict(space="library", facility=True, doubt_power=0.0, width=0.1),
    "facility width=0.3 (library)": dict(space="library", facility=True, doubt_power=0.0, width=0.3),
    "facility width=0.1 (vote)": dict(space="vote", facility=True, doubt_power=0.0, width=0.1),
    "facility balance=1 (vote)": dict(space="vote", facility=True, doubt_power=0.0, balance=1.0),
    "facility balance=2 (vote)": dict(space="vote", facility=True, doubt_power=0.0, balance=2.0),
    "facility balance=1 width=0.1 (vote)": dict(space="vote", facility=True, doubt_power=0.0, balance=1.0, width=0.1),
    "facility balance=1 width=0.1 (library)": dict(space="library", facility=True, doubt_power=0.0, balance=1.0, width=0.1),
}


def embed(rows, cache):
    """Snippet vectors of every row's file (features encoder, 10-s snippets), through the cache."""
    from clapknn import embed_files, get_encoder
    from clapknn.options import DEFAULT_ENCODER, DEFAULT_SNIPPET_SECONDS

    enc = get_encoder(DEFAULT_ENCODER)
    emb = embed_files([r["path"] for r in rows], enc, snippet_seconds=DEFAULT_SNIPPET_SECONDS, hashes=True,
                      cache=cache, progress=True, desc="embedding EMOPIA")
    return enc, emb


class Split:
    """One split's clips, their snippet vectors and the tagging of a library from given examples."""

    def __init__(self, rows, enc, emb):
        files = emb.files.reset_index(drop=True)
        self.enc, self.emb = enc, emb
        self.used = np.flatnonzero(files["error"].to_numpy() == "")
        self.snip = emb.snippets
        self.file_of = self.snip["file"].to_numpy()
        self.tags = np.array([r["tags"] for r in rows])
        self.groups = np.array([r["group"] for r in rows])
        self.vocab = sorted(set(self.tags[self.used]))
        self.n = len(rows)

    def tag(self, labelled, query):
        """Tag the clips ``query`` with an index of the clips ``labelled``, as the app retags:
        ``(tagger, scores (n, vocab), top (n,))`` over every row (zeros and "" outside ``query``)."""
        import pandas as pd

        from clapknn import Index, Tagger
        from clapknn.options import DEFAULT_SNIPPET_SECONDS

        snip, file_of = self.snip, self.file_of
        mask = np.isin(file_of, labelled)
        meta = pd.DataFrame({
            "path": snip["path"][mask].to_numpy(), "start": snip["start"][mask].to_numpy(),
            "end": snip["end"][mask].to_numpy(), "tags": [(self.tags[f],) for f in file_of[mask]],
            "sha256": "", "kind": "audio",
        })
        index = Index.from_arrays(self.emb.vectors[mask], meta, encoder=self.enc.identity(),
                                  snippet_seconds=DEFAULT_SNIPPET_SECONDS, hop_seconds=DEFAULT_SNIPPET_SECONDS)
        tagger = Tagger(index, encoder=self.enc)
        qmask = np.isin(file_of, query)
        result = tagger.tag_vectors(self.emb.vectors[qmask], snip[qmask], [str(i) for i in range(self.n)])
        out = result.tracks
        rows = out["path"].astype(int).to_numpy()
        scores = np.zeros((self.n, len(self.vocab)))
        pos = [self.vocab.index(t) for t in tagger.tags]
        scores[np.ix_(rows, pos)] = out[[f"score:{t}" for t in tagger.tags]].to_numpy()
        top = np.array([""] * self.n, dtype=object)
        top[rows] = out["top"].to_numpy()
        return tagger, scores, top


def run_seed(split: Split, seed: int, *, rounds, per_round, start, settings):
    """Rows (strategy, seed, round, labelled, accuracy, changed, standardized) of one seed."""
    from clapknn.webapp.labelnext import queue

    tags, groups, used = split.tags, split.groups, split.used
    rng = np.random.default_rng([7, seed])
    songs = rng.permutation(sorted(set(groups[used])))
    library_songs = set(songs[: len(songs) // 2])
    library = np.array([i for i in used if groups[i] in library_songs])
    test = np.array([i for i in used if groups[i] not in library_songs])
    first = []
    for t in split.vocab:
        have = [i for i in library if tags[i] == t]
        first += [int(i) for i in rng.choice(have, size=min(start, len(have)), replace=False)]
    lib_mask = np.isin(split.file_of, library)
    lib_vectors = split.emb.vectors[lib_mask]
    lib_row = {int(f): r for r, f in enumerate(library)}
    lib_track_of = np.array([lib_row[int(f)] for f in split.file_of[lib_mask]], dtype=np.int64)
    query = np.concatenate([library, test])
    out = []
    for name, setting in [("random", None)] + list(settings.items()):
        pick_rng = np.random.default_rng([11, seed])
        labelled = list(first)
        before = None
        for rnd in range(rounds + 1):
            tagger, scores, top = split.tag(labelled, query)
            changed = float(np.mean(top[test] != before[test])) if before is not None else np.nan
            before = top
            out.append({"strategy": name, "seed": seed, "round": rnd, "labelled": len(labelled),
                        "accuracy": float(np.mean(top[test] == tags[test])), "changed": changed,
                        "standardized": bool(getattr(tagger.estimator, "standardized_", False))})
            if rnd == rounds:
                break
            if setting is None:
                free = np.array([i for i in library if i not in set(labelled)])
                chosen = [int(i) for i in pick_rng.choice(free, size=min(per_round, len(free)), replace=False)]
            else:  # as the app asks: every library track, the examples excluded
                exclude = np.flatnonzero(np.isin(library, labelled))
                picks = queue(tagger, scores[library], lib_vectors, lib_track_of, n=per_round, exclude=exclude, **setting)
                chosen = [int(library[r]) for r in picks]
            labelled += chosen
    return out


_SPLIT = None


def _init(rows, cache):
    global _SPLIT
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    enc, emb = embed(rows, cache)
    _SPLIT = Split(rows, enc, emb)


def _job(args):
    seed, kw = args
    return run_seed(_SPLIT, seed, **kw)


def run_split(rows, cache, *, seeds, jobs, **kw):
    """Every seed's rows on one split, in ``jobs`` processes."""
    import pandas as pd

    tasks = [(s, kw) for s in range(seeds)]
    if jobs <= 1:
        _init(rows, cache)
        parts = [_job(t) for t in tasks]
    else:
        from concurrent.futures import ProcessPoolExecutor

        _init(rows, cache)  # embed once here (the cache then serves the workers)
        with ProcessPoolExecutor(jobs, initializer=_init, initargs=(rows, cache)) as pool:
            parts = list(pool.map(_job, tasks))
    return pd.DataFrame([r for p in parts for r in p])


def summary(df, rounds):
    """mean ± sd over seeds of the accuracy after each round, per strategy."""
    g = df.groupby(["strategy", "round"])["accuracy"]
    mean, sd = g.mean().unstack(), g.std(ddof=1).unstack()
    labelled = df.groupby("round")["labelled"].first()
    lines = ["| strategy | " + " | ".join(f"round {r} ({labelled[r]})" for r in range(rounds + 1)) + f" | mean 1-{rounds} |",
             "|---|" + "---:|" * (rounds + 2)]
    order = mean.loc[:, 1:].mean(axis=1).sort_values(ascending=False).index
    for s in order:
        lines.append(f"| {s} | " + " | ".join(f"{mean.loc[s, r]:.3f} ± {sd.loc[s, r]:.3f}" for r in range(rounds + 1))
                     + f" | {mean.loc[s, 1:].mean():.3f} |")
    return "\n".join(lines)


def _interval(diff):
    from scipy import stats

    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return diff.mean() - half, diff.mean() + half


def paired(df, chosen: str, rounds: int, split: str = "heldout") -> str:
    """Per round, and over rounds 1..n per seed: queue minus random on the same seeds (the same
    library, test songs and start): mean ± sd, the 95 % t interval of the mean, the seeds where the
    queue is ahead (behind), and the Wilcoxon signed-rank p-value."""
    from scipy import stats

    seeds = df["seed"].nunique()
    lines = [f"{split}, {chosen} minus random, same {seeds} seeds:",
             "| round | labelled | queue | random | difference (mean ± sd) | 95 % interval | queue ahead (behind) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    wide = df.pivot_table(index=["seed", "round"], columns="strategy", values="accuracy")
    for r in list(range(1, rounds + 1)) + ["1-" + str(rounds)]:
        if isinstance(r, int):
            part = wide.xs(r, level="round")
            n = int(df.loc[df["round"] == r, "labelled"].iloc[0])
        else:
            part = wide[wide.index.get_level_values("round") >= 1].groupby(level="seed").mean()
            n = "mean"
        diff = part[chosen] - part["random"]
        lo, hi = _interval(diff)
        p = stats.wilcoxon(diff).pvalue if (diff != 0).any() else 1.0
        lines.append(f"| {r} | {n} | {part[chosen].mean():.3f} | {part['random'].mean():.3f} | {diff.mean():+.3f} ± "
                     f"{diff.std(ddof=1):.3f} | {lo:+.3f}..{hi:+.3f} | {int((diff > 0).sum())} ({int((diff < 0).sum())}) "
                     f"of {len(diff)}, p = {p:.2g} |")
    return "\n".join(lines)


def gains(df, rounds: int) -> str:
    """Every strategy against random: the mean over rounds 1..n per seed, its 95 % interval, seeds won."""
    wide = df.pivot_table(index=["seed", "round"], columns="strategy", values="accuracy")
    per_seed = wide[wide.index.get_level_values("round") >= 1].groupby(level="seed").mean()
    lines = [f"| strategy | mean rounds 1-{rounds} | minus random | 95 % interval | ahead (behind) |", "|---|---:|---:|---:|---:|"]
    rows = []
    for s in per_seed.columns:
        if s == "random":
            continue
        diff = per_seed[s] - per_seed["random"]
        lo, hi = _interval(diff)
        rows.append((diff.mean(), f"| {s} | {per_seed[s].mean():.3f} | {diff.mean():+.3f} | {lo:+.3f}..{hi:+.3f} | "
                                  f"{int((diff > 0).sum())} ({int((diff < 0).sum())}) of {len(diff)} |"))
    lines += [r for _, r in sorted(rows, key=lambda t: -t[0])]
    lines.append(f"| random | {per_seed['random'].mean():.3f} | | | |")
    return "\n".join(lines)


def churn(df, rounds) -> str:
    """Per strategy and round: the share of test tracks whose top tag the round's labels changed, and
    the share of seeds where the vote searched its standardised space (refitted on the examples)."""
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


def report(df, split, rounds, chosen=None) -> str:
    chosen = chosen or choose(df)
    return "\n\n".join([f"## {split} ({df['seed'].nunique()} seeds)", summary(df, rounds), gains(df, rounds),
                        paired(df, chosen, rounds, split), churn(df, rounds)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="emopia")
    ap.add_argument("--split", choices=("dev", "heldout", "both"), default="both",
                    help="dev: the grid and the choice; heldout: report --only (default: the choice of the dev CSV)")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--start", type=int, default=1, help="clips per tag in the starting index")
    ap.add_argument("--jobs", type=int, default=1, help="processes (seeds run in parallel)")
    ap.add_argument("--out", help="folder for the per-split CSVs (default: the suite's cache folder)")
    ap.add_argument("--report", action="store_true", help="print the tables again from the CSVs of the last run")
    ap.add_argument("--only", help="run only these settings of the grid (comma-separated names); an earlier CSV of the "
                                   "same seeds in --out keeps its other settings, so a grid can be run in parts")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import pandas as pd

    import suite_sets

    out = Path(args.out) if args.out else suite_sets.cache_root()
    grid = dict(GRID)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in grid]
        if unknown:
            ap.error(f"not in the grid: {', '.join(unknown)}")
        grid = {n: grid[n] for n in names}
    splits = ("dev", "heldout") if args.split == "both" else (args.split,)
    if args.report:
        dev_csv = out / "label_next-dev.csv"
        chosen = choose(pd.read_csv(dev_csv)) if dev_csv.exists() else None
        for split in splits:
            path = out / f"label_next-{split}.csv"
            if path.exists():
                df = pd.read_csv(path)
                print(report(df, split, args.rounds, chosen if chosen in set(df["strategy"]) else None) + "\n")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    all_rows = suite_sets.load_set(args.set)
    cache = suite_sets.cache_root() / "embeddings"
    chosen = None
    for split in splits:
        rows = [r for r in all_rows if r["split"] == split]
        if split == "heldout":  # the setting chosen on dev, and the --only settings beside it for comparison
            if chosen is None:
                dev_csv = out / "label_next-dev.csv"
                if not dev_csv.exists():
                    ap.error(f"no dev run in {out} to take the choice from: run --split dev first")
                chosen = choose(pd.read_csv(dev_csv))
            settings = {chosen: GRID[chosen], **(grid if args.only else {})}
        else:
            settings = grid
        df = run_split(rows, cache, seeds=args.seeds, jobs=args.jobs, rounds=args.rounds, per_round=args.per_round,
                       start=args.start, settings=settings)
        path = out / f"label_next-{split}.csv"
        if args.only and path.exists():  # extend an earlier run of the same seeds and rounds with these settings
            earlier = pd.read_csv(path)
            if set(earlier["seed"]) == set(df["seed"]) and set(earlier["round"]) == set(df["round"]):
                keep = ~earlier["strategy"].isin(set(df["strategy"]))
                df = pd.concat([earlier[keep], df], ignore_index=True)
        df.to_csv(path, index=False)
        print(f"\n{len(rows)} clips, {len({r['group'] for r in rows})} songs")
        print(report(df, split, args.rounds, chosen if split == "heldout" else None))
        if split == "dev":
            chosen = choose(df)
            print(f"\nchosen on dev (best mean accuracy over rounds 1-{args.rounds}): {chosen}\n")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
