"""Benchmark clapknn.analysis (key, tempo, beats) against librosa and Essentia on audio with known truth.

Three sets, rendered offline from symbolic music with a General MIDI soundfont (see render_midi.py)
into a cache outside the repository (``$CLAPKNN_BENCH_CACHE`` or ``~/.cache/clapknn-bench``):

``chorales``
    Bach chorales from music21's bundled corpus. Key and mode: as encoded in the score (the
    ``<key><mode>`` of the MusicXML). Tempo: each chorale is rendered at a quarter-note tempo drawn from
    70-120 BPM, on piano, organ, strings or choir. Beats: the quarter-note grid. Chorales in 3/2 or
    another non-quarter metre are kept for key but left out of tempo and beats.
``folk``
    Tunes from O'Neill's "Music of Ireland" (1850) in music21's corpus whose ABC key field names a
    major or a minor key (plain ``K:G`` = G major, ``K:Em`` = E minor; modal tunes are left out).
    Monophonic, on fiddle, flute or piano. Key only.
``grooves``
    Generated pieces at a known tempo (70-180 BPM) and key: a drum pattern (rock, four-on-the-floor,
    funk, shuffle, bossa, waltz), a bass line and chords that loop a progression in the key (minor
    progressions use the harmonic-minor dominant), with some timing and velocity jitter. Key, tempo
    and beats.

Methods compared on the same audio (the first ``--seconds`` of each piece, 30 by default):

- ours: :func:`clapknn.analysis.estimate_key` with each profile set, :func:`~clapknn.analysis.estimate_tempo`.
- librosa: librosa has no key estimator, so the baseline is the textbook one: ``chroma_stft`` averaged
  over the track, correlated with the Krumhansl-Kessler profiles (no HPSS, no tuning, no CQT, no
  compression). Tempo: ``librosa.feature.tempo`` and the tempo of ``librosa.beat.beat_track`` (which
  also gives beats).
- Essentia (if ``import essentia`` works): ``KeyExtractor`` (its default profile) and
  ``RhythmExtractor2013(method="multifeature")``, fed the audio resampled to 44.1 kHz.

Scores: MIREX weighted key score (1 same key, 0.5 a fifth above with the same mode, 0.3 relative,
0.2 parallel, as in the MIREX audio key detection task and mir_eval's default); tempo Accuracy1
(within 4 %) and Accuracy2 (within 4 % of the truth or its double, half, triple or third); beat
F-measure (+-70 ms, beats in the first 5 s ignored).

Split: every piece is on one side, ``dev`` (where the analysis' settings are chosen) or ``heldout``
(only reported on; the default ``--split``): a chorale that is also in the benchmark suite's
``mode`` set (``bench/suite_sets.py``) takes its side there, so the two benches never tune on each
other's held-out pieces; every other piece by the parity of the CRC-32 of its id.

Usage::

    python bench/key_tempo.py                # default sizes, held-out part, ~10 minutes on 2 cores
    python bench/key_tempo.py --split dev    # the development part
    python bench/key_tempo.py --limit 10     # at most 10 pieces per set (a quick look)
    python bench/key_tempo.py --sets chorales --chorales 180 --seconds 600 --no-essentia
                                             # key of whole chorales (their modulations included)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from render_midi import render_midi  # noqa: E402

SR = 22050  # Hz, the rate every method gets (Essentia: resampled to 44.1 kHz)
CACHE_VERSION = "v1"
PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)


def split_of(item_id: str, suite_split: dict[str, str]) -> str:
    """``"dev"`` or ``"heldout"``: the side of the suite's ``mode`` set for a chorale in it, else
    by the parity of the CRC-32 of the id."""
    import zlib

    return suite_split.get(item_id, "heldout" if zlib.crc32(item_id.encode()) % 2 else "dev")


def suite_mode_split() -> dict[str, str]:
    """Score (group) → split of the benchmark suite's ``mode`` set, when it has been made."""
    import csv

    from suite_sets import cache_root, set_version

    labels = cache_root() / f"mode-{set_version('mode')}" / "labels.csv"
    if not labels.exists():
        return {}
    with open(labels, newline="") as fh:
        return {r["group"]: r["split"] for r in csv.DictReader(fh)}


def cache_dir() -> Path:
    root = os.environ.get("CLAPKNN_BENCH_CACHE") or Path.home() / ".cache" / "clapknn-bench"
    return Path(root) / CACHE_VERSION


# ---------------------------------------------------------------------------------------------------
# Data sets. Each item: {"set", "id", "midi", "wav", "tonic", "mode", "bpm" (or None), "beats" (list)}
# ---------------------------------------------------------------------------------------------------


def _write_midi(notes, path: Path, *, program: int, bpm: float, drums=None, bass=None) -> None:
    """notes: list of (start_s, end_s, pitch, velocity)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e)) for s, e, p, v in notes]
    pm.instruments.append(inst)
    if bass:
        b = pretty_midi.Instrument(program=33)  # fingered electric bass
        b.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e)) for s, e, p, v in bass]
        pm.instruments.append(b)
    if drums:
        d = pretty_midi.Instrument(program=0, is_drum=True)
        d.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e)) for s, e, p, v in drums]
        pm.instruments.append(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


#: How a chorale's key is read from its score (stored with each item; items made otherwise are keyed again).
KEY_RULE = "signature+dorian"


def chorale_key(score, k) -> tuple[int, str]:
    """Tonic pitch class and mode of a chorale: the key of its signature (``k``, music21's reading of
    the MusicXML ``<key>``), except a minor piece in the "Dorian" notation of Bach's time, written
    with one flat fewer than its key has (G minor with one flat): when the signature says minor and
    the final bass note lies a fourth above its tonic, the key is the minor key on that note (the
    piece ends on its tonic; the one-flat "D minor" chorales that end on G are in G minor)."""
    tonic, mode = int(k.tonic.pitchClass), str(k.mode)
    if mode == "minor":
        bass = score.parts[-1].flatten().notes
        if len(bass):
            final = int(min(bass[-1].pitches, key=lambda p: p.midi).pitchClass)
            if (final - tonic) % 12 == 5:
                return final, "minor"
    return tonic, mode


def build_chorales(n: int, rng: np.random.Generator, root: Path) -> list[dict]:
    from music21 import corpus, key, meter

    paths = sorted(p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml"))
    order = rng.permutation(len(paths))
    instruments = {0: "piano", 19: "organ", 48: "strings", 52: "choir"}
    items = []
    for idx in order:
        if len(items) >= n:
            break
        path = paths[idx]
        bpm = float(rng.uniform(70, 120))
        program = int(rng.choice(list(instruments)))
        item_id = path.stem
        midi, wav, meta = root / f"{item_id}.mid", root / f"{item_id}.wav", root / f"{item_id}.json"
        if meta.exists() and wav.exists():
            item = json.loads(meta.read_text())
            if item.get("key_rule") != KEY_RULE:  # made before the Dorian-signature rule: key again
                try:
                    score = corpus.parse(path)
                    item["tonic"], item["mode"] = chorale_key(score, score.recurse().getElementsByClass(key.Key)[0])
                    item["key_rule"] = KEY_RULE
                    meta.write_text(json.dumps(item))
                except Exception:  # noqa: BLE001 - unreadable now: keep the key it was made with
                    pass
            items.append(item)
            continue
        try:
            score = corpus.parse(path)
        except Exception:  # noqa: BLE001 - a corpus file music21 cannot read: skip it
            continue
        keys = list(score.recurse().getElementsByClass(key.Key))
        if not keys or keys[0].mode not in ("major", "minor"):
            continue
        k = keys[0]
        tonic, mode = chorale_key(score, k)
        ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
        quarter_beat = ts is not None and ts.denominator == 4
        spq = 60.0 / bpm  # seconds per quarter note
        notes = []
        for part in score.parts:
            for el in part.flatten().stripTies().notes:
                start = float(el.offset) * spq
                end = start + max(float(el.quarterLength), 0.25) * spq * 0.95
                for p in el.pitches:
                    notes.append((start, end, p.midi, 80))
        if not notes:
            continue
        end_t = max(e for _, e, _, _ in notes)
        measures = score.parts[0].getElementsByClass("Measure")
        phase = float(measures[1].offset) % 1.0 if len(measures) > 1 else 0.0
        beats = [(phase + i) * spq for i in range(int(end_t / spq) + 1) if (phase + i) * spq < end_t]
        _write_midi(notes, midi, program=program, bpm=bpm)
        render_midi(midi, wav, SR)
        item = {
            "set": "chorales",
            "id": item_id,
            "wav": str(wav),
            "tonic": tonic,
            "mode": mode,
            "key_rule": KEY_RULE,
            "bpm": bpm if quarter_beat else None,
            "beats": beats if quarter_beat else [],
            "instrument": instruments[program],
        }
        meta.write_text(json.dumps(item))
        items.append(item)
    return items


def _oneill_tunes() -> list[tuple[str, str, int, str]]:
    """(file stem, tune text, tonic pitch class, mode) of O'Neill tunes with a major/minor key field."""
    from music21 import corpus

    out = []
    paths = sorted(p for p in corpus.getPaths() if "oneills1850" in str(p))
    for path in paths:
        text = path.read_text(errors="ignore")
        for tune in re.split(r"\n\s*\n", text):
            m = re.search(r"^K:\s*([A-Ga-g])([#b]?)\s*([A-Za-z]*)", tune, re.M)
            x = re.search(r"^X:\s*(\d+)", tune, re.M)
            if not m or not x:
                continue
            letter, acc, mode = m.group(1).upper(), m.group(2), m.group(3).lower()
            if mode in ("", "maj", "major", "ion", "ionian"):
                mode = "major"
            elif mode in ("m", "min", "minor", "aeo", "aeolian"):
                mode = "minor"
            else:
                continue  # dorian, mixolydian, ...: not one of the 24 keys
            pc = ("C D EF G A B".index(letter) + {"": 0, "#": 1, "b": -1}[acc]) % 12
            out.append((f"{path.stem}-{x.group(1)}", tune, pc, mode))
    return out


def build_folk(n: int, rng: np.random.Generator, root: Path) -> list[dict]:
    from music21 import converter

    tunes = _oneill_tunes()
    # Balance the modes: minor tunes are rarer in the collection.
    minor = [t for t in tunes if t[3] == "minor"]
    major = [t for t in tunes if t[3] == "major"]
    rng.shuffle(minor)
    rng.shuffle(major)
    pool = []
    for a, b in zip(major, minor):
        pool += [a, b]
    instruments = {40: "violin", 73: "flute", 0: "piano"}
    items = []
    for tid, text, pc, mode in pool:
        if len(items) >= n:
            break
        program = int(rng.choice(list(instruments)))
        midi, wav, meta = root / f"{tid}.mid", root / f"{tid}.wav", root / f"{tid}.json"
        if meta.exists() and wav.exists():
            items.append(json.loads(meta.read_text()))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score = converter.parse(text, format="abc")
        except Exception:  # noqa: BLE001 - ABC that music21 cannot parse: skip it
            continue
        spq = 60.0 / 150.0  # a lively dance tempo; tempo is not scored on this set
        notes = []
        for el in score.flatten().stripTies().notes:
            start = float(el.offset) * spq
            for p in el.pitches:
                notes.append((start, start + float(el.quarterLength) * spq * 0.9, p.midi, 90))
        if len(notes) < 16:
            continue
        _write_midi(notes, midi, program=program, bpm=150.0)
        render_midi(midi, wav, SR)
        item = {"set": "folk", "id": tid, "wav": str(wav), "tonic": pc, "mode": mode, "bpm": None,
                "beats": [], "instrument": instruments[program]}  # fmt: skip
        meta.write_text(json.dumps(item))
        items.append(item)
    return items


# Drum patterns on a 16-step (4/4) or 12-step (3/4) grid of sixteenths: {GM drum note: steps}.
KICK, SNARE, CLAP, HAT, OPEN_HAT, RIDE, RIM = 36, 38, 39, 42, 46, 51, 37
PATTERNS = {
    "rock": (4, {KICK: [0, 8, 10], SNARE: [4, 12], HAT: [0, 2, 4, 6, 8, 10, 12, 14]}),
    "four_on_floor": (4, {KICK: [0, 4, 8, 12], CLAP: [4, 12], OPEN_HAT: [2, 6, 10, 14], HAT: [0, 4, 8, 12]}),
    "funk": (4, {KICK: [0, 3, 6, 10], SNARE: [4, 12, 15], HAT: list(range(16))}),
    "shuffle": (4, {KICK: [0, 8], SNARE: [4, 12], RIDE: "swing"}),
    "bossa": (4, {KICK: [0, 3, 4, 7, 8, 11, 12, 15], RIM: [0, 3, 6, 10, 13], HAT: [0, 2, 4, 6, 8, 10, 12, 14]}),
    "waltz": (3, {KICK: [0], SNARE: [4, 8], HAT: [0, 2, 4, 6, 8, 10]}),
}
PROGRESSIONS = {  # scale degrees (0-based) of the chord roots, one chord per bar
    "major": [[0, 4, 5, 3], [0, 3, 4, 0], [0, 5, 3, 4], [0, 3, 0, 4], [5, 3, 0, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 3, 6, 2], [0, 5, 3, 4], [0, 6, 5, 4]],
}


def _triad(tonic: int, mode: str, degree: int) -> list[int]:
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    pcs = [(tonic + scale[(degree + 2 * i) % 7]) % 12 for i in range(3)]
    if mode == "minor" and degree == 4:  # harmonic minor: the dominant has a leading tone
        pcs[1] = (pcs[1] + 1) % 12
    return pcs


def build_grooves(n: int, rng: np.random.Generator, root: Path) -> list[dict]:
    chord_programs = {0: "piano", 4: "e-piano", 25: "guitar", 89: "pad"}
    items = []
    for i in range(n):
        style = str(rng.choice(list(PATTERNS)))
        beats_per_bar, pattern = PATTERNS[style]
        bpm = float(rng.uniform(90, 180) if style == "waltz" else rng.uniform(70, 180))
        tonic, mode = int(rng.integers(12)), str(rng.choice(["major", "minor"]))
        prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
        program = int(rng.choice(list(chord_programs)))
        tid = f"groove{i:03d}-{style}"
        midi, wav, meta = root / f"{tid}.mid", root / f"{tid}.wav", root / f"{tid}.json"
        if meta.exists() and wav.exists():
            items.append(json.loads(meta.read_text()))
            continue
        beat = 60.0 / bpm
        step = beat / 4
        n_bars = int(math.ceil(32.0 / (beats_per_bar * beat)))

        def jit(t: float) -> float:
            return max(0.0, t + float(rng.normal(0, 0.006)))

        drums, bass, chords = [], [], []
        for bar in range(n_bars):
            t0 = bar * beats_per_bar * beat
            for note, steps in pattern.items():
                if steps == "swing":  # triplet-swung eighths on the ride
                    times = [t0 + b * beat + o * beat for b in range(beats_per_bar) for o in (0, 2 / 3)]
                else:
                    times = [t0 + s * step for s in steps]
                for t in times:
                    vel = int(np.clip(rng.normal(95 if (t - t0) % beat < 1e-6 else 75, 8), 30, 127))
                    drums.append((jit(t), jit(t) + 0.1, note, vel))
            pcs = _triad(tonic, mode, prog[bar % len(prog)])
            root_note = 36 + pcs[0]
            for b in range(beats_per_bar):
                if b % 2 == 0 or style in ("funk", "bossa"):
                    pitch = root_note if b % 2 == 0 else root_note + 7
                    bass.append((jit(t0 + b * beat), t0 + (b + 0.9) * beat, pitch, 100))
            voicing = sorted(60 + ((pc - 0) % 12) for pc in pcs)
            if program == 89:  # a pad holds the chord for the bar
                chords += [(t0, t0 + beats_per_bar * beat * 0.98, p, 70) for p in voicing]
            else:  # comping: on every beat (after-beats for the shuffle)
                for b in range(beats_per_bar):
                    t = t0 + b * beat + (beat * 2 / 3 if style == "shuffle" else 0.0)
                    chords += [(jit(t), t + beat * 0.45, p, 75) for p in voicing]
            # a melody of scale tones on some eighths
            scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
            for e in range(beats_per_bar * 2):
                if rng.random() < 0.5:
                    deg = int(rng.integers(7))
                    pitch = 72 + (tonic + scale[deg]) % 12
                    t = t0 + e * beat / 2
                    chords.append((jit(t), t + beat * 0.45, pitch, 85))
        _write_midi(chords, midi, program=program, bpm=bpm, drums=drums, bass=bass)
        render_midi(midi, wav, SR)
        total = n_bars * beats_per_bar
        item = {"set": "grooves", "id": tid, "wav": str(wav), "tonic": tonic, "mode": mode, "bpm": bpm,
                "beats": [b * beat for b in range(total)], "instrument": chord_programs[program],
                "style": style}  # fmt: skip
        meta.write_text(json.dumps(item))
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------


def _key_of_label(label: str) -> tuple[int, str]:
    tonic, mode = label.split()
    from clapknn.analysis import pitch_class

    return pitch_class(tonic), mode


def run_ours(y: np.ndarray) -> dict:
    from clapknn.analysis import estimate_key, estimate_tempo

    out = {}
    t = time.perf_counter()
    k = estimate_key(y, SR, profile="albrecht")
    out["time:ours key"] = time.perf_counter() - t
    out["key:ours (albrecht, default)"] = (k.tonic, k.mode)
    for prof in ("krumhansl", "temperley"):
        k = estimate_key(y, SR, profile=prof)
        out[f"key:ours ({prof})"] = (k.tonic, k.mode)
    k = estimate_key(y, SR, profile="albrecht", window=10.0)
    out["key:ours (albrecht, 10 s windows)"] = (k.tonic, k.mode)
    t = time.perf_counter()
    te = estimate_tempo(y, SR)
    out["time:ours tempo+beats"] = time.perf_counter() - t
    out["bpm:ours"] = te.bpm
    out["beats:ours"] = te.beats.tolist()
    return out


def run_librosa(y: np.ndarray) -> dict:
    import librosa

    from clapknn.analysis import key_scores

    out = {}
    t = time.perf_counter()
    chroma = librosa.feature.chroma_stft(y=y, sr=SR)
    best = int(np.argmax(key_scores(chroma.mean(axis=1), profile="krumhansl")))
    out["time:librosa key"] = time.perf_counter() - t
    out["key:librosa chroma_stft + KK"] = (best % 12, "major" if best < 12 else "minor")
    t = time.perf_counter()
    out["bpm:librosa feature.tempo"] = float(librosa.feature.tempo(y=y, sr=SR)[0])
    out["time:librosa tempo"] = time.perf_counter() - t
    t = time.perf_counter()
    tempo, beats = librosa.beat.beat_track(y=y, sr=SR, units="time")
    out["time:librosa beat_track"] = time.perf_counter() - t
    out["bpm:librosa beat_track"] = float(np.atleast_1d(tempo)[0])
    out["beats:librosa beat_track"] = np.asarray(beats).tolist()
    return out


def run_essentia(y: np.ndarray) -> dict:
    import essentia
    import essentia.standard as es

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    from clapknn.audio.signal import resample

    y44 = resample(y, SR, 44100)
    out = {}
    t = time.perf_counter()
    key, scale, _strength = es.KeyExtractor(sampleRate=44100)(y44)
    out["time:essentia key"] = time.perf_counter() - t
    out["key:essentia KeyExtractor"] = (_key_of_label(f"{key} {scale}")[0], scale)
    t = time.perf_counter()
    bpm, ticks, _conf, _est, _iv = es.RhythmExtractor2013(method="multifeature")(y44)
    out["time:essentia rhythm"] = time.perf_counter() - t
    out["bpm:essentia RhythmExtractor2013"] = float(bpm)
    out["beats:essentia RhythmExtractor2013"] = np.asarray(ticks).tolist()
    return out


def evaluate_item(args: tuple[dict, float, bool]) -> dict:
    item, seconds, use_essentia = args
    from clapknn.audio.decode import load

    warnings.simplefilter("ignore")
    y = load(item["wav"], sr=SR, duration=seconds)
    res = {"set": item["set"], "id": item["id"], "tonic": item["tonic"], "mode": item["mode"],
           "bpm": item["bpm"], "beats": [b for b in item["beats"] if b < len(y) / SR],
           "seconds": len(y) / SR}  # fmt: skip
    res.update(run_ours(y))
    res.update(run_librosa(y))
    if use_essentia:
        res.update(run_essentia(y))
    return res


# ---------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------


def mirex_key_score(ref: tuple[int, str], est: tuple[int | None, str | None]) -> float:
    """MIREX weighted key score: 1 same, 0.5 fifth above (same mode), 0.3 relative, 0.2 parallel, else 0."""
    (rt, rm), (et, em) = ref, est
    if et is None or em is None:
        return 0.0
    if rt == et and rm == em:
        return 1.0
    if rm == em and (et - rt) % 12 == 7:
        return 0.5
    if rm == "major" and em == "minor" and (et - rt) % 12 == 9:
        return 0.3
    if rm == "minor" and em == "major" and (et - rt) % 12 == 3:
        return 0.3
    if rt == et and rm != em:
        return 0.2
    return 0.0


def tempo_accuracy(ref: float, est: float | None) -> tuple[bool, bool]:
    """(Accuracy1, Accuracy2) with the usual 4 % tolerance."""
    if est is None or not np.isfinite(est) or est <= 0:
        return False, False
    acc1 = abs(est - ref) <= 0.04 * ref
    acc2 = any(abs(est - ref * f) <= 0.04 * ref * f for f in (1, 2, 0.5, 3, 1 / 3))
    return acc1, acc2


def beat_f_measure(ref: list[float], est: list[float], window: float = 0.07, skip: float = 5.0) -> float:
    ref = np.asarray([b for b in ref if b >= skip])
    est = np.asarray([b for b in est if b >= skip])
    if ref.size == 0 and est.size == 0:
        return 1.0
    if ref.size == 0 or est.size == 0:
        return 0.0
    used = np.zeros(est.size, dtype=bool)
    hits = 0
    for r in ref:
        d = np.abs(est - r)
        d[used] = np.inf
        j = int(np.argmin(d))
        if d[j] <= window:
            used[j] = True
            hits += 1
    p, r = hits / est.size, hits / ref.size
    return 0.0 if hits == 0 else 2 * p * r / (p + r)


def report(results: list[dict], essentia_note: str) -> str:
    lines = []
    sets = sorted({r["set"] for r in results})
    key_methods = [k[4:] for k in results[0] if k.startswith("key:")]
    tempo_methods = [k[4:] for k in results[0] if k.startswith("bpm:") and k != "bpm"]
    beat_methods = [k[6:] for k in results[0] if k.startswith("beats:")]

    lines.append("KEY: MIREX weighted score (and share correct / fifth / relative / parallel / other)")
    for group in sets + ["all"]:
        rows = [r for r in results if group in ("all", r["set"])]
        lines.append(f"  {group} (n={len(rows)})")
        for m in key_methods:
            s = np.array([mirex_key_score((r["tonic"], r["mode"]), tuple(r[f"key:{m}"])) for r in rows])
            shares = [np.mean(s == v) for v in (1.0, 0.5, 0.3, 0.2, 0.0)]
            lines.append(f"    {m:<38} {s.mean():.3f}   " + " / ".join(f"{x:.2f}" for x in shares))
    lines.append("")
    lines.append("TEMPO: Accuracy1 / Accuracy2")
    for group in [s for s in sets if any(r["bpm"] for r in results if r["set"] == s)] + ["all"]:
        rows = [r for r in results if group in ("all", r["set"]) and r["bpm"]]
        lines.append(f"  {group} (n={len(rows)})")
        for m in tempo_methods:
            acc = np.array([tempo_accuracy(r["bpm"], r[f"bpm:{m}"]) for r in rows])
            lines.append(f"    {m:<38} {acc[:, 0].mean():.3f} / {acc[:, 1].mean():.3f}")
    lines.append("")
    lines.append("BEATS: F-measure (+-70 ms, first 5 s ignored)")
    for group in [s for s in sets if any(r["beats"] for r in results if r["set"] == s)] + ["all"]:
        rows = [r for r in results if group in ("all", r["set"]) and r["beats"]]
        lines.append(f"  {group} (n={len(rows)})")
        for m in beat_methods:
            f = np.mean([beat_f_measure(r["beats"], r[f"beats:{m}"]) for r in rows])
            lines.append(f"    {m:<38} {f:.3f}")
    lines.append("")
    audio_min = sum(r["seconds"] for r in results) / 60.0
    lines.append(f"SPEED: seconds of compute per minute of audio ({audio_min:.1f} min analysed)")
    for k in [k for k in results[0] if k.startswith("time:")]:
        lines.append(f"    {k[5:]:<38} {sum(r[k] for r in results) / audio_min:.2f}")
    lines.append("")
    lines.append(essentia_note)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Key/tempo benchmark: clapknn vs librosa vs Essentia")
    p.add_argument("--limit", type=int, default=None, help="at most N pieces per set")
    p.add_argument("--chorales", type=int, default=80)
    p.add_argument("--folk", type=int, default=50)
    p.add_argument("--grooves", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0, help="analyse the first N seconds of each piece")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--no-essentia", action="store_true")
    p.add_argument("--sets", default="chorales,folk,grooves")
    p.add_argument("--csv", default=None, help="write per-piece results here")
    p.add_argument("--split", choices=("dev", "heldout", "all"), default="heldout",
                   help="which pieces: the development part, the held-out part (default) or all")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    sizes = {"chorales": a.chorales, "folk": a.folk, "grooves": a.grooves}
    if a.limit is not None:
        sizes = {k: min(v, a.limit) for k, v in sizes.items()}
    essentia_ok, essentia_note = False, "essentia: not used (--no-essentia)"
    if not a.no_essentia:
        try:
            import essentia  # noqa: F401

            essentia_ok = True
            essentia_note = f"essentia {essentia.__version__}: KeyExtractor defaults, RhythmExtractor2013 multifeature"
        except ImportError as exc:
            essentia_note = f"essentia: not available ({exc}); its columns are left out"

    t0 = time.time()
    root = cache_dir()
    builders = {"chorales": build_chorales, "folk": build_folk, "grooves": build_grooves}
    items = []
    for name in a.sets.split(","):
        rng = np.random.default_rng([a.seed, list(builders).index(name)])
        got = builders[name](sizes[name], rng, root / f"seed{a.seed}" / name)
        print(f"{name}: {len(got)} pieces ready in {root / f'seed{a.seed}' / name}", file=sys.stderr)
        items += got
    if a.split != "all":
        suite_split = suite_mode_split()
        items = [it for it in items if split_of(it["id"], suite_split) == a.split]
    print(f"data ready in {time.time() - t0:.0f} s; analysing {len(items)} pieces ({a.split}) ...", file=sys.stderr)

    jobs = [(it, a.seconds, essentia_ok) for it in items]
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            results = list(ex.map(evaluate_item, jobs, chunksize=2))
    else:
        results = [evaluate_item(j) for j in jobs]
    if a.csv:
        import pandas as pd

        pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("beats")} for r in results]).to_csv(
            a.csv, index=False
        )
    print(report(results, essentia_note))
    print(f"\n(total {time.time() - t0:.0f} s, seed {a.seed}, first {a.seconds:g} s of each piece, {a.split} part)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
