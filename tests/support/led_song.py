"""A song played into the real LedState on a simulated clock, for the effect and scenes tests.

Beats come on a fixed grid (``bpm``, ``meter``), each published ``delay`` after it as the beat
processor does; section, transition and intensity events are published when the test says.
:meth:`SongClock.frames` yields the RenderContext of every frame a device would render: regular
frames at ``fps`` plus one just after each predicted beat onset (as ``DeviceRunner`` does).
"""
from __future__ import annotations

import heapq
import itertools

from beatbus.consumers.led.state import LedState
from beatbus.schemas import BeatEvent, IntensityEvent, SectionEvent, TransitionEvent

__all__ = ["SongClock"]


class SongClock:
    def __init__(self, *, bpm: float = 120.0, meter: int = 4, t0: float = 1000.0, delay: float = 0.08):
        self.period, self.meter, self.t0, self.delay = 60.0 / bpm, meter, t0, delay
        self.now = t0 - 1.0
        self.state = LedState(clock=lambda: self.now)
        self._queue: list = []
        self._n = itertools.count()
        self._regular = self.now            # the next regular frame

    # -- the song ---------------------------------------------------------------------
    def beat_time(self, k: float) -> float:
        return self.t0 + k * self.period

    def downbeat(self, bar: int) -> float:
        return self.beat_time(bar * self.meter)

    def publish(self, at: float, event) -> None:
        heapq.heappush(self._queue, (at, next(self._n), event))

    def beats(self, first: int, last: int) -> None:
        """Beats ``first`` .. ``last - 1`` of the grid."""
        for k in range(first, last):
            t = self.beat_time(k)
            self.publish(t + self.delay, BeatEvent(
                source="default", timestamp=t - self.t0 + 10.0, system_time=t, is_downbeat=k % self.meter == 0,
                bpm=60.0 / self.period, intensity=0.5, confidence=0.9, beat=k, beat_in_bar=k % self.meter + 1,
                bar=k // self.meter, meter=self.meter, next_beat_time=t - self.t0 + 10.0 + self.period,
                next_beat_system_time=t + self.period, emitted_at=t + self.delay))

    def section(self, start: float, at: float, *, status: str = "confirmed", label: str = "chorus",
                stream_start: float | None = None) -> None:
        """A SectionEvent for a section starting at wall time ``start``, published at ``at``."""
        self.publish(at, SectionEvent(source="default", start=start - self.t0 + 10.0 if stream_start is None
                                      else stream_start, system_time=start, emitted_at=at, label=label,
                                      confidence=0.8, status=status))

    def transition(self, kind: str, time: float, at: float, *, predicted: float | None = None) -> None:
        self.publish(at, TransitionEvent(source="default", kind=kind, timestamp=time - self.t0 + 10.0, system_time=time,
                                         detected_time=at - self.t0 + 10.0, emitted_at=at, confidence=0.8,
                                         predicted_time=None if predicted is None else predicted - self.t0 + 10.0,
                                         predicted_system_time=predicted))

    def levels(self, at: float, intensity: float, bass: float = 0.0, mids: float = 0.0, highs: float = 0.0) -> None:
        self.publish(at, IntensityEvent(source="default", timestamp=at - self.t0 + 10.0, system_time=at, emitted_at=at,
                                        intensity=intensity, rms=0.1, loudness_lufs=-14.0, flux=1.0, centroid_hz=2000.0,
                                        bass=bass, mids=mids, highs=highs))

    # -- the frames -------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        self.now = t
        while self._queue and self._queue[0][0] <= t:
            self.state.apply(heapq.heappop(self._queue)[2])

    def frames(self, until: float, *, pixels: int = 60, fps: float = 60.0):
        """RenderContexts of every frame up to wall time ``until``."""
        dt = 1.0 / fps
        beat_at = None
        while True:
            if beat_at is not None and self.now < beat_at < self._regular:
                t = beat_at + 1e-6
            else:
                t = self._regular
                if t > until:
                    return
                self._regular += dt
            if t > until:
                return
            self._advance(t)
            ctx = self.state.context(t, pixels)
            yield ctx
            beat_at = ctx.next_beat_time if ctx.has_beat else None
