"""Base daemon for a stateful stage that owns sources and reads their audio stream.

Used by the beat, intensity and structure processors. Ownership is one lease per source and
role (:class:`~beatbus.leases.SourceLeases`): renewed every ``heartbeat`` seconds, also inside
long catch-up work, taken over when it lapses, and shared fairly between the instances that
discover sources; the new owner resumes from the role's checkpointed audio id. The base reads
the audio (and side) streams, fills gaps with silence or resets the state, publishes the output
and checkpoints, and (setting ``adaptive``) runs the stage's adaptive quality: it measures the
stage's load and lags, feeds them to a :class:`~beatbus.quality.QualityGovernor` and applies
its decisions through the subclass; a subclass adds the per-source state and what to do with each audio chunk,
with each entry of the side streams it follows (e.g. the beats stream), and at the end of the
stream. The DSP itself stays in Redis-free modules.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beatbus import keys
from beatbus.bus import Backoff, Bus, Reader, guarded
from beatbus.config import Settings
from beatbus.leases import SourceLeases
from beatbus.log import get_logger
from beatbus.metrics import BUS_LAG, FRAMES_DROPPED, LEASES_HELD, QUALITY_LEVEL, SOURCE_UP, child
from beatbus.quality import FULL, Decision, QualityGovernor
from beatbus.runtime import Service, instance_id
from beatbus.schemas import AudioEntry, AudioFrame, BeatEvent, StreamEnd, pcm_to_float

__all__ = ["AudioStreamService", "OwnedSource", "BeatEntry", "Item"]

log = get_logger("processor")
MAX_GAP_S = 5.0      # gaps up to this are filled with silence; longer ones reset the state
WATCH_REFRESH_S = 5.0  # how often adaptive quality rereads when each source was last watched
BeatEntry = BeatEvent | StreamEnd
Item = tuple[str, Any, str]          # (stream kind, decoded event, entry id) of one owned source


@dataclass
class OwnedSource:
    """Bookkeeping of one owned source; ``state`` is the subclass's per-source object."""

    name: str
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
    (``{stream kind: msgspec type}``) and implement :meth:`on_side`. A subclass that processes
    its sources together overrides :meth:`process` (the beat processor batches them).

    Parameters
    ----------
    sources : list of str, optional
        Fixed sources to own; None discovers the live sources in the registry (a fair share of
        them while other instances of the role run).
    exit_when_ended : bool
        Stop once every owned source has ended (tests, batch runs).
    owner : str, optional
        Lease owner id; default ``host:pid:role`` (give distinct ones to instances in one process).
    """

    role = "stage"
    out_kind = keys.StreamKind.INTENSITY
    side_kinds: dict[str, Any] = {}

    def __init__(self, bus: Bus, *, settings: Settings, sources: list[str] | None = None,
                 exit_when_ended: bool = False, owner: str | None = None):
        super().__init__()
        self.name = self.role
        self.bus, self.settings = bus, settings
        self.exit_when_ended = exit_when_ended
        self.owner = owner or instance_id(self.role)
        self.leases = SourceLeases(bus, self.role, self.owner, ttl=settings.lease_ttl,
                                   heartbeat=settings.heartbeat, fixed=sources)
        self.owned: dict[str, OwnedSource] = {}
        self.reader = Reader(bus, [], block_ms=settings.block_ms)
        self._backoff = Backoff()
        self.governor: QualityGovernor | None = None     # adaptive quality: built with the first source
        self._fed: dict[str, int] = {}                   # samples admitted per source since the last observation
        self._mark = time.perf_counter()                 # time of the governor's last observation
        self._read_idle = 0.0                            # reads' wall less CPU seconds since then
        self._watch_read = float("-inf")                 # when the watch times were last read

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

    def on_drop(self, src: OwnedSource) -> None:
        """The source is no longer owned: free what its state holds outside ``src`` (default: nothing)."""

    def quality_ladder(self, state: Any) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
        """Adaptive quality: the names and relative costs of this stage's levels (full quality first),
        asked once, with the first source's new state; None: the stage does not adapt (default)."""
        return None

    def set_quality(self, src: OwnedSource, level: int) -> None:
        """Adaptive quality: run ``src`` at ``level`` from now on (see :meth:`quality`)."""

    def quality(self, source: str) -> int:
        """The source's quality level (0: full; a new state is made at this level)."""
        return self.governor.level(source) if self.governor is not None else 0

    # -- ownership ------------------------------------------------------------------
    def _manage_leases(self) -> None:
        if self.leases.due():
            self.leases.scan()
            self._sync_owned()

    def keep_leases(self) -> None:
        """Renew the leases if due; call it inside long processing (a catch-up can outlast a short TTL)."""
        self.leases.renew()               # a node that does not answer is noted there, per node

    def _sync_owned(self) -> None:
        """Adopt the newly leased sources, drop those whose lease is gone."""
        self._drop_lost()
        new = [name for name in self.leases.held if name not in self.owned]
        # adopting reads the source's checkpoint: retried on the next scan where its node is down
        def adopt(part: list[str]) -> None:
            for name in part:
                self._adopt(name)

        self.bus.per_node(new, lambda name: keys.stream(name, keys.StreamKind.AUDIO), f"adopt sources ({self.role})",
                          adopt)
        LEASES_HELD.labels(self.role).set(len(self.owned))

    def _drop_lost(self) -> None:
        for name in [n for n in self.owned if not self.leases.owns(n)]:
            self._drop(name)

    def _adopt(self, name: str) -> None:
        audio = keys.stream(name, keys.StreamKind.AUDIO)
        ckpt = self.bus.get_checkpoint(name, self.role)
        start = ckpt or self.bus.last_id(audio)       # resume where the previous owner stopped, else live
        sides = {keys.stream(name, kind): self.bus.last_id(keys.stream(name, kind)) for kind in self.side_kinds}
        # the state last: the broker calls above may fail, and adopting is retried on the next scan
        src = OwnedSource(name=name, state=self.make_state(name), last_id=start)
        self._govern_add(src)
        self.owned[name] = src
        self.reader.add(audio, start)
        for stream, last in sides.items():
            self.reader.add(stream, last)
        SOURCE_UP.labels(name, self.role).set(1)
        log.info("source adopted", extra={"source": name, "role": self.role, "from": start})

    def _drop(self, name: str) -> None:
        src = self.owned.pop(name, None)
        if src is not None:
            self.on_drop(src)
        if self.governor is not None:
            self.governor.remove(name)
            try:
                QUALITY_LEVEL.remove(name, self.role)
            except KeyError:
                pass
        self.reader.remove(keys.stream(name, keys.StreamKind.AUDIO))
        for kind in self.side_kinds:
            self.reader.remove(keys.stream(name, kind))
        SOURCE_UP.labels(name, self.role).set(0)
        LEASES_HELD.labels(self.role).set(len(self.owned))

    # -- the loop -------------------------------------------------------------------
    def setup(self) -> None:
        self._manage_leases()

    def step(self, stop: threading.Event) -> bool:
        def read():
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                self._manage_leases()
                return self.reader.read(count=200)
            finally:                      # waiting for data or the broker is not load
                self._read_idle += (time.perf_counter() - t) - (time.thread_time() - cpu)

        entries = guarded(read, backoff=self._backoff, stop=stop, what=f"read audio ({self.role})")
        items, touched = self._decode(entries)
        out = self.process(items, time.time())
        self._publish(out, touched)
        self._drop_lost()                 # leases lost while processing
        self.govern()                     # the publishing and reading count in the round
        if self.exit_when_ended and self.owned and all(s.ended for s in self.owned.values()):
            return False
        return True

    def _decode(self, entries) -> tuple[dict[str, list[Item]], set[str]]:
        """The owned sources' entries, decoded, per source in order; and the sources whose audio moved."""
        items: dict[str, list[Item]] = {}
        touched: set[str] = set()
        for stream, entry_id, fields in entries:
            name, kind = keys.parse(stream)
            src = self.owned.get(name)
            if src is None or (kind != keys.StreamKind.AUDIO and kind not in self.side_kinds):
                continue
            if kind == keys.StreamKind.AUDIO:
                event = self.bus.decode(stream, entry_id, fields, AudioEntry)
                src.last_id = entry_id
                touched.add(name)
            else:
                event = self.bus.decode(stream, entry_id, fields, self.side_kinds[kind])
            if event is not None:
                items.setdefault(name, []).append((kind, event, entry_id))
        return items, touched

    def process(self, items: dict[str, list[Item]], now: float) -> dict[str, list]:
        """Feed each source's entries to the hooks, in order; returns the output events per source."""
        out: dict[str, list] = {}
        for name, queue in items.items():
            src, res = self.owned[name], out.setdefault(name, [])
            for kind, event, entry_id in queue:
                self.keep_leases()
                if kind != keys.StreamKind.AUDIO:
                    res.extend(self.on_side(src, kind, event, now))
                    continue
                samples = self.admit(src, event, entry_id, now, res)
                if samples is not None:
                    res.extend(self.on_audio(src, samples, event, now))
        return out

    def admit(self, src: OwnedSource, event, entry_id: str, now: float, out: list) -> np.ndarray | None:
        """Bookkeeping of one audio-stream entry: the samples to feed the state, a gap before them
        filled with silence (None for nothing to feed). An end of stream's output goes to ``out``."""
        if isinstance(event, StreamEnd):
            src.ended = True
            out.extend(self.on_end(src, event, now))
            return None
        src.ended = False
        if event.sr != self.settings.sr:
            # producers publish at the configured rate; another rate is a misconfigured producer
            self.bus.dead_letter(keys.stream(src.name, keys.StreamKind.AUDIO), entry_id, {},
                                 "unsupported_rate", detail=f"sr={event.sr}, expected {self.settings.sr}")
            return None
        if src.expected is None:
            # a stream joined mid-song: the state's time 0 is this frame's stream time
            src.expected = event.sample_index
            src.origin = event.sample_index / event.sr
        gap = event.sample_index - src.expected
        if gap < 0:                                 # duplicate or replayed frame: already processed
            return None
        samples = pcm_to_float(event)
        if gap > 0:
            FRAMES_DROPPED.labels("gap").inc(max(1, gap // max(1, event.n_samples)))
            if gap > MAX_GAP_S * event.sr:
                self.on_reset(src)
                src.origin = event.sample_index / event.sr
            else:
                samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])
        src.expected = event.sample_index + event.n_samples
        self._fed[src.name] = self._fed.get(src.name, 0) + samples.size
        src.t0_wall = event.wall_ns / 1e9 - event.sample_index / event.sr
        child(BUS_LAG, "audio").set(max(0.0, now - (event.wall_ns / 1e9 + event.n_samples / event.sr)))
        return samples

    # -- adaptive quality ---------------------------------------------------------------
    def _govern_add(self, src: OwnedSource) -> None:
        if not self.settings.adaptive:
            return
        name = src.name
        if self.governor is None:
            ladder = self.quality_ladder(src.state)
            if ladder is None or len(ladder[0]) < 2:
                return
            self.governor = QualityGovernor(*ladder, high=self.settings.adaptive_high_load)
        self.governor.add(name)
        self._show_quality(name, 0, self.governor.levels[0])

    def govern(self) -> None:
        """Feed the governor one round (wall time since the last observation less the reads' waits,
        the stream time admitted, each fed source's lag) and apply its decision. A machine too busy
        to give the stage the CPU it needs shows as load. Call it between rounds of work."""
        if self.governor is None:
            return
        t = time.perf_counter()
        busy = max(0.0, t - self._mark - self._read_idle)
        self._mark, self._read_idle = t, 0.0
        now, sr, fed = time.time(), self.settings.sr, self._fed
        self._fed = {}
        lags = {name: now - src.wall(src.expected / sr, now) for name in fed
                if (src := self.owned.get(name)) is not None and src.expected is not None and src.t0_wall}
        audio = max(fed.values(), default=0) / sr      # stream time advanced (sources in parallel)
        if now - self._watch_read >= WATCH_REFRESH_S:
            self._watch_read = now
            self.governor.watched = self._read_watched()
        for decision in self.governor.observe(now, busy, audio, lags):
            self._apply_quality(decision)

    def _read_watched(self) -> dict[str, float]:
        """When a dashboard last followed each owned source (``keys.watched``), for the degrade order."""
        watched = dict(self.governor.watched) if self.governor is not None else {}

        def read(names: list[str]) -> None:
            pipe = self.bus.pipeline()
            for name in names:
                pipe.get(keys.watched(name))
            for name, value in zip(names, pipe.execute()):
                if value is None:
                    watched.pop(name, None)
                else:
                    watched[name] = float(value)

        # per node: a source whose node does not answer keeps the time read last
        self.bus.per_node(list(self.owned), keys.watched, f"read watch times ({self.role})", read)
        return {name: t for name, t in watched.items() if name in self.owned}

    def _apply_quality(self, d: Decision) -> None:
        src = self.owned.get(d.source)
        if src is None:
            return
        self.set_quality(src, d.level)
        label = self._show_quality(d.source, d.level, d.name)
        log.info("quality level changed", extra={"source": d.source, "role": self.role, "level": d.level,
                                                 "quality": label, "load": round(d.load, 3)})

    def _show_quality(self, name: str, level: int, label: str) -> str:
        """The level on /metrics and its name in the source's ``keys.quality`` hash (the API's source
        state): :data:`~beatbus.quality.FULL` at level 0 for every stage, so a reader needs no ladder
        to tell a stage below full quality. Returns the name published."""
        label = FULL if level == 0 else label
        QUALITY_LEVEL.labels(name, self.role).set(level)
        self.bus.per_node([name], keys.quality, f"publish quality level ({self.role})",
                          lambda _: self.bus.redis.hset(keys.quality(name), self.role, label))
        return label

    def _publish(self, out: dict[str, list], touched: set[str]) -> None:
        """Publish the output and checkpoint the audio read, in one round trip."""
        # a source whose lease was lost while processing is left to its new owner, who redoes
        # this work from the checkpoint
        out = {name: events for name, events in out.items() if self.leases.owns(name)}
        touched = {name for name in touched if self.leases.owns(name) and name in self.owned}
        if not (touched or any(out.values())):
            return

        def publish(names: list[str]) -> None:
            pipe = self.bus.pipeline()
            for name in names:
                for ev in out.get(name, ()):
                    self.bus.publish(keys.stream(name, self.out_kind), ev, maxlen=self.settings.maxlen_events,
                                     pipeline=pipe)
                if name in touched:
                    self.bus.set_checkpoint(name, self.role, self.owned[name].last_id, pipeline=pipe)
            pipe.execute()

        # per node: a master that is down loses only its own sources' output of this round
        names = list(touched | {name for name, events in out.items() if events})
        self.bus.per_node(names, lambda name: keys.stream(name, self.out_kind), f"publish {self.out_kind}", publish)

    def drain(self) -> None:
        self.leases.release_all()
        for name in list(self.owned):
            self._drop(name)
