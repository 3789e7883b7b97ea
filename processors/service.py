"""The processor daemon: turns each owned source's audio stream into BeatEvents.

One instance may own many sources. Ownership is a lease per source (role ``beat``):
renewed every ``heartbeat`` seconds, taken over by another instance when it lapses;
the new owner resumes from the checkpointed stream id. The sources' processors live in one
:class:`~processors.beat.BeatBatch`: each read advances every source with new audio together
(one FFT call, one network step and one tracker step per frame for all of them). The DSP/ML
stages themselves live in ``processors.beat`` and never see Redis.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Lease, Reader, guarded, note_reconnect
from beatbus.config import Settings
from beatbus.log import get_logger
from beatbus.metrics import BEATS, BPM, BUS_LAG, FRAMES_DROPPED, LEASES_HELD, SOURCE_UP, STAGE_LATENCY
from beatbus.runtime import Service
from processors.beat import BeatBatch
from producers.publisher import instance_id
from schemas import AudioEntry, AudioFrame, BeatEvent, StreamEnd, pcm_to_float

__all__ = ["BeatService", "BeatIntensity"]

log = get_logger("processor")
ROLE = "beat"
MAX_GAP_S = 5.0      # gaps up to this are filled with silence; longer ones reset the tracker


class BeatIntensity:
    """Per-beat loudness in 0..1 with adaptive gain (RMS over the last beat / slow peak).

    The intensity processor publishes the full feature set; this keeps BeatEvent's
    ``intensity`` meaningful when only the beat processor runs.
    """

    def __init__(self, *, sr: int, decay_s: float = 30.0):
        self.sr = sr
        self.buf = np.zeros(sr, dtype=np.float32)   # last second of audio
        self.peak = 1e-4
        self.decay = np.exp(-1.0 / (decay_s * 50))   # per 20 ms update

    def push(self, x: np.ndarray) -> None:
        n = min(len(x), len(self.buf))
        self.buf = np.roll(self.buf, -n)
        self.buf[-n:] = x[-n:]

    def at_beat(self, period_s: float) -> float:
        n = int(np.clip(period_s, 0.1, 1.0) * self.sr)
        rms = float(np.sqrt(np.mean(self.buf[-n:] ** 2)))
        self.peak = max(rms, self.peak * self.decay)
        return float(np.clip(rms / self.peak, 0.0, 1.0))


@dataclass
class _Source:
    name: str
    lease: Lease
    processor: object
    intensity: BeatIntensity
    expected: int | None = None      # next sample index we expect
    origin: int = 0                  # sample index of the processor's stream time 0
    t0_wall: float | None = None     # wall time (s) of sample 0
    beat: int = 0
    bar: int = 0
    last_id: str = "0-0"
    ended: bool = False
    extra: dict = field(default_factory=dict)


class BeatService(Service):
    """Own sources by lease and publish their beats.

    Parameters
    ----------
    sources : list of str, optional
        Fixed sources to own; None discovers every live source in the registry.
    make_processor : callable
        ``make_processor() -> processors.beat.BeatProcessor`` (one per source; processors with the
        same backend and settings are advanced in one batch).
    """

    name = "processor"

    def __init__(self, bus: Bus, *, settings: Settings, make_processor, sources: list[str] | None = None,
                 exit_when_ended: bool = False):
        super().__init__()
        self.bus, self.settings, self.make_processor = bus, settings, make_processor
        self.fixed = [keys.check_source(s) for s in sources] if sources else None
        self.exit_when_ended = exit_when_ended
        self.owner = instance_id(ROLE)
        self.owned: dict[str, _Source] = {}
        self.batch = BeatBatch(make_processor)
        self.reader = Reader(bus, [], block_ms=settings.block_ms)
        self._next_lease = 0.0
        self._backoff = Backoff()

    # -- ownership ------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        if self.fixed is not None:
            return self.fixed
        return self.bus.sources(max_age=max(3 * self.settings.heartbeat, self.settings.lease_ttl))

    def _manage_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_lease:
            return
        self._next_lease = now + min(self.settings.heartbeat, self.settings.lease_ttl / 3)
        for name, src in list(self.owned.items()):
            # A lapsed lease that nobody took (e.g. the broker restarted empty) is simply
            # re-acquired, keeping the tracker's state; one taken by another instance is given up.
            if not src.lease.renew() and not src.lease.acquire():
                log.warning("lease lost to another instance; dropping source",
                            extra={"source": name, "holder": src.lease.holder()})
                self._drop(name)
        for name in self._candidates():
            if name in self.owned:
                continue
            lease = Lease(self.bus, keys.lease(name, ROLE), self.owner, self.settings.lease_ttl)
            if lease.acquire():
                self._adopt(name, lease)
        LEASES_HELD.labels(ROLE).set(len(self.owned))

    def _adopt(self, name: str, lease: Lease) -> None:
        stream = keys.stream(name, keys.StreamKind.AUDIO)
        ckpt = self.bus.get_checkpoint(name, ROLE)
        # Resume where the previous owner stopped, else go live from now.
        start = ckpt or self.bus.last_id(stream)
        src = _Source(name=name, lease=lease, processor=self.batch.add(name),
                      intensity=BeatIntensity(sr=self.settings.sr), last_id=start)
        self.owned[name] = src
        self.reader.add(stream, start)
        SOURCE_UP.labels(name, ROLE).set(1)
        log.info("source adopted", extra={"source": name, "from": start})

    def _drop(self, name: str) -> None:
        self.owned.pop(name, None)
        self.batch.remove(name)
        self.reader.remove(keys.stream(name, keys.StreamKind.AUDIO))
        SOURCE_UP.labels(name, ROLE).set(0)

    # -- processing -----------------------------------------------------------------
    def setup(self) -> None:
        self._manage_leases()

    def step(self, stop: threading.Event) -> bool:
        def read():
            self._manage_leases()
            return self.reader.read(count=200)

        entries = guarded(read, backoff=self._backoff, stop=stop, what="read audio")
        by_source: dict[str, list] = {}
        for stream, entry_id, fields in entries:
            name = stream.split("{", 1)[1].split("}", 1)[0]
            src = self.owned.get(name)
            if src is None:
                continue
            event = self.bus.decode(stream, entry_id, fields, AudioEntry)
            src.last_id = entry_id
            if event is not None:
                by_source.setdefault(name, []).append(event)
            else:
                by_source.setdefault(name, [])
        out = self._process(by_source)
        pipe = self.bus.redis.pipeline(transaction=False)
        for name, events in out.items():
            src = self.owned[name]
            out_stream = keys.stream(name, keys.StreamKind.BEATS)
            for ev in events:
                self.bus.publish(out_stream, ev, maxlen=self.settings.maxlen_events, pipeline=pipe)
            self.bus.set_checkpoint(name, ROLE, src.last_id, pipeline=pipe)
        try:
            if by_source:
                pipe.execute()
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "publish beats")
        if self.exit_when_ended and self.owned and all(s.ended for s in self.owned.values()):
            return False
        return True

    def _process(self, by_source: dict[str, list]) -> dict[str, list]:
        """Events in, output events per source out, in order. Audio is processed in rounds: round
        ``r`` feeds the ``r``-th chunk of every source to the batch in one call."""
        pending = {name: deque(events) for name, events in by_source.items()}
        out: dict[str, list] = {name: [] for name in by_source}
        while pending:
            chunks = {}
            now = time.time()
            for name in list(pending):
                queue, src = pending[name], self.owned[name]
                while queue:  # control events up to this source's next audio chunk
                    samples = self._admit(src, queue.popleft(), out[name], now)
                    if samples is not None:
                        chunks[name] = samples
                        break
                if not queue:
                    del pending[name]
            if chunks:
                results = self.batch.process(chunks)
                now = time.time()  # emission time of these beats
                for name, beats in results.items():
                    out[name].extend(self._beat_events(self.owned[name], beats, now))
        return out

    def _admit(self, src: _Source, event, out: list, now: float) -> np.ndarray | None:
        """Bookkeeping for one event: the samples to feed the processor (None for none); the
        end-of-stream output goes to ``out``."""
        if isinstance(event, StreamEnd):
            beats = self.batch.flush(src.name)
            out.extend(self._beat_events(src, beats, now))
            out.append(StreamEnd(source=src.name, timestamp=event.timestamp, reason=event.reason, emitted_at=now))
            src.ended = True
            # a new stream on this source starts from scratch
            self.batch.reset(src.name)
            src.expected = None
            return None
        assert isinstance(event, AudioFrame)
        src.ended = False
        samples = pcm_to_float(event)
        if event.sr != self.settings.sr:
            # Producers publish at the configured rate; another rate is a misconfigured producer.
            self.bus.dead_letter(keys.stream(src.name, keys.StreamKind.AUDIO), src.last_id, {},
                                 "unsupported_rate", detail=f"sr={event.sr}, expected {self.settings.sr}")
            return None
        if src.expected is None:
            src.expected = src.origin = event.sample_index  # the processor's time 0
        gap = event.sample_index - src.expected
        if gap < 0:                       # duplicate or replayed frame: already processed
            return None
        if gap > 0:
            FRAMES_DROPPED.labels("gap").inc(max(1, gap // max(1, event.n_samples)))
            if gap > MAX_GAP_S * event.sr:
                self.batch.reset(src.name)
                src.origin = event.sample_index
            else:
                samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])  # silence in the gap
        src.expected = event.sample_index + event.n_samples
        src.t0_wall = event.wall_ns / 1e9 - event.sample_index / event.sr
        BUS_LAG.labels("audio").set(max(0.0, now - (event.wall_ns / 1e9 + event.n_samples / event.sr)))
        src.intensity.push(samples)
        return samples

    def _beat_events(self, src: _Source, beats, now: float) -> list[BeatEvent]:
        out = []
        t0 = src.t0_wall or now
        base = src.origin / self.settings.sr  # stream time of the processor's time 0
        for b in beats:
            # a new bar starts whenever the position in the bar wraps around
            if src.beat > 0 and b.beat_in_bar <= src.extra.get("prev_in_bar", 0):
                src.bar += 1
            src.extra["prev_in_bar"] = b.beat_in_bar
            time_s, next_s = base + b.time, max(base + b.next_beat_time, 0.0)
            ev = BeatEvent(
                source=src.name, timestamp=time_s, system_time=t0 + time_s,
                is_downbeat=b.is_downbeat, bpm=float(np.clip(b.bpm, 0, 400)),
                intensity=src.intensity.at_beat(60.0 / max(b.bpm, 1.0)),
                confidence=float(np.clip(b.confidence, 0, 1)), beat=src.beat,
                beat_in_bar=int(b.beat_in_bar), bar=src.bar, meter=int(b.meter),
                next_beat_time=next_s, next_beat_system_time=t0 + next_s,
                emitted_at=now, backend=self.settings.backend)
            src.beat += 1
            out.append(ev)
            BEATS.labels(self.settings.backend).inc()
            BPM.labels(src.name).set(ev.bpm)
            STAGE_LATENCY.labels(ROLE).observe(max(0.0, now - ev.system_time))
        return out

    def drain(self) -> None:
        for name, src in list(self.owned.items()):
            try:
                src.lease.release()
            except BROKER_ERRORS:
                pass
            self._drop(name)
        LEASES_HELD.labels(ROLE).set(0)
