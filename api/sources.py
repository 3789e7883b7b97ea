"""Current state of a source, read from the newest entries of its streams."""
from __future__ import annotations

import math
import time

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import Settings
from beatbus.schemas import BeatEvent, Event, IntensityEvent, SectionEvent

from .models import SectionSpan, SourceState

__all__ = ["live_sources", "known_source", "source_state", "section_history"]

_SCAN = 8      # newest entries looked at per stream (a StreamEnd may sit on top of the last beat)
_NEW_RUN_S = 5.0  # a move of the wall time of a source's clock 0 that means its producer started again
_HISTORY = 2000  # section entries read back for the timeline (the stream keeps ~24 a minute at most)


def live_sources(bus: Bus, settings: Settings) -> list[str]:
    """Sources whose producer heartbeat is recent."""
    return bus.sources(max_age=max(3 * settings.heartbeat, settings.lease_ttl))


def known_source(bus: Bus, source: str) -> bool:
    """A source beatbus has seen: registered, or with a beat stream."""
    return bus.redis.zscore(keys.SOURCES, source) is not None or \
        bool(bus.redis.exists(keys.stream(source, keys.StreamKind.BEATS)))


def _decoded(bus: Bus, source: str, kind: str, count: int):
    """The newest ``count`` entries of a source's stream, decoded, newest first (malformed ones are
    counted and dead-lettered by the bus, and come out as None)."""
    stream = keys.stream(source, kind)
    for entry_id, fields in bus.redis.xrevrange(stream, count=count):
        yield bus.decode(stream, entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields, Event)


def _newest(bus: Bus, source: str, kind: str, cls, prefer=None):
    """The newest good ``cls`` event of a stream among its newest entries; the newest ``prefer(ev)`` one first."""
    first = None
    for ev in _decoded(bus, source, kind, _SCAN):
        if isinstance(ev, cls):
            if prefer is None or prefer(ev):
                return ev
            first = first or ev
    return first


def _current_section(ev: SectionEvent) -> bool:
    """The section playing now as decided: open (a relabel of a past section is not "now") and not a mere hint."""
    return ev.end is None and ev.status != "tentative"


def source_state(bus: Bus, source: str, *, live: bool) -> SourceState:
    """BPM, last beat, bar position, section, intensity and lag of one source."""
    now = time.time()
    state = SourceState(source=source, live=live)
    beat: BeatEvent | None = _newest(bus, source, keys.StreamKind.BEATS, BeatEvent)
    if beat is not None:
        state.bpm = round(beat.bpm, 2)
        state.beat, state.bar, state.beat_in_bar, state.meter = beat.beat, beat.bar, beat.beat_in_bar, beat.meter
        state.position = f"{beat.bar + 1}.{beat.beat_in_bar}"
        state.is_downbeat, state.confidence = beat.is_downbeat, beat.confidence
        state.last_beat_at = beat.system_time
        state.intensity = beat.intensity
        state.lag = round(max(0.0, beat.emitted_at - beat.system_time), 4)
        state.age = round(max(0.0, now - beat.emitted_at), 3)
    section: SectionEvent | None = _newest(bus, source, keys.StreamKind.SECTIONS, SectionEvent, _current_section)
    if section is not None:
        state.section, state.section_start = section.label, section.start
    level: IntensityEvent | None = _newest(bus, source, keys.StreamKind.INTENSITY, IntensityEvent)
    if level is not None:
        state.intensity = level.intensity
        state.level_db = round(20 * math.log10(max(level.rms, 1e-6)), 1)
    state.quality = {_text(k): _text(v) for k, v in bus.redis.hgetall(keys.quality(source)).items()}
    return state


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def section_history(bus: Bus, source: str) -> list[SectionSpan]:
    """The confirmed sections of the source's current run, oldest first, relabels applied.

    Folds the section stream: a ``confirmed`` or ``revised`` event sets the label (and the end, once
    known) of the section starting at its ``start``; ``tentative`` hints are left out, as on the
    dashboard. Within a run, ``system_time - start`` (the wall time of the source's clock 0) is
    constant; when it moves by more than :data:`_NEW_RUN_S` the producer started again, so only
    the entries after that are the current run.
    """
    events = [ev for ev in _decoded(bus, source, keys.StreamKind.SECTIONS, _HISTORY) if isinstance(ev, SectionEvent)]
    events.reverse()
    spans: dict[float, SectionSpan] = {}
    origin: float | None = None
    for ev in events:
        if origin is None or abs(ev.system_time - ev.start - origin) > _NEW_RUN_S:   # a new run of the source
            spans.clear()
            origin = ev.system_time - ev.start
        if ev.status == "tentative":
            continue
        key = round(ev.start, 3)
        old = spans.get(key)
        spans[key] = SectionSpan(label=ev.label, start=round(ev.start, 3),
                                 end=round(ev.end, 3) if ev.end is not None else (old.end if old else None),
                                 system_time=ev.system_time, confidence=round(ev.confidence, 3), status=ev.status)
    out = sorted(spans.values(), key=lambda s: s.start)
    for a, b in zip(out, out[1:], strict=False):   # an open section ends where the next one starts
        if a.end is None or a.end > b.start:
            a.end = b.start
    return out
