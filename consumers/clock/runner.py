"""The send thread: the scheduler's cues, each at its send time, to the OSC targets and the MIDI sink.

The bus reader thread only feeds the :class:`~consumers.clock.schedule.ClockScheduler` (under a
lock) and wakes this thread; this thread sleeps until the next send time (woken early when a
beat changed the plan), takes the cues that are due and sends them. It never waits on the broker.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from beatbus.log import get_logger
from beatbus.metrics import child
from beatbus.schemas import BeatEvent

from .metrics import CUES, CUES_DROPPED, OUTPUT_ERRORS, RESYNCS, RUNNING, SEND_LATENESS, TEMPO
from .midi import MidiSink, midi_messages
from .osc import OscSender, osc_message, section_message
from .schedule import ClockScheduler, Cue

__all__ = ["ClockRunner"]

log = get_logger("clock")
IDLE_WAIT_S = 0.5
_LATE_DROPPED = ("beat", "bar")          # OSC messages that are worse late than missing


class ClockRunner:
    """Send the scheduler's cues on time, on a thread of its own.

    Parameters
    ----------
    scheduler : ClockScheduler
    osc : OscSender, optional
    midi : MidiSink, optional
    late_limit_s : float
        An OSC beat or bar message later than this is dropped.
    record : bool
        Keep ``(send deadline, sent, kind)`` of every cue in :attr:`trace` (benchmarks).
    clock : callable
        Wall clock (``time.time``): the schedule is in wall time, as the events are.
    """

    def __init__(self, scheduler: ClockScheduler, *, osc: OscSender | None = None, midi: MidiSink | None = None,
                 late_limit_s: float = 0.06, record: bool = False, clock: Callable[[], float] = time.time):
        self.scheduler, self.osc, self.midi = scheduler, osc, midi
        self.late_limit_s, self.clock = late_limit_s, clock
        self.trace: collections.deque | None = collections.deque(maxlen=200000) if record else None
        self.sent = collections.Counter()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resyncs = 0
        self._said: set[str] = set()

    # -- input (the bus reader's thread) -----------------------------------------------------
    def beat(self, ev: BeatEvent) -> None:
        with self._lock:
            self.scheduler.on_beat(ev, self.clock())
            resyncs = self.scheduler.stats["resyncs"]
            bpm = self.scheduler.bpm if self.scheduler.plan is not None else None
        if resyncs > self._resyncs:
            RESYNCS.inc(resyncs - self._resyncs)
            self._resyncs = resyncs
        if bpm is not None:
            TEMPO.set(bpm)
        self._wake.set()

    def end(self) -> None:
        """The source ended: stop the transport now."""
        with self._lock:
            self.scheduler.on_end(self.clock())
        self._wake.set()

    def section(self, label: str, confidence: float) -> None:
        """A new section: OSC only, sent at once (sections are found after they started)."""
        if self.osc is not None:
            self._osc(section_message(label, confidence), "section")

    # -- thread --------------------------------------------------------------------------------
    def start(self) -> ClockRunner:
        self._thread = threading.Thread(target=self._run, name="clock", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread; a running transport is stopped (MIDI ``stop``, ``/beatbus/stop``) first."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self.scheduler.on_end(self.clock())
            cues = self.scheduler.due(self.clock())
        self._send(cues)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                with self._lock:
                    t = self.scheduler.next_send()
                now = self.clock()
                if t is None:
                    self._wake.wait(IDLE_WAIT_S)
                    continue
                if t > now and self._wake.wait(t - now):
                    continue                          # the plan changed: look again
                with self._lock:
                    cues = self.scheduler.due(self.clock())
                self._send(cues)
        except Exception as exc:  # a bug: the service raises it and the process ends with one line
            self.error = exc
            log.debug("clock thread traceback", exc_info=exc)

    # -- sending -------------------------------------------------------------------------------
    def _send(self, cues: list[Cue]) -> None:
        lead = self.scheduler.lead_s
        for cue in cues:
            deadline = cue.due - (0.0 if cue.kind == "stop" else lead)
            if self.midi is not None:
                for msg in midi_messages(cue):
                    try:
                        self.midi.send(msg)
                    except (OSError, RuntimeError) as exc:
                        self._failed("midi", exc)
                        continue
                    sent = self.clock()
                    self._count("midi", cue.kind, deadline, sent)
            if self.osc is not None:
                dgram = osc_message(cue)
                if dgram is None:
                    continue
                if cue.kind in _LATE_DROPPED and self.clock() - deadline > self.late_limit_s:
                    CUES_DROPPED.labels("osc").inc()
                    continue
                self._osc(dgram, cue.kind, deadline)
            if cue.kind in ("start", "stop"):
                RUNNING.set(1 if cue.kind == "start" else 0)
                log.info("transport " + ("started" if cue.kind == "start" else "stopped"),
                         extra={"bpm": round(self.scheduler.bpm, 2)})

    def _osc(self, dgram: bytes, kind: str, deadline: float | None = None) -> None:
        assert self.osc is not None
        for target, exc in self.osc.send(dgram):
            self._failed(f"osc {target}", exc)
        sent = self.clock()
        self._count("osc", kind, sent if deadline is None else deadline, sent)

    def _count(self, output: str, kind: str, deadline: float, sent: float) -> None:
        self.sent[(output, kind)] += 1
        child(CUES, output, kind).inc()
        child(SEND_LATENESS, output).observe(max(0.0, sent - deadline))
        if self.trace is not None:
            self.trace.append((output, kind, deadline, sent))

    def _failed(self, what: str, exc: BaseException) -> None:
        OUTPUT_ERRORS.labels(what.split()[0]).inc()
        if what not in self._said:                # once per output, not once per tick
            self._said.add(what)
            log.warning("clock output failed", extra={"output": what, "error": str(exc)})
