"""Synthetic music-like tracks for the scale benchmarks (no recordings, no network).

Each track is a short loop of a chord (three harmonic tones) over a pulsing kick-like thump and a
little noise; root, tempo, loudness, brightness and noise level are drawn per track from a seeded
generator, so a library of any size is reproducible and no two tracks are identical. Tracks are
written as 16-bit WAV at 44.1 kHz by default, so every encoder resamples, as it would on a real
library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["synth_track", "make_library"]


def synth_track(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One track of ``seconds`` at ``sr`` Hz, float32 in [-1, 1]."""
    n = int(seconds * sr)
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    root = 55.0 * 2 ** (rng.integers(0, 36) / 12)
    third = 2 ** ((3 if rng.random() < 0.5 else 4) / 12)
    bright = rng.uniform(0.2, 0.9)
    y = np.zeros(n, dtype=np.float32)
    for ratio in (1.0, third, 1.5):
        f = root * ratio
        for h in range(1, 4):
            if f * h < sr / 2:
                y += np.float32(bright ** (h - 1) / 3) * np.sin(np.float32(2 * np.pi * f * h) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    bpm = rng.uniform(60, 180)
    phase = (t * np.float32(bpm / 60.0)) % np.float32(1.0)
    y *= 0.6 + 0.4 * np.exp(-6 * phase)
    y += 0.8 * np.exp(-30 * phase) * np.sin(np.float32(2 * np.pi * 60) * t)  # kick
    y += np.float32(rng.uniform(0.002, 0.05)) * rng.standard_normal(n, dtype=np.float32)
    y *= rng.uniform(0.1, 0.5) / max(np.max(np.abs(y)), 1e-9)
    return y.astype(np.float32)


def make_library(root: str | Path, n: int, *, seconds: float = 3.0, sr: int = 44100, seed: int = 0) -> list[Path]:
    """Write ``n`` tracks under ``root`` (100 per sub-folder) unless they are already there.

    Returns the paths, sorted. The same ``(n, seconds, sr, seed)`` always gives the same bytes.
    """
    import soundfile as sf

    root = Path(root)
    paths = [root / f"{i // 100:04d}" / f"track_{i:06d}.wav" for i in range(n)]
    for i, p in enumerate(paths):
        if p.exists():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, i])
        tmp = p.with_name(f".{p.name}.tmp.wav")
        sf.write(str(tmp), synth_track(seconds, sr, rng), sr, subtype="PCM_16")
        tmp.replace(p)
    return paths
