"""The producer daemon: publishes an audio source's chunks to ``bb:{source}:audio``.

It claims the source name with a lease (a second producer under the same name is
refused), heartbeats the source registry, and survives broker outages: frames captured
while the broker is down wait in a bounded buffer (``buffer_seconds``); beyond it the
oldest are dropped and counted in ``beatbus_frames_dropped_total{reason="broker_down"}``.
"""
from __future__ import annotations

import collections
import threading
import time

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Lease, Outage, note_back, note_reconnect
from beatbus.config import Settings
from beatbus.errors import SourceClaimedError
from beatbus.log import get_logger
from beatbus.metrics import FRAMES_DROPPED, PUBLISH_ERRORS, SOURCE_UP
from beatbus.runtime import Service, instance_id
from beatbus.schemas import AudioFrame, StreamEnd, float_to_pcm, to_fields

__all__ = ["Publisher"]

log = get_logger("producer")


class Publisher(Service):
    """Publish every chunk of ``audio`` (an iterator of producers.Chunk) as AudioFrames."""

    name = "producer"

    def __init__(self, bus: Bus, audio, *, settings: Settings, source: str | None = None):
        super().__init__()
        self.bus, self.audio, self.settings = bus, audio, settings
        self.source = keys.check_source(source or settings.source)
        self.stream = keys.stream(self.source, keys.StreamKind.AUDIO)
        self.lease = Lease(bus, keys.producer_claim(self.source), instance_id(keys.Role.PRODUCER), settings.lease_ttl)
        cap = max(1, int(settings.buffer_seconds * settings.sr / settings.hop))
        self.pending: collections.deque = collections.deque(maxlen=cap)
        self.seq = 0
        self.samples_out = 0
        self.dropped = 0
        self.finished = False
        self._next_beat_of_life = 0.0
        # on a cluster the registry has a node of its own: its failover must not hold this source's
        # frames back (they go to the source's node); the next heartbeat retries
        self._registry = Outage("source registry unavailable; publishing on", "source registry back")
        self._retry_at = 0.0
        self._backoff = Backoff()
        self._iter = iter(audio)
        self.claimed = False

    def setup(self) -> None:
        if not self.lease.acquire():
            raise SourceClaimedError(
                f"source {self.source!r} is already produced by {self.lease.holder()}; "
                f"stop it or choose another --source")
        self.claimed = True
        SOURCE_UP.labels(self.source, "producer").set(1)
        FRAMES_DROPPED.labels("broker_down")  # exported at 0 from the start: "none lost" is visible

    def _keepalive(self) -> None:
        now = time.monotonic()
        if now < self._next_beat_of_life:
            return
        # the heartbeat first: on a cluster the registry has a node of its own, and a producer that
        # cannot reach its source's node is still alive (its dropped frames tell the rest)
        try:
            self.bus.heartbeat(self.source)
        except BROKER_ERRORS as exc:
            self._registry.failed(exc)
        else:
            self._registry.ok()
        if not self.lease.renew() and not self.lease.acquire():
            # the broker lost our key (restart) and someone else took the name meanwhile
            raise SourceClaimedError(f"source {self.source!r} was taken over by {self.lease.holder()}")
        self._next_beat_of_life = now + self.settings.heartbeat

    def _enqueue(self, fields: dict) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
            FRAMES_DROPPED.labels("broker_down").inc()
        self.pending.append(fields)

    def _flush(self, stop: threading.Event) -> None:
        """Send buffered frames in one pipeline; on a broker error keep them and back off."""
        if not self.pending or time.monotonic() < self._retry_at:
            return
        try:
            self._keepalive()
            pipe = self.bus.pipeline()
            batch = list(self.pending)
            for fields in batch:
                self.bus.publish_fields(self.stream, fields, maxlen=self.settings.maxlen_audio, pipeline=pipe)
            pipe.execute()
            for _ in batch:
                self.pending.popleft()
            if self._backoff.attempt:
                note_back("publish audio")
                log.info("buffered frames sent", extra={"frames": len(batch)})
            self._backoff.reset()
        except BROKER_ERRORS as exc:
            PUBLISH_ERRORS.labels("audio").inc()
            note_reconnect(exc, "publish audio")
            # don't sleep here: a live source must keep being read while we wait
            self._retry_at = time.monotonic() + self._backoff.delay()

    def step(self, stop: threading.Event, *, flush: bool = True) -> bool:
        """Publish the next chunk (``flush=False``: only buffer it in :attr:`pending`; the load
        generator sends many sources' frames in one round trip)."""
        try:
            chunk = next(self._iter)
        except StopIteration:
            self.finished = True
            return False
        frame = AudioFrame(source=self.source, seq=self.seq, sample_index=chunk.sample_index,
                           wall_ns=chunk.wall_ns, sr=self.settings.sr, n_samples=len(chunk.samples),
                           pcm=float_to_pcm(chunk.samples))
        self.seq += 1
        self.samples_out = chunk.sample_index + len(chunk.samples)
        self._enqueue(to_fields(frame))
        if flush:
            self._flush(stop)
        return True

    def drain(self) -> None:
        """Send what is buffered (briefly retrying), then the end-of-stream marker."""
        if not self.claimed:             # refused at setup: the source is another producer's, say nothing on it
            close = getattr(self.audio, "close", None)
            if close:
                close()
            return
        end = StreamEnd(source=self.source, timestamp=self.samples_out / self.settings.sr,
                        reason="eof" if self.finished else ("error" if self.error else "stopped"), emitted_at=time.time())
        deadline = time.monotonic() + 3.0
        stop = threading.Event()
        while self.pending and time.monotonic() < deadline:
            self._retry_at = 0.0
            self._flush(stop)
            if self.pending:
                time.sleep(0.1)
        if self.pending:
            FRAMES_DROPPED.labels("shutdown").inc(len(self.pending))
            log.warning("frames lost at shutdown: broker unreachable", extra={"frames": len(self.pending)})
        try:
            # the end is recorded with the stream and written only while we still hold the source:
            # readers ignore an end anyone else adds (beatbus.bus.Bus.end_stream)
            if not self.pending and self.bus.end_stream(self.stream, end, maxlen=self.settings.maxlen_audio,
                                                        lease=self.lease) is None:
                log.warning("end of stream not sent: the source is no longer ours",
                            extra={"source": self.source, "holder": self.lease.holder()})
            self.lease.release()
        except BROKER_ERRORS:
            pass
        SOURCE_UP.labels(self.source, "producer").set(0)
        close = getattr(self.audio, "close", None)
        if close:
            close()
