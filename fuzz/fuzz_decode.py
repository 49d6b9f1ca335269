"""Fuzz the audio loader for a bounded time: mutated wav/flac/ogg/mp3/aiff files must either decode
to sane audio or raise :class:`clapknn.errors.AudioError` -- never another exception, never hang,
never blow up memory.

Mutations (chosen by hypothesis, shrunk to a minimal input on failure): flipped bytes, truncation,
inserted or deleted runs, random bytes over the header, and 16/32-bit header fields forced to
extreme values (0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF), which is how corrupt headers claim 0 Hz, 2^32
frames or 65535 channels. Each input goes through ``decode.info``, ``decode.load`` (whole and a
window) and ``snippet.iter_file_snippets`` (whole-file and window-by-window paths).

Usage::

    python fuzz/fuzz_decode.py --seconds 60            # default: 60 s
    python fuzz/fuzz_decode.py --seconds 600 --save fuzz/found
    python fuzz/fuzz_decode.py --inputs 100 --seed 0   # a fixed set of inputs (as the tests run it)

Exit code 0 when no input broke the contract, 1 otherwise (each failure is printed, and saved
under ``--save`` when given). A per-input alarm (``--timeout``) turns a hang into a failure and an
address-space limit (``--memory-gb``) turns a runaway allocation into one.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

SR = 22050  # Hz, the features encoder's rate
EXTREMES = (0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


def seeds() -> dict[str, bytes]:
    """Small valid files of every format libsndfile reads (written in memory)."""
    import soundfile as sf

    t = np.arange(int(0.6 * SR)) / SR
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    specs = {
        "pcm16.wav": (mono, dict(format="WAV", subtype="PCM_16")),
        "u8.wav": (mono, dict(format="WAV", subtype="PCM_U8")),
        "float.wav": (stereo, dict(format="WAV", subtype="FLOAT")),
        "pcm24.aiff": (mono, dict(format="AIFF", subtype="PCM_24")),
        "stereo.flac": (stereo, dict(format="FLAC", subtype="PCM_16")),
        "vorbis.ogg": (mono, dict(format="OGG", subtype="VORBIS")),
        "layer3.mp3": (stereo, dict(format="MP3", subtype="MPEG_LAYER_III")),
    }
    out = {}
    for name, (data, kw) in specs.items():
        buf = io.BytesIO()
        sf.write(buf, data, SR, **kw)
        out[name] = buf.getvalue()
    return out


def mutations():
    from hypothesis import strategies as st

    pos = st.floats(0.0, 1.0)
    header_pos = st.integers(0, 96)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(1, 255)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), pos, st.integers(1, 256)),
        st.tuples(st.just("header"), header_pos, st.binary(min_size=1, max_size=32)),
        st.tuples(st.just("field32"), header_pos, st.sampled_from(EXTREMES)),
        st.tuples(st.just("field16"), header_pos, st.sampled_from(EXTREMES)),
    )


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind = op[0]
        at = min(int(op[1] * len(b)) if isinstance(op[1], float) else op[1], max(len(b) - 1, 0))
        if kind == "flip" and b:
            b[at] ^= op[2]
        elif kind == "truncate":
            del b[at:]
        elif kind == "insert":
            b[at:at] = op[2]
        elif kind == "delete":
            del b[at : at + op[2]]
        elif kind == "header":
            b[at : at + len(op[2])] = op[2]
        elif kind == "field32":
            b[at : at + 4] = (op[2] & 0xFFFFFFFF).to_bytes(4, "little")
        elif kind == "field16":
            b[at : at + 2] = (op[2] & 0xFFFF).to_bytes(2, "little")
    return bytes(b)


class Hang(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise Hang("no answer within the time limit")


def check(path: Path) -> str:
    """Run the loader over ``path``; return ``"ok"`` or the AudioError reason. Anything else raises."""
    from clapknn.audio import decode, signal, snippet
    from clapknn.errors import AudioError

    try:
        meta = decode.info(path)
        assert np.isfinite(meta.duration) and meta.duration >= 0 and meta.channels >= 1, meta
        lo, hi = signal.SAMPLE_RATE_RANGE
        assert lo <= meta.sample_rate <= hi, meta
        for kwargs in ({}, {"offset": 0.2, "duration": 0.25}):
            y = decode.load(path, sr=SR, **kwargs)
            assert y.ndim == 1 and y.dtype == np.float32, (y.shape, y.dtype)
            assert np.isfinite(y).all() and (y.size == 0 or np.abs(y).max() <= signal.MAX_PEAK)
            if "duration" in kwargs:
                assert y.size <= round(kwargs["duration"] * SR)
        for whole in (snippet.WHOLE_FILE_SECONDS, 0.0):  # whole-file and window-by-window paths
            keep, snippet.WHOLE_FILE_SECONDS = snippet.WHOLE_FILE_SECONDS, whole
            try:
                for start, end, audio in snippet.iter_file_snippets(path, SR, 0.25):
                    assert 0 <= start < end, (start, end)
                    assert audio is None or (audio.shape == (snippet.n_samples(0.25, SR),) and np.isfinite(audio).all())
            finally:
                snippet.WHOLE_FILE_SECONDS = keep
        return "ok"
    except AudioError as exc:
        text = str(exc)
        return text.split(": ", 1)[-1] if text.startswith(str(path)) else text


def run(seconds: float, timeout: int, save: Path | None, batch: int = 50, inputs: int | None = None,
        seed: int | None = None) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    corpus = seeds()
    names = sorted(corpus)
    outcomes: collections.Counter = collections.Counter()
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="clapknn-fuzz-"))
    signal.signal(signal.SIGALRM, _alarm)

    @settings(max_examples=batch, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(names), ops=st.lists(mutations(), min_size=1, max_size=4))
    def one(name, ops):
        data = mutate(corpus[name], ops)
        path = work / f"input{Path(name).suffix}"
        path.write_bytes(data)
        signal.alarm(timeout)
        try:
            outcome = check(path)
        finally:
            signal.alarm(0)
        outcomes[re.sub(r"\d[\d.e+]*", "N", outcome.split(" (")[0])] += 1  # group reasons by kind

    start, rounds = time.monotonic(), 0
    while (time.monotonic() - start < seconds) if inputs is None else (sum(outcomes.values()) < inputs):
        round_seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed + rounds
        try:
            hseed(round_seed)(one)()
        except Exception as exc:  # noqa: BLE001 - the contract was broken: report and keep fuzzing
            report = "".join(traceback.format_exception(exc))
            failures.append(report)
            print(report, file=sys.stderr)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                for p in work.iterdir():
                    (save / f"failure{len(failures)}{p.suffix}").write_bytes(p.read_bytes())
        rounds += 1
    n = sum(outcomes.values())
    print(f"fuzzed {n} inputs in {time.monotonic() - start:.0f} s ({rounds} rounds); {len(failures)} failure(s)")
    for outcome, count in outcomes.most_common(12):
        print(f"  {count:6d}  {outcome}")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    parser.add_argument("--timeout", type=int, default=20, help="seconds one input may take (default 20)")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit (default 4 GB)")
    parser.add_argument("--save", type=Path, help="folder to save inputs that broke the contract")
    parser.add_argument("--inputs", type=int, help="stop after this many inputs instead of after --seconds")
    parser.add_argument("--seed", type=int, help="seed the rounds (same seed, same inputs); default: random")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_gb > 0:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return run(args.seconds, args.timeout, args.save, inputs=args.inputs, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
