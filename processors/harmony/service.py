"""The harmony daemon: audio (+ beats) -> KeyEvents and ChordEvents on ``bb:{source}:harmony``.

Role ``harmony``: one lease per source, checkpointed like the beat processor. It follows the
source's beats stream: the chroma between two beats is one observation (a fixed 0.5 s grid when
no beats come), and the beats' bar positions give the chord changes' grid and the prediction of
the next one. Events go out only on a change, with hysteresis and at a bounded rate (at most
``OnlineHarmony.CHORD_EVENTS_PER_MIN`` chords and ``KEY_EVENTS_PER_MIN`` keys per minute of
audio; see :mod:`.online`); a StreamEnd follows the source's. Decode the stream with
:data:`processors.harmony.events.HarmonyEntry`.
"""
from __future__ import annotations

import numpy as np
from prometheus_client import Counter

from beatbus import keys
from beatbus.audio_stage import AudioStreamService, BeatEntry, OwnedSource
from beatbus.metrics import STAGE_LATENCY
from beatbus.schemas import BeatEvent, StreamEnd

from .events import ChordEvent, KeyEvent
from .online import ChordUpdate, KeyUpdate, OnlineHarmony

__all__ = ["HarmonyService", "HARMONY_EVENTS"]

HARMONY_EVENTS = Counter("beatbus_harmony_events_total", "Key and chord changes published", ["kind"])


class HarmonyService(AudioStreamService):
    """Publish each owned source's key and chord changes."""

    role = keys.Role.HARMONY
    out_kind = keys.StreamKind.HARMONY
    side_kinds = {keys.StreamKind.BEATS: BeatEntry}

    def make_state(self, source: str) -> OnlineHarmony:
        return OnlineHarmony(sr=self.settings.sr, hop_length=self.settings.hop)

    def _events(self, src: OwnedSource, updates: list, now: float) -> list:
        out: list = []
        for u in updates:
            ts = max(src.stream_time(u.time), 0.0)
            detected = max(src.stream_time(u.decided_at), ts)
            if isinstance(u, KeyUpdate):
                HARMONY_EVENTS.labels("key").inc()
                out.append(KeyEvent(source=src.name, timestamp=ts, system_time=src.wall(ts, now), detected_time=detected,
                                    emitted_at=now, tonic=u.tonic, mode=u.mode,
                                    confidence=float(np.clip(u.confidence, 0, 1))))
                continue
            assert isinstance(u, ChordUpdate)
            HARMONY_EVENTS.labels("chord").inc()
            nxt = src.stream_time(u.next_change) if u.next_change is not None else None
            ahead = u.next_change_beats if u.next_change_beats is not None and 1 <= u.next_change_beats <= 64 else None
            if ahead is None:
                nxt = None
            out.append(ChordEvent(
                source=src.name, timestamp=ts, system_time=src.wall(ts, now), detected_time=detected, emitted_at=now,
                root=u.root, quality=u.quality, confidence=float(np.clip(u.confidence, 0, 1)),
                beat=u.beat if u.beat is not None and u.beat >= 0 else None,
                bar=u.bar if u.bar is not None and u.bar >= 0 else None,
                beat_in_bar=u.beat_in_bar if u.beat_in_bar is not None and 1 <= u.beat_in_bar <= 12 else None,
                next_change_time=max(nxt, 0.0) if nxt is not None else None,
                next_change_system_time=src.wall(max(nxt, 0.0), now) if nxt is not None else None,
                next_change_beats=ahead))
            # latency: from the audio that decided the chord to its event
            STAGE_LATENCY.labels(self.role).observe(max(0.0, now - src.wall(detected, now)))
        return out

    def on_audio(self, src: OwnedSource, samples: np.ndarray, frame, now: float) -> list:
        return self._events(src, src.state.process(samples, wall=now), now)

    def on_side(self, src: OwnedSource, kind: str, event, now: float) -> list:
        if not isinstance(event, BeatEvent) or src.expected is None:
            return []           # before this state's first audio its clock is unknown (a join mid-song)
        t = event.timestamp - src.origin
        if t < 0:
            return []           # a beat from before this state's audio began
        return self._events(src, src.state.add_beat(t, beat=event.beat, bar=event.bar, beat_in_bar=event.beat_in_bar,
                                                    meter=event.meter, bpm=event.bpm, wall=now), now)

    def on_end(self, src: OwnedSource, end: StreamEnd, now: float) -> list:
        out = self._events(src, src.state.finish(), now)
        src.state = self.make_state(src.name)      # a new stream under this name starts fresh
        src.expected = None
        return [*out, StreamEnd(source=src.name, timestamp=end.timestamp, reason=end.reason, emitted_at=now)]
