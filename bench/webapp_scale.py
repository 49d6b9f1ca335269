"""``clapknn serve`` at library scale: retag after a label, one table page, the queue.

The library's vectors are made up (the examples' own vectors plus noise, 3 snippets a track), so
the measurement is of the app and the vote, not of decoding; the index is built from synthesised
examples with the features encoder. Each figure is the median of ``--repeat`` runs, at 100 tracks
(the baseline of the same run) and at ``--tracks``.

    python bench/webapp_scale.py --tracks 10000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(index_dir: Path, n_tracks: int, repeat: int) -> dict[str, float]:
    import pandas as pd
    from starlette.testclient import TestClient

    from clapknn.tagging.tagger import Tagger
    from clapknn.webapp.app import create_app
    from clapknn.webapp.session import Curator, _Library

    rng = np.random.default_rng(0)
    curator = Curator(index_dir, index_dir.parent, cache=False)
    tagger = Tagger(index_dir)
    base = tagger.index.vectors
    per = 3
    files = [str(index_dir.parent / f"album{i // 100:03d}" / f"track{i:05d}.wav") for i in range(n_tracks)]
    pick = rng.integers(0, len(base), size=n_tracks * per)
    vectors = (base[pick] + 0.3 * rng.standard_normal((n_tracks * per, base.shape[1]))).astype(np.float32)
    ids = np.repeat(np.arange(n_tracks), per)
    snippets = pd.DataFrame({"file": ids, "path": [files[i] for i in ids], "start": np.tile([0.0, 10.0, 20.0], n_tracks),
                             "end": np.tile([10.0, 20.0, 30.0], n_tracks)})
    track_vectors = vectors.reshape(n_tracks, per, -1).mean(axis=1)
    curator.lib = _Library(files, vectors, snippets, track_vectors, [], {f: f for f in files}, set(files))
    curator.state = "ready"
    curator._use(tagger)
    client = TestClient(create_app(curator, allowed_hosts=["testserver"]))
    return {
        "retag (all tracks, from vectors)": _median(lambda: curator._retag_from(tagger.index), repeat),
        "table page (sorted by score)": _median(lambda: client.get("/api/tracks", params={"sort": "score", "desc": "1"}).raise_for_status(), repeat),
        "table page (search + tag filter)": _median(lambda: client.get("/api/tracks", params={"q": "track0", "tag": tagger.tags[0]}).raise_for_status(), repeat),
        "label-next queue (10)": _median(lambda: client.get("/api/queue").raise_for_status(), repeat),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import make_examples

    from clapknn import build_index

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_index(make_examples(root / "examples", per_tag=5, seconds=12.0), root / "index")
        small = measure(root / "index", 100, args.repeat)
        big = measure(root / "index", args.tracks, args.repeat)
    print(f"| step | 100 tracks | {args.tracks:,} tracks | ratio |")
    print("|---|---:|---:|---:|")
    for key in small:
        print(f"| {key} | {1000 * small[key]:.0f} ms | {1000 * big[key]:.0f} ms | {big[key] / small[key]:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
