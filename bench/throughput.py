"""Whole libraries, fast: tagging time of 4-minute tracks against just decoding them, in one run.

On ``--tracks`` generated 4-minute 44.1 kHz stereo FLAC tracks (``synth.py``'s chords and pulses,
four sections per track; kept in ``--workdir`` between runs), measured in this run:

1. **decode** (the baseline): read every file whole with soundfile, mix to mono (clapknn's own
   :func:`~clapknn.audio.signal.to_mono`, so the baseline is not slowed by a slow mix) and resample
   to 22.05 kHz with soxr, in this process;
2. **clapknn tag, defaults**: ``python -m clapknn tag FOLDER --index IDX --no-cache -q --out x.csv``
   as a whole process (start-up, imports, worker start, decoding, features encoder, vote, CSV; the
   default ``--workers auto``: one process per core decodes and encodes), reported as a ratio to the
   decode time (target ≤ 0.5) and in s/track (target ≤ 0.36); **a further track**: the same command
   on the first half of the tracks, and ``(T(all) - T(half)) / (tracks in the other half)``, the cost
   of one more track once the process runs, against the decode time per track; the same command
   with ``--snippets all`` (every snippet, the behaviour before sampling) beside it. CPU seconds are
   those of the process and every process under it (the workers are forks of a forkserver: this
   script is their subreaper, so their time is counted);
3. **CLAP, random-weight HTSAT-base** (``make_random_checkpoint.py``; the real laion-clap
   architecture and cost), on the first ``--clap-tracks`` tracks (default 8; three precisions of a
   model this size take minutes per track set): ``Tagger.tag`` with the default snippets per track
   (or each count of ``--clap-snippets``, e.g. ``6,4,3``), in s/track with the model already loaded
   (target ≤ 1.2; the load is reported on its own), beside laion-clap's
   ``CLAP_Module.get_audio_embedding_from_filelist`` on the same files (one 10-s crop per file,
   decoded whole by librosa at 48 kHz), both in a fresh process of their own; and the opt-in
   reduced precisions (``int8``, ``bf16``): s/track, speed-up over fp32 at the same snippet count,
   cosine of each snippet vector to its fp32 vector (plain, and centred on the fp32 vectors' mean),
   and how many track tags change (each precision tagging with an index built in that precision from
   the same examples). ``--clap-only`` runs just this part;
4. **peak memory at two library sizes** (``--memory-sizes``, default 1,000 and 10,000): ``bench/scale.py``
   with 1-s tracks (one 1-s snippet each) and ``--workers auto``, so 10,000 tracks stay feasible on two cores: the cost
   that could grow with the library (results, queues, the vote) is per track, not per second of
   audio, and a 4-minute track's decoding memory is bounded by its few snippets. ``--memory-sizes
   none`` skips it.

Usage::

    python bench/throughput.py                       # 32 tracks, everything
    python bench/throughput.py --tracks 8 --memory-sizes none --json out.json
    python bench/throughput.py --clap-only --clap-snippets 6,4,3   # the CLAP part alone
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRACK_SECONDS = 240.0
SR = 44100


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["CLAPKNN_EMBEDDING_CACHE"] = "off"
    return env


def make_tracks(folder: Path, n: int, seconds: float = TRACK_SECONDS, seed: int = 0, prefix: str = "track") -> list[Path]:
    """``n`` stereo 44.1 kHz FLAC tracks of ``seconds``, four synthesised sections each (kept)."""
    import soundfile as sf

    sys.path.insert(0, str(HERE))
    from synth import synth_track

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}_{i:03d}.flac"
        paths.append(p)
        if p.exists():
            continue
        rng = np.random.default_rng([seed, i])
        sections = [synth_track(seconds / 4, SR, rng) for _ in range(4)]
        mono = np.concatenate(sections)
        side = 0.01 * rng.standard_normal(mono.size).astype(np.float32)
        tmp = p.with_name(f".{p.name}.tmp.flac")
        sf.write(str(tmp), np.stack([mono + side, 0.9 * mono - side], axis=1), SR, subtype="PCM_16")
        tmp.replace(p)
    return paths


def make_examples(folder: Path) -> Path:
    """Six 30-s examples of two tags (other seeds than the tracks), and their labels CSV."""
    paths = make_tracks(folder / "audio", 6, seconds=30.0, seed=1, prefix="example")
    csv = folder / "labels.csv"
    csv.write_text("path,tags\n" + "".join(f"{p},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(paths)))
    return csv


def decode_all(paths) -> tuple[float, float]:
    """``(wall, cpu)`` seconds to decode every file whole (soundfile), mix to mono (as clapknn does)
    and resample to 22.05 kHz (soxr)."""
    import soundfile as sf
    import soxr

    from clapknn.audio.signal import to_mono

    t, c = time.perf_counter(), time.process_time()
    for p in paths:
        y, sr = sf.read(str(p), dtype="float32", always_2d=True)
        soxr.resample(to_mono(y), sr, 22050)
    return time.perf_counter() - t, time.process_time() - c


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _become_subreaper() -> None:
    """Adopt orphaned descendants (Linux): a clapknn process's forkserver and its workers outlive it by
    a moment and are not its waited-for children, so their CPU time would be lost otherwise."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _reap_orphans(timeout: float = 20.0) -> None:
    """Wait for the adopted descendants to end, so their CPU time is in ``RUSAGE_CHILDREN``."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def run_cli(args: list[str]) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of a whole ``clapknn`` process (wall: until it exits; CPU: user + system of
    every thread of it and of every process under it)."""
    t, c = time.perf_counter(), _children_cpu()
    res = subprocess.run([sys.executable, "-m", "clapknn", *args], capture_output=True, text=True, env=_env())
    dt = time.perf_counter() - t
    _reap_orphans()
    dc = _children_cpu() - c
    if res.returncode != 0:
        raise SystemExit(f"clapknn {' '.join(args[:2])} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return dt, dc


# ------------------------------------------------------------------------------------------------ CLAP


def clap_child(ckpt: str, files: list[str], examples: str, threads: int, side: str, snippets=(6,)) -> dict:
    """In a fresh process: laion-clap's file-list embedding, or clapknn's tagging per precision at each
    snippet count (``out["fp32"]`` at the first count; other counts under ``"<precision>@<count>"``)."""
    import torch

    torch.set_num_threads(threads)
    if side == "laion":
        import contextlib
        import io

        from clapknn.encoders.clap.laion import _import_laion_clap, _laion_guard
        from clapknn.encoders.clap.laion import roberta_model as _roberta_model

        t = time.perf_counter()
        lc = _import_laion_clap()
        with _laion_guard(_roberta_model):
            model = lc.CLAP_Module(enable_fusion=False, amodel="HTSAT-base", device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):
            model.load_ckpt(ckpt, verbose=False)
        load = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            vecs = model.get_audio_embedding_from_filelist(files)
        return {"load_s": load, "seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c, "vectors": int(len(vecs))}

    from clapknn import Tagger, build_index
    from clapknn.encoders.clap import ClapEncoder

    refs: dict = {}  # fp32 results per snippet count
    out = {}
    for precision in ("fp32", "int8", "bf16"):
        t = time.perf_counter()
        enc = ClapEncoder(ckpt, device="cpu", threads=threads, precision=precision, progress=False)
        load = time.perf_counter() - t
        index = build_index(examples, encoder=enc)
        for k, count in enumerate(snippets):
            tagger = Tagger(index, encoder=enc, max_snippets=count)
            tagger.tag(files[:1])  # warm-up (first-call allocations), not timed
            t, c = time.perf_counter(), time.process_time()
            res = tagger.tag(files, explain=True)
            seconds = time.perf_counter() - t
            row = {"load_s": load, "seconds": seconds, "cpu_s": time.process_time() - c, "snippets": int(len(res.vectors)),
                   "tops": res.tracks["top"].tolist(), "max_snippets": count}
            if precision == "fp32":
                refs[count] = res
            else:
                _fidelity(row, res, refs[count])
            out[precision if k == 0 else f"{precision}@{count}"] = row
            del tagger
        del enc, index
    return out


def _fidelity(row: dict, res, ref) -> None:
    """Cosine of each snippet vector to its fp32 vector (plain and centred) and the track tags changed."""
    cos = np.sum(res.vectors * ref.vectors, axis=1)
    # random weights put every vector near one direction, so the plain cosine flatters:
    # also compare the vectors' departures from the fp32 mean (what tells tracks apart)
    mean = ref.vectors.mean(axis=0)
    a, b = res.vectors - mean, ref.vectors - mean
    ccos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    row.update(centred_cos_min=float(ccos.min()), centred_cos_mean=float(ccos.mean()),
               spread=float(np.mean(np.sum(ref.vectors * mean / np.linalg.norm(mean), axis=1))))
    row.update(cos_min=float(cos.min()), cos_mean=float(cos.mean()),
               tags_changed=int(sum(a != b for a, b in zip(row["tops"], ref.tracks["top"]))))


def _spawn_clap(side: str, ckpt: Path, files, examples: Path, threads: int, snippets=(6,)) -> dict:
    cmd = [sys.executable, __file__, "--clap-child", side, "--checkpoint", str(ckpt), "--threads", str(threads),
           "--examples", str(examples), "--files-list", json.dumps([str(f) for f in files]),
           "--clap-snippets", ",".join(map(str, snippets))]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if res.returncode != 0:
        raise SystemExit(f"CLAP {side} run failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def clap_part(args, work: Path, paths, examples: Path, fig: dict) -> None:
    """The CLAP runs (part 3 of the module doc), printed and added to ``fig["clap"]``."""
    from clapknn.options import DEFAULT_TAG_SNIPPETS

    n = len(paths)
    counts = tuple(int(c) for c in args.clap_snippets.split(",")) if args.clap_snippets else (DEFAULT_TAG_SNIPPETS,)
    ckpt = Path(args.checkpoint) if args.checkpoint else work / "random-HTSAT-base.pt"
    if not ckpt.exists():
        sys.path.insert(0, str(HERE))
        from make_random_checkpoint import write_random_checkpoint

        write_random_checkpoint(ckpt, amodel="HTSAT-base", seed=0)
    clap_paths = paths[: max(1, min(args.clap_tracks, n))]
    nc = len(clap_paths)
    laion = _spawn_clap("laion", ckpt, clap_paths, examples, args.threads)
    mine = _spawn_clap("clapknn", ckpt, clap_paths, examples, args.threads, counts)
    fig["clap"] = {"tracks": nc, "laion": laion, "clapknn": mine, "load_after": os.getloadavg()}
    print(f"\nCLAP HTSAT-base, random weights, {args.threads} thread(s), the first {nc} tracks, model loaded (load time apart):")
    print(f"  laion-clap get_audio_embedding_from_filelist (1 crop/file): {laion['seconds'] / nc:.2f} s/track, "
          f"CPU {laion['cpu_s'] / nc:.2f} s/track (load {laion['load_s']:.1f} s)  [baseline]")
    for name, r in mine.items():
        precision = name.split("@")[0]
        base = mine["fp32" if r["max_snippets"] == counts[0] else f"fp32@{r['max_snippets']}"]["seconds"]
        extra = ""
        if precision != "fp32":
            extra = (f", {base / r['seconds']:.2f}x fp32 speed, cosine to fp32 min {r['cos_min']:.4f} mean {r['cos_mean']:.4f} "
                     f"(centred on the fp32 mean: min {r['centred_cos_min']:.3f} mean {r['centred_cos_mean']:.3f}), "
                     f"{r['tags_changed']}/{nc} track tags changed")
        per = r["seconds"] / nc
        print(f"  clapknn tag {precision}, --snippets {r['max_snippets']} ({r['snippets'] / nc:g}/track): {per:.2f} s/track = "
              f"{r['seconds'] / laion['seconds']:.2f}x laion-clap's time, CPU {r['cpu_s'] / nc:.2f} s/track "
              f"(load {r['load_s']:.1f} s){extra}  [target <= 1.2 s/track: {'met' if per <= 1.2 else 'not met'}]")
    la = fig["clap"]["load_after"]
    print(f"  load average (1, 5, 15 min) after the CLAP runs: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=32, help="4-minute tracks (default 32)")
    ap.add_argument("--workdir", default=str(Path(os.environ.get("CLAPKNN_BENCH_CACHE", Path.home() / ".cache" / "clapknn-bench")) / "throughput"))
    ap.add_argument("--checkpoint", help="CLAP checkpoint (default: a random HTSAT-base one written to the workdir)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for CLAP")
    ap.add_argument("--repeats", type=int, default=2, help="alternated runs of the tag commands, best kept (default 2)")
    ap.add_argument("--no-all", action="store_true", help="skip the --snippets all run")
    ap.add_argument("--no-clap", action="store_true", help="skip the CLAP runs")
    ap.add_argument("--clap-tracks", type=int, default=8, help="tracks the CLAP runs embed (the first N; default 8)")
    ap.add_argument("--clap-snippets", help="snippets per track for the CLAP runs, comma-separated (default: the tag "
                    "default; e.g. 6,4: every precision at each count, fidelity against fp32 at the same count)")
    ap.add_argument("--clap-only", action="store_true", help="only the CLAP runs (no features tag runs, no memory runs)")
    ap.add_argument("--memory-sizes", default="1000,10000", help="library sizes for peak memory, or none")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--clap-child", choices=["laion", "clapknn"], help=argparse.SUPPRESS)
    ap.add_argument("--files-list", help=argparse.SUPPRESS)
    ap.add_argument("--examples", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.clap_child:
        counts = tuple(int(c) for c in args.clap_snippets.split(","))
        print(json.dumps(clap_child(args.checkpoint, json.loads(args.files_list), args.examples, args.threads, args.clap_child,
                                    counts)))
        return 0

    from clapknn.options import DEFAULT_TAG_SNIPPETS

    work = Path(args.workdir)
    t = time.perf_counter()
    paths = make_tracks(work / "tracks", args.tracks)
    folder = work / "tracks"
    examples = make_examples(work / "examples")
    n = len(paths)
    print(f"{n} tracks of {TRACK_SECONDS / 60:g} min, 44.1 kHz stereo FLAC in {folder} (ready in {time.perf_counter() - t:.0f} s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for stale in folder.glob("*.csv"):
        stale.unlink()
    fig: dict = {"tracks": n, "default_snippets": DEFAULT_TAG_SNIPPETS, "load_before": os.getloadavg()}
    if args.clap_only:
        clap_part(args, work, paths, examples, fig)
        fig["load_after"] = os.getloadavg()
        if args.json:
            Path(args.json).write_text(json.dumps(fig, indent=2))
        return 0

    index = work / "index-features"
    _become_subreaper()
    run_cli(["build", str(examples), "--out", str(index), "--no-cache", "-q"])
    decode_all(paths[:1])  # imports and first-call costs out of the baseline
    fig["decode"] = decode_all(paths)
    out_csv = work / "tags.csv"
    options = ["--index", str(index), "--no-cache", "-q"]
    tag = ["tag", *map(str, paths), *options, "--out", str(out_csv)]  # the folder may hold more tracks
    half = n // 2
    tag_half = ["tag", *map(str, paths[:half]), *options, "--out", str(work / "tags-half.csv")]
    runs: dict = {"tag_half": [], "tag": []}
    for _ in range(max(1, args.repeats)):  # alternated, best of each: load from other processes only adds
        runs["tag_half"].append(run_cli(tag_half))
        runs["tag"].append(run_cli(tag))
    for name, got in runs.items():
        fig[name] = min(got)
        fig[name + "_runs"] = got
    further = ((fig["tag"][0] - fig["tag_half"][0]) / (n - half), (fig["tag"][1] - fig["tag_half"][1]) / (n - half))
    fig["further_track"] = further
    if not args.no_all:
        fig["tag_all"] = run_cli(tag + ["--snippets", "all"])
    fig["load_after"] = os.getloadavg()
    print(f"\n{'':<66} {'wall s':>7} {'s/track':>7} {'x decode':>8} {'CPU s':>7} {'s/track':>7} {'x decode':>8}")

    def line(name, wc, k=n):
        (w, c), (dw, dc) = wc, fig["decode"]
        print(f"{name:<66} {w:7.1f} {w / k:7.2f} {w / (dw * k / n):8.2f} {c:7.1f} {c / k:7.2f} {c / (dc * k / n):8.2f}")

    line("decode only (soundfile + soxr to 22.05 kHz) [baseline]", fig["decode"])
    line(f"clapknn tag, defaults (features, {DEFAULT_TAG_SNIPPETS} snippets/track, no cache, process)", fig["tag"])
    line(f"  the same on the first {half} tracks", fig["tag_half"], half)
    (w, c), (dw, dc) = further, fig["decode"]
    print(f"{f'  a further track: (T({n}) - T({half})) / {n - half}':<66} {'':>7} {w:7.2f} {w / (dw / n):8.2f} "
          f"{'':>7} {c:7.2f} {c / (dc / n):8.2f}")
    if "tag_all" in fig:
        line("clapknn tag --snippets all (every snippet)", fig["tag_all"])
    print(f"targets: <= 0.36 s/track and <= 0.5x decode. Best of {max(1, args.repeats)} alternated runs; CPU s: user + "
          "system of every thread of every process, which a loaded machine does not inflate as it does wall time. "
          f"Load average (1, 5, 15 min) before: {fig['load_before'][0]:.2f} {fig['load_before'][1]:.2f} "
          f"{fig['load_before'][2]:.2f}, after: {fig['load_after'][0]:.2f} {fig['load_after'][1]:.2f} {fig['load_after'][2]:.2f}",
          flush=True)

    if not args.no_clap:
        clap_part(args, work, paths, examples, fig)

    if args.memory_sizes.strip().lower() != "none":
        cmd = [sys.executable, str(HERE / "scale.py"), "--sizes", args.memory_sizes, "--seconds", "1", "--snippet-seconds", "1", "--workers", "auto",
               "--workdir", str(work / "scale")]
        print(f"\npeak memory by library size ({' '.join(cmd[1:])}):", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        print(res.stdout.strip().split("\n\n")[-1])
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
        fig["memory"] = res.stdout
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
