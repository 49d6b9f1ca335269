"""Benchmark library similarity search at a million tracks: build time, recall@10 and query latency.

Two synthetic sets of ``--n`` unit vectors of ``--dim`` dimensions (no audio is embedded: this
measures the index, not the encoder):

``clustered``
    A two-level hierarchy, as music is (genres, then styles, artists, albums): ``--parents`` random
    centres, ``--clusters`` centres scattered around them (spread ``--parent-sigma``), and the points
    scattered around those (``x = c + sigma * g / sqrt(dim)``, normalised; spread ``--sigma``). With
    the defaults a point's nearest neighbour has cosine ~0.55 and its 10th ~0.5, and neighbours
    come from several IVF lists, so the search depth matters. 1,000 held-out queries are drawn the
    same way and are *not* in the index.
``random``
    Uniform on the sphere: the worst case for any ANN index (no structure to exploit), kept for
    latency and to show where recall comes from.

For each set the library index is built the way ``clapknn index-library`` builds it
(:meth:`clapknn.library.LibraryIndex.from_vectors`: the kind chosen by size, the search depth tuned
until recall@10 on 200 library tracks reaches 0.95), then the depth is swept: recall@10 of the
held-out queries against exact search (``faiss.knn``), single-query latency (one query per call, p50
and p95) and batch throughput. Exact search (``IndexFlatIP``) latency is given for comparison, and,
with ``--hnsw-n``, an HNSW index over a subset (HNSW is what ``index-library`` uses up to 250,000
tracks; building it over a million vectors takes tens of minutes on two cores).

Usage::

    python bench/ann.py                           # 1M x 512, ~6 minutes and ~6 GB on 2 cores
    python bench/ann.py --n 200000 --hnsw-n 0     # a quick look
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kB


def clustered(n: int, d: int, centers: np.ndarray, sigma: float, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    import faiss

    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        out[a:b] = centers[rng.integers(0, len(centers), b - a)]
        out[a:b] += (sigma / np.sqrt(d)) * rng.standard_normal((b - a, d), dtype=np.float32)
        faiss.normalize_L2(out[a:b])
    return out


def uniform(n: int, d: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    import faiss

    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        out[a:b] = rng.standard_normal((b - a, d), dtype=np.float32)
        faiss.normalize_L2(out[a:b])
    return out


def latency(index, queries: np.ndarray, k: int, n_single: int) -> tuple[float, float, float]:
    """(p50 ms, p95 ms) of one-query searches, and queries/s of one batch search."""
    times = []
    for q in queries[:n_single]:
        t = time.perf_counter()
        index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.search(queries, k)
    qps = len(queries) / (time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3), qps


def run_set(name, data, queries, k, args, tracks_of):
    import faiss

    from clapknn.library import LibraryIndex
    from clapknn.ann import exact_knn, recall_at_k, set_depth

    print(f"\n== {name}: {len(data):,} x {data.shape[1]} ==", flush=True)
    t = time.perf_counter()
    _, truth = exact_knn(queries, data, k)
    t_exact_batch = time.perf_counter() - t
    flat = faiss.IndexFlatIP(data.shape[1])
    flat.add(data[: min(len(data), 10**9)])
    p50, p95, _ = latency(flat, queries[:10], k, 10)
    del flat
    print(f"exact search: IndexFlatIP {p50:.0f} ms/query (p95 {p95:.0f}); {len(queries)} queries as one blocked "
          f"numpy product: {t_exact_batch:.1f} s", flush=True)

    t = time.perf_counter()
    lib = LibraryIndex.from_vectors(
        data, tracks_of(len(data)), encoder={"name": "bench", "dim": data.shape[1], "sample_rate": 0},
        snippet_seconds=10.0, hop_seconds=10.0, kind=args.kind, target_recall=0.95,
    )
    t_build = time.perf_counter() - t
    m = lib.manifest
    print(
        f"built {m['kind']} {m['params']} in {t_build:.1f} s (of which index build {m['build_seconds']:.1f} s, "
        f"the rest recall tuning); recall@10 on 200 library tracks: {m['recall_at_10']:.3f}; peak RSS {peak_rss_gb():.1f} GB",
        flush=True,
    )
    depth_name = {"ivf": "nprobe", "hnsw": "efSearch"}.get(m["kind"])
    chosen = m["params"].get(depth_name) if depth_name else None
    steps = [chosen] if chosen is None else sorted({4, 8, 16, 32, 64, 128, chosen} if m["kind"] == "ivf" else {16, 32, 64, 128, 256, chosen})
    print(f"{'depth':>14} {'recall@10':>10} {'p50 ms':>8} {'p95 ms':>8} {'batch q/s':>10}")
    rows = []
    for step in steps:
        set_depth(lib.index, m["kind"], step)
        _, ids = lib.index.search(queries, k)
        rec = recall_at_k(ids, truth, k)
        p50, p95, qps = latency(lib.index, queries, k, args.single)
        label = f"{depth_name}={step}" if depth_name else "exact"
        mark = " (chosen)" if step == chosen and depth_name else ""
        print(f"{label:>14} {rec:10.3f} {p50:8.2f} {p95:8.2f} {qps:10.0f}{mark}", flush=True)
        rows.append((step, rec, p50, p95, qps))
    return lib, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=512, help="dimensions (default 512, CLAP's)")
    ap.add_argument("--parents", type=int, default=100, help="top-level centres of the clustered set (default 100)")
    ap.add_argument("--clusters", type=int, default=5000, help="second-level centres (default 5000)")
    ap.add_argument("--parent-sigma", type=float, default=1.0, help="spread of the centres around their parent (default 1.0)")
    ap.add_argument("--sigma", type=float, default=1.1, help="spread of the points around their centre (default 1.1)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries (default 1000)")
    ap.add_argument("--single", type=int, default=300, help="queries timed one at a time (default 300)")
    ap.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivf"], help="index kind (default: by size)")
    ap.add_argument("--hnsw-n", type=int, default=100_000, help="also an HNSW index over this many clustered vectors (0: skip)")
    ap.add_argument("--no-random", action="store_true", help="skip the uniform set")
    args = ap.parse_args(argv)
    import faiss
    import pandas as pd

    k = 10
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")

    def tracks_of(n):
        return pd.DataFrame({"path": np.arange(n).astype(str), "sha256": "", "duration": 0.0, "n_snippets": 1})

    parents = uniform(args.parents, args.dim, rng)
    centers = clustered(args.clusters, args.dim, parents, args.parent_sigma, rng)
    t = time.perf_counter()
    data = clustered(args.n, args.dim, centers, args.sigma, rng)
    queries = clustered(args.queries, args.dim, centers, args.sigma, np.random.default_rng(1))
    print(f"generated the clustered set in {time.perf_counter() - t:.1f} s", flush=True)
    lib, _ = run_set("clustered", data, queries, k, args, tracks_of)
    del lib

    if args.hnsw_n:
        sub = np.ascontiguousarray(data[: args.hnsw_n])
        del data
        a = argparse.Namespace(**{**vars(args), "kind": "hnsw"})
        lib, _ = run_set(f"clustered subset, HNSW", sub, queries, k, a, tracks_of)
        del lib, sub
    else:
        del data

    if not args.no_random:
        data = uniform(args.n, args.dim, np.random.default_rng(2))
        queries = uniform(args.queries, args.dim, np.random.default_rng(3))
        lib, _ = run_set("random (uniform on the sphere)", data, queries, k, args, tracks_of)
        del lib, data
    print(f"\npeak RSS {peak_rss_gb():.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
