"""Terminal consumer: prints each beat as ``time  bar.beat  bpm  confidence  bar-graph`` (led by the
source's name when it follows several).

A fan-out reader (plain XREAD from ``$``): it shows what is happening now and never
holds up other consumers.
"""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from beatbus import keys
from beatbus.bus import Bus, EventReader
from beatbus.config import Settings
from beatbus.console import console
from beatbus.runtime import Service
from beatbus.schemas import BeatEvent, StreamEnd

__all__ = ["TerminalConsumer", "format_beat"]

_RESET = "\x1b[0m"


def _rgb(r: int, g: int, b: int) -> str:
    return f"\x1b[38;2;{r};{g};{b}m"


def format_beat(ev: BeatEvent, *, color: bool, width: int = 24) -> str:
    """One line per beat; the bar's length is the beat's intensity (or confidence)."""
    level = ev.intensity if ev.intensity is not None else ev.confidence
    filled = max(1, round(level * width))
    bar = "█" * filled + " " * (width - filled)
    text = (f"{ev.timestamp:8.2f}s  {ev.bar + 1:3d}.{ev.beat_in_bar}  {ev.bpm:6.1f} BPM  "
            f"conf {ev.confidence:4.2f}  ")
    if not color:
        return text + ("*" if ev.is_downbeat else " ") + bar
    tone = _rgb(255, 80, 60) if ev.is_downbeat else _rgb(80, 200, 255)
    return text + tone + ("●" if ev.is_downbeat else "·") + bar + _RESET


class TerminalConsumer(Service):
    name = "terminal"

    def __init__(self, bus: Bus, *, settings: Settings, sources: list[str], out: TextIO = sys.stdout,
                 color: bool | None = None, exit_on_end: bool = True):
        super().__init__()
        self.bus, self.settings, self.out = bus, settings, out
        self.sources = [keys.check_source(s) for s in sources]
        self.color = out.isatty() if color is None else color
        self.exit_on_end = exit_on_end
        self.ended: set[str] = set()
        self.beats = dict.fromkeys(self.sources, 0)   # per source: each closing line counts its own
        self.events = EventReader(bus, [keys.stream(s, keys.StreamKind.BEATS) for s in self.sources],
                                  what="read beats", block_ms=settings.block_ms)

    def setup(self) -> None:
        self.events.open()              # before the producer starts: its first beats are read

    def step(self, stop: threading.Event) -> bool:
        for _stream, _entry_id, ev in self.events.read(stop, count=100):
            if isinstance(ev, BeatEvent):
                self.beats[ev.source] = self.beats.get(ev.source, 0) + 1
                line = format_beat(ev, color=self.color)
                if len(self.sources) > 1:       # several sources interleave: say whose beat it is
                    line = f"{ev.source:>{self._width}}  {line}"
                console(self.out).line(line)   # above an LED status line
            elif isinstance(ev, StreamEnd):
                self.ended.add(ev.source)
                console(self.out).line(f"-- {ev.source}: end of stream at {ev.timestamp:.2f}s ({ev.reason}), "
                                       f"{self._counted(ev.source)}")
        return not (self.exit_on_end and self.ended >= set(self.sources))

    def drain(self) -> None:
        # stopped before the stream's end (--duration, Ctrl-C, SIGTERM): a closing line all the same
        for source in self.sources:
            if source not in self.ended:
                console(self.out).line(f"-- {source}: stopped before the end of the stream, {self._counted(source)}")

    @property
    def _width(self) -> int:
        return max(map(len, self.sources))

    def _counted(self, source: str) -> str:
        n = self.beats.get(source, 0)
        return f"{n} beat" + ("" if n == 1 else "s")
