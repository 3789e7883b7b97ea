"""The intensity daemon: audio -> IntensityEvents (``rate`` per second) and TransitionEvents.

Role ``intensity``: one lease per source, checkpointed like the beat processor. It follows the
source's beats stream when there is one (bar times and tempo for the build-up's drop prediction
and for tempo-change detection); without beats it still detects drops, breakdowns and
build-ups. Both event types go to ``bb:{source}:intensity``; decode that stream with
:data:`processors.intensity.events.IntensityEntry`. Under load (setting ``adaptive``) a source's
features drop to half rate (:data:`LEVELS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter

from beatbus import keys
from beatbus.audio_stage import AudioStreamService, BeatEntry, OwnedSource
from beatbus.bus import Bus
from beatbus.config import Settings
from beatbus.errors import ConfigError
from beatbus.metrics import STAGE_LATENCY
from beatbus.quality import FULL
from beatbus.schemas import BeatEvent, IntensityEvent, StreamEnd

from .events import TransitionEvent, transition_event
from .features import IntensityFeatures
from .predict import Transition, TransitionDetector

__all__ = ["IntensityService", "IntensityState", "TRANSITIONS"]

# adaptive quality: features of every hop, then of every second one (one frame per 40 ms: the
# per-frame work halves, two thirds of the CPU remain; the step restarts the source's adaptive range and transition history)
LEVELS = (FULL, "half")
HOPS = (1, 2)
COSTS = (1.0, 0.65)          # CPU per second of audio relative to full (README, Adaptive quality)
TRANSITIONS = Counter("beatbus_transitions_total", "Energy transitions and tempo changes detected", ["kind"])


@dataclass
class IntensityState:
    """Per-source features, detector and the running aggregate of the current emission interval."""

    features: IntensityFeatures
    detector: TransitionDetector
    next_emit: float | None = None
    acc: list = field(default_factory=list)


class IntensityService(AudioStreamService):
    """Publish per-source intensity features and transitions.

    Parameters
    ----------
    rate : float
        IntensityEvents per second (0 < rate <= frames per second, 50 at 20 ms hops). Each
        event summarises the frames since the previous one: mean intensity and flux, power-weighted
        mean centroid and band shares, rms over the interval, and the latest short-term loudness.
    transitions : bool
        Also publish TransitionEvents.
    """

    role = keys.Role.INTENSITY
    out_kind = keys.StreamKind.INTENSITY
    side_kinds = {keys.StreamKind.BEATS: BeatEntry}
    DEFAULT_RATE = 20.0

    def __init__(self, bus: Bus, *, settings: Settings, sources: list[str] | None = None,
                 rate: float = DEFAULT_RATE, transitions: bool = True, exit_when_ended: bool = False):
        fps = settings.sr / settings.hop
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 < rate <= fps):
            raise ConfigError(f"rate={rate!r} must be in (0, {fps:g}] events per second")
        super().__init__(bus, settings=settings, sources=sources, exit_when_ended=exit_when_ended)
        self.rate = float(rate)
        self.transitions = transitions

    def make_state(self, source: str) -> IntensityState:
        hop = self.settings.hop * HOPS[self.quality(source)]
        feats = IntensityFeatures(sr=self.settings.sr, hop_length=hop)
        return IntensityState(features=feats, detector=TransitionDetector(fps=feats.fps))

    # -- adaptive quality -------------------------------------------------------------
    def quality_ladder(self, state: IntensityState) -> tuple[tuple[str, ...], tuple[float, ...]]:
        return LEVELS, COSTS

    def set_quality(self, src: OwnedSource, level: int) -> None:
        """A new state at the level's frame rate, from the current stream position (as for a join)."""
        src.state = self.make_state(src.name)
        if src.expected is not None:
            src.origin = src.expected / self.settings.sr

    # -- events ---------------------------------------------------------------------
    def _transition(self, src: OwnedSource, tr: Transition, now: float) -> TransitionEvent:
        TRANSITIONS.labels(tr.kind).inc()
        return transition_event(tr, source=src.name, stream_time=src.stream_time, wall=lambda t: src.wall(t, now),
                                now=now)

    def _summary(self, src: OwnedSource, frames: list, now: float) -> IntensityEvent:
        last = frames[-1]
        ts = src.stream_time(last.time)

        power = np.array([f.rms * f.rms for f in frames])
        # spectral shape is averaged by power, so silent frames between hits do not dilute it
        weights = power if power.sum() > 0 else None

        def mean(name: str, weighted: bool = False) -> float:
            return float(np.average([getattr(f, name) for f in frames], weights=weights if weighted else None))

        ev = IntensityEvent(
            source=src.name, timestamp=ts, system_time=src.wall(ts, now), emitted_at=now,
            intensity=float(np.clip(mean("intensity"), 0, 1)), rms=math.sqrt(float(power.mean())),
            loudness_lufs=float(last.loudness), flux=mean("flux"), centroid_hz=mean("centroid", True),
            bass=float(np.clip(mean("bass", True), 0, 1)), mids=float(np.clip(mean("mids", True), 0, 1)),
            highs=float(np.clip(mean("highs", True), 0, 1)))
        STAGE_LATENCY.labels(self.role).observe(max(0.0, now - ev.system_time))
        return ev

    # -- hooks ----------------------------------------------------------------------
    def on_audio(self, src: OwnedSource, samples: np.ndarray, frame, now: float) -> list:
        st: IntensityState = src.state
        out: list = []
        period = 1.0 / self.rate
        if st.next_emit is None:
            st.next_emit = period
        for f in st.features.process(samples):
            st.acc.append(f)
            if self.transitions:
                out.extend(self._transition(src, tr, now) for tr in st.detector.push(f))
            if f.time + 1e-9 >= st.next_emit:
                out.append(self._summary(src, st.acc, now))
                st.acc = []
                st.next_emit += period * max(1, math.floor((f.time - st.next_emit) / period) + 1)
        return out

    def on_side(self, src: OwnedSource, kind: str, event, now: float) -> list:
        if not (self.transitions and isinstance(event, BeatEvent)):
            return []
        st: IntensityState = src.state
        trs = st.detector.add_beat(event.timestamp - src.origin, event.bpm, event.beat_in_bar, event.meter)
        return [self._transition(src, tr, now) for tr in trs]

    def on_end(self, src: OwnedSource, end: StreamEnd, now: float) -> list:
        st: IntensityState = src.state
        out = [self._summary(src, st.acc, now)] if st.acc else []
        src.state = self.make_state(src.name)      # a new stream under this name starts fresh
        src.expected = None
        return [*out, StreamEnd(source=src.name, timestamp=end.timestamp, reason=end.reason, emitted_at=now)]
