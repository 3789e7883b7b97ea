"""Terminal preview: the strip as one status line of ANSI truecolor blocks, redrawn in place.

The line is drawn through :func:`beatbus.console.console`, the writer the beat printer of
``beatbus run`` also uses, so beats scroll above the strip instead of breaking it. When the
stream is not a terminal (a pipe, a log file) nothing of the strip is written.
"""
from __future__ import annotations

import shutil
import sys
from typing import TextIO

import numpy as np

from beatbus.console import console
from beatbus.log import get_logger

from ..params import Param
from .base import Output

__all__ = ["TerminalOutput", "render_line"]

_RESET = "\x1b[0m"
log = get_logger("led.terminal")


def render_line(frame: bytes, width: int) -> str:
    """``width`` colored blocks (each the mean of its pixels) for an RGB frame."""
    rgb = np.frombuffer(frame, dtype=np.uint8).reshape(-1, 3).astype(np.float32)
    width = max(1, min(width, len(rgb)))
    edges = np.linspace(0, len(rgb), width + 1).astype(int)
    cells = np.add.reduceat(rgb, edges[:-1], axis=0) / np.diff(edges)[:, None]
    return "".join(f"\x1b[38;2;{r};{g};{b}m█" for r, g, b in cells.round().astype(int)) + _RESET


class TerminalOutput(Output):
    scheme = "terminal"
    transport = "local"
    default_fps = 30.0
    PARAMS = {"width": Param(0, "Characters per line (0 = fit the terminal)", 0, 1000)}

    def __init__(self, spec, pixels, stream: TextIO | None = None):
        super().__init__(spec, pixels)
        self.stream = stream or sys.stdout
        self.console = console(self.stream)
        self.tty = self.console.isatty()
        self.width = self.params.get("width", 0) or max(10, shutil.get_terminal_size((80, 24)).columns - 1)

    def open(self) -> None:
        if not self.tty:
            log.info("terminal:// preview not drawn: stdout is not a terminal", extra={"device": self.device_name})

    def send(self, frame: bytes) -> None:
        if self.tty:
            self.console.set_status(render_line(frame, self.width))

    def close(self) -> None:
        try:
            self.console.clear_status()
        except (OSError, ValueError):
            pass
