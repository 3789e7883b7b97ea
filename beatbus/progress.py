"""Progress of long work (analyze, eval, synth, train, bench) on stderr, only on a terminal.

Why not tqdm: it is only a transitive dependency of the heavy extras (``requirements/all.txt``),
not of the light audio install (``requirements/audio.txt``) that runs ``beatbus analyze``; this
one line of ``\\r`` updates does not justify a new dependency. In a pipe or a log file nothing
is written, so machine-readable stdout (``analyze --json``) and logs stay clean.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from .console import console

__all__ = ["Progress", "track"]

T = TypeVar("T")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):      # closed or not a real stream
        return False


def _columns(stream: IO[str]) -> int:
    """Width of the terminal behind ``stream`` (stdout may be a pipe while stderr is the terminal)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size((80, 24)).columns


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class Progress:
    """One self-overwriting status line: ``desc  42%  126/300 s  0:21, ~0:29 left  note``.

    Parameters
    ----------
    desc : str
        What is being done (``"analyze song.flac"``).
    total : float, optional
        Amount of work; None shows the amount done and the elapsed time only.
    unit : str
        Unit of ``total`` (``"s"`` of audio, ``"files"``, ``"epochs"``...).
    stream : file, optional
        Default ``sys.stderr``; nothing is written unless it is a terminal.
    interval : float
        Least seconds between redraws (the first update draws at once).
    """

    def __init__(self, desc: str, total: float | None = None, unit: str = "", *, stream: IO[str] | None = None,
                 interval: float = 0.2):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream)
        self.done = 0.0
        self.note = ""
        self.interval = interval
        self._start = time.monotonic()
        self._drawn = -float("inf")

    def update(self, amount: float = 1, *, note: str | None = None) -> None:
        """Add ``amount`` to the work done (and replace the note)."""
        self.set(self.done + amount, note=note)

    def set(self, done: float, *, note: str | None = None) -> None:
        """Set the work done so far (and replace the note)."""
        self.done = done
        if note is not None:
            self.note = note
        if self.enabled and time.monotonic() - self._drawn >= self.interval:
            self._draw()

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        parts = [self.desc]
        amount = f"{self.done:.0f}" if self.done == int(self.done) or self.done >= 10 else f"{self.done:.1f}"
        if self.total:
            frac = min(max(self.done / self.total, 0.0), 1.0)
            parts.append(f"{100 * frac:3.0f}%  {amount}/{self.total:.0f} {self.unit}".rstrip())
            left = f", ~{_clock(elapsed * (1 - frac) / frac)} left" if 0 < frac < 1 else ""
            parts.append(f"{_clock(elapsed)}{left}")
        else:
            parts.append(f"{amount} {self.unit}".rstrip())
            parts.append(_clock(elapsed))
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        width = _columns(self.stream) - 1
        try:
            console(self.stream).set_status(self.line()[:width])
        except (OSError, ValueError):             # the terminal went away: stop drawing
            self.enabled = False

    def clear(self) -> None:
        """Erase the line so other output can be printed; the next update draws it again."""
        if self.enabled and self._drawn > -float("inf"):
            try:
                console(self.stream).clear_status()
            except (OSError, ValueError):
                self.enabled = False
        self._drawn = -float("inf")

    def close(self) -> None:
        """Erase the line, so what the command prints next starts clean."""
        self.clear()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "",
          note=None) -> Iterator[T]:
    """Yield ``items`` while counting them on a :class:`Progress` line (``note(item)`` names each)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit) as bar:
        for item in items:
            bar.set(bar.done, note=note(item) if note else None)
            yield item
            bar.update(1)
