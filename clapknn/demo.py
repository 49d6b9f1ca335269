"""The demo: few-shot mood tagging of real music with the weights-free encoder, fully offline.

The clips come from the PyPI package ``immich-memories-music`` (28 royalty-free ~30 s tracks in five
mood folders, MIT licence). A few per mood build an index; the others are tagged as unseen music.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .errors import ClapknnError
from .options import DEMO_PER_TAG

__all__ = ["demo_tracks", "run_demo"]


def demo_tracks() -> dict[str, list[Path]]:
    """The bundled mood clips, ``{mood: sorted paths}``."""
    try:
        import immich_memories_music
    except ImportError as exc:
        raise ClapknnError(
            "the demo needs the clips of the 'immich-memories-music' package: pip install immich-memories-music"
        ) from exc
    root = Path(immich_memories_music.tracks_dir())
    moods = {d.name: sorted(d.glob("*.opus")) for d in sorted(root.iterdir()) if d.is_dir()}
    return {m: files for m, files in moods.items() if files}


def _spread(files: list[Path], n: int) -> list[Path]:
    """``n`` files spread evenly over the sorted list (so the examples are not all of one style)."""
    if n >= len(files):
        return list(files)
    step = (len(files) - 1) / max(n - 1, 1)
    return [files[round(i * step)] for i in range(n)]


def run_demo(*, per_tag: int = DEMO_PER_TAG, out: str | None = None, quiet: bool = False,
             index_dir: str | Path | None = None) -> int:
    """Build an index from ``per_tag`` clips per mood, tag the rest, print the table and accuracy.

    Parameters
    ----------
    per_tag : int
        Example clips per mood that build the index; the other clips are tagged.
    out : str, optional
        Also write the tags table here (.csv, .json or .parquet).
    quiet : bool
        Print only the accuracy line: no progress bars, no heading, no table.
    index_dir : path, optional
        Save the demo index here. By default it stays in memory, so the demo writes nothing
        but ``out``.

    Returns
    -------
    int
        The exit code, 0.
    """
    from .labels import Example, ExampleSet
    from .output import format_table, write_table
    from .tagging.tagger import Tagger
    from .tagging.build import build_index

    moods = demo_tracks()
    if per_tag < 1:
        raise ClapknnError(f"--per-tag must be at least 1, got {per_tag}")
    picked = {m: _spread(files, per_tag) for m, files in moods.items()}
    train = ExampleSet([Example(p, (m,)) for m, files in picked.items() for p in files])
    queries = {p: m for m, files in moods.items() for p in files if p not in picked[m]}
    if not queries:
        raise ClapknnError(f"--per-tag {per_tag} leaves no clip to tag")
    if not quiet:
        where = f" → index {index_dir}" if index_dir is not None else ""
        print(f"demo: {len(train)} example clips ({per_tag} per mood: {', '.join(moods)}){where}")
    t0 = time.perf_counter()
    index = build_index(train, index_dir, encoder="features", progress=not quiet)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = Tagger(index).tag(list(queries), progress=not quiet)
    t_tag = time.perf_counter() - t0
    table = result.tracks.copy()
    table.insert(1, "truth", [queries[Path(p)] for p in table["path"]])
    table["path"] = [Path(p).name for p in table["path"]]
    table["correct"] = table["top"] == table["truth"]
    if not quiet:
        print(format_table(table, columns=["path", "truth", "tags", "score", "correct"]) + "\n")
    n_ok, n = int(table["correct"].sum()), len(table)
    chance = 1 / len(moods)
    print(
        f"accuracy: {n_ok}/{n} = {n_ok / n:.2f} (chance {chance:.2f}); "
        f"build {t_build:.1f} s for {len(train)} clips, tag {t_tag:.1f} s for {n} clips"
    )
    if out:
        write_table(table, out)
        print(f"wrote {out}", file=sys.stderr)
    return 0
