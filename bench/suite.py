"""Benchmark suite: few-shot tagging on labelled sets of several kinds, held-out parts by default.

Sets (made by ``bench/suite_sets.py`` into the bench cache, never the repository): EMOPIA mood
(quadrant, and valence and arousal from the same clips), major/minor mode, instrument, metre,
composer/style and energy. Each is split by group (song, score, generated song) into a ``dev`` and a
``heldout`` part, recorded in its ``labels.csv``; this command evaluates one part (``--split``,
default ``heldout``) and never mixes them.

Per set and shot count (1, 5 and 20 labelled files per tag; episodes drawn by group with
:func:`clapknn.evaluation.few_shot_episodes`, the same episodes for every method), track accuracy,
mean ± sd over episodes, of:

- ``clapknn defaults``: :func:`clapknn.evaluation.evaluate` with the defaults of ``clapknn tag``
  (encoder, snippet length, k, weighting, aggregation and ``space="auto"``), which fits the vote on
  each episode's examples as :class:`clapknn.Tagger` does; ``--check-tag`` (on by default) also
  builds an index from one episode's examples with :func:`clapknn.build_index`, tags its queries
  with :class:`clapknn.Tagger` for k = 1, 5, 10 and every weighting, and says whether each accuracy
  is the one ``evaluate`` gives for that k and weighting;
- ``clapknn space=plain`` and ``space=standardized``: the same with the vote's space forced;
- ``MFCC 1-NN``: each file's 20 MFCCs, mean and standard deviation over the file, Euclidean 1-NN;
- ``nearest centroid``, ``logistic reg.``, ``majority``: :func:`~clapknn.evaluation.evaluate`'s
  baselines, on the encoder's vectors (the plain space);
- on the ``mode`` set, ``key-profile rule``: the mode of :func:`clapknn.analysis.estimate_key`
  (no examples), scored on each episode's queries.

Usage::

    python bench/suite.py                       # every set, held-out parts, 20 episodes
    python bench/suite.py --quick               # 5 episodes
    python bench/suite.py --sets mode,meter     # some sets
    python bench/suite.py --split dev           # the development parts

The summary ends with the checks on the defaults (at least the better of the two spaces, and above
the MFCC 1-NN anchor, the majority class and, on ``mode``, the key-profile rule; each loss with its
paired difference over the episodes, ± its standard error over the episodes (the examples drawn),
over the groups (a bootstrap of the part's songs or scores, which every episode reuses) and both
together, and whether it is beyond noise: more than two of the combined standard errors) and
writes ``suite-<split>.json``
and ``suite-<split>.md`` (``suite-<split>-<sets>.*`` for a choice of sets) to the cache folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_sets  # noqa: E402

SETS = ("emopia", "emopia-valence", "emopia-arousal", "mode", "instrument", "meter", "composer", "energy")
SHOTS = (1, 5, 20)
CHECK_KS = (1, 5, 10)  # the k values whose evaluate rows the tag check compares with clapknn tag
METHODS = ("clapknn defaults", "clapknn space=plain", "clapknn space=standardized", "MFCC 1-NN",
           "nearest centroid", "logistic reg.", "majority", "key-profile rule")


# --------------------------------------------------------------------------- per-file features
def _mfcc_vector(path: str) -> np.ndarray:
    import librosa
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    return np.r_[m.mean(axis=1), m.std(axis=1)]


def _key_mode(path: str) -> str:
    import soundfile as sf

    from clapknn.analysis import estimate_key

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    return str(estimate_key(y.mean(axis=1), sr).mode)


def per_file(fn, paths: list[str], cache: Path, jobs: int, kind: str):
    """``fn`` of every path, cached in ``cache`` (an ``.npz`` keyed by the paths)."""
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if list(z["paths"]) == list(paths):
            return z["values"]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        values = np.array(list(pool.map(fn, paths, chunksize=8)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, values=values, paths=np.array(paths))
    print(f"{kind} of {len(paths)} files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return values


# --------------------------------------------------------------------------- one set
def _knn_runs(report, method: str, shots: int, k: int | None = None, weights: str | None = None) -> np.ndarray:
    r = report.runs
    r = r[(r["protocol"] == "episodes") & (r["method"] == method) & (r["shots"] == shots)]
    if k is not None:
        r = r[(r["k"] == k) & (r["weights"] == weights)]
    return r.sort_values("run")["accuracy"].to_numpy()


def _query_correct(report, method: str, shots: int, n_episodes: int, index_of: dict, k=None, weights=None) -> np.ndarray:
    """``(episodes, files)``: 1 where an episode's query file got its tags right, 0 where it did
    not, NaN where the file was not a query (from ``report.predictions``)."""
    p = report.predictions
    p = p[(p["protocol"] == "episodes") & (p["method"] == method) & (p["shots"] == shots)]
    if k is not None:
        p = p[(p["k"] == k) & (p["weights"] == weights)]
    out = np.full((n_episodes, len(index_of)), np.nan)
    out[p["run"].to_numpy(dtype=int), p["path"].map(index_of).to_numpy(dtype=int)] = p["correct"].to_numpy(dtype=float)
    return out


def _group_se(a: np.ndarray, b: np.ndarray, groups, seed: int, n_boot: int = 2000) -> float:
    """Standard error of the mean accuracy difference ``a - b`` (``(episodes, files)`` of 0/1,
    NaN where a file was not queried) over the *groups*: the groups are drawn with replacement and
    each file's difference, averaged over the episodes that queried it, weighted by how many did.
    Unlike the standard error over episodes, which reuses the same files in every episode, it
    counts how much the figure would move on other songs or scores of the same kind."""
    both = ~np.isnan(a) & ~np.isnan(b)
    n = both.sum(axis=0)
    d = np.where(both, np.nan_to_num(a) - np.nan_to_num(b), 0.0).sum(axis=0)  # per file: summed over its episodes
    gid = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    g_d, g_n = np.bincount(gid, weights=d), np.bincount(gid, weights=n)
    keep = g_n > 0
    g_d, g_n = g_d[keep], g_n[keep]
    if len(g_d) < 2:
        return float("nan")
    draws = np.random.default_rng(seed).integers(0, len(g_d), size=(n_boot, len(g_d)))
    return float(np.std(g_d[draws].sum(axis=1) / g_n[draws].sum(axis=1), ddof=1))


def tag_check(emb, support: np.ndarray, queries: np.ndarray, cache, settings) -> dict:
    """Accuracy of ``clapknn tag``'s path on one episode for each ``(k, weighting)`` of
    ``settings``: an index built from the support files with :func:`clapknn.build_index` and the
    queries tagged by :class:`clapknn.Tagger` with that k and weighting (other settings at their
    defaults)."""
    from clapknn import Tagger, build_index
    from clapknn.labels import Example, ExampleSet

    examples = ExampleSet([Example(Path(emb.paths[i]), tuple(emb.tags[i]), str(emb.groups[i])) for i in support])
    index = build_index(examples, cache=cache)
    truth = {emb.paths[i]: emb.tags[i][0] for i in queries}
    out = {}
    for k, w in settings:
        result = Tagger(index, k=k, weights=w).tag([emb.paths[i] for i in queries], cache=cache)
        out[(k, w)] = float(np.mean([truth[p] == t for p, t in zip(result.tracks["path"], result.tracks["top"])]))
    return out


def run_set(name: str, args) -> dict:
    """Every method on one part of one set: ``{"methods": {method: {shots: [acc per episode]}}, ...}``."""
    from clapknn.evaluation import embed_examples, evaluate, few_shot_episodes
    from clapknn.labels import Example, ExampleSet
    from clapknn.options import (
        DEFAULT_AGGREGATE, DEFAULT_ENCODER, DEFAULT_K, DEFAULT_SNIPPET_SECONDS, DEFAULT_SPACE, DEFAULT_WEIGHTS, WEIGHTS,
    )

    t0 = time.perf_counter()
    rows = [r for r in suite_sets.load_set(name, jobs=args.jobs) if r["split"] == args.split]
    emb_cache = suite_sets.cache_root() / "embeddings"
    examples = ExampleSet([Example(Path(r["path"]), tuple(r["tags"].split(";")), r["group"]) for r in rows])
    emb = embed_examples(examples, DEFAULT_ENCODER, snippet_seconds=DEFAULT_SNIPPET_SECONDS, workers=args.jobs,
                         cache=emb_cache)
    n_groups = len(set(map(str, emb.groups)))
    counts = {t: sum(t in ts for ts in emb.tags) for t in sorted({t for ts in emb.tags for t in ts})}
    common = dict(shots=args.shots, n_episodes=args.episodes, folds=0, k=DEFAULT_K, weights=DEFAULT_WEIGHTS,
                  aggregate=DEFAULT_AGGREGATE, seed=args.seed, plots=False)
    # the defaults' evaluation sweeps k and the weightings too: the tag check compares each row
    # with what `clapknn tag -k K --weights W` gives on the same episode
    sweep = dict(common, k=CHECK_KS, weights=WEIGHTS)
    auto = evaluate(emb, space=DEFAULT_SPACE, baselines=False, predictions=True, **sweep)
    plain = evaluate(emb, space="plain", baselines=True, predictions=True, **common)
    std = evaluate(emb, space="standardized", baselines=False, predictions=True, **common)
    methods: dict[str, dict[int, list[float]]] = {m: {} for m in METHODS}
    labels = np.array([ts[0] for ts in emb.tags])
    slug = f"{name}-{suite_sets.set_version(name)}-{args.split}"
    mfcc = per_file(_mfcc_vector, emb.paths, suite_sets.cache_root() / "features" / f"mfcc-{slug}.npz", args.jobs, "MFCC")
    modes = None
    if name == "mode":
        modes = per_file(_key_mode, emb.paths, suite_sets.cache_root() / "features" / f"key-{slug}.npz", args.jobs,
                         "key estimates")
    episodes_of = {}
    correct: dict[str, dict[int, np.ndarray]] = {m: {} for m in METHODS}  # (episodes, files), NaN: not a query
    index_of = {p: i for i, p in enumerate(emb.paths)}
    for s in args.shots:
        try:
            episodes_of[s] = few_shot_episodes(emb.tags, emb.groups, shots=s, n_episodes=args.episodes, seed=args.seed)
        except Exception as exc:  # noqa: BLE001 - too few groups for this shot count: left out, said below
            print(f"[{name}: {s}-shot episodes left out: {exc}]", file=sys.stderr)
            continue
        for label, rep, method in (("clapknn defaults", auto, "knn"), ("clapknn space=plain", plain, "knn"),
                                   ("clapknn space=standardized", std, "knn"), ("nearest centroid", plain, "centroid"),
                                   ("logistic reg.", plain, "logreg"), ("majority", plain, "majority")):
            which = (DEFAULT_K, DEFAULT_WEIGHTS) if rep is auto and method == "knn" else (None, None)
            methods[label][s] = _knn_runs(rep, method, s, *which).tolist()
            correct[label][s] = _query_correct(rep, method, s, len(episodes_of[s]), index_of, *which)
        accs, rule = [], []
        correct["MFCC 1-NN"][s] = np.full((len(episodes_of[s]), len(emb.paths)), np.nan)
        if modes is not None:
            correct["key-profile rule"][s] = np.full((len(episodes_of[s]), len(emb.paths)), np.nan)
        for e, (sup, qry) in enumerate(episodes_of[s]):
            d = ((mfcc[qry][:, None, :] - mfcc[sup][None, :, :]) ** 2).sum(axis=-1)
            hit = labels[sup][d.argmin(axis=1)] == labels[qry]
            accs.append(float(np.mean(hit)))
            correct["MFCC 1-NN"][s][e, qry] = hit
            if modes is not None:
                right = modes[qry] == labels[qry]
                rule.append(float(np.mean(right)))
                correct["key-profile rule"][s][e, qry] = right
        methods["MFCC 1-NN"][s] = accs
        if modes is not None:
            methods["key-profile rule"][s] = rule
    spaces = auto.spaces
    std_share = ({int(k): float(v) for k, v in spaces.groupby("shots")["standardized"].mean().items()}
                 if spaces is not None and len(spaces) else {})
    check = None
    if args.check_tag and episodes_of:
        s = sorted(episodes_of)[len(episodes_of) // 2]
        sup, qry = episodes_of[s][0]
        settings = [(k, w) for k in CHECK_KS for w in WEIGHTS]
        got = tag_check(emb, sup, qry, emb_cache, settings)
        want = {(k, w): float(_knn_runs(auto, "knn", s, k, w)[0]) for k, w in settings}
        differ = [f"k={k} {w}: tag {got[(k, w)]:.3f}, evaluate {want[(k, w)]:.3f}" for k, w in settings
                  if abs(got[(k, w)] - want[(k, w)]) > 1e-9]
        check = {"shots": s, "episode": 0, "settings": len(settings), "tag": got[(DEFAULT_K, DEFAULT_WEIGHTS)],
                 "evaluate": want[(DEFAULT_K, DEFAULT_WEIGHTS)], "same": not differ, "differ": differ}
    group_se = {ref: {s: _group_se(correct["clapknn defaults"][s], c[s], emb.groups, args.seed)
                      for s in c if s in correct["clapknn defaults"]}
                for ref, c in correct.items() if ref != "clapknn defaults"}
    print(f"[{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    return {"set": name, "kind": suite_sets.KINDS[name], "split": args.split, "n_files": emb.n_tracks,
            "n_groups": n_groups, "tag_counts": counts, "methods": {m: v for m, v in methods.items() if v},
            "group_se": {ref: v for ref, v in group_se.items() if v},
            "std_share": std_share, "tag_check": check, "encoder": emb.encoder.get("name", "?"),
            "snippet_seconds": emb.snippet_seconds}


# --------------------------------------------------------------------------- report
def _ms(v) -> str:
    if not v:
        return "-"
    a = np.asarray(v)
    return f"{a.mean():.3f} ± {a.std():.3f}"


def set_table(res: dict, shots) -> str:
    lines = [f"| method | " + " | ".join(f"{s} shot{'s' if s > 1 else ''}" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for m, by_shots in res["methods"].items():
        lines.append(f"| {m} | " + " | ".join(_ms(by_shots.get(s)) for s in shots) + " |")
    return "\n".join(lines)


def summary_table(results: list[dict], shots) -> str:
    """One row per set and shot count: the defaults, the two spaces, the anchors."""
    cols = ["clapknn defaults", "clapknn space=plain", "clapknn space=standardized", "MFCC 1-NN",
            "nearest centroid", "logistic reg.", "majority"]
    short = ["defaults", "plain", "standardized", "MFCC 1-NN", "centroid", "logreg", "majority"]
    lines = ["| set (kind) | shots | " + " | ".join(short) + " | auto: std chosen |", "|---|---|" + "---|" * (len(cols) + 1)]
    for res in results:
        for s in shots:
            if s not in res["methods"].get("clapknn defaults", {}):
                continue
            cells = [_ms(res["methods"].get(c, {}).get(s)) for c in cols]
            share = res["std_share"].get(s)
            lines.append(f"| {res['set']} ({res['kind']}) | {s} | " + " | ".join(cells)
                         + f" | {'-' if share is None else f'{share:.0%}'} |")
    return "\n".join(lines)


def _paired(a, b) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over the episodes both were scored on (the same
    episodes for every method)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def checks(results: list[dict], shots) -> list[str]:
    """Where the defaults lose (mean over episodes) to the better space, the MFCC 1-NN anchor, the
    majority class or (mode) the key-profile rule, each with the paired difference and whether it
    is beyond noise (more than two standard errors of the mean difference, over the episodes and
    over the groups combined: :func:`_group_se`), and where ``clapknn tag``'s path disagreed with
    :func:`~clapknn.evaluation.evaluate`."""
    out = []
    for res in results:
        c = res.get("tag_check")
        if c and not c["same"]:
            out.append(f"{res['set']}: build_index + Tagger differ from evaluate on {c['shots']}-shot episode 0: "
                       + "; ".join(c["differ"]))
        m = res["methods"]
        for s in shots:
            if s not in m.get("clapknn defaults", {}):
                continue
            d = m["clapknn defaults"][s]
            spaces = ("clapknn space=plain", "clapknn space=standardized")
            best = max(spaces, key=lambda name: float(np.mean(m[name][s])))
            refs = [(f"the better space ({best.split('=')[1]})", best), ("MFCC 1-NN", "MFCC 1-NN"), ("majority", "majority")]
            if "key-profile rule" in m and s in m["key-profile rule"]:
                refs.append(("key-profile rule", "key-profile rule"))
            for what, name in refs:
                ref = m[name][s]
                diff, se = _paired(d, ref)
                if diff < -1e-9:
                    spread = f"± {se:.3f} over episodes"
                    g = res.get("group_se", {}).get(name, {}).get(s)
                    if g is not None and np.isfinite(g):
                        # the episodes' supports and the groups' sampling are two sources of noise
                        se = float(np.hypot(se, g))
                        spread += f", ± {g:.3f} over groups, ± {se:.3f} together"
                    noise = "beyond noise" if diff < -2 * se else "within noise"
                    out.append(f"{res['set']} {s} shot{'s' if s > 1 else ''}: defaults {np.mean(d):.3f} < {what} "
                               f"{np.mean(ref):.3f} (paired difference {diff:+.3f}; {spread}: {noise})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated sets (default all: {','.join(SETS)})")
    ap.add_argument("--split", choices=("heldout", "dev"), default="heldout", help="which part (default heldout)")
    ap.add_argument("--episodes", type=int, default=20, help="episodes per shot count (default 20)")
    ap.add_argument("--shots", default=",".join(map(str, SHOTS)), help="shot counts (default 1,5,20)")
    ap.add_argument("--quick", action="store_true", help="5 episodes per shot count")
    ap.add_argument("--jobs", type=int, default=2, help="processes for rendering and embedding (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    ap.add_argument("--no-check-tag", dest="check_tag", action="store_false",
                    help="skip the build_index + Tagger check of one episode per set")
    args = ap.parse_args(argv)
    args.shots = tuple(int(s) for s in args.shots.split(","))
    if args.quick:
        args.episodes = 5
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [n for n in names if n not in SETS]
    if bad:
        ap.error(f"unknown set(s) {', '.join(bad)}; choose from {', '.join(SETS)}")

    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

    t_start = time.perf_counter()
    results = []
    for name in names:
        res = run_set(name, args)
        results.append(res)
        counts = ", ".join(f"{t} {n}" for t, n in res["tag_counts"].items())
        print(f"\n=== {name}: {res['kind']}; {args.split} part, {res['n_files']} files in {res['n_groups']} groups "
              f"({counts}); track accuracy, mean ± sd over {args.episodes} episodes ===")
        print(set_table(res, args.shots))
        if res["std_share"]:
            print("auto vote space, share of episodes standardised: "
                  + ", ".join(f"{s} shots {v:.0%}" for s, v in sorted(res["std_share"].items())))
        if res["tag_check"]:
            c = res["tag_check"]
            print(f"build_index + Tagger on {c['shots']}-shot episode 0, defaults: {c['tag']:.3f} (evaluate: "
                  f"{c['evaluate']:.3f}); k in {', '.join(map(str, CHECK_KS))} x every weighting: "
                  + ("all the same" if c["same"] else "DIFFERENT: " + "; ".join(c["differ"])))
        sys.stdout.flush()

    print(f"\n=== suite summary: {args.split} parts, track accuracy, mean ± sd over {args.episodes} episodes "
          f"({results[0]['encoder']} encoder, {results[0]['snippet_seconds']:g} s snippets, defaults of clapknn tag) ===")
    table = summary_table(results, args.shots)
    print(table)
    rules = [(r["set"], s, _ms(v)) for r in results for s, v in r["methods"].get("key-profile rule", {}).items()]
    for name, s, v in rules:
        print(f"{name}: key-profile rule (no examples), on the {s}-shot queries: {v}")
    lost = checks(results, args.shots)
    print("\nwhere the defaults lose (mean over episodes):" if lost else "\nthe defaults lose nowhere (mean over episodes)")
    for line in lost:
        print(f"- {line}")
    out = suite_sets.cache_root()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"suite-{args.split}" + ("" if names == list(SETS) else "-" + "+".join(names))
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table + "\n\n" + "\n".join(f"- {x}" for x in lost) + "\n")
    print(f"\n[total {time.perf_counter() - t_start:.0f} s; results in {out / stem}.json]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
