"""Benchmark: clapknn's CLAP embedding of a folder vs laion-clap's own pipeline.

Same files, same random weights (one checkpoint in the official layout), same run. Each side runs
in its own subprocess, so its peak memory is its own:

* ``laion-clap``: ``CLAP_Module.load_ckpt(ckpt)`` then ``get_audio_embedding_from_filelist(files)``
  (one call over the whole list, as its README shows: one random 10-s crop per file);
* ``clapknn``: ``ClapEncoder(ckpt)`` then :func:`clapknn.embedding.encode.embed_files` over the same files,
  every 10-s snippet of every file (decoding overlapped with inference), and once more with one
  snippet per file (the same amount of audio as laion-clap).

Both sides get one untimed warm-up file first (librosa/numba and oneDNN set-up costs), then the
timed pass. Peak RSS is reported for the timed pass alone (Linux VmHWM, reset just before it) and
for the whole process (model building and checkpoint loading included).

    python bench/bench_clap.py                        # 16 x 30-s files, HTSAT-base (the default model)
    python bench/bench_clap.py --amodel HTSAT-tiny --files 8
    python bench/bench_clap.py --checkpoint ckpt.pt   # use an existing checkpoint file

Random weights give the same speed as trained ones; the vectors mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SR_FILES = 44100  # Hz: what music files usually are, so both sides resample to 48 kHz


def synthesise(folder: Path, n: int, seconds: float, seed: int = 0) -> list[Path]:
    """``n`` stereo 44.1-kHz 16-bit wav files of music-like audio (chords, a beat, noise)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR_FILES)) / SR_FILES
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        chord = sum(np.sin(2 * np.pi * root * r * t + rng.uniform(0, 6)) for r in (1, 1.26, 1.5, 2))
        bpm = rng.uniform(70, 150)
        beat = np.exp(-12 * ((t * bpm / 60) % 1)) * rng.standard_normal(t.size)
        y = 0.15 * chord + 0.3 * beat + 0.01 * rng.standard_normal(t.size)
        y = 0.8 * y / np.abs(y).max()
        stereo = np.stack([y, np.roll(y, 17)], axis=1).astype(np.float32)
        path = folder / f"track{i:02d}.wav"
        sf.write(path, stereo, SR_FILES, subtype="PCM_16")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# Workers (one per subprocess)
# ------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM (Linux >= 4.0) so the next peak is the timed pass's own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(side: str, ckpt: str, files: list[str], amodel: str, threads: int, batch_size: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if side == "laion":
        import contextlib
        import io

        from clapknn.encoders.clap.laion import _import_laion_clap, _laion_guard
        from clapknn.encoders.clap.laion import roberta_model as _roberta_model

        lc = _import_laion_clap()  # offline import; laion-clap's code runs unchanged from here on
        with _laion_guard(_roberta_model):
            model = lc.CLAP_Module(enable_fusion=False, amodel=amodel, device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):
            model.load_ckpt(ckpt, verbose=False)

        def run(paths):
            return len(model.get_audio_embedding_from_filelist(paths))

        passes = {"laion-clap get_audio_embedding_from_filelist": lambda: run(files)}
    else:
        from clapknn.embedding.encode import embed_files
        from clapknn.encoders.clap import ClapEncoder

        enc = ClapEncoder(ckpt, device="cpu", threads=threads, batch_size=batch_size)

        def run(paths, hop=None):
            res = embed_files(paths, enc, snippet_seconds=10.0, hop_seconds=hop, batch_size=batch_size, hashes=False)
            if len(res.failures):
                raise RuntimeError(f"failures: {res.failures}")
            return len(res.vectors)

        passes = {
            "clapknn embed_files, all snippets": lambda: run(files),
            "clapknn embed_files, 1 snippet/file": lambda: run(files, hop=1e6),
        }
    setup = time.perf_counter() - t0
    run(files[:1])  # warm-up
    # Peak so far (model building, checkpoint loading, warm-up). Read before any VmHWM reset:
    # resetting VmHWM resets getrusage's ru_maxrss too.
    setup_peak_kb = _status_kb("VmHWM")
    out = {"side": side, "setup_s": setup, "threads": torch.get_num_threads(), "passes": [],
           "setup_peak_rss_mb": setup_peak_kb / 1024}
    for name, fn in passes.items():
        import gc

        gc.collect()
        base_kb = _status_kb("VmRSS")
        reset = _reset_peak()
        t = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t
        out["passes"].append({
            "name": name, "snippets": n, "seconds": dt, "snippets_per_s": n / dt,
            "rss_before_mb": base_kb / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024 if reset else None,
        })
    peaks = [p["peak_rss_mb"] for p in out["passes"] if p["peak_rss_mb"] is not None]
    out["process_peak_rss_mb"] = max([out["setup_peak_rss_mb"], *peaks])
    return out


def _spawn(side, ckpt, files, args) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", side, "--checkpoint", str(ckpt), "--amodel", args.amodel,
        "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--files-list", json.dumps([str(f) for f in files]),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("HF_HUB_OFFLINE", "1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="clapknn CLAP embedding vs laion-clap's get_audio_embedding_from_filelist")
    p.add_argument("--files", type=int, default=16, help="number of synthesised files (default 16)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each file (default 30 s)")
    p.add_argument("--amodel", default="HTSAT-base", choices=["HTSAT-tiny", "HTSAT-base"],
                   help="architecture of the random checkpoint (default HTSAT-base, as the default music model)")
    p.add_argument("--checkpoint", help="existing checkpoint file to use instead of writing a random one")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on both sides")
    p.add_argument("--batch-size", type=int, default=4, help="clapknn snippets per forward pass (default 4)")
    p.add_argument("--repeats", type=int, default=1, help="alternate laion/clapknn runs this many times; best time kept")
    p.add_argument("--workdir", help="folder for the files and checkpoint (default: a temporary one)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", choices=["laion", "clapknn"], help=argparse.SUPPRESS)
    p.add_argument("--files-list", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        sys.path.insert(0, str(ROOT))
        res = worker(args.worker, args.checkpoint, json.loads(args.files_list), args.amodel, args.threads, args.batch_size)
        print(json.dumps(res))
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="clapknn-bench-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        files = synthesise(work / "audio", args.files, args.seconds)
        if args.checkpoint:
            ckpt = Path(args.checkpoint)
        else:
            sys.path.insert(0, str(ROOT / "bench"))
            from make_random_checkpoint import write_random_checkpoint

            ckpt = work / f"random-{args.amodel}.pt"
            if not ckpt.exists():
                write_random_checkpoint(ckpt, amodel=args.amodel, seed=0)
        print(f"{len(files)} files x {args.seconds:g} s (44.1 kHz stereo wav), checkpoint {ckpt.name} "
              f"({args.amodel}), {args.threads} thread(s), clapknn batch {args.batch_size}", flush=True)
        runs: dict[str, list[dict]] = {}
        for r in range(args.repeats):
            for side in ("laion", "clapknn"):
                res = _spawn(side, ckpt, files, args)
                for ps in res["passes"]:
                    ps.update(setup_s=res["setup_s"], process_peak_rss_mb=res["process_peak_rss_mb"])
                    runs.setdefault(ps["name"], []).append(ps)
                    print(f"  run {r + 1} {ps['name']}: {ps['snippets']} snippets in {ps['seconds']:.1f} s "
                          f"= {ps['snippets_per_s']:.2f}/s", flush=True)
        best = {name: max(rs, key=lambda x: x["snippets_per_s"]) for name, rs in runs.items()}
        print()
        print(f"{'pipeline':<48} {'snippets':>8} {'time s':>7} {'snip/s':>7} {'peak RSS MB':>11} {'process peak':>12}")
        for name, b in best.items():
            peak = f"{b['peak_rss_mb']:.0f}" if b["peak_rss_mb"] is not None else "n/a"
            print(f"{name:<48} {b['snippets']:>8} {b['seconds']:>7.1f} {b['snippets_per_s']:>7.2f} {peak:>11} "
                  f"{b['process_peak_rss_mb']:>12.0f}")
        names = list(best)
        laion = best[names[0]]["snippets_per_s"]
        print()
        for name in names[1:]:
            print(f"ratio {name} / laion-clap: {best[name]['snippets_per_s'] / laion:.2f}x snippets/s")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "best": best, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
