"""One writer per output stream: printed lines scroll above a status line redrawn in place.

Several threads write to a terminal at once (``beatbus run`` prints beats while the
``terminal://`` LED preview redraws the strip 30 times a second). Each write through
:func:`console` holds the stream's lock, and a printed line first clears the status line,
then redraws it below, so the two never share a screen line.
"""
from __future__ import annotations

import threading
from typing import IO

__all__ = ["Console", "console"]

_CLEAR_LINE = "\r\x1b[K"          # to column 0, erase to the end of the line


class Console:
    """Lines and one status line on ``stream``."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.lock = threading.Lock()
        self.status = ""

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def line(self, text: str) -> None:
        """Print ``text`` and a newline above the status line."""
        with self.lock:
            if self.status:
                self.stream.write(_CLEAR_LINE)
            self.stream.write(text + "\n")
            if self.status:
                self.stream.write(self.status)
            self.stream.flush()

    def set_status(self, text: str) -> None:
        """Replace the status line (a terminal only: it must not wrap, and holds no newline)."""
        with self.lock:
            self.status = text
            self.stream.write(_CLEAR_LINE + text)
            self.stream.flush()

    def clear_status(self) -> None:
        with self.lock:
            if self.status:
                self.status = ""
                self.stream.write(_CLEAR_LINE)
                self.stream.flush()


_consoles: dict[int, Console] = {}
_registry_lock = threading.Lock()


def console(stream: IO[str]) -> Console:
    """The process's one :class:`Console` for ``stream``."""
    with _registry_lock:
        c = _consoles.get(id(stream))
        if c is None or c.stream is not stream:
            c = _consoles[id(stream)] = Console(stream)
        return c
