"""Benchmark the streaming pipeline: tracks/s and peak memory as the library grows.

For each encoder and library size, a fresh process tags the first N tracks of a synthetic library
(``synth.py``: 44.1 kHz WAV, so every track is decoded and resampled) the way
``clapknn tag LIB --index IDX --out results.csv --resume --workers W --no-cache`` does: decoding in
``W`` worker processes (``auto``: as the CLI's default; the ``features`` encoder encodes there too,
CLAP encodes here in batches), kNN vote, rows appended to a CSV as tracks complete
(:func:`clapknn.tagging.resume.tag_to_csv`). The embedding cache is off, so every track is really embedded.

Reported per run: wall seconds, tracks/s, seconds per track relative to the smallest run (flat =
linear cost), resident memory once the model is loaded, peak resident memory of the tagging
process, and the peak of the largest decode worker (sampled ``VmHWM``).

The ``clap`` encoder uses a checkpoint with random weights (``bench/make_random_checkpoint.py``):
the same network and cost as a real one, no download.

Usage::

    python bench/scale.py                                          # features: 100, 1,000, 10,000 tracks
    python bench/scale.py --encoders clap --sizes 100,1000 --checkpoint /tmp/random-tiny.pt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class WorkerPeak(threading.Thread):
    """Samples the peak resident memory (``VmHWM``) of this process's descendants (the workers, forks of
    the forkserver this process started).

    ``RUSAGE_CHILDREN`` would report the parent's size, copied at fork time before the exec."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_mb = 0.0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(0.2):
            for kid in me.children(recursive=True):
                try:
                    with open(f"/proc/{kid.pid}/status") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
                except OSError:
                    pass


def child(args) -> int:
    """One run: build the small tagging index (untimed), then tag N tracks (timed)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from synth import make_library

    from clapknn import Tagger, build_index
    from clapknn.encoders import get_encoder
    from clapknn.tagging.resume import tag_to_csv

    work = Path(args.workdir)
    paths = make_library(work / "library", args.n_total, seconds=args.seconds)
    opts = {"checkpoint": args.checkpoint, "threads": args.threads} if args.encoder == "clap" else {}
    enc = get_encoder(args.encoder, **{k: v for k, v in opts.items() if v is not None})
    examples = work / f"examples-{args.encoder}.csv"
    examples.write_text("path,tags\n" + "".join(f"{p},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(paths[-20:])))
    index = build_index(examples, encoder=enc, snippet_seconds=args.snippet_seconds, batch_size=args.batch_size)
    tagger = Tagger(index, batch_size=args.batch_size)
    out = work / f"results-{args.encoder}-{args.n}.csv"
    out.unlink(missing_ok=True)
    rss_ready = _rss_mb()
    watcher = WorkerPeak()
    watcher.start()
    t0 = time.perf_counter()
    from clapknn.options import parse_workers

    report = tag_to_csv(tagger, paths[: args.n], out, resume=False, cache=False, workers=parse_workers(args.workers))
    seconds = time.perf_counter() - t0
    watcher.stop.set()
    watcher.join()
    assert report.n_tagged == args.n, (report.n_tagged, report.skipped[:3])
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids_peak = watcher.peak_mb
    print(json.dumps({"encoder": args.encoder, "identity": enc.identity(), "n": args.n, "seconds": seconds, "rss_ready_mb": rss_ready,
                      "peak_mb": self_peak, "workers_peak_mb": kids_peak, "snippets_per_track": 1}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000", help="library sizes (default 100,1000,10000)")
    ap.add_argument("--encoders", default="features", help="features and/or clap (default features)")
    ap.add_argument("--checkpoint", help="CLAP checkpoint (.pt) for --encoders clap (random weights are fine)")
    ap.add_argument("--threads", type=int, help="torch threads for CLAP")
    ap.add_argument("--seconds", type=float, default=3.0, help="track length (default 3 s)")
    ap.add_argument("--snippet-seconds", type=float, default=3.0, help="snippet length (default 3 s: one snippet per track)")
    ap.add_argument("--workers", default="1", help="worker processes, or auto (default 1)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workdir", default=str(Path(os.environ.get("CLAPKNN_BENCH_CACHE", Path.home() / ".cache" / "clapknn-bench")) / "scale"),
                    help="where the synthetic library is kept between runs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--encoder", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n-total", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    if "clap" in encoders and not args.checkpoint:
        ap.error("--encoders clap needs --checkpoint (write one with bench/make_random_checkpoint.py)")
    n_total = max(sizes) + 20  # the last 20 tracks are the labelled examples, never tagged
    work = Path(args.workdir) / f"{args.seconds:g}s"
    work.mkdir(parents=True, exist_ok=True)
    from synth import make_library

    t = time.perf_counter()
    make_library(work / "library", n_total, seconds=args.seconds)
    print(f"library: {n_total} tracks of {args.seconds:g} s in {work / 'library'} (ready in {time.perf_counter() - t:.0f} s); "
          f"{args.snippet_seconds:g}-s snippets, workers {args.workers}, cache off", flush=True)
    rows = []
    for enc in encoders:
        for n in sizes:
            cmd = [sys.executable, __file__, "--child", "--encoder", enc, "--n", str(n), "--n-total", str(n_total),
                   "--seconds", str(args.seconds), "--snippet-seconds", str(args.snippet_seconds),
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--workdir", str(work)]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            if n == sizes[0]:
                print(f"  {enc}: {row['identity']}", flush=True)
            print(f"  {enc:>8} {n:>6} tracks: {row['seconds']:.1f} s, {n / row['seconds']:.1f} tracks/s, "
                  f"peak {row['peak_mb']:.0f} MB", flush=True)

    print(f"\n{'encoder':>8} {'tracks':>7} {'seconds':>9} {'tracks/s':>9} {'s/track vs smallest':>20} "
          f"{'RSS ready MB':>13} {'peak RSS MB':>12} {'worker peak MB':>15}")
    for enc in encoders:
        mine = [r for r in rows if r["encoder"] == enc]
        base = mine[0]["seconds"] / mine[0]["n"]
        for r in mine:
            per = r["seconds"] / r["n"]
            print(f"{enc:>8} {r['n']:>7} {r['seconds']:9.1f} {r['n'] / r['seconds']:9.2f} {per / base:20.2f} "
                  f"{r['rss_ready_mb']:13.0f} {r['peak_mb']:12.0f} {r['workers_peak_mb']:15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
