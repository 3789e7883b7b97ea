"""The structure daemon: audio (+ beats) -> SectionEvents on ``bb:{source}:sections``.

Role ``structure``: one lease per source, checkpointed like the beat processor. It follows the
source's beats stream and uses those beats while they keep coming; otherwise its own
onset-based grid. Each decision of :class:`~processors.structure.online.OnlineStructure` becomes
one SectionEvent (``tentative``, ``confirmed`` or ``revised``); at the end of the stream the
song is relabelled as a whole and a StreamEnd follows. Labels are held with hysteresis and the
events of a source are bounded: at most ``OnlineStructure.EVENTS_PER_MIN`` (24) per minute of its
audio, of which ``RELABELS_PER_MIN`` (4) relabels of past sections, plus, once at the stream's
end, one last word per section (see :mod:`.online`). Under load (setting ``adaptive``) a source's
analysis drops to half its frame rate, then is shed, the least recently watched source first.
"""
from __future__ import annotations

import numpy as np
from prometheus_client import Counter

from beatbus import keys
from beatbus.audio_stage import AudioStreamService, BeatEntry, OwnedSource
from beatbus.metrics import STAGE_LATENCY
from beatbus.quality import FULL
from beatbus.schemas import BeatEvent, SectionEvent, StreamEnd

from .online import OnlineStructure, SectionUpdate

__all__ = ["StructureService", "SECTION_UPDATES"]

# adaptive quality: every frame, every second one (the song so far is kept), then no analysis
# ("shed": no sections until the load allows it again, then a new analysis from there)
LEVELS = (FULL, "half", "shed")
STRIDES = (1, 2)
SHED = 2
COSTS = (1.0, 0.75, 0.1)     # CPU per second of audio relative to full (README, Adaptive quality)
SECTION_UPDATES = Counter("beatbus_section_updates_total", "SectionEvents published, by status", ["status"])


class StructureService(AudioStreamService):
    """Publish each owned source's sections as they are decided."""

    role = keys.Role.STRUCTURE
    out_kind = keys.StreamKind.SECTIONS
    side_kinds = {keys.StreamKind.BEATS: BeatEntry}

    def make_state(self, source: str) -> OnlineStructure | None:
        level = self.quality(source)
        if level == SHED:
            return None
        state = OnlineStructure(sr=self.settings.sr)
        state.ff.stride = STRIDES[level]
        return state

    # -- adaptive quality -------------------------------------------------------------
    def quality_ladder(self, state: OnlineStructure) -> tuple[tuple[str, ...], tuple[float, ...]]:
        return LEVELS, COSTS

    def set_quality(self, src: OwnedSource, level: int) -> None:
        """Half rate keeps the song so far; coming back from ``shed`` starts a new analysis at the
        current stream position (as for a join)."""
        if level < len(STRIDES) and src.state is not None:
            src.state.ff.stride = STRIDES[level]
            return
        src.state = self.make_state(src.name)
        if src.expected is not None:
            src.origin = src.expected / self.settings.sr

    def _events(self, src: OwnedSource, updates: list[SectionUpdate], now: float) -> list[SectionEvent]:
        out = []
        for u in updates:
            start = max(src.stream_time(u.start), 0.0)
            end = None if u.end is None else max(src.stream_time(u.end), start)
            SECTION_UPDATES.labels(u.status).inc()
            out.append(SectionEvent(source=src.name, start=start, end=end, system_time=src.wall(start, now),
                                    emitted_at=now, label=u.label, confidence=float(np.clip(u.confidence, 0, 1)),
                                    status=u.status, group=max(int(u.group), 0)))
            if u.status == "confirmed":
                STAGE_LATENCY.labels(self.role).observe(max(0.0, now - src.wall(src.stream_time(u.decided_at), now)))
        return out

    def on_audio(self, src: OwnedSource, samples: np.ndarray, frame, now: float) -> list:
        if src.state is None:   # shed
            return []
        return self._events(src, src.state.process(samples), now)

    def on_side(self, src: OwnedSource, kind: str, event, now: float) -> list:
        if not isinstance(event, BeatEvent) or src.expected is None or src.state is None:
            return []           # before this state's first audio its clock is unknown (a join mid-song)
        t = event.timestamp - src.origin
        if t < 0:
            return []           # a beat from before this state's audio began
        return self._events(src, src.state.add_beat(t, event.beat_in_bar, event.meter), now)

    def on_end(self, src: OwnedSource, end: StreamEnd, now: float) -> list:
        out = self._events(src, src.state.finish(), now) if src.state is not None else []
        src.state = self.make_state(src.name)
        src.expected = None
        return [*out, StreamEnd(source=src.name, timestamp=end.timestamp, reason=end.reason, emitted_at=now)]
