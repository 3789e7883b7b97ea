"""The processor daemon: turns each owned source's audio stream into BeatEvents.

One instance may own many sources; ownership, reading, gaps and checkpoints are those of every
audio stage (:class:`~beatbus.audio_stage.AudioStreamService`, role ``beat``). The sources'
processors live in one :class:`~processors.beat.BeatBatch`: each read advances every source with
new audio together (one FFT call, one network step and one tracker step per frame for all of
them). Under load (setting ``adaptive``) adaptive quality moves sources to cheaper backends and
back (the ladder: :mod:`processors.beat.adaptive`). The DSP/ML stages themselves live in
``processors.beat`` and never see Redis.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from beatbus import keys
from beatbus.audio_stage import MAX_GAP_S, AudioStreamService, Item, OwnedSource
from beatbus.bus import Bus
from beatbus.config import Settings
from beatbus.errors import ConfigError
from beatbus.log import get_logger
from beatbus.metrics import BEATS, BPM, STAGE_LATENCY
from beatbus.schemas import BeatEvent, StreamEnd

from .adaptive import costs_for, level_named, levels_for
from .batch import BeatBatch
from .intensity import BeatIntensity
from .processor import BeatProcessor

__all__ = ["BeatService"]

ROUND_S = 0.2        # most audio per source fed in one batch step
log = get_logger("processor")


@dataclass
class BeatState:
    """Per-source state: the processor (a member of the service's batch) and the beat count."""

    processor: BeatProcessor      # its ``backend`` is the source's active one (adaptive quality)
    intensity: BeatIntensity
    beat: int = 0
    bar: int = 0
    prev_in_bar: int = 0


class BeatService(AudioStreamService):
    """Own sources by lease and publish their beats.

    Parameters
    ----------
    sources : list of str, optional
        Fixed sources to own; None discovers the live sources in the registry (a fair share of
        them while other processors run).
    make_processor : callable
        ``make_processor() -> processors.beat.BeatProcessor`` (one per source; processors with the
        same backend and settings are advanced in one batch).
    exit_when_ended, owner
        As for :class:`~beatbus.audio_stage.AudioStreamService`.
    """

    role = keys.Role.BEAT
    out_kind = keys.StreamKind.BEATS

    def __init__(self, bus: Bus, *, settings: Settings, make_processor, sources: list[str] | None = None,
                 exit_when_ended: bool = False, owner: str | None = None):
        self.batch = BeatBatch(make_processor)
        self._make = make_processor
        super().__init__(bus, settings=settings, sources=sources, exit_when_ended=exit_when_ended, owner=owner)
        self.name = "processor"

    # -- state hooks ------------------------------------------------------------------
    def make_state(self, source: str) -> BeatState:
        return BeatState(processor=self.batch.add(source), intensity=BeatIntensity(sr=self.settings.sr))

    def on_reset(self, src: OwnedSource) -> None:
        self.batch.reset(src.name)

    def on_drop(self, src: OwnedSource) -> None:
        self.batch.remove(src.name)

    # -- adaptive quality -----------------------------------------------------------------
    def quality_ladder(self, state: BeatState) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """The configured backend, then the cheaper levels whose backend's extra is installed."""
        proc = state.processor
        levels = [proc.backend]
        for name in levels_for(proc.backend)[1:]:
            try:
                self._level_processor(name, proc)
            except (ConfigError, ImportError, ValueError) as exc:
                log.warning("adaptive quality skips a level", extra={"level": name, "error": str(exc)})
                continue
            levels.append(name)
        return tuple(levels), costs_for(tuple(levels))

    @staticmethod
    def _level_processor(name: str, like: BeatProcessor) -> BeatProcessor:
        lv = level_named(name)
        return BeatProcessor(backend=lv.backend, sr=like.sr, device=like.device, **lv.tracker)

    def set_quality(self, src: OwnedSource, level: int) -> None:
        """Swap the source's processor for one of the level's backend and tracker settings; beat and
        bar counts carry on, and the new processor's time 0 is the current stream position (as for a join)."""
        old = self.batch.remove(src.name)
        new = self._make() if level == 0 else self._level_processor(self.governor.levels[level], old)
        self.batch.add(src.name, new)
        src.state.processor = new
        if src.expected is not None:
            src.origin = src.expected / self.settings.sr

    def on_audio(self, src: OwnedSource, samples: np.ndarray, frame, now: float) -> list:
        return self._track({src.name: samples})[src.name]

    def on_end(self, src: OwnedSource, end: StreamEnd, now: float) -> list:
        out = self._beat_events(src, self.batch.flush(src.name), now)
        out.append(StreamEnd(source=src.name, timestamp=end.timestamp, reason=end.reason, emitted_at=now))
        self.batch.reset(src.name)          # a new stream on this source starts from scratch
        src.expected = None
        return out

    # -- processing -----------------------------------------------------------------
    def process(self, items: dict[str, list[Item]], now: float) -> dict[str, list]:
        """Audio in rounds: each round feeds every source's next run of audio (up to ``ROUND_S``) to
        the batch in one call; end-of-stream entries are handled between rounds.

        A source's frames read together go in one chunk: the per-source work of a step is then paid
        once per read, not once per 20 ms frame, so a busy processor does less per frame the further
        behind it is (and catches up); the cap keeps a catch-up renewing its leases between rounds."""
        pending = {name: deque(queue) for name, queue in items.items()}
        out: dict[str, list] = {name: [] for name in items}
        sr = self.settings.sr
        while pending:
            self.keep_leases()
            chunks = {}
            now = time.time()
            for name in list(pending):
                queue, src = pending[name], self.owned[name]
                parts: list[np.ndarray] = []
                while queue and sum(len(p) for p in parts) < ROUND_S * sr:
                    _, event, entry_id = queue[0]
                    if parts and not self._joins(src, event):
                        break                   # an end or a long gap: track the audio before it first
                    queue.popleft()
                    samples = self.admit(src, event, entry_id, now, out[name])
                    if samples is not None:
                        parts.append(samples)
                if parts:
                    chunks[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
                if not queue:
                    del pending[name]
            for name, events in self._track(chunks).items():
                out[name].extend(events)
            self.govern()                 # between rounds: a decision applies from the next round on
        return out

    @staticmethod
    def _joins(src: OwnedSource, event) -> bool:
        """Whether ``event`` continues the audio gathered for this round (no end, no state reset)."""
        if isinstance(event, StreamEnd):
            return False
        return src.expected is None or event.sample_index - src.expected <= MAX_GAP_S * event.sr

    def _track(self, chunks: dict[str, np.ndarray]) -> dict[str, list[BeatEvent]]:
        """One batch step over some sources' new audio; their beat events."""
        if not chunks:
            return {}
        for name, samples in chunks.items():
            self.owned[name].state.intensity.push(samples)
        results = self.batch.process(chunks)
        now = time.time()  # emission time of these beats
        return {name: self._beat_events(self.owned[name], beats, now) for name, beats in results.items()}

    def _beat_events(self, src: OwnedSource, beats, now: float) -> list[BeatEvent]:
        st: BeatState = src.state
        out = []
        for b in beats:
            # a new bar starts whenever the position in the bar wraps around
            if st.beat > 0 and b.beat_in_bar <= st.prev_in_bar:
                st.bar += 1
            st.prev_in_bar = b.beat_in_bar
            time_s, next_s = src.stream_time(b.time), max(src.stream_time(b.next_beat_time), 0.0)
            ev = BeatEvent(
                source=src.name, timestamp=time_s, system_time=src.wall(time_s, now),
                is_downbeat=b.is_downbeat, bpm=float(np.clip(b.bpm, 0, 400)),
                intensity=st.intensity.at_beat(60.0 / max(b.bpm, 1.0)),
                confidence=float(np.clip(b.confidence, 0, 1)), beat=st.beat,
                beat_in_bar=int(b.beat_in_bar), bar=st.bar, meter=int(b.meter),
                next_beat_time=next_s, next_beat_system_time=src.wall(next_s, now),
                emitted_at=now, backend=st.processor.backend)
            st.beat += 1
            out.append(ev)
            BEATS.labels(st.processor.backend).inc()
            BPM.labels(src.name).set(ev.bpm)
            STAGE_LATENCY.labels(self.role).observe(max(0.0, now - ev.system_time))
        return out
