"""The beat clock daemon: one source's beats and sections -> OSC messages and MIDI clock, on predicted beats.

A fan-out reader (:class:`~beatbus.bus.EventReader`, plain XREAD from ``$``) of the source's beats
and sections feeds the :class:`~consumers.clock.schedule.ClockScheduler`; a
:class:`~consumers.clock.runner.ClockRunner` thread sends the cues on time. Broker outages are
the reader's business (retried with backoff): the clock coasts on the last tempo until
``silence_timeout_s``, then stops.
"""
from __future__ import annotations

import sys
import threading
import time

from beatbus import keys
from beatbus.bus import Bus, EventReader
from beatbus.config import Settings
from beatbus.errors import BeatbusError
from beatbus.log import get_logger
from beatbus.metrics import BUS_LAG
from beatbus.runtime import Service
from beatbus.schemas import BeatEvent, Event, SectionEvent, StreamEnd

from .config import ClockConfig
from .midi import MidiSink
from .osc import OscSender
from .runner import ClockRunner
from .schedule import ClockScheduler

__all__ = ["ClockService", "make_scheduler"]

log = get_logger("clock")
# As the LED consumer: a send thread waking for its deadline waits at most this long behind another thread
SWITCH_INTERVAL_S = 0.001


class ClockThreadDied(BeatbusError):
    """The send thread stopped on an unexpected error (a bug: the process must not carry on silently)."""


def make_scheduler(config: ClockConfig) -> ClockScheduler:
    return ClockScheduler(lead_s=config.output_latency_ms / 1000.0, lock_beats=config.lock_beats,
                          catch_up_beats=config.catch_up_beats, tempo_smoothing_beats=config.tempo_smoothing_beats,
                          resync_beats=config.resync_beats, silence_timeout_s=config.silence_timeout_s,
                          tempo_step_bpm=config.tempo_step_bpm)


class ClockService(Service):
    """Follow one source's beats and send the clock to the outputs.

    Parameters
    ----------
    source : str
        The source whose beats drive the clock.
    config : ClockConfig
    osc : OscSender, optional
    midi : MidiSink, optional
        Opened by the caller (a missing ALSA sequencer is a one-line error before anything runs).
    exit_on_end : bool
        Finish when the source's stream ends.
    record : bool
        Keep a trace of every send (benchmarks).
    """

    name = "clock"

    def __init__(self, bus: Bus, *, settings: Settings, source: str, config: ClockConfig,
                 osc: OscSender | None = None, midi: MidiSink | None = None, exit_on_end: bool = False,
                 record: bool = False):
        super().__init__()
        self.bus, self.settings, self.config = bus, settings, config
        self.source = keys.check_source(source)
        self.exit_on_end = exit_on_end
        self.osc, self.midi = osc, midi
        self.runner = ClockRunner(make_scheduler(config), osc=osc, midi=midi,
                                  late_limit_s=config.late_limit_ms / 1000.0, record=record)
        self.beats = keys.stream(self.source, keys.StreamKind.BEATS)
        self.events = EventReader(bus, [self.beats, keys.stream(self.source, keys.StreamKind.SECTIONS)],
                                  kind=Event, what="read beats", block_ms=settings.block_ms)
        self.section: str | None = None       # the label of the open confirmed section sent last ...
        self.section_start = float("-inf")      # ... and where that section starts

    def setup(self) -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.runner.start()
        self.events.open()              # before the producer starts: its first beats are read

    def step(self, stop: threading.Event) -> bool:
        if self.runner.error is not None:
            raise ClockThreadDied(f"beat clock: send thread died: {type(self.runner.error).__name__}: "
                                  f"{self.runner.error}")
        ended = False
        for stream, _entry_id, ev in self.events.read(stop, count=100):
            if isinstance(ev, BeatEvent):
                BUS_LAG.labels("beats").set(max(0.0, time.time() - ev.emitted_at))
                self.runner.beat(ev)
            elif isinstance(ev, SectionEvent):
                self._on_section(ev)
            elif isinstance(ev, StreamEnd) and stream == self.beats:     # the beat processor's end of the stream
                self.runner.end()
                ended = True
        return not (ended and self.exit_on_end)

    def _on_section(self, ev: SectionEvent) -> None:
        """Send the playing section's label when it changes. Only a confirmed (or revised) section that
        is still open counts, as for the trigger's patterns: a tentative one may vanish, and a section
        confirmed or relabelled after it closed is the past, not what plays now."""
        if ev.status == "tentative" or ev.end is not None or ev.start < self.section_start - 1e-6:
            return
        self.section_start = ev.start
        if ev.label != self.section:
            self.section = ev.label
            self.runner.section(ev.label, ev.confidence)

    def drain(self) -> None:
        self.runner.stop()
        for out in (self.osc, self.midi):
            if out is not None:
                try:
                    out.close()
                except (OSError, RuntimeError) as exc:
                    log.debug("closing a clock output failed", extra={"error": str(exc)})
