"""Progress bars: one tqdm bar on stderr for every long command, or a silent stand-in."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(total: int | None, desc: str, *, enabled: bool, unit: str = "file"):
    """A tqdm bar on stderr, or a silent stand-in when ``enabled`` is false or stderr is no terminal."""
    shown = enabled and sys.stderr.isatty()
    if shown:
        from tqdm.auto import tqdm
    else:  # tqdm.auto warns in a notebook without ipywidgets, even for a bar that is never drawn
        from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not shown, leave=False)
