"""Events a test publishes itself (as a processor would), for consumers under test."""
from __future__ import annotations

import time

from beatbus.schemas import BeatEvent

__all__ = ["beat_event"]


def beat_event(i: int, *, source: str = "tsrc", bpm: float = 120.0, meter: int = 4, emitted_at: float | None = None,
               t0: float = 0.0) -> BeatEvent:
    """Beat ``i`` of a steady ``bpm`` grid from stream time ``t0``, emitted now (or at ``emitted_at``)."""
    now = time.time() if emitted_at is None else emitted_at
    ts = t0 + i * 60.0 / bpm
    return BeatEvent(source=source, timestamp=ts, system_time=now, is_downbeat=i % meter == 0, bpm=bpm,
                     intensity=0.5, confidence=0.9, beat=i, beat_in_bar=i % meter + 1, bar=i // meter,
                     meter=meter, next_beat_time=ts + 60.0 / bpm, next_beat_system_time=now + 60.0 / bpm,
                     emitted_at=now)
