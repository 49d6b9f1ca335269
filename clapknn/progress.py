"""Progress bars: one tqdm bar on stderr for every long command (items/s and the time left,
measured after the first item), or a silent stand-in."""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "ProgressBar", "RateEstimate"]


def progress_bar(total: int | None, desc: str, *, enabled: bool, unit: str = "file") -> "ProgressBar":
    """A :class:`ProgressBar` on stderr, silent when ``enabled`` is false or stderr is no terminal."""
    return ProgressBar(total, desc, enabled=enabled, unit=unit)


class RateEstimate:
    """Items per second and the time left, measured from the end of the first item.

    The first item of a run carries one-off costs (a model loading, a decoder pool starting,
    just-in-time compilation), so it is left out of the rate: the estimate is
    ``(done - 1) / (now - end of first item)``, the average over every later item (no
    exponential smoothing, so it settles after a few items and does not swing with one slow file).

    Parameters
    ----------
    total : int or None
        Items in the run (``None``: unknown, no time left is given).
    clock : callable
        Seconds, monotonic (:func:`time.perf_counter`; tests pass their own).
    """

    def __init__(self, total: int | None, clock=None) -> None:
        import time

        self.total = total
        self.clock = clock or time.perf_counter
        self.done = 0
        self.first_end: float | None = None
        self.now: float | None = None

    def tick(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self.now = self.clock()
        if self.done == 0 and n > 0:
            self.first_end = self.now
            self.done = n
            return
        self.done += n

    @property
    def rate(self) -> float | None:
        """Items per second after the first one, or ``None`` while it cannot be told yet."""
        if self.first_end is None or self.done < 2 or self.now is None or self.now <= self.first_end:
            return None
        return (self.done - 1) / (self.now - self.first_end)

    @property
    def remaining(self) -> float | None:
        """Seconds left at the current rate, or ``None``."""
        rate = self.rate
        if rate is None or self.total is None:
            return None
        return max(self.total - self.done, 0) / rate


class ProgressBar:
    """A tqdm bar on stderr that shows items/s and the time left from :class:`RateEstimate`, and
    says that the first item is loading (model, decoders) until it is done.

    A silent stand-in when ``enabled`` is false or stderr is no terminal. Use as
    :func:`progress_bar` makes it: ``update(n)``, ``close()``, or a ``with`` block.
    """

    def __init__(self, total: int | None, desc: str, *, enabled: bool, unit: str = "file") -> None:
        shown = enabled and sys.stderr.isatty()
        if shown:
            from tqdm.auto import tqdm
        else:  # tqdm.auto warns in a notebook without ipywidgets, even for a bar that is never drawn
            from tqdm import tqdm
        self.desc, self.unit = desc, unit
        self.estimate = RateEstimate(total)
        self._bar = tqdm(
            total=total, desc=f"{desc} (first {unit}: loading)", unit=unit, disable=not shown, leave=False,
            mininterval=0.5, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    @property
    def n(self) -> int:
        return self.estimate.done

    def update(self, n: int = 1) -> None:
        """``n`` more items are done."""
        first = self.estimate.done == 0
        self.estimate.tick(n)
        if first and n > 0:
            self._bar.set_description_str(self.desc, refresh=False)
        self._bar.set_postfix_str(self.postfix(), refresh=False)
        self._bar.update(n)

    def postfix(self) -> str:
        """``"<rate> <unit>s/s, <time> left"`` once a rate is known, else empty."""
        rate, left = self.estimate.rate, self.estimate.remaining
        if rate is None:
            return ""
        text = f"{rate:.2f} {self.unit}s/s" if rate < 10 else f"{rate:.0f} {self.unit}s/s"
        if left is not None:
            m, s = divmod(int(round(left)), 60)
            h, m = divmod(m, 60)
            text += f", {h:d}:{m:02d}:{s:02d} left" if h else f", {m:02d}:{s:02d} left"
        return text

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
