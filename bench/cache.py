"""Benchmark the embedding cache: first build vs re-build of an unchanged (then a slightly changed) set.

A labelled set of synthetic tracks (see ``synth.py``; two tags, alternating) is built into an index
three times with the same embedding cache:

1. cold: every file is hashed, decoded and encoded (and the cache filled);
2. warm: nothing changed, so every file is a cache hit (one ``stat`` + one memo lookup + one entry
   read per file): no decoding, no encoding;
3. after rewriting ``--change`` files with new audio: only those are decoded and encoded;
4. after writing tags into ten times as many other files (as ``clapknn tag --write`` does): their
   bytes changed but not their audio, so nothing is decoded or encoded.

Then ``Tagger.tag`` over the same files, cold and warm (tagging uses the cache the same way).
Every build's vectors are checked to be identical to the cold build's for the unchanged files.

Usage::

    python bench/cache.py                       # 1,000 tracks of 3 s, features encoder (~2 min on 2 cores)
    python bench/cache.py --n 200 --seconds 10  # another shape
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="tracks (default 1000)")
    ap.add_argument("--seconds", type=float, default=3.0, help="track length (default 3 s)")
    ap.add_argument("--snippet-seconds", type=float, default=3.0, help="snippet length (default 3 s)")
    ap.add_argument("--change", type=int, default=10, help="files rewritten before the third build (default 10)")
    ap.add_argument("--workdir", help="where to write tracks, cache and indexes (default: a temporary folder)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from synth import make_library, synth_track

    from clapknn import Tagger, build_index
    from clapknn.embedding.cache import EmbeddingCache

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="clapknn-cache-bench-"))
    lib = work / "library"
    t = time.perf_counter()
    paths = make_library(lib, args.n, seconds=args.seconds)
    print(f"library: {args.n} tracks of {args.seconds:g} s (44.1 kHz wav) in {lib} ({time.perf_counter() - t:.1f} s to render)")
    labels = lib / "labels.csv"
    labels.write_text("path,tags\n" + "".join(f"{p.relative_to(lib)},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(paths)))
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = EmbeddingCache(cache_dir)

    def build(name: str):
        misses = cache.misses
        t0 = time.perf_counter()
        index = build_index(labels, work / f"index-{name}", snippet_seconds=args.snippet_seconds, cache=cache)
        return index, time.perf_counter() - t0, cache.misses - misses

    rows = []
    cold, t_cold, n_cold = build("cold")
    rows.append(("build, cold cache", t_cold, n_cold, 1.0))
    warm, t_warm, n_warm = build("warm")
    rows.append(("build, unchanged set", t_warm, n_warm, t_cold / t_warm))
    assert np.array_equal(cold.vectors, warm.vectors), "warm build differs from the cold one"

    rng = np.random.default_rng(123)
    changed = sorted(rng.choice(len(paths), size=min(args.change, len(paths)), replace=False).tolist())
    import soundfile as sf

    for i in changed:
        new = synth_track(args.seconds, 44100, np.random.default_rng([time.time_ns(), i]))  # new bytes every run
        sf.write(str(paths[i]), new, 44100, subtype="PCM_16")
    part, t_part, n_part = build("changed")
    rows.append((f"build, {len(changed)} files changed", t_part, n_part, t_cold / t_part))
    same = ~part.metadata["path"].isin({str(paths[i]) for i in changed}).to_numpy()
    assert np.array_equal(part.vectors[same], cold.vectors[same]), "unchanged files got other vectors"
    assert n_warm == 0 and n_part == len(changed), (n_warm, n_part)

    # tags written into files (what `clapknn tag --write` does): new bytes, same audio
    from clapknn.players import write_tags

    tagged = [i for i in range(len(paths)) if i not in set(changed)][: max(args.change, 1) * 10]
    for i in tagged:
        assert write_tags(paths[i], ["bench"]).status == "written"
    _, t_tags, n_tags = build("tags-written")
    rows.append((f"build, tags written into {len(tagged)}", t_tags, n_tags, t_cold / t_tags))
    assert n_tags == 0, n_tags

    tagger = Tagger(part)
    shutil.rmtree(work / "tag-cache", ignore_errors=True)
    tag_cache = EmbeddingCache(work / "tag-cache")  # its own folder, so the first run is really cold
    t0 = time.perf_counter()
    tagger.tag(lib, cache=tag_cache)
    t_tag_cold, n_tag_cold = time.perf_counter() - t0, tag_cache.misses
    t0 = time.perf_counter()
    tagger.tag(lib, cache=tag_cache)
    t_tag_warm, n_tag_warm = time.perf_counter() - t0, tag_cache.misses - n_tag_cold
    rows.append(("tag, cold cache", t_tag_cold, n_tag_cold, 1.0))
    rows.append(("tag, unchanged set", t_tag_warm, n_tag_warm, t_tag_cold / t_tag_warm))

    stats = cache.stats()
    print(f"\n{'run':<28} {'seconds':>9} {'embedded':>9} {'speed-up':>9}")
    for name, sec, enc, speed in rows:
        print(f"{name:<28} {sec:9.2f} {enc:9d} {speed:8.1f}x")
    print(f"\ncache: {stats['entries']} entries, {stats['bytes'] / 1e6:.1f} MB in {cache_dir}")
    speedup = t_cold / t_warm
    print(f"re-build of an unchanged {args.n}-file set: {speedup:.0f}x faster than the first build "
          f"(target >= 50x: {'met' if speedup >= 50 else 'NOT met'})")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
