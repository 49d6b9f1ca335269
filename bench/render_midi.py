"""Render MIDI files to mono WAV offline with a General MIDI soundfont.

Used by the benchmarks to turn scores with known key and tempo into audio. Two back ends:

- ``tinysoundfont`` (pip; install it with ``--no-deps``: its optional ``pyaudio`` dependency does not
  build here) with the ``TimGM6mb.sf2`` General MIDI soundfont that ships inside ``pretty_midi``.
- the ``fluidsynth`` command line (Debian: ``apt-get install fluidsynth fluid-soundfont-gm``).

``render_midi(midi_path, wav_path, sr=22050)`` picks the first that is available; ``synth=`` names one.

Usage: ``python bench/render_midi.py song.mid song.wav [--sr 22050] [--soundfont x.sf2] [--synth fluidsynth]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["render_midi", "default_soundfont", "fluidsynth_soundfont", "SYNTHS"]

#: Back ends, in the order ``synth=None`` tries them.
SYNTHS = ("tinysoundfont", "fluidsynth")

TAIL = 1.5  # seconds of release rendered after the last note-off
_FLUID_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)


def default_soundfont() -> Path | None:
    """The General MIDI soundfont to use: pretty_midi's TimGM6mb.sf2, else a Debian one, else None."""
    try:
        import pretty_midi

        sf2 = Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")
        if sf2.exists():
            return sf2
    except ImportError:
        pass
    for p in _FLUID_SOUNDFONTS:
        if Path(p).exists():
            return Path(p)
    return None


def fluidsynth_soundfont() -> Path | None:
    """The soundfont for the ``fluidsynth`` back end: Debian's FluidR3_GM (a sampled piano with
    velocity layers) when installed, else any Debian General MIDI soundfont, else None."""
    for p in _FLUID_SOUNDFONTS:
        if Path(p).exists():
            return Path(p)
    return None


def _midi_length(midi_path: Path) -> float:
    import mido

    return float(mido.MidiFile(str(midi_path)).length)


def _render_tinysoundfont(midi_path: Path, sr: int, soundfont: Path) -> np.ndarray:
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sr, gain=-6.0)
    synth.sfload(str(soundfont))
    seq = tinysoundfont.Sequencer(synth)
    seq.midi_load(str(midi_path))
    n = int((_midi_length(midi_path) + TAIL) * sr)
    buf = synth.generate(n)
    stereo = np.frombuffer(buf, dtype=np.float32).reshape(-1, 2)
    return stereo.mean(axis=1)


def _render_fluidsynth(midi_path: Path, sr: int, soundfont: Path) -> np.ndarray:
    import soundfile as sf

    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError("fluidsynth is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        subprocess.run(
            [exe, "-ni", "-F", str(out), "-r", str(sr), str(soundfont), str(midi_path)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        y, _ = sf.read(str(out), dtype="float32", always_2d=True)
    return y.mean(axis=1)


def render_midi(
    midi_path: str | Path,
    wav_path: str | Path,
    sr: int = 22050,
    *,
    soundfont: str | Path | None = None,
    peak: float | None = 0.9,
    synth: str | None = None,
) -> Path:
    """Render a Standard MIDI File to a mono 16-bit WAV, peak-normalised (unless ``peak=None``).

    Parameters
    ----------
    midi_path : str or Path
    wav_path : str or Path
        Written (its folder is created); returned.
    sr : int
        Sample rate in Hz.
    soundfont : str or Path or None
        A ``.sf2``; default :func:`default_soundfont` (:func:`fluidsynth_soundfont` with
        ``synth="fluidsynth"``).
    peak : float or None
        Target peak amplitude (0..1). ``None`` keeps the synthesiser's own level (the same fixed
        gain for every file), so MIDI velocities stay differences in loudness between files.
    synth : {"tinysoundfont", "fluidsynth"} or None
        The back end; ``None`` tries them in the order of :data:`SYNTHS`. ``fluidsynth`` runs with
        its default gain, as the command in the EMOPIA data's README.

    Returns
    -------
    Path
    """
    import soundfile as sf

    midi_path, wav_path = Path(midi_path), Path(wav_path)
    if synth not in (None, *SYNTHS):
        raise ValueError(f"synth must be one of {SYNTHS} or None, not {synth!r}")
    if soundfont is not None:
        sf2 = Path(soundfont)
    else:
        sf2 = fluidsynth_soundfont() if synth == "fluidsynth" else default_soundfont()
    if sf2 is None or not sf2.exists():
        raise RuntimeError("no General MIDI soundfont found: pip install pretty_midi, or apt-get install fluid-soundfont-gm")
    if synth == "fluidsynth":
        y = _render_fluidsynth(midi_path, sr, sf2)
    else:
        try:
            y = _render_tinysoundfont(midi_path, sr, sf2)
        except ImportError:
            if synth is not None:
                raise
            y = _render_fluidsynth(midi_path, sr, sf2)
    top = float(np.max(np.abs(y))) if y.size else 0.0
    if peak is not None and top > 0:
        y = y * (peak / top)
    elif top > 1.0:
        y = y / top  # never clip
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = wav_path.with_name(wav_path.name + ".part")
    sf.write(str(tmp), y.astype(np.float32), sr, subtype="PCM_16", format="WAV")
    tmp.replace(wav_path)
    return wav_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("midi")
    p.add_argument("wav")
    p.add_argument("--sr", type=int, default=22050)
    p.add_argument("--soundfont", default=None)
    p.add_argument("--synth", choices=SYNTHS, default=None)
    a = p.parse_args(argv)
    print(render_midi(a.midi, a.wav, a.sr, soundfont=a.soundfont, synth=a.synth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
