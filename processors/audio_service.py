"""Base daemon for a stateful stage that owns sources and reads their audio stream.

The same ownership model as the beat processor (``processors/service.py``): one lease per
source and role, renewed every ``heartbeat`` seconds and taken over when it lapses; the new
owner resumes from the role's checkpointed audio id. A subclass adds the per-source state and
what to do with each audio chunk, with each entry of the side streams it follows (e.g. the
beats stream), and at the end of the stream. The DSP itself stays in Redis-free modules.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, Lease, Reader, guarded, note_reconnect
from beatbus.config import Settings
from beatbus.log import get_logger
from beatbus.metrics import BUS_LAG, FRAMES_DROPPED, LEASES_HELD, SOURCE_UP
from beatbus.runtime import Service
from producers.publisher import instance_id
from schemas import AudioEntry, AudioFrame, BeatEvent, StreamEnd, pcm_to_float

__all__ = ["AudioStreamService", "OwnedSource", "BeatEntry"]

log = get_logger("processor")
MAX_GAP_S = 5.0      # gaps up to this are filled with silence; longer ones reset the state
BeatEntry = Union[BeatEvent, StreamEnd]


@dataclass
class OwnedSource:
    """Bookkeeping of one owned source; ``state`` is the subclass's per-source object."""

    name: str
    lease: Lease
    state: Any
    expected: int | None = None      # next audio sample index we expect
    origin: float = 0.0              # stream time (s) of the state's time 0 (joins mid-song, resets)
    t0_wall: float | None = None     # wall time (s) of sample 0
    last_id: str = "0-0"
    ended: bool = False
    extra: dict = field(default_factory=dict)

    def stream_time(self, state_time: float) -> float:
        return self.origin + state_time

    def wall(self, stream_time: float, now: float) -> float:
        """Wall-clock time (Unix s) of a stream time of this source."""
        return (self.t0_wall if self.t0_wall is not None else now) + stream_time


class AudioStreamService(Service):
    """Own sources by lease, feed their audio to per-source state, publish what it returns.

    Subclasses set :attr:`role` and :attr:`out_kind`, and implement :meth:`make_state`,
    :meth:`on_audio` and :meth:`on_end`; to follow side streams they set :attr:`side_kinds`
    (``{stream kind: msgspec type}``) and implement :meth:`on_side`.

    Parameters
    ----------
    sources : list of str, optional
        Fixed sources to own; None discovers every live source in the registry.
    exit_when_ended : bool
        Stop once every owned source has ended (tests, batch runs).
    """

    role = "stage"
    out_kind = keys.StreamKind.INTENSITY
    side_kinds: dict[str, Any] = {}

    def __init__(self, bus: Bus, *, settings: Settings, sources: list[str] | None = None,
                 exit_when_ended: bool = False):
        super().__init__()
        self.name = self.role
        self.bus, self.settings = bus, settings
        self.fixed = [keys.check_source(s) for s in sources] if sources else None
        self.exit_when_ended = exit_when_ended
        self.owner = instance_id(self.role)
        self.owned: dict[str, OwnedSource] = {}
        self.reader = Reader(bus, [], block_ms=settings.block_ms)
        self._next_lease = 0.0
        self._backoff = Backoff()

    # -- subclass hooks ---------------------------------------------------------------
    def make_state(self, source: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_audio(self, src: OwnedSource, samples: np.ndarray, frame: AudioFrame, now: float) -> list:
        raise NotImplementedError  # pragma: no cover - abstract

    def on_end(self, src: OwnedSource, end: StreamEnd, now: float) -> list:
        raise NotImplementedError  # pragma: no cover - abstract

    def on_side(self, src: OwnedSource, kind: str, event: Any, now: float) -> list:
        return []

    def on_reset(self, src: OwnedSource) -> None:
        """A gap longer than MAX_GAP_S: start the state over (default: a new state)."""
        src.state = self.make_state(src.name)

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
            # a lapsed lease nobody took is re-acquired (state kept); one taken by another is given up
            if not src.lease.renew() and not src.lease.acquire():
                log.warning("lease lost to another instance; dropping source",
                            extra={"source": name, "role": self.role, "holder": src.lease.holder()})
                self._drop(name)
        for name in self._candidates():
            if name in self.owned:
                continue
            lease = Lease(self.bus, keys.lease(name, self.role), self.owner, self.settings.lease_ttl)
            if lease.acquire():
                self._adopt(name, lease)
        LEASES_HELD.labels(self.role).set(len(self.owned))

    def _adopt(self, name: str, lease: Lease) -> None:
        audio = keys.stream(name, keys.StreamKind.AUDIO)
        ckpt = self.bus.get_checkpoint(name, self.role)
        start = ckpt or self.bus.last_id(audio)       # resume where the previous owner stopped, else live
        self.owned[name] = OwnedSource(name=name, lease=lease, state=self.make_state(name), last_id=start)
        self.reader.add(audio, start)
        for kind in self.side_kinds:
            self.reader.add(keys.stream(name, kind), "$")
        SOURCE_UP.labels(name, self.role).set(1)
        log.info("source adopted", extra={"source": name, "role": self.role, "from": start})

    def _drop(self, name: str) -> None:
        self.owned.pop(name, None)
        self.reader.remove(keys.stream(name, keys.StreamKind.AUDIO))
        for kind in self.side_kinds:
            self.reader.remove(keys.stream(name, kind))
        SOURCE_UP.labels(name, self.role).set(0)

    # -- the loop -------------------------------------------------------------------
    def setup(self) -> None:
        self._manage_leases()

    def step(self, stop: threading.Event) -> bool:
        def read():
            self._manage_leases()
            return self.reader.read(count=200)

        entries = guarded(read, backoff=self._backoff, stop=stop, what=f"read audio ({self.role})")
        out: dict[str, list] = {}
        touched: set[str] = set()
        now = time.time()
        for stream, entry_id, fields in entries:
            name = stream.split("{", 1)[1].split("}", 1)[0]
            src = self.owned.get(name)
            if src is None:
                continue
            kind = stream.rsplit(":", 1)[-1]
            if kind == keys.StreamKind.AUDIO:
                event = self.bus.decode(stream, entry_id, fields, AudioEntry)
                src.last_id = entry_id
                touched.add(name)
                if event is not None:
                    out.setdefault(name, []).extend(self._handle_audio(src, event, entry_id, now))
            elif kind in self.side_kinds:
                event = self.bus.decode(stream, entry_id, fields, self.side_kinds[kind])
                if event is not None:
                    out.setdefault(name, []).extend(self.on_side(src, kind, event, now))
        if touched or out:
            pipe = self.bus.redis.pipeline(transaction=False)
            for name, events in out.items():
                target = keys.stream(name, self.out_kind)
                for ev in events:
                    self.bus.publish(target, ev, maxlen=self.settings.maxlen_events, pipeline=pipe)
            for name in touched:
                if name in self.owned:
                    self.bus.set_checkpoint(name, self.role, self.owned[name].last_id, pipeline=pipe)
            try:
                pipe.execute()
            except BROKER_ERRORS as exc:
                note_reconnect(exc, f"publish {self.out_kind}")
        if self.exit_when_ended and self.owned and all(s.ended for s in self.owned.values()):
            return False
        return True

    def _handle_audio(self, src: OwnedSource, event, entry_id: str, now: float) -> list:
        if isinstance(event, StreamEnd):
            src.ended = True
            return self.on_end(src, event, now)
        src.ended = False
        if event.sr != self.settings.sr:
            # producers publish at the configured rate; another rate is a misconfigured producer
            self.bus.dead_letter(keys.stream(src.name, keys.StreamKind.AUDIO), entry_id, {},
                                 "unsupported_rate", detail=f"sr={event.sr}, expected {self.settings.sr}")
            return []
        out: list = []
        if src.expected is None:
            # a stream joined mid-song: the state's time 0 is this frame's stream time
            src.expected = event.sample_index
            src.origin = event.sample_index / event.sr
        gap = event.sample_index - src.expected
        if gap < 0:                                 # duplicate or replayed frame: already processed
            return []
        if gap > 0:
            FRAMES_DROPPED.labels("gap").inc(max(1, gap // max(1, event.n_samples)))
            if gap > MAX_GAP_S * event.sr:
                self.on_reset(src)
                src.origin = event.sample_index / event.sr
            else:
                out.extend(self.on_audio(src, np.zeros(gap, dtype=np.float32), event, now))
        src.expected = event.sample_index + event.n_samples
        src.t0_wall = event.wall_ns / 1e9 - event.sample_index / event.sr
        BUS_LAG.labels("audio").set(max(0.0, now - (event.wall_ns / 1e9 + event.n_samples / event.sr)))
        out.extend(self.on_audio(src, pcm_to_float(event), event, now))
        return out

    def drain(self) -> None:
        for name, src in list(self.owned.items()):
            try:
                src.lease.release()
            except BROKER_ERRORS:
                pass
            self._drop(name)
        LEASES_HELD.labels(self.role).set(0)
