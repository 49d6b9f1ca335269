"""How many snippets per track does tagging need? Agreement and accuracy for N = 1, 2, 3, 4, 6, 8, all.

On the suite's EMOPIA set (``bench/suite_sets.py``: piano clips of 20-70 s, four mood quadrants,
grouped by song, split dev / heldout by song), with the default encoder and vote:

- **clips**: every EMOPIA clip is a query track (2-7 snippets of 10 s);
- **songs**: a song's clips (when they share one quadrant and give at least 80 s) concatenated in
  order, at most 30 windows: one piece, as a real track is;
- **long tracks**: clips of one quadrant from distinct songs of one side of the split, cut to whole
  10-s windows and concatenated into 3-5 minute tracks (18-30 windows). A concatenated track's
  windows are exactly its clips' windows (same samples, no resampling: the clips are at the
  encoder's rate), so each clip is embedded once and the long tracks reuse those vectors.
  Each clip is dealt into up to ``--passes`` long tracks (different shuffles).

A track's N snippets are the windows :func:`clapknn.audio.snippet.sample_indices` picks from its full
list, as ``clapknn tag --snippets N`` does. Reported per N: **agreement** (the track's top tag equals
its top tag with every snippet) and **accuracy** (top tag = the label).

Protocol: on **dev**, the songs are split in two halves (seeded); each half is tagged with an index
of the other half's clips (every snippet, as ``build`` keeps them), results pooled. **heldout** is
tagged with an index of all dev clips, and is reported only. The default N is chosen on dev by the
rule printed below and written in ``clapknn/options.py``. (The rule was first applied to the
multi-song long tracks, where no N <= 8 meets it; it is now applied to the single-song tracks and
the clips, on dev figures: see docs/scale.md.)

The set must already be in the bench cache (``python bench/suite.py`` makes it); this script never
renders it.

    python bench/snippet_count.py [--passes 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NS = (1, 2, 3, 4, 6, 8, None)  # None: every snippet
LONG_MIN, LONG_MAX = 18, 30  # windows of a long track (3-5 minutes of 10-s snippets)


def _rows() -> list[dict]:
    sys.path.insert(0, str(HERE))
    import suite_sets

    folder = suite_sets.cache_root() / f"emopia-{suite_sets.set_version('emopia')}"
    if not (folder / "labels.csv").exists():
        raise SystemExit(f"the EMOPIA suite set is not in {folder}; make it first (python bench/suite.py)")
    return suite_sets.load_set("emopia")


def embed_clips(rows, enc, length: float) -> list[dict]:
    """Per clip: vectors of every window (module rules) and which of them lie on the 10-s grid."""
    from clapknn.audio import decode
    from clapknn.audio.snippet import cut, n_samples

    size = n_samples(length, enc.sample_rate)
    out = []
    for r in rows:
        y = decode.load(r["path"], sr=enc.sample_rate)
        batch = cut(y, enc.sample_rate, length, pad=enc.pad)
        if not len(batch.audio):  # silent throughout: no track to tag
            continue
        vecs = np.concatenate([enc.embed(batch.audio[i : i + 16]) for i in range(0, len(batch.audio), 16)])
        vecs = enc.track_context(vecs)  # as the embedding engine finishes a file's vectors
        grid = np.array([abs(s / length - round(s / length)) < 1e-9 and round(s * enc.sample_rate) + size <= y.size
                         for s in batch.starts])
        out.append({**r, "vectors": vecs, "starts": batch.starts, "ends": batch.ends, "grid": grid})
    return out


def song_tracks(clips: list[dict], min_windows: int = 8) -> list[dict]:
    """One track per song: its clips' grid windows in clip order, for songs whose clips share one
    quadrant and give at least ``min_windows`` windows (80 s): closer to a real track than
    :func:`long_tracks`, whose windows come from several songs."""
    by_song: dict[str, list[dict]] = {}
    for c in sorted(clips, key=lambda c: c["path"]):
        if c["grid"].any():
            by_song.setdefault(c["group"], []).append(c)
    tracks = []
    for song, mine in sorted(by_song.items()):
        if len({c["tags"] for c in mine}) != 1:
            continue
        vecs = np.concatenate([c["vectors"][c["grid"]] for c in mine])
        if len(vecs) >= min_windows:
            tracks.append({"path": f"song:{song}", "tags": mine[0]["tags"], "vectors": vecs[:LONG_MAX]})
    return tracks


def long_tracks(clips: list[dict], passes: int, seed: int) -> list[dict]:
    """Concatenations of same-quadrant clips (distinct songs), LONG_MIN-LONG_MAX grid windows each."""
    rng = np.random.default_rng(seed)
    tracks = []
    for tag in sorted({c["tags"] for c in clips}):
        mine = [c for c in clips if c["tags"] == tag and c["grid"].any()]
        for p in range(passes):
            order = rng.permutation(len(mine))
            cur, songs = [], set()
            for i in order:
                c = mine[i]
                if c["group"] in songs:
                    continue
                cur.append(c)
                songs.add(c["group"])
                n = sum(int(x["grid"].sum()) for x in cur)
                if n >= LONG_MIN:
                    vecs = np.concatenate([x["vectors"][x["grid"]] for x in cur])[:LONG_MAX]
                    tracks.append({"path": f"long:{tag}:{p}:{len(tracks)}", "tags": tag, "vectors": vecs})
                    cur, songs = [], set()
    return tracks


def make_index(clips, enc, length):
    import pandas as pd

    from clapknn.index import Index

    meta = pd.DataFrame({
        "path": np.concatenate([[c["path"]] * len(c["vectors"]) for c in clips]),
        "start": np.concatenate([c["starts"] for c in clips]),
        "end": np.concatenate([c["ends"] for c in clips]),
        "tags": [(c["tags"],) for c in clips for _ in range(len(c["vectors"]))],
        "sha256": "", "kind": "audio",
        "group": np.concatenate([[c["group"]] * len(c["vectors"]) for c in clips]),
    })
    return Index.from_arrays(np.concatenate([c["vectors"] for c in clips]), meta, encoder=enc.identity(),
                             snippet_seconds=length, hop_seconds=length)


def tag_tops(tagger, tracks, n) -> list[str]:
    """Top tag per track from the snippets ``--snippets n`` would take."""
    import pandas as pd

    from clapknn.audio.snippet import sample_indices

    vecs, fid = [], []
    for i, t in enumerate(tracks):
        keep = sample_indices(len(t["vectors"]), n)
        vecs.append(t["vectors"][keep])
        fid += [i] * len(keep)
    snippets = pd.DataFrame({"file": fid, "path": [tracks[i]["path"] for i in fid], "start": 0.0, "end": 0.0})
    res = tagger.tag_vectors(np.concatenate(vecs), snippets, [t["path"] for t in tracks])
    return res.tracks["top"].tolist()


def evaluate(pairs, enc) -> dict:
    """``pairs``: (index clips, query tracks) whose results are pooled. Returns {kind: {N: (agree, acc)}}."""
    from clapknn import Tagger

    tops = {n: [] for n in NS}
    labels = []
    for index_clips, queries in pairs:
        tagger = Tagger(make_index(index_clips, enc, 10.0), encoder=enc)
        for n in NS:
            tops[n] += tag_tops(tagger, queries, n)
        labels += [q["tags"] for q in queries]
    labels = np.array(labels)
    full = np.array(tops[None])
    return {("all" if n is None else n): (float(np.mean(np.array(tops[n]) == full)), float(np.mean(np.array(tops[n]) == labels)))
            for n in NS} | {"_n": len(labels)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=3, help="long tracks each clip is dealt into (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the table here")
    ap.add_argument("--vectors", help="folder keeping the clips' vectors between runs (default /tmp)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from clapknn.encoders import get_encoder
    from clapknn.options import DEFAULT_ENCODER

    rows = _rows()
    enc = get_encoder(DEFAULT_ENCODER)
    t = time.perf_counter()
    import hashlib
    import pickle

    key = hashlib.sha256(json.dumps([enc.identity(), [r["path"] for r in rows]], sort_keys=True).encode()).hexdigest()[:16]
    store = Path(args.vectors or "/tmp") / f"clapknn-snippet-count-{key}.pkl"
    if store.exists():  # the clips' vectors from an earlier run with the same encoder and files
        clips = pickle.loads(store.read_bytes())
    else:
        clips = embed_clips(rows, enc, 10.0)
        store.write_bytes(pickle.dumps(clips))
    print(f"EMOPIA: {len(clips)} clips, {sum(len(c['vectors']) for c in clips)} snippets embedded in "
          f"{time.perf_counter() - t:.0f} s; encoder {enc.identity()}", flush=True)
    dev = [c for c in clips if c["split"] == "dev"]
    held = [c for c in clips if c["split"] == "heldout"]
    songs = sorted({c["group"] for c in dev})
    half = set(np.random.default_rng(args.seed).permutation(songs)[: len(songs) // 2].tolist())
    a = [c for c in dev if c["group"] in half]
    b = [c for c in dev if c["group"] not in half]
    results = {
        "dev clips": evaluate([(a, b), (b, a)], enc),
        "dev long": evaluate([(a, long_tracks(b, args.passes, args.seed)), (b, long_tracks(a, args.passes, args.seed))], enc),
        "dev songs": evaluate([(a, song_tracks(b)), (b, song_tracks(a))], enc),
        "heldout clips": evaluate([(dev, held)], enc),
        "heldout long": evaluate([(dev, long_tracks(held, args.passes, args.seed))], enc),
        "heldout songs": evaluate([(dev, song_tracks(held))], enc),
    }
    cols = [("all" if n is None else n) for n in NS]
    print(f"\n{'set':<15} {'tracks':>6} " + " ".join(f"{'N=' + str(c):>13}" for c in cols))
    print(f"{'':<15} {'':>6} " + " ".join(f"{'agree  acc':>13}" for _ in cols))
    for name, r in results.items():
        print(f"{name:<15} {r['_n']:>6} " + " ".join(f"{r[c][0]:>6.3f} {r[c][1]:>6.3f}" for c in cols))
    # the rule: the smallest N whose dev agreement with every snippet is at least 0.9 and whose dev
    # accuracy is within 0.02 of every snippet's, on single-song tracks and on clips. (First fixed on
    # the multi-song long tracks, where no N <= 8 meets it: each extra snippet there is another
    # song, which a real track is not; they are still reported.)
    def ok(n):
        ds, dc = results["dev songs"], results["dev clips"]
        return ds[n][0] >= 0.9 and ds[n][1] >= ds["all"][1] - 0.02 and dc[n][0] >= 0.9 and dc[n][1] >= dc["all"][1] - 0.02

    chosen = next((n for n in cols if n == "all" or ok(n)), "all")
    print(f"\nchosen on dev: N = {chosen} (smallest N with dev agreement >= 0.9 and dev accuracy within 0.02 of all, "
          "on songs and clips)")
    for name in ("heldout clips", "heldout long", "heldout songs"):
        r = results[name]
        print(f"  {name}: agreement {r[chosen][0]:.3f}, accuracy {r[chosen][1]:.3f} (all snippets: {r['all'][1]:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"chosen": chosen, "results": {k: {str(n): v for n, v in r.items()} for k, r in results.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
