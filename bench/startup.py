"""Benchmark start-up time and streaming memory: what the test suite checks only for correctness.

Measured, each in fresh processes, and printed beside a baseline measured in the same run (so the
figures compare across machines and loads):

1. **import**: ``import clapknn; from clapknn.cli import build_parser; build_parser()``, against a
   bare interpreter start (``python -c pass``); the ratio is the cost of the package's import;
2. **CLI start**: ``python -m clapknn --help``, against the same bare start;
3. **streaming memory**: peak RSS growth while a long file (``--hours``, 2 by default, past
   ``WHOLE_FILE_SECONDS``) is cut into snippets and embedded, against the process's own RSS after
   a warm-up (imports, threads and buffers counted there), and against the size its decoded audio
   would take at 22,050 Hz;
4. **index start-up**: ``clapknn tag FILE --index INDEX`` for one short file with an index of
   ``--big`` example snippets (40,000 by default) against one of ``--small`` (100), both built
   here with the features encoder (real feature vectors of synthetic tones, repeated with noise,
   8 snippets a file, 4 tags), plus the big index without its saved vote (as indexes were saved
   before the vote was: fitted at every start). The ratio big/small is what the saved vote buys:
   near 1 when tagging starts without fitting.

Expected: import and CLI start a small multiple of the bare start (no heavy library is imported
for ``--help``; ``tests/test_cli.py`` checks which modules are imported); RSS growth a few
snippets' worth, a small fraction of the decoded size.

Usage::

    python bench/startup.py                 # 7 repeats (the median is reported), a 2-hour file
    python bench/startup.py --repeats 15 --hours 4
    python bench/startup.py --only index --big 40000 --small 100
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
from clapknn.embedding.encode import embed_files
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


_INDEX_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd, soundfile as sf
from clapknn.embedding.encode import embed_files
from clapknn.encoders import get_encoder
from clapknn.index import Index
from clapknn.tagging.build import fit_vote

root, sizes = Path(sys.argv[1]), [int(n) for n in sys.argv[2:]]
sr, enc = 22050, get_encoder("features")
files, tags = [], []
for t, (freq, bpm) in enumerate([(110, 60), (220, 90), (440, 120), (880, 150)]):
    for i in range(3):
        tt = np.arange(int(12 * sr)) / sr
        y = np.sin(2 * np.pi * freq * (1 + 0.02 * i) * tt) * np.exp(-8 * ((tt * bpm / 60) % 1))
        y = 0.3 * y / np.abs(y).max() + 0.005 * np.random.default_rng(i).standard_normal(tt.size)
        f = root / f"src_{t}_{i}.wav"
        sf.write(str(f), y.astype(np.float32), sr)
        files.append(f)
        tags.append(f"tag{t}")
sf.write(str(root / "query.wav"), sf.read(str(files[4]))[0][: 6 * sr], sr)
emb = embed_files(files, enc, snippet_seconds=2.0, hashes=False)
base, base_tags = emb.vectors, [tags[i] for i in emb.snippets["file"]]
rng = np.random.default_rng(0)
spread = base.std(axis=0) + 1e-6
for n in sizes:
    pick = np.arange(n) % len(base)
    vectors = base[pick] + 0.3 * spread * rng.standard_normal((n, base.shape[1])).astype(np.float32)
    meta = pd.DataFrame({"path": [f"/examples/file_{i // 8}.wav" for i in range(n)], "start": 2.0 * (np.arange(n) % 8),
                         "end": 2.0 * (np.arange(n) % 8) + 2.0, "tags": [(base_tags[j],) for j in pick],
                         "sha256": "", "kind": "audio", "group": ""})
    index = Index.from_arrays(vectors, meta, encoder=enc.identity(), snippet_seconds=2.0, hop_seconds=2.0, encoder_object=enc)
    t0 = time.perf_counter()
    fit_vote(index)
    fit_s = time.perf_counter() - t0
    index.save(root / f"index-{n}")
    if n == max(sizes):
        index.vote = None  # as saved before the vote was: fitted at every start
        index.save(root / f"index-{n}-unsaved-vote")
    print(json.dumps({"n": n, "fit_seconds": fit_s}))
"""


def _index_startup(py: str, env: dict, big: int, small: int, repeats: int) -> None:
    """Section 4: tagging one file with a big and a small index (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="clapknn-bench-index-") as tmp:
        root = Path(tmp)
        made = subprocess.run([py, "-c", _INDEX_SCRIPT, tmp, str(small), str(big)], capture_output=True, text=True,
                              env=env, check=True)
        fits = {r["n"]: r["fit_seconds"] for r in map(__import__("json").loads, made.stdout.split("\n")[:-1])}
        query = str(root / "query.wav")

        def tag(index: Path, runs: int) -> float:
            return _median([py, "-m", "clapknn", "tag", query, "--index", str(index), "-q"], env, runs)

        t_small = tag(root / f"index-{small}", repeats)
        t_big = tag(root / f"index-{big}", repeats)
        t_unsaved = statistics.median(_seconds([py, "-m", "clapknn", "tag", query, "--index",
                                                str(root / f"index-{big}-unsaved-vote"), "-q"], env) for _ in range(1))
    print(f"\nindex start-up: tag one 6-s file (fresh process, median of {repeats})")
    print(f"  index of {small:>6,} snippets   {t_small:7.2f} s   (vote fitted once at build: {fits[small]:.2f} s)")
    print(f"  index of {big:>6,} snippets   {t_big:7.2f} s   ({t_big / t_small:.2f}x the small index; "
          f"vote fitted once at build: {fits[big]:.1f} s)")
    print(f"  same, vote not saved      {t_unsaved:7.2f} s   ({t_unsaved / t_small:.2f}x the small index: fitted at start, one run)")


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
    parser.add_argument("--big", type=int, default=40_000, help="example snippets of the big index (default 40,000)")
    parser.add_argument("--small", type=int, default=100, help="example snippets of the small index (default 100)")
    parser.add_argument("--index-repeats", type=int, default=3, help="runs of each tag command (default 3; the median is kept)")
    parser.add_argument("--only", choices=["index"], help="run only the index start-up section")
    args = parser.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    py = sys.executable
    if args.only == "index":
        _index_startup(py, env, args.big, args.small, args.index_repeats)
        return 0

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
    _index_startup(py, env, args.big, args.small, args.index_repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
