"""Benchmark start-up time and streaming memory: what the test suite checks only for correctness.

Measured, each in fresh processes, and printed beside a baseline measured in the same run (so the
figures compare across machines and loads):

1. **import**: ``import clapknn; from clapknn.cli import build_parser; build_parser()``, against a
   bare interpreter start (``python -c pass``); the ratio is the cost of the package's import;
2. **CLI start**: ``python -m clapknn --help``, against the same bare start;
3. **streaming memory**: peak RSS growth while a long file (``--hours``, 2 by default, past
   ``WHOLE_FILE_SECONDS``) is cut into snippets and embedded, against the process's own RSS after
   a warm-up (imports, threads and buffers counted there), and against the size its decoded audio
   would take at 22,050 Hz.

Expected: import and CLI start a small multiple of the bare start (no heavy library is imported
for ``--help``; ``tests/test_cli.py`` checks which modules are imported); RSS growth a few
snippets' worth, a small fraction of the decoded size.

Usage::

    python bench/startup.py                 # 7 repeats (the median is reported), a 2-hour file
    python bench/startup.py --repeats 15 --hours 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MEMORY_SCRIPT = r"""
import resource, sys
import numpy as np, soundfile as sf
from clapknn import snippet
from clapknn.encode import embed_files
from clapknn.encoders.base import Encoder

class Mean(Encoder):
    name, sample_rate, dim = "mean", 22050, 4
    def embed(self, x):
        v = np.stack([x.mean(1), x.std(1), np.abs(x).max(1), np.ones(len(x))], 1)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

path, hours = sys.argv[1], float(sys.argv[2])
sr = 4000
with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:   # written in 1-minute chunks
    rng = np.random.default_rng(0)
    t = np.arange(60 * sr) / sr
    for i in range(int(hours * 60)):
        f.write((0.3 * np.sin(2 * np.pi * (200 + i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32))

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# warm up every code path (imports, threads, buffers) so that it counts in the baseline
warm = path + ".warm.wav"
sf.write(warm, np.zeros(30 * sr, np.float32) + 0.1, sr)
snippet.WHOLE_FILE_SECONDS, keep = 0.0, snippet.WHOLE_FILE_SECONDS
list(snippet.iter_file_snippets(warm, 22050, 10.0))
embed_files([warm], Mean(), snippet_seconds=10.0, hashes=True)
snippet.WHOLE_FILE_SECONDS = keep
base = rss_mb()
n = sum(1 for _ in snippet.iter_file_snippets(path, 22050, 10.0))
after_iter = rss_mb()
emb = embed_files([path], Mean(), snippet_seconds=10.0, hashes=True)
after_embed = rss_mb()
print(n, len(emb.vectors), base, after_iter, after_embed)
"""


def _seconds(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env=env)
    return time.perf_counter() - t


def _median(cmd: list[str], env: dict, repeats: int) -> float:
    _seconds(cmd, env)  # warm the file cache first
    return statistics.median(_seconds(cmd, env) for _ in range(repeats))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each start-up command (default 7; the median is kept)")
    parser.add_argument("--hours", type=float, default=2.0, help="length of the long file (default 2 h)")
    args = parser.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    py = sys.executable

    bare = _median([py, "-c", "pass"], env, args.repeats)
    imp = _median([py, "-c", "import clapknn; from clapknn.cli import build_parser; build_parser()"], env, args.repeats)
    cli = _median([py, "-m", "clapknn", "--help"], env, args.repeats)
    print(f"bare interpreter start   {bare * 1000:7.0f} ms")
    print(f"import + parser          {imp * 1000:7.0f} ms  ({imp / bare:4.1f}x bare; package import {max(imp - bare, 0) * 1000:.0f} ms)")
    print(f"clapknn --help           {cli * 1000:7.0f} ms  ({cli / bare:4.1f}x bare)")

    with tempfile.TemporaryDirectory(prefix="clapknn-bench-") as tmp:
        path = str(Path(tmp) / "long.wav")
        run = subprocess.run([py, "-c", _MEMORY_SCRIPT, path, str(args.hours)], capture_output=True, text=True,
                             env=env, check=True)
    n, n_vectors, base, after_iter, after_embed = run.stdout.split()
    base, after_iter, after_embed = float(base), float(after_iter), float(after_embed)
    whole_mb = args.hours * 3600 * 22050 * 4 / 2**20
    print(f"\nlong file: {args.hours:g} h, {n} snippets, {n_vectors} vectors; decoded at 22,050 Hz it would take {whole_mb:.0f} MB")
    print(f"peak RSS after warm-up   {base:7.0f} MB")
    for name, value in (("cutting snippets", after_iter), ("embedding", after_embed)):
        growth = value - base
        print(f"  + {name:<20} {growth:6.0f} MB  ({growth / base:.2f}x the warm RSS, {growth / whole_mb:.3f}x the decoded audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
