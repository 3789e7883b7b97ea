"""Rhythm mode: fire error-generator triggers for a while, following a song plan.

- **live**: a producer is running, so its beats drive the triggers; the plan supplies the
  section of each beat (by time since the mode started) unless the source publishes real
  sections.
- **schedule**: nothing is live, so :class:`ScheduleService` plays the plan as a virtual
  source (``rhythm-mode``): BeatEvents at the plan's tempo and SectionEvents at its section
  changes, in real time, on the bus. The same :class:`~consumers.trigger.TriggerService`
  turns them into triggers, and the dashboard can watch the virtual source.

One mode runs at a time; starting again replaces it. It ends by itself after ``duration``.

A run leaves nothing behind: its consumer group (``<group>-rhythm``, the trigger group's name
plus ``-rhythm``) is destroyed when the run ends or is stopped (a group nobody reads would lag
forever and fire ``BeatbusConsumerGroupLag``), and the virtual source's streams expire a minute
later. If the API process died during a run, :meth:`RhythmMode.collect_leftovers` (every few
seconds in any API with an error generator) destroys rhythm groups whose consumers have all
been idle for :attr:`RhythmMode.stale_after` seconds: a running mode reads every ``block_ms``.
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import msgspec
import redis

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Bus, note_back, note_reconnect
from beatbus.config import Settings
from beatbus.consumers.trigger import DeliveryThread, TriggerConfig, TriggerService
from beatbus.errors import ConfigError
from beatbus.log import get_logger
from beatbus.runtime import Service
from beatbus.schemas import BeatEvent, SectionEvent, StreamEnd

from .models import RhythmModeStatus, SongData
from .song_plan import sections_for

__all__ = ["RhythmMode", "ScheduleService", "SongTimeline", "RHYTHM_SOURCE", "SourceNotLive"]

log = get_logger("beatbus.api.rhythm")
RHYTHM_SOURCE = "rhythm-mode"
VIRTUAL_STREAMS_TTL_S = 60          # the virtual source's streams outlive a schedule run this long


class SourceNotLive(ConfigError):
    """The requested source has no live producer."""


class SongTimeline:
    """Section label at a time into the song (the plan repeats past its end).

    Parameters
    ----------
    song : SongData
        With no sections, the metadata heuristic lays them out over ``song.duration``
        (or the rhythm-mode duration).
    length : float
        Seconds the timeline covers when the song gives no duration.
    """

    def __init__(self, song: SongData, *, length: float):
        sections = song.sections or sections_for(duration=song.duration or length, tempo=song.tempo,
                                                 meter=song.meter)
        sections = sorted(sections, key=lambda s: s.start)
        self.starts = [s.start for s in sections]
        self.labels = [s.label for s in sections]
        self.length = max(s.end for s in sections)

    def label_at(self, t: float) -> str:
        t = t % self.length if self.length > 0 else t
        i = bisect.bisect_right(self.starts, t)
        return self.labels[i - 1] if i else "unknown"


class ScheduleService(Service):
    """Publish a song plan's beats and sections for a virtual source, in real time."""

    name = "rhythm-schedule"

    def __init__(self, bus: Bus, *, settings: Settings, song: SongData, timeline: SongTimeline, duration: float,
                 source: str = RHYTHM_SOURCE):
        super().__init__()
        self.bus, self.settings, self.song, self.timeline = bus, settings, song, timeline
        self.duration, self.source = duration, keys.check_source(source)
        self.period = 60.0 / song.tempo
        self.beats = keys.stream(self.source, keys.StreamKind.BEATS)
        self.sections = keys.stream(self.source, keys.StreamKind.SECTIONS)
        self.k = 0
        self.t0 = 0.0
        self.label: str | None = None

    def setup(self) -> None:
        for stream in (self.beats, self.sections):      # an earlier run set them to expire
            self.bus.redis.persist(stream)
        self.t0 = time.time() + 0.05

    def step(self, stop: threading.Event) -> bool:
        t = self.k * self.period
        if t >= self.duration:
            return False
        due = self.t0 + t
        if stop.wait(max(0.0, due - time.time())):
            return False
        now = time.time()
        meter = self.song.meter
        label = self.timeline.label_at(t)
        try:
            if label != self.label:
                self.bus.publish(self.sections, SectionEvent(
                    source=self.source, start=t, system_time=due, emitted_at=now, label=label, confidence=1.0,
                    status="confirmed"), maxlen=self.settings.maxlen_events)
                self.label = label
            self.bus.publish(self.beats, BeatEvent(
                source=self.source, timestamp=t, system_time=due, is_downbeat=self.k % meter == 0,
                bpm=self.song.tempo, intensity=None, confidence=1.0, beat=self.k, beat_in_bar=self.k % meter + 1,
                bar=self.k // meter, meter=meter, next_beat_time=t + self.period,
                next_beat_system_time=due + self.period, emitted_at=now, backend="schedule"),
                maxlen=self.settings.maxlen_events)
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "publish schedule")   # a missed beat is skipped, not sent late
        else:
            note_back("publish schedule")
        self.k += 1
        return True

    def drain(self) -> None:
        try:
            self.bus.publish(self.beats, StreamEnd(source=self.source, timestamp=self.k * self.period,
                                                   reason="stopped", emitted_at=time.time()),
                             maxlen=self.settings.maxlen_events)
        except BROKER_ERRORS:
            pass


@dataclass
class _Run:
    mode: str
    source: str
    started_at: float
    ends_at: float
    services: list[Service]
    trigger: TriggerService
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


class RhythmMode:
    """Start, stop and report rhythm mode (one at a time).

    Parameters
    ----------
    live_sources : callable
        ``() -> list of live source names``.
    """

    def __init__(self, bus: Bus, *, settings: Settings, config: TriggerConfig, delivery: DeliveryThread,
                 live_sources):
        self.bus, self.settings, self.config, self.delivery = bus, settings, config, delivery
        self.live_sources = live_sources
        # A group of its own: a trigger daemon on the same source keeps its place, and the shared
        # idempotency keys stop the two from posting the same trigger twice.
        self.group = f"{config.group}-rhythm"
        self.stale_after = max(5.0, 10 * settings.block_ms / 1000)
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._closed = threading.Event()
        self._collector = threading.Thread(target=self._collect_loop, name="rhythm-leftovers", daemon=True)
        self._collector.start()

    def start(self, song: SongData, *, duration: float, source: str | None = None) -> RhythmModeStatus:
        """Begin (replacing a running mode).

        Raises
        ------
        SourceNotLive
            ``source`` was named but has no live producer.
        """
        live = self.live_sources()
        if source is not None and source not in live:
            raise SourceNotLive(f"source {source!r} is not live (live: {', '.join(live) or 'none'})")
        self.stop()
        timeline = SongTimeline(song, length=duration)
        started = time.time()
        config = msgspec.structs.replace(self.config, group=self.group)     # started at the newest beat
        if source or live:
            name, mode, services = source or live[0], "live", []
            fallback = lambda ev: timeline.label_at(max(0.0, ev.system_time - started))  # noqa: E731
        else:
            name, mode, fallback = RHYTHM_SOURCE, "schedule", None
            services = [ScheduleService(self.bus, settings=self.settings, song=song, timeline=timeline,
                                        duration=duration)]
        trigger = TriggerService(self.bus, settings=self.settings, config=config, sources=[name],
                                 delivery=self.delivery, section_fallback=fallback, resume=False)
        run = _Run(mode=mode, source=name, started_at=started, ends_at=started + duration,
                   services=[trigger, *services], trigger=trigger)
        with self._lock:
            self._run = run                 # before its group exists: collect_leftovers leaves it alone
        for svc in run.services:            # the trigger service first: its group exists before beats flow
            t = threading.Thread(target=svc.run, args=(run.stop,), name=f"{svc.name}-{name}", daemon=True)
            t.start()
            run.threads.append(t)
            svc.ready.wait(5)
        threading.Thread(target=self._expire, args=(run, duration), name="rhythm-timer", daemon=True).start()
        log.info("rhythm mode started", extra={"mode": mode, "source": name, "duration": duration})
        return self.status()

    def _expire(self, run: _Run, duration: float) -> None:
        if not run.stop.wait(duration):
            self._finish(run)

    def _finish(self, run: _Run) -> None:
        run.stop.set()
        for t in run.threads:
            t.join(timeout=5)
        with self._lock:
            successor = self._run is not None and self._run is not run and self._run.source == run.source
        if successor or any(t.is_alive() for t in run.threads):
            return          # the group is (or would be recreated) in use; collect_leftovers gets strays
        try:
            self._remove(run.source)
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "remove the rhythm-mode group")     # collect_leftovers retries
        else:
            note_back("remove the rhythm-mode group")

    def _remove(self, source: str) -> None:
        """Destroy the run's group on ``source``; the virtual source's streams expire."""
        beats = keys.stream(source, keys.StreamKind.BEATS)
        pipe = self.bus.redis.pipeline(transaction=False)
        pipe.xgroup_destroy(beats, self.group)
        if source == RHYTHM_SOURCE:
            for stream in (beats, keys.stream(source, keys.StreamKind.SECTIONS)):
                pipe.expire(stream, VIRTUAL_STREAMS_TTL_S)
        pipe.execute(raise_on_error=False)     # no stream (FLUSHALL) or no group: nothing to remove

    def collect_leftovers(self) -> list[str]:
        """Destroy the rhythm groups nobody reads (their API died during a run); returns their sources.

        A group counts as abandoned when each of its consumers has been idle for
        :attr:`stale_after` seconds (or it has none). A group wrongly taken from a live run is
        recreated by that run at once (NOGROUP), missing only the beats of its stall.
        """
        with self._lock:
            current = self._run.source if self._run and not self._run.stop.is_set() else None
        r = self.bus.redis
        known = {m.decode() if isinstance(m, bytes) else m for m in r.zrange(keys.SOURCES, 0, -1)}
        names = sorted((known | {RHYTHM_SOURCE}) - {current})
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.xinfo_consumers(keys.stream(name, keys.StreamKind.BEATS), self.group)
        removed = []
        for name, consumers in zip(names, pipe.execute(raise_on_error=False)):
            if isinstance(consumers, redis.ResponseError):      # no such stream or group
                continue
            if isinstance(consumers, Exception):
                raise consumers
            if all(c["idle"] >= self.stale_after * 1000 for c in consumers):
                self._remove(name)
                removed.append(name)
        if removed:
            log.info("removed rhythm-mode groups left by a stopped API", extra={"sources": removed,
                                                                               "group": self.group})
        return removed

    def _collect_loop(self) -> None:
        failing = ""                    # said once per distinct failure, not every round
        while True:
            try:
                self.collect_leftovers()
                failing = ""
            except Exception as exc:  # noqa: BLE001 - a sweep that fails must not end the API: the next one retries
                if str(exc) != failing:
                    failing = str(exc)
                    log.warning("cannot collect rhythm-mode leftovers; retrying",
                                extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
            if self._closed.wait(self.stale_after):
                return

    def stop(self) -> RhythmModeStatus:
        """Stop the running mode (if any); returns its final status."""
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return RhythmModeStatus(active=False)
        self._finish(run)
        log.info("rhythm mode stopped", extra={"source": run.source, "outcomes": run.trigger.outcomes})
        return RhythmModeStatus(active=False, mode=run.mode, source=run.source, started_at=run.started_at,
                                ends_at=min(run.ends_at, time.time()), outcomes=dict(run.trigger.outcomes))

    def status(self) -> RhythmModeStatus:
        with self._lock:
            run = self._run
        if run is None:
            return RhythmModeStatus(active=False)
        return RhythmModeStatus(active=not run.stop.is_set(), mode=run.mode, source=run.source,
                                started_at=run.started_at, ends_at=run.ends_at, outcomes=dict(run.trigger.outcomes))

    def close(self) -> None:
        self._closed.set()
        self.stop()
