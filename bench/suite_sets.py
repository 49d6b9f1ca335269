"""The labelled sets of the benchmark suite (``bench/suite.py``): how each is made and split.

Every set is a folder under the bench cache (``$CLAPKNN_BENCH_CACHE`` or ``~/.cache/clapknn-bench``,
then ``suite/<set>/``, never inside the repository) holding the rendered audio and a ``labels.csv``
with the columns ``path,tags,group,split``:

``group``
    What must never be on both sides of a split: the song (EMOPIA), the score (chorales, tunes,
    pieces) or the generated song (meter, energy). An episode draws its support files from distinct
    groups and queries only the groups it did not draw.
``split``
    ``dev`` (where choices may be made) or ``heldout`` (only reported on): half of each tag's groups,
    drawn with a fixed seed from the sorted group names (:func:`split_groups`), so the split never
    depends on the order files were made in.

Sets (sources that install offline: music21's corpus, General MIDI soundfonts, generated MIDI):

``emopia`` (mood), ``emopia-valence``, ``emopia-arousal``
    The EMOPIA piano clips (``/work/shared/data/emopia``, research use only: neither the data nor
    its renders are ever committed), rendered by ``bench/emopia.py``'s code; tags: quadrant,
    valence, arousal; group: song. The three share one split of the songs (stratified by quadrant,
    which fixes valence and arousal).
``mode``
    Bach chorales from music21's corpus, major vs minor as encoded in the score; the first 20 s at a
    quarter-note tempo of 70-110 BPM on piano, organ, strings or choir (drawn per chorale).
``mode-extra``
    Development pieces only: the Bach scores the ``mode`` set's build did not read (it stops at
    120 pieces per mode), made the same way; every row ``dev``. Not in the suite's report: it is
    where a choice made on ``mode``'s dev part is checked on other pieces
    (``python bench/block_weights.py --sets mode-extra``).
``instrument``
    Folk tunes from O'Neill's "Music of Ireland" (music21's corpus), each played by one instrument
    family (piano, guitar, bowed strings, flute, brass; dealt in turn over the shuffled tunes), on
    one of four General MIDI programs of that family drawn per tune, at 90-150 BPM, some an octave
    up or down, with velocity jitter, and half of them over a soft drone (organ, strings, pad or
    bass); group: tune.
``meter``
    Generated songs in 2/4 (march), 3/4 (waltz) or 6/8 (jig): drums on one of seven General MIDI
    kits, bass, chords and a melody whose accents and rhythm cells follow the metre. The eighth-note
    pulse rate (200-330 per minute) is drawn from one range for every metre, so tempo is no cue;
    key, mode, progression, instruments and kit are drawn per song.
``composer``
    Excerpts of Bach chorales, Palestrina masses, Monteverdi madrigals and Trecento (14th-century
    Italian) pieces from music21's corpus, all rendered alike (one of piano, organ or
    strings drawn per excerpt, quarter = 60-120 BPM drawn from one range); group: the score file.
``mode-pop``
    Development pieces only: songs made by ``meter``'s generator (drums, bass, chords and a melody
    in one of the three metres, its own seeds), tagged ``major`` or ``minor`` by the mode they were
    generated in; every row ``dev``. Not in the suite's report: it is where a choice about mode is
    checked on music other than chorales (``python bench/block_weights.py --sets mode-pop``).
``energy``
    Generated songs labelled ``calm`` or ``energetic`` from a hidden energy level (0-0.4 or 0.6-1)
    that drives, each with noise, the tempo, loudness (MIDI velocity; rendered at one fixed gain),
    note density and whether drums and bass play; key, instruments and kit are drawn per song.

Renders: tinysoundfont with pretty_midi's TimGM6mb.sf2 for every set (fast: a shared 2-core
machine renders a set in a few minutes), EMOPIA through ``bench/emopia.py``'s own code
(``--synth tinysoundfont``; ``CLAPKNN_SUITE_EMOPIA_SYNTH=fluidsynth`` for its FluidR3_GM renders). Every item is drawn from its own seeded generator
(``numpy.random.default_rng([seed, set, item])``), so the sets are the same on every run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SR = 22050
SEED = 16  # every set's generator and split
CLIP_SECONDS = 20.0  # notes are cut here (two 10-s snippets)
VERSION = "v1"  # bump (or a set's entry in VERSIONS) when a generator changes: the set is made again
VERSIONS = {"instrument": "v2"}
#: Sets with no held-out part: more development material for a set that has one.
DEV_ONLY = ("mode-extra", "mode-pop")


def cache_root() -> Path:
    """The suite's cache folder (``$CLAPKNN_BENCH_CACHE/suite`` or ``~/.cache/clapknn-bench/suite``)."""
    root = os.environ.get("CLAPKNN_BENCH_CACHE") or Path.home() / ".cache" / "clapknn-bench"
    return Path(root) / "suite"


def _rng(set_name: str, item: int) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(set_name.encode()), int(item)])


# --------------------------------------------------------------------------- split
def split_groups(rows: list[dict], set_name: str, heldout_share: float = 0.5) -> dict[str, str]:
    """``{group: "dev" | "heldout"}``: per tag (a group's most frequent tag, ties by name), the
    sorted groups are shuffled with a seed fixed by the set's name and the last ``heldout_share``
    of them held out."""
    tags_of: dict[str, dict[str, int]] = {}
    for r in rows:
        for t in r["tags"].split(";"):
            tags_of.setdefault(r["group"], {}).setdefault(t, 0)
            tags_of[r["group"]][t] += 1
    by_tag: dict[str, list[str]] = {}
    for g, counts in tags_of.items():
        main = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        by_tag.setdefault(main, []).append(g)
    rng = np.random.default_rng([SEED, zlib.crc32(set_name.encode()), 0x5EED])
    out = {}
    for t in sorted(by_tag):
        groups = sorted(by_tag[t])
        order = rng.permutation(len(groups))
        n_dev = len(groups) - int(round(heldout_share * len(groups)))
        for rank, i in enumerate(order):
            out[groups[i]] = "dev" if rank < n_dev else "heldout"
    return out


def write_labels(rows: list[dict], set_name: str, path: Path, split: dict[str, str] | None = None) -> list[dict]:
    """Add the ``split`` column (``split``: ``{group: part}``, default :func:`split_groups`) and
    write ``path,tags,group,split`` (sorted by path)."""
    split = split or split_groups(rows, set_name)
    rows = sorted(({**r, "split": split[r["group"]]} for r in rows), key=lambda r: r["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "tags", "group", "split"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return rows


def read_labels(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- MIDI helpers
def _write_midi(parts, path: Path, *, bpm: float = 120.0, cut: float = CLIP_SECONDS) -> None:
    """``parts``: list of ``(program, is_drum, notes)``, notes ``(start_s, end_s, pitch, velocity)``;
    notes starting after ``cut`` are dropped and the rest end by it."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    for program, is_drum, notes in parts:
        inst = pretty_midi.Instrument(program=int(program), is_drum=bool(is_drum))
        for s, e, p, v in notes:
            if s >= cut:
                continue
            end = max(min(e, cut), s + 0.03)
            inst.notes.append(pretty_midi.Note(int(np.clip(v, 1, 127)), int(p), float(s), float(end)))
        if inst.notes:
            pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


def _render(midi: Path, wav: Path, *, peak: float | None) -> None:
    sys.path.insert(0, str(HERE))
    from render_midi import render_midi

    render_midi(midi, wav, SR, peak=peak, synth="tinysoundfont")


def _score_notes(score, spq: float, offset_q: float = 0.0, seconds: float = CLIP_SECONDS, velocity: int = 80):
    """Notes of every part of a music21 score from quarter offset ``offset_q`` on, in seconds."""
    notes = []
    for part in score.parts:
        for el in part.flatten().stripTies().notes:
            q = float(el.offset) - offset_q
            if q < 0:
                continue
            start = q * spq
            if start >= seconds:
                continue
            end = start + max(float(el.quarterLength), 0.25) * spq * 0.95
            for p in el.pitches:
                notes.append((start, end, p.midi, velocity))
    return notes


def _humanise(notes, rng, *, vel_sd: float = 8.0, time_sd: float = 0.005):
    return [(max(0.0, s + rng.normal(0, time_sd)), e, p, int(np.clip(v + rng.normal(0, vel_sd), 20, 127)))
            for s, e, p, v in notes]


# --------------------------------------------------------------------------- corpus sets
_SCORE_PROGRAMS = {0: "piano", 19: "organ", 48: "strings", 52: "choir"}


def _make_score_item(job) -> dict | None:
    """One rendered excerpt of a corpus score; ``None`` when music21 cannot use it."""
    set_name, i, path, tag, group, offset_share, programs, root = job
    out_id = f"{group}-{i:04d}"
    wav, meta = root / "wav" / f"{out_id}.wav", root / "meta" / f"{out_id}.json"
    if wav.exists() and meta.exists():
        return json.loads(meta.read_text())
    from music21 import corpus, key

    rng = _rng(set_name, i)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = corpus.parse(path)
    except Exception:  # noqa: BLE001 - a corpus file music21 cannot read: left out
        return None
    if tag is None:  # mode set: the tag is the score's own key
        keys = list(score.recurse().getElementsByClass(key.Key))
        if not keys or keys[0].mode not in ("major", "minor"):
            return None
        tag = keys[0].mode
    bpm = float(rng.uniform(*((70, 110) if set_name == "mode" else (60, 120))))
    program = int(rng.choice(list(programs)))
    total_q = float(score.highestTime)
    offset_q = math.floor(offset_share * max(0.0, total_q - CLIP_SECONDS * bpm / 60.0))
    notes = _humanise(_score_notes(score, 60.0 / bpm, offset_q), rng, vel_sd=6.0)
    if len(notes) < 8:
        return None
    midi = root / "midi" / f"{out_id}.mid"
    _write_midi([(program, False, notes)], midi, bpm=bpm)
    _render(midi, wav, peak=0.9)
    item = {"path": str(wav), "tags": tag, "group": group, "program": programs[program], "bpm": round(bpm, 2)}
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(item))
    return item


def _run(fn, jobs_list, jobs: int, desc: str) -> list[dict]:
    t0 = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            items = list(pool.map(fn, jobs_list, chunksize=4))
    else:
        items = [fn(j) for j in jobs_list]
    print(f"{desc}: {sum(x is not None for x in items)} items in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return [x for x in items if x is not None]


def _mode_paths() -> list:
    """The corpus's Bach scores in the mode sets' seeded order."""
    from music21 import corpus

    paths = sorted(p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml"))
    rng = np.random.default_rng([SEED, zlib.crc32(b"mode")])
    return [paths[i] for i in rng.permutation(len(paths))]


def _balanced(items: list[dict]) -> list[dict]:
    """As many items of each mode (the first ones of each)."""
    counts = {m: sum(it["tags"] == m for it in items) for m in ("major", "minor")}
    n = min(counts.values())
    keep, seen = [], {"major": 0, "minor": 0}
    for it in items:
        if seen[it["tags"]] < n:
            seen[it["tags"]] += 1
            keep.append(it)
    return keep


def _read_modes(root: Path, jobs: int, per_mode: int) -> tuple[list[dict], int]:
    """The ``mode`` set's items (at most ``per_mode`` per mode) and how many corpus scores were
    read to find them (batches of 40, in :func:`_mode_paths` order)."""
    paths = _mode_paths()
    # the mode is read while rendering; render in order and stop each mode at per_mode
    jobs_list = [("mode", i, p, None, p.stem, 0.0, _SCORE_PROGRAMS, root) for i, p in enumerate(paths)]
    items, counts = [], {"major": 0, "minor": 0}
    batch, read = 40, 0
    for start in range(0, len(jobs_list), batch):
        read = min(start + batch, len(jobs_list))
        for it in _run(_make_score_item, jobs_list[start:read], jobs, f"mode {start}+"):
            if counts[it["tags"]] < per_mode:
                counts[it["tags"]] += 1
                items.append(it)
        if min(counts.values()) >= per_mode:
            break
    return items, read


def build_mode(root: Path, jobs: int = 2, per_mode: int = 120) -> list[dict]:
    """Bach chorales, major vs minor (the score's key), balanced by taking the minor ones and as
    many major ones, at most ``per_mode`` each (decided on the score's key signature mode before
    rendering, from a seeded shuffle of the corpus)."""
    return _balanced(_read_modes(root, jobs, per_mode)[0])


def build_mode_extra(root: Path, jobs: int = 2) -> list[dict]:
    """More development pieces for ``mode``: every Bach score the ``mode`` set's build did not
    read, rendered the same way and balanced the same way; all of them ``dev`` (the ``mode`` set's
    held-out part stays the only held-out one), so that a choice about mode can be checked on
    pieces it was not made on before the held-out part is looked at."""
    _, read = _read_modes(root.parent / f"mode-{set_version('mode')}", jobs, 120)  # beside this set's folder
    paths = _mode_paths()
    jobs_list = [("mode", read + i, p, None, p.stem, 0.0, _SCORE_PROGRAMS, root) for i, p in enumerate(paths[read:])]
    return _balanced(_run(_make_score_item, jobs_list, jobs, "mode-extra"))


def build_composer(root: Path, jobs: int = 2, per_class: int = 50) -> list[dict]:
    """Excerpts of four corpora, rendered alike: Bach chorales, Palestrina (Humdrum), Monteverdi
    madrigals (MusicXML) and Trecento pieces. Monteverdi and Trecento (fewer or sparser scores) give
    an excerpt from the start and one from the middle of each score, in one group."""
    from music21 import corpus

    def pick(paths, n, salt):
        paths = sorted(paths)
        r = np.random.default_rng([SEED, zlib.crc32(salt.encode())])
        return [paths[i] for i in r.permutation(len(paths))[:n]]

    all_paths = corpus.getPaths()
    sources = {
        "bach": pick([p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml")], per_class, "bach"),
        "palestrina": pick([p for p in all_paths if "/palestrina/" in str(p)], per_class, "palestrina"),
        "monteverdi": pick([p for p in all_paths if "/monteverdi/" in str(p) and p.suffix == ".mxl"], per_class, "monteverdi"),
        "trecento": pick([p for p in all_paths if "/trecento/" in str(p)], per_class, "trecento"),
    }
    programs = {0: "piano", 19: "organ", 48: "strings"}
    jobs_list = []
    for tag, paths in sources.items():
        for p in paths:
            group = f"{tag}-{p.stem}"
            for share in ((0.0, 0.5) if tag in ("monteverdi", "trecento") else (0.0,)):
                jobs_list.append(("composer", len(jobs_list), p, tag, group, share, programs, root))
    return _run(_make_score_item, jobs_list, jobs, "composer")


def _oneill_tunes() -> list[tuple[str, str]]:
    """``(id, ABC text)`` of every tune in O'Neill's collection (music21's corpus)."""
    from music21 import corpus

    out = []
    for path in sorted(p for p in corpus.getPaths() if "oneills1850" in str(p)):
        text = path.read_text(errors="ignore")
        for tune in re.split(r"\n\s*\n", text):
            x = re.search(r"^X:\s*(\d+)", tune, re.M)
            if x and re.search(r"^K:", tune, re.M):
                out.append((f"{path.stem}-{x.group(1)}", tune))
    return out


#: Instrument families: the General MIDI programs each tag is played on (one drawn per tune).
INSTRUMENTS = {
    "piano": (0, 1, 2, 4),  # acoustic grand, bright, electric grand, electric piano
    "guitar": (24, 25, 26, 27),  # nylon, steel, jazz, clean electric
    "bowed strings": (40, 41, 42, 110),  # violin, viola, cello, fiddle
    "flute": (72, 73, 74, 75),  # piccolo, flute, recorder, pan flute
    "brass": (56, 57, 59, 60),  # trumpet, trombone, muted trumpet, French horn
}
#: Soft accompaniment under half the tunes, from programs outside every family.
ACCOMPANIMENT = (19, 48, 89, 33)  # church organ, string ensemble, warm pad, fingered bass


def _make_tune_item(job) -> dict | None:
    i, tid, text, tag, root = job
    wav, meta = root / "wav" / f"{tid}.wav", root / "meta" / f"{tid}.json"
    if wav.exists() and meta.exists():
        return json.loads(meta.read_text())
    from music21 import converter

    rng = _rng("instrument", i)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = converter.parse(text, format="abc")
    except Exception:  # noqa: BLE001 - ABC music21 cannot parse: left out
        return None
    program = int(rng.choice(INSTRUMENTS[tag]))
    bpm = float(rng.uniform(90, 150))
    spq = 60.0 / bpm
    shift = int(rng.choice([-12, 0, 0, 12])) if program not in (42, 57, 60) else -12  # cello, trombone, horn: lower
    notes = []
    for el in score.flatten().stripTies().notes:
        start = float(el.offset) * spq
        for p in el.pitches:
            notes.append((start, start + float(el.quarterLength) * spq * 0.92, int(np.clip(p.midi + shift, 36, 96)), 85))
    if len(notes) < 16 or notes[-1][0] < 8.0:
        return None
    notes = _humanise(notes, rng, vel_sd=10.0)
    parts = [(program, False, notes)]
    accompaniment = None
    if rng.random() < 0.5:  # a held drone on the tune's lowest note, an octave down, softly
        accompaniment = int(rng.choice(ACCOMPANIMENT))
        low = min(p for _, _, p, _ in notes) - 12
        parts.append((accompaniment, False, [(t, t + 4 * spq * 0.98, low, 50) for t in np.arange(0, CLIP_SECONDS, 4 * spq)]))
    midi = root / "midi" / f"{tid}.mid"
    _write_midi(parts, midi, bpm=bpm)
    _render(midi, wav, peak=0.9)
    item = {"path": str(wav), "tags": tag, "group": tid, "program": program, "accompaniment": accompaniment,
            "bpm": round(bpm, 2)}
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(item))
    return item


def build_instrument(root: Path, jobs: int = 2, per_class: int = 64) -> list[dict]:
    """O'Neill tunes, one instrument family each, dealt in turn over a seeded shuffle of the tunes."""
    tunes = _oneill_tunes()
    rng = np.random.default_rng([SEED, zlib.crc32(b"instrument")])
    tunes = [tunes[i] for i in rng.permutation(len(tunes))]
    tags = list(INSTRUMENTS)
    n = per_class * len(tags)
    # a few tunes do not parse: take some spares, then keep per_class per instrument
    jobs_list = [(i, tid, text, tags[i % len(tags)], root) for i, (tid, text) in enumerate(tunes[: int(n * 1.15)])]
    items = _run(_make_tune_item, jobs_list, jobs, "instrument")
    seen: dict[str, int] = {}
    keep = []
    for it in items:
        if seen.get(it["tags"], 0) < per_class:
            seen[it["tags"]] = seen.get(it["tags"], 0) + 1
            keep.append(it)
    return keep


# --------------------------------------------------------------------------- generated sets
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = {
    "major": [[0, 4, 5, 3], [0, 3, 4, 0], [0, 5, 3, 4], [0, 3, 0, 4], [5, 3, 0, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 3, 6, 2], [0, 5, 3, 4], [0, 6, 5, 4]],
}
KITS = (0, 8, 16, 24, 25, 40, 48)  # GM drum kits: standard, room, power, electronic, TR-808, brush, orchestra
CHORD_PROGRAMS = (0, 4, 24, 25, 48, 16, 89)  # piano, e-piano, guitars, strings, organ, pad
LEAD_PROGRAMS = (0, 40, 56, 65, 71, 73, 80, 11)  # piano, violin, trumpet, sax, clarinet, flute, square lead, vibraphone
BASS_PROGRAMS = (32, 33, 35, 38)
KICK, SNARE, SIDE, CLAP, HAT, PEDAL_HAT, RIDE, TAMB = 36, 38, 37, 39, 42, 44, 51, 54


def _triad(tonic: int, mode: str, degree: int) -> list[int]:
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    pcs = [(tonic + scale[(degree + 2 * i) % 7]) % 12 for i in range(3)]
    if mode == "minor" and degree == 4:
        pcs[1] = (pcs[1] + 1) % 12
    return pcs


#: Metres on a grid of eighths: eighths per bar, beat starts (eighths), the accent of each eighth
#: (1 strong, 0.5 weak beat, 0 off-beat), chord hits (eighths) and melody rhythm cells (eighths).
METERS = {
    "2/4": dict(bar=4, beats=(0, 2), accent=(1, 0, 0.5, 0), chords=(1, 3), cells=((2,), (1, 1), (1.5, 0.5))),
    "3/4": dict(bar=6, beats=(0, 2, 4), accent=(1, 0, 0.5, 0, 0.5, 0), chords=(2, 4), cells=((2,), (1, 1), (4,), (3, 1))),
    "6/8": dict(bar=6, beats=(0, 3), accent=(1, 0, 0, 0.5, 0, 0), chords=(1, 2, 4, 5), cells=((2, 1), (1, 1, 1), (3,), (1.5, 0.5, 1))),
}
METER_NAMES = {"2/4": "march-2/4", "3/4": "waltz-3/4", "6/8": "jig-6/8"}


def _make_meter_item(job) -> dict:
    """One generated song in ``meter``; tagged by its metre, or (``set_name`` ``mode-pop``) by its mode."""
    i, meter, root, *rest = job
    set_name = rest[0] if rest else "meter"
    name = METER_NAMES[meter]
    tid = f"{set_name.replace('-', '')}{i:04d}"
    wav, meta = root / "wav" / f"{tid}.wav", root / "meta" / f"{tid}.json"
    if wav.exists() and meta.exists():
        return json.loads(meta.read_text())
    rng = _rng(set_name, i)
    m = METERS[meter]
    eighth = 60.0 / float(rng.uniform(200, 330))
    tonic, mode = int(rng.integers(12)), str(rng.choice(["major", "minor"]))
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    kit, chord_p, lead_p, bass_p = (int(rng.choice(KITS)), int(rng.choice(CHORD_PROGRAMS)),
                                    int(rng.choice(LEAD_PROGRAMS)), int(rng.choice(BASS_PROGRAMS)))
    hat = int(rng.choice([HAT, PEDAL_HAT, RIDE, TAMB]))
    back = int(rng.choice([SNARE, SIDE, CLAP]))
    swing_sd = 0.006
    drums, bass, chords, lead = [], [], [], []
    bar_s = m["bar"] * eighth
    n_bars = int(math.ceil(CLIP_SECONDS / bar_s))

    def t_(x):
        return max(0.0, x + float(rng.normal(0, swing_sd)))

    for b in range(n_bars):
        t0 = b * bar_s
        for e in range(m["bar"]):
            acc = m["accent"][e]
            t = t0 + e * eighth
            drums.append((t_(t), t + 0.08, hat, 55 + 45 * acc + rng.normal(0, 6)))
            if acc == 1:
                drums.append((t_(t), t + 0.1, KICK, 105 + rng.normal(0, 6)))
            elif acc == 0.5:
                drums.append((t_(t), t + 0.1, back, 85 + rng.normal(0, 6)))
        pcs = _triad(tonic, mode, prog[b % len(prog)])
        broot = 36 + pcs[0]
        for k, beat in enumerate(m["beats"]):
            pitch = broot if k == 0 else broot + (7 if k % 2 else 12)
            bass.append((t_(t0 + beat * eighth), t0 + (beat + 0.9) * eighth, pitch, 100 if k == 0 else 80))
        voicing = sorted(60 + pc if pc < 7 else 48 + pc for pc in pcs)
        for e in m["chords"]:
            chords += [(t_(t0 + e * eighth), t0 + (e + 0.8) * eighth, p, 70 + rng.normal(0, 5)) for p in voicing]
        pos = 0.0
        while pos < m["bar"] - 1e-9:
            cell = m["cells"][int(rng.integers(len(m["cells"])))]
            if pos + sum(cell) > m["bar"] + 1e-9:
                cell = (m["bar"] - pos,)
            for d in cell:
                deg = int(rng.integers(7)) if rng.random() < 0.6 else [0, 2, 4][int(rng.integers(3))]
                pitch = 72 + (tonic + scale[deg]) % 12
                acc = m["accent"][int(pos)] if float(pos).is_integer() else 0
                lead.append((t_(t0 + pos * eighth), t0 + (pos + d * 0.9) * eighth, pitch, 70 + 25 * acc + rng.normal(0, 5)))
                pos += d
    midi = root / "midi" / f"{tid}.mid"
    _write_midi([(kit, True, drums), (bass_p, False, bass), (chord_p, False, chords), (lead_p, False, lead)],
                midi, bpm=60.0 / eighth / 2)
    _render(midi, wav, peak=0.9)
    item = {"path": str(wav), "tags": mode if set_name == "mode-pop" else name, "group": tid, "kit": kit,
            "eighths_per_minute": round(60 / eighth, 1), "meter": meter}
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(item))
    return item


def build_meter(root: Path, jobs: int = 2, per_class: int = 60) -> list[dict]:
    meters = list(METERS)
    jobs_list = [(i, meters[i % len(meters)], root) for i in range(per_class * len(meters))]
    return _run(_make_meter_item, jobs_list, jobs, "meter")


def build_mode_pop(root: Path, jobs: int = 2, n: int = 160) -> list[dict]:
    meters = list(METERS)
    jobs_list = [(i, meters[i % len(meters)], root, "mode-pop") for i in range(n)]
    return _run(_make_meter_item, jobs_list, jobs, "mode-pop")


def _make_energy_item(job) -> dict:
    i, root = job
    tid = f"energy{i:04d}"
    wav, meta = root / "wav" / f"{tid}.wav", root / "meta" / f"{tid}.json"
    if wav.exists() and meta.exists():
        return json.loads(meta.read_text())
    rng = _rng("energy", i)
    calm = i % 2 == 0
    level = float(rng.uniform(0.0, 0.4) if calm else rng.uniform(0.6, 1.0))

    def f(lo, hi, sd=0.12):  # a value driven by the energy level, with noise
        x = float(np.clip(level + rng.normal(0, sd), 0, 1))
        return lo + (hi - lo) * x

    bpm = f(60, 160)
    velocity = f(35, 120)
    density = int(round(f(0.5, 4.49)))  # melody notes per beat: 1..4 (0 -> 1)
    density = max(1, density)
    drums_on = rng.random() < f(0.0, 1.0)
    bass_on = rng.random() < f(0.2, 1.0)
    tonic, mode = int(rng.integers(12)), str(rng.choice(["major", "minor"]))
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    kit, chord_p, lead_p, bass_p = (int(rng.choice(KITS)), int(rng.choice(CHORD_PROGRAMS)),
                                    int(rng.choice(LEAD_PROGRAMS)), int(rng.choice(BASS_PROGRAMS)))
    beat = 60.0 / bpm
    bar_s = 4 * beat
    drums, bass, chords, lead = [], [], [], []
    for b in range(int(math.ceil(CLIP_SECONDS / bar_s))):
        t0 = b * bar_s
        pcs = _triad(tonic, mode, prog[b % len(prog)])
        voicing = sorted(60 + pc if pc < 7 else 48 + pc for pc in pcs)
        hits = 1 if density == 1 else (2 if density == 2 else 4)
        for h in range(hits):
            t = t0 + h * bar_s / hits
            chords += [(t, t + bar_s / hits * 0.95, p, velocity * 0.8 + rng.normal(0, 5)) for p in voicing]
        for n in range(4 * density):
            if rng.random() < 0.8:
                t = t0 + n * beat / density
                pitch = 72 + (tonic + scale[int(rng.integers(7))]) % 12
                lead.append((t, t + beat / density * 0.9, pitch, velocity + rng.normal(0, 6)))
        if bass_on:
            for k in range(4):
                bass.append((t0 + k * beat, t0 + (k + 0.9) * beat, 36 + pcs[0] + (7 if k % 2 else 0), velocity))
        if drums_on:
            for s in range(8):
                t = t0 + s * beat / 2
                drums.append((t, t + 0.08, HAT, velocity * 0.7 + rng.normal(0, 6)))
                if s in (0, 4) or (density > 2 and s == 5):
                    drums.append((t, t + 0.1, KICK, velocity))
                if s in (2, 6):
                    drums.append((t, t + 0.1, SNARE, velocity * 0.9))
    midi = root / "midi" / f"{tid}.mid"
    _write_midi([(kit, True, drums), (bass_p, False, bass), (chord_p, False, chords), (lead_p, False, lead)], midi, bpm=bpm)
    _render(midi, wav, peak=None)  # one fixed gain: loudness is part of energy
    item = {"path": str(wav), "tags": "calm" if calm else "energetic", "group": tid, "level": round(level, 3),
            "bpm": round(bpm, 1), "velocity": round(velocity, 1), "density": density,
            "drums": bool(drums_on), "bass": bool(bass_on)}
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(item))
    return item


def build_energy(root: Path, jobs: int = 2, per_class: int = 80) -> list[dict]:
    return _run(_make_energy_item, [(i, root) for i in range(2 * per_class)], jobs, "energy")


# --------------------------------------------------------------------------- EMOPIA
#: EMOPIA renders for the suite: tinysoundfont (``bench/emopia.py --synth tinysoundfont``), ten times
#: faster than the fluidsynth renders of the EMOPIA section of docs/evaluation.md on a shared machine.
EMOPIA_SYNTH = os.environ.get("CLAPKNN_SUITE_EMOPIA_SYNTH", "tinysoundfont")
EMOPIA_TASKS = {"emopia": "quadrant", "emopia-valence": "valence", "emopia-arousal": "arousal"}


def build_emopia(root: Path, jobs: int = 2, task: str = "quadrant") -> list[dict]:
    """EMOPIA's clips as ``bench/emopia.py`` renders them (its cache), tags from one label column."""
    sys.path.insert(0, str(HERE))
    import emopia

    wav_dir = emopia.render_all(emopia.DATA, emopia.CACHE, level="fixed", synth=EMOPIA_SYNTH, jobs=jobs)
    return [{"path": r["path"], "tags": r[task], "group": r["song"]} for r in emopia.read_labels(emopia.DATA, wav_dir)]


BUILDERS = {
    "emopia": lambda root, jobs: build_emopia(root, jobs, "quadrant"),
    "emopia-valence": lambda root, jobs: build_emopia(root, jobs, "valence"),
    "emopia-arousal": lambda root, jobs: build_emopia(root, jobs, "arousal"),
    "mode": build_mode,
    "mode-extra": build_mode_extra,
    "mode-pop": build_mode_pop,
    "instrument": build_instrument,
    "meter": build_meter,
    "composer": build_composer,
    "energy": build_energy,
}
#: What each set asks of the tags.
KINDS = {
    "emopia": "mood (EMOPIA quadrant)",
    "emopia-valence": "mood (EMOPIA valence)",
    "emopia-arousal": "mood (EMOPIA arousal)",
    "mode": "mode (major/minor chorales)",
    "mode-extra": "mode (major/minor chorales), development pieces only",
    "mode-pop": "mode (major/minor generated songs), development pieces only",
    "instrument": "instrument / timbre",
    "meter": "rhythm (metre)",
    "composer": "style / composer",
    "energy": "energy",
}


def set_version(name: str) -> str:
    """The version of set ``name``'s generator (its cache folder's suffix)."""
    return VERSIONS.get(name, VERSION)


def load_set(name: str, jobs: int = 2, root: Path | None = None) -> list[dict]:
    """The rows (``path, tags, group, split``) of set ``name``, making it first when its
    ``labels.csv`` is not in the cache (EMOPIA's split is by song, made the same way)."""
    if name not in BUILDERS:
        raise SystemExit(f"unknown set {name!r}; choose from {', '.join(BUILDERS)}")
    folder = (root or cache_root()) / f"{name}-{set_version(name)}"
    labels = folder / "labels.csv"
    if labels.exists():
        rows = read_labels(labels)
        if all(Path(r["path"]).exists() for r in rows):
            return rows
    rows = BUILDERS[name](folder, jobs)
    split = None
    if name in EMOPIA_TASKS and name != "emopia":  # one split of EMOPIA's songs for all three labellings
        split = {r["group"]: r["split"] for r in load_set("emopia", jobs, root)}
    if name in DEV_ONLY:
        split = {r["group"]: "dev" for r in rows}
    return write_labels(rows, name, labels, split)
