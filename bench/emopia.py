"""EMOPIA benchmark: how well does few-shot kNN tagging recognise human-labelled piano moods?

Renders the EMOPIA MIDI clips (``/work/shared/data/emopia``; see its README) to mono 22.05 kHz WAV in
a cache outside the repository, then runs :func:`clapknn.evaluation.evaluate` for three tasks on the
same embeddings: ``quadrant`` (4 classes), ``valence`` and ``arousal`` (2 classes each), grouped by
song so that clips of one song are never on both sides of a split.

Usage::

    python bench/emopia.py                       # full run: 3, 10 and 30-s snippets, 20 episodes
    python bench/emopia.py --quick               # 10-s snippets only, 10 episodes
    python bench/emopia.py --level peak          # peak-normalised renders (no loudness cue)
    python bench/emopia.py --synth tinysoundfont # pip-only renders (pretty_midi's small soundfont)

Renders use fluidsynth with Debian's FluidR3_GM soundfont when installed (``apt-get install
fluidsynth fluid-soundfont-gm``; the command the data's README gives, and where its reference figures
come from), else tinysoundfont with pretty_midi's TimGM6mb.sf2.

It prints, per task and shot count, the kNN figures, the baselines and chance (mean ± sd over
episodes), writes each task's full report (tables, JSON, plots) under the cache folder and copies
the plots used by ``docs/evaluation.md`` into ``docs/img/``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("CLAPKNN_EMOPIA", "/work/shared/data/emopia"))
CACHE = Path(os.environ.get("CLAPKNN_BENCH_CACHE", Path.home() / ".cache" / "clapknn-bench")) / "emopia"
SR = 22050  # Hz


#: Rendering levels: ``fixed`` keeps the synthesiser's level (one gain for every clip, so MIDI
#: velocity is loudness, as in a fixed-gain recording session); ``peak`` normalises each clip's peak
#: (as a mastered library), which removes the loudness differences between clips.
LEVELS = ("fixed", "peak")


def _render_one(job: tuple[str, str, str, str]) -> str:
    sys.path.insert(0, str(HERE))
    from render_midi import render_midi

    midi, wav, level, synth = job
    render_midi(midi, wav, sr=SR, peak=None if level == "fixed" else 0.9, synth=synth)
    return wav


def pick_synth(synth: str = "auto") -> str:
    """``auto``: fluidsynth when it and a Debian soundfont are installed, else tinysoundfont."""
    if synth != "auto":
        return synth
    sys.path.insert(0, str(HERE))
    from render_midi import fluidsynth_soundfont

    return "fluidsynth" if shutil.which("fluidsynth") and fluidsynth_soundfont() else "tinysoundfont"


def render_all(data: Path = DATA, cache: Path = CACHE, *, level: str = "fixed", synth: str = "tinysoundfont",
               jobs: int = 2) -> Path:
    """Unpack the MIDI clips and render each to ``cache/wav-[fluidsynth-]<level>/<name>.wav``,
    skipping those already there."""
    midi_dir = cache / "midi"
    wav_dir = cache / (f"wav-{level}" if synth == "tinysoundfont" else f"wav-{synth}-{level}")
    wav_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data / "midis.zip") as zf:
        names = [n for n in zf.namelist() if n.lower().endswith(".mid")]
        todo_names = [n for n in names if not (wav_dir / (Path(n).stem + ".wav")).exists()]
        for n in todo_names:
            target = midi_dir / Path(n).name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(n))
    todo = [(str(midi_dir / Path(n).name), str(wav_dir / (Path(n).stem + ".wav")), level, synth) for n in todo_names]
    if todo:
        t0 = time.perf_counter()
        print(f"rendering {len(todo)} of {len(names)} MIDI clips into {wav_dir} ({jobs} processes)", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for _ in pool.map(_render_one, todo, chunksize=8):
                pass
        print(f"rendered in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return wav_dir


TASKS = ("quadrant", "valence", "arousal")
#: What the data's README reports for a crude log-mel + key-profile embedding, 5 shots, 1-NN.
README_REFERENCE = {"quadrant": 0.46, "valence": 0.53, "arousal": 0.81}
SHOWN_SHOTS = (1, 5, 20)
DOCS_IMG = HERE.parent / "docs" / "img"


def _reference_vector(path: str):
    """The crude recipe behind the README reference: a clip's 64-band log-mel spectrum averaged
    over time, and the correlations of its mean chroma with the 24 Krumhansl-Kessler key profiles."""
    import librosa
    import numpy as np
    import soundfile as sf

    from clapknn.analysis.profiles import key_templates

    y, sr = sf.read(path, dtype="float32")
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64)).mean(axis=1)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr).mean(axis=1)
    chroma = (chroma - chroma.mean()) / (np.linalg.norm(chroma - chroma.mean()) + 1e-12)
    return np.r_[mel, key_templates() @ chroma]


def reference_figures(emb, cache: Path, *, shots, n_episodes: int, jobs: int) -> dict:
    """Track accuracy per episode of the crude recipe with a 1-NN (Euclidean) vote on the same
    few-shot episodes as :func:`clapknn.evaluation.evaluate` (same files, tags, groups and seed),
    ``{shots: array over episodes}``; the vectors are cached in ``cache``."""
    import numpy as np

    from clapknn.evaluation import few_shot_episodes

    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.exists() and list(np.load(cache, allow_pickle=False)["paths"]) == list(emb.paths):
        V = np.load(cache)["vectors"]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            V = np.array(list(pool.map(_reference_vector, emb.paths, chunksize=16)))
        np.savez(cache, vectors=V, paths=np.array(emb.paths))
    labels = np.array([t[0] for t in emb.tags])
    out = {}
    for s in shots:
        accs = []
        for support, queries in few_shot_episodes(emb.tags, emb.groups, shots=s, n_episodes=n_episodes, seed=0):
            d = ((V[queries][:, None, :] - V[support][None, :, :]) ** 2).sum(axis=-1)
            accs.append(float(np.mean(labels[support][d.argmin(axis=1)] == labels[queries])))
        out[s] = np.array(accs)
    return out


def read_labels(data: Path, wav_dir: Path) -> list[dict]:
    """Rows of the EMOPIA labels with the rendered file's path."""
    with open(data / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["path"] = str(wav_dir / (Path(r["file"]).stem + ".wav"))
    return rows


def embed(rows: list[dict], lengths, *, jobs: int, cache: Path, encoder: str):
    """One :class:`~clapknn.evaluation.Embedded` per snippet length (labels: quadrant)."""
    from clapknn.evaluation import embed_examples
    from clapknn.labels import Example, ExampleSet

    examples = ExampleSet([Example(Path(r["path"]), (r["quadrant"],), r["song"]) for r in rows])
    out = []
    for length in lengths:
        t0 = time.perf_counter()
        emb = embed_examples(examples, encoder, snippet_seconds=length, workers=jobs, cache=cache, progress=True)
        print(f"embedded {emb.n_tracks} clips at {length:g} s: {len(emb.vectors)} snippets in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out.append(emb)
    return out


def fmt(row, metric: str = "accuracy") -> str:
    return f"{row[metric]:.3f} ± {row[metric + '_sd']:.3f}"


def summary_rows(task: str, report, shots=SHOWN_SHOTS) -> list[dict]:
    """One row per shot count: kNN (headline setting), the baselines and chance."""
    t = report.rows(protocol="episodes")
    out = []
    for s in shots:
        at = t[t["shots"] == s]
        if not len(at):
            continue
        knn = report.rows(method="knn", protocol="episodes")
        knn = knn[knn["shots"] == s].iloc[0]
        row = {"task": task, "shots": s, "kNN": fmt(knn), "kNN bal.acc": fmt(knn, "balanced_accuracy"),
               "kNN macro-F1": fmt(knn, "macro_f1")}
        for method, name in (("logreg", "logistic reg."), ("centroid", "nearest centroid"), ("majority", "majority")):
            r = at[at["method"] == method]
            row[name] = fmt(r.iloc[0]) if len(r) else "-"
        row["chance"] = f"{knn['chance_accuracy']:.3f}"
        out.append(row)
    return out


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="EMOPIA folder with midis.zip and labels.csv")
    ap.add_argument("--cache", type=Path, default=CACHE, help="renders, embeddings and reports (outside the repo)")
    ap.add_argument("--level", choices=LEVELS, default="fixed", help="rendering level (default fixed)")
    ap.add_argument("--synth", choices=("auto", "fluidsynth", "tinysoundfont"), default="auto",
                    help="renderer (default auto: fluidsynth + FluidR3_GM when installed, else tinysoundfont)")
    ap.add_argument("--encoder", default="features", help="features (default) or clap")
    ap.add_argument("--snippet-seconds", default="3,10,30", help="snippet lengths to compare (default 3,10,30)")
    ap.add_argument("--episodes", type=int, default=20, help="episodes per shot count (default 20)")
    ap.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds (default 5)")
    ap.add_argument("--jobs", type=int, default=2, help="processes for rendering and embedding (default 2)")
    ap.add_argument("--quick", action="store_true", help="10-s snippets only and 10 episodes")
    ap.add_argument("--no-docs", action="store_true", help="do not copy plots into docs/img")
    args = ap.parse_args(argv)

    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    from clapknn.evaluation import evaluate

    t_start = time.perf_counter()
    lengths = [10.0] if args.quick else [float(v) for v in args.snippet_seconds.split(",")]
    episodes = 10 if args.quick else args.episodes
    synth = pick_synth(args.synth)
    wav_dir = render_all(args.data, args.cache, level=args.level, synth=synth, jobs=args.jobs)
    rows = read_labels(args.data, wav_dir)
    embedded = embed(rows, lengths, jobs=args.jobs, cache=args.cache / "embeddings", encoder=args.encoder)
    by_path = {r["path"]: r for r in rows}
    headline = 10.0 if 10.0 in lengths else lengths[0]
    table = []
    reports = {}
    for task in TASKS:
        t0 = time.perf_counter()
        relabelled = [e.relabel({p: (by_path[p][task],) for p in e.paths}) for e in embedded]
        out_dir = args.cache / "reports" / f"{args.encoder}-{synth}-{args.level}" / task
        head = [e for e in relabelled if e.snippet_seconds == headline]
        # every setting and baseline at the headline snippet length ...
        report = evaluate(
            head, shots=(1, 2, 5, 10, 20), n_episodes=episodes, folds=args.folds, k=(1, 3, 5, 10, 20),
            weights=("uniform", "distance", "similarity"), seed=0, out_dir=out_dir,
        )
        reports[task] = report
        print(f"\n=== EMOPIA {task} ({args.encoder} encoder, {synth} {args.level}-level renders; "
              f"README reference, 5 shots 1-NN: {README_REFERENCE[task]:.2f}) ===")
        print(report.text())
        plots = dict(report.plots)
        # ... and the kNN vote (default k and weighting) at every snippet length, same episodes
        if len(relabelled) > 1:
            sweep = evaluate(relabelled, shots=(1, 5, 20), n_episodes=episodes, folds=0, baselines=False, seed=0,
                             k=report.headline["k"], weights=report.headline["weights"],
                             out_dir=out_dir / "snippet-length")
            knn = sweep.table[sweep.table["method"] == "knn"]
            print(f"\nsnippet length (kNN k={sweep.headline['k']}, {sweep.headline['weights']}): accuracy mean ± sd "
                  "over episodes, by shots")
            for length, g in knn.groupby("snippet_seconds"):
                print(f"{length:>6g} s   " + "   ".join(
                    f"{int(r.shots):>2}: {r.accuracy:.3f} ± {r.accuracy_sd:.3f}" for r in g.sort_values("shots").itertuples()))
            plots["snippet_length"] = sweep.plots["snippet_length"]
        table += summary_rows(task, report)
        ref = reference_figures(head[0], args.cache / "reference" / f"{wav_dir.name}.npz", shots=SHOWN_SHOTS,
                                n_episodes=episodes, jobs=args.jobs)
        runs = report.runs
        for row in table[-len(SHOWN_SHOTS):]:
            acc = ref[row["shots"]]
            row["crude reference (1-NN)"] = f"{acc.mean():.3f} ± {acc.std():.3f}"
            # paired by episode: the kNN vote's gain over the reference on the very same split
            knn = runs[(runs["protocol"] == "episodes") & (runs["method"] == "knn") & (runs["shots"] == row["shots"])
                       & (runs["k"] == report.headline["k"]) & (runs["weights"] == report.headline["weights"])]
            gain = knn.sort_values("run")["accuracy"].to_numpy() - acc
            row["kNN - reference (episodes won)"] = f"{gain.mean():+.3f} ± {gain.std():.3f} ({(gain > 0).sum()}/{len(gain)})"
        # the same episodes with the vote's standardised space forced (``--space standardized``;
        # what "auto" picks from)
        if head[0].knn_options.get("standardize") == "auto":
            fr = evaluate(head, shots=SHOWN_SHOTS, n_episodes=episodes, folds=0, k=report.headline["k"],
                          weights=report.headline["weights"], space="standardized", baselines=False, seed=0)
            for row, s in zip(table[-len(SHOWN_SHOTS):], SHOWN_SHOTS):
                r = fr.rows(method="knn", protocol="episodes")
                r = r[r["shots"] == s]
                row["kNN, standardised space"] = fmt(r.iloc[0]) if len(r) else "-"
            space = report.spaces
            if space is not None and len(space):
                share = space.groupby("shots")["standardized"].mean()
                for row in table[-len(SHOWN_SHOTS):]:
                    row["auto: std chosen"] = f"{share.get(float(row['shots']), float('nan')):.0%}"
        print(f"[{task}: evaluated in {time.perf_counter() - t0:.0f} s; full report in {out_dir}]", file=sys.stderr)
        if (not args.no_docs and args.encoder == "features" and args.level == "fixed" and synth == "fluidsynth"
                and not args.quick):
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            for name, path in plots.items():
                shutil.copyfile(path, DOCS_IMG / f"emopia-{task}-{name}.png")

    print("\n=== EMOPIA summary: track accuracy, mean ± sd over episodes "
          f"(kNN k={reports[TASKS[0]].headline['k']} {reports[TASKS[0]].headline['weights']}, "
          f"{reports[TASKS[0]].headline['snippet_seconds']:g} s snippets; grouped by song) ===")
    print(markdown(table))
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
