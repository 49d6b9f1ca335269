"""Shared fixtures: small synthesised audio written at test time (no network, no real recordings)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the CLI caches embeddings by default: tests use the cache only where they ask for it (a tmp folder)
os.environ.setdefault("CLAPKNN_EMBEDDING_CACHE", "off")

SR = 22050  # Hz


def _import_anyio_now() -> None:
    """Import every part of anyio (starlette's test client and the web app's server run on it) here,
    in the main thread. anyio imports its parts on first use, which can be in a server thread; under
    pytest each such import of a plugin's package is an assertion rewrite (``ast.parse``), and
    CPython 3.11's ``ast.parse`` is not safe in two threads at once: on a loaded machine a web app
    test failed with "SystemError: AST constructor recursion depth mismatch" while reading a static
    file (``anyio.open_file``)."""
    try:
        import anyio
        import anyio._backends._asyncio  # noqa: F401  (the event loop backend, imported on first run)
    except ImportError:  # no anyio installed: nothing to import
        return
    for name in dir(anyio):
        getattr(anyio, name)


_import_anyio_now()


def tone(freq: float, seconds: float, sr: int = SR, *, amp: float = 0.3, seed: int = 0, pulse_bpm: float | None = None) -> np.ndarray:
    """A harmonic tone (plus a little noise); with ``pulse_bpm`` its loudness pulses at that tempo."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * freq * h * t) / h for h in (1, 2, 3))
    if pulse_bpm:
        phase = (t * pulse_bpm / 60.0) % 1.0
        y = y * np.exp(-8 * phase)
    y = amp * y / np.max(np.abs(y)) + 0.005 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def write_audio(path: Path, y: np.ndarray, sr: int = SR, **kwargs) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, **kwargs)
    return path


# Two clearly different "moods": low slow pulses vs high fast pulses.
STYLES = {
    "calm": dict(freq=110.0, pulse_bpm=60.0),
    "energetic": dict(freq=880.0, pulse_bpm=150.0),
}


def make_examples(root: Path, *, per_tag: int = 3, seconds: float = 6.0, sr: int = SR) -> Path:
    """``root/<tag>/<tag>_<i>.wav`` for each style, slightly detuned per file."""
    for tag, style in STYLES.items():
        for i in range(per_tag):
            y = tone(style["freq"] * (1 + 0.02 * i), seconds, sr, seed=i, pulse_bpm=style["pulse_bpm"])
            write_audio(root / tag / f"{tag}_{i}.wav", y, sr)
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def examples_dir(tmp_path: Path) -> Path:
    """A folder-per-tag example set of synthesised audio (2 tags × 3 files, 6 s each)."""
    return make_examples(tmp_path / "examples")


@pytest.fixture(scope="session")
def built_index(tmp_path_factory):
    """An index built once per session from the synthesised examples with 2-s snippets."""
    from clapknn import build_index

    root = tmp_path_factory.mktemp("session")
    examples = make_examples(root / "examples")
    index = build_index(examples, root / "index", snippet_seconds=2.0)
    return index, root
