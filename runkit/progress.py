"""Progress of a long stage: a tqdm bar on a terminal, plain lines in a file or pipe.

A bar redraws itself with carriage returns, which a log file keeps: one training run wrote
1,390 redraws into 132 KB. :func:`show_progress` returns a tqdm bar when its stream
(stderr by default) is a terminal, and otherwise a :class:`PlainProgress` with the same
interface the project uses (iteration, ``update``, ``set_postfix``, ``write``, ``close``,
``with``), which prints one line with what the bar shows (stage, n/total, rate, ETA,
postfix):

- at most every :data:`MIN_SECONDS` (30 s), so a quick stage prints only its last line;
- otherwise each :data:`STEP_FRACTION` (10%) of the total, so a stage of known length
  prints about ten lines however long it runs;
- but at least every :data:`MAX_SECONDS` (5 min), so a long stage still shows it is alive;
- and a last line at ``close`` where a bar would stay on the terminal (``leave=True``) or
  where the stage already printed a line (a ``leave=False`` bar vanishes at the end, and so
  does a quick stage's plain report).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

from tqdm import tqdm

MIN_SECONDS = 30.0
STEP_FRACTION = 0.1
MAX_SECONDS = 300.0


def show_progress(iterable: Iterable | None = None, *, total: int | None = None,
                  desc: str | None = None, unit: str = "it", initial: int = 0,
                  leave: bool = True, disable: bool = False, unit_scale: bool = False,
                  unit_divisor: int = 1000, file=None, **bar_options):
    """A tqdm bar over ``iterable`` (or counting to ``total``) when ``file`` (default
    ``sys.stderr``) is a terminal; a :class:`PlainProgress` otherwise. ``bar_options``
    (e.g. ``dynamic_ncols``) go to the bar only. ``disable``: a silent tqdm either way."""
    stream = sys.stderr if file is None else file
    isatty = getattr(stream, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                    disable=disable, unit_scale=unit_scale, unit_divisor=unit_divisor,
                    file=stream, **bar_options)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                         leave=leave, unit_scale=unit_scale, unit_divisor=unit_divisor,
                         file=stream)


class PlainProgress:
    """The plain-line reporter (module docstring). ``clock``: seconds, monotonic (a test
    passes its own)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str | None = None, unit: str = "it", initial: int = 0,
                 leave: bool = True, unit_scale: bool = False, unit_divisor: int = 1000,
                 file=None, clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable = iterable
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.n = initial
        self.leave = leave
        self.unit_scale = unit_scale
        self.unit_divisor = unit_divisor
        self.file = file
        self.postfix: dict = {}
        self.closed = False
        self.lines_printed = 0
        self._clock = clock
        self._start = self._last_time = clock()
        self._initial = self._last_n = initial

    # ---------------------------------------------------------------- tqdm's interface

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        since = now - self._last_time
        if since < MIN_SECONDS:
            return
        if self.total is not None and self.n >= self.total:
            return  # the last line is close's
        far = self.total is None or self.n - self._last_n >= STEP_FRACTION * self.total
        if far or since >= MAX_SECONDS:
            self._print(self.line(now))
            self._last_time, self._last_n = now, self.n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def write(self, s: str, file=None, end: str = "\n") -> None:
        """Print ``s`` (to stdout by default, as ``tqdm.write`` does)."""
        print(s, file=sys.stdout if file is None else file, end=end, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave or self.lines_printed:
            self._print(self.line(self._clock(), done=True))

    # ---------------------------------------------------------------- the line

    def line(self, now: float, *, done: bool = False) -> str:
        """What a bar would show at ``now``: ``desc: n/total unit (pct%) in elapsed,
        rate unit/s, ETA eta, postfix`` (``done``: the last line, without an ETA)."""
        elapsed = now - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else None
        count = self._amount(self.n)
        if self.total is not None:
            count += f"/{self._amount(self.total)}"
        if not self.unit_scale:
            count += f" {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        parts = [f"{self.desc}: {'done, ' if done else ''}{count} in {_duration(elapsed)}"]
        if rate:
            parts.append(f"{self._amount(rate, rate=True)}{'' if self.unit_scale else ' '}"
                         f"{self.unit}/s")
            if not done and self.total is not None and self.total >= self.n:
                parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _amount(self, x: float, *, rate: bool = False) -> str:
        """A count or rate for people: sizes scaled (``1.18MB``), counts with thousands
        separators, rates to three significant digits."""
        if self.unit_scale:
            return tqdm.format_sizeof(x, divisor=self.unit_divisor) + ("" if rate else self.unit)
        if not rate or x >= 100:
            return f"{x:,.0f}"
        return f"{x:.3g}"

    def _print(self, text: str) -> None:
        print(text, file=sys.stderr if self.file is None else self.file, flush=True)
        self.lines_printed += 1


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: whole seconds, for people."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
