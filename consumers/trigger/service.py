"""The trigger consumer daemon: beats (and the section they fall in) -> error-generator POSTs.

- Beats arrive through a consumer group (one XREADGROUP over every source's beat stream; on a
  Redis Cluster, where a command may not span slots, one per source, each on its own thread):
  each entry is XACKed once all of its triggers reached a final outcome; a janitor claims
  entries a crashed consumer left pending.
- Sections are *state*, not work: every instance reads them fan-out (plain XREAD) so each
  knows the section of every beat; a beat plays the pattern of the last *confirmed* section
  that started at or before its stream time (a tentative boundary is a hint that may be
  withdrawn, so patterns never follow one).
- At-least-once in, exactly-once out as far as Redis can tell: before a POST the service
  claims the trigger's idempotency key with ``SET NX`` (short TTL); after the receiver
  answered the key is kept for ``dedup_ttl``; a trigger that never reached the receiver
  frees its key. A redelivered entry whose keys are taken fires nothing (``duplicate``).
- HTTP runs on a :class:`~consumers.trigger.delivery.DeliveryThread`: reading never blocks
  on the receiver.
"""
from __future__ import annotations

import bisect
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field

import msgspec
import redis

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Backoff, Bus, FanIn, Group, Reader, note_back, note_reconnect, on_node
from beatbus.config import Settings
from beatbus.log import get_logger
from beatbus.metrics import BUS_LAG
from beatbus.runtime import Service, instance_id
from beatbus.schemas import BeatEvent, Event, SectionEvent, TriggerRequest, encode

from .config import TriggerConfig, check_url, load_trigger_config
from .delivery import DeliveryThread, Outcome, Result, Trigger, count_outcome
from .patterns import PatternBook

__all__ = ["TriggerService", "build_trigger_service", "idempotency_key", "trigger_payload"]

log = get_logger("trigger")
_SECTION_HISTORY = 64
_instances = itertools.count()


def _entries(reply) -> list[tuple[str, str, dict]]:
    """``(stream, entry id, fields)`` of an XREADGROUP reply (entries deleted meanwhile left out)."""
    return [(s.decode() if isinstance(s, bytes) else s, i.decode() if isinstance(i, bytes) else i, f)
            for s, entries in reply or [] for i, f in entries if f is not None]


def idempotency_key(source: str, entry_id: str, n: int) -> str:
    """``<source>:<beat-stream-entry-id>:<n>``: the ``Idempotency-Key`` header of one trigger."""
    return f"{source}:{entry_id}:{n}"


def trigger_payload(*, error_type: str, beat: int, section: str, tempo: float) -> bytes:
    """The JSON body of ``POST /api/rhythm-trigger`` (a validated :class:`TriggerRequest`)."""
    return encode(TriggerRequest(error_type=error_type, beat=beat, section=section,
                                 tempo=round(min(max(tempo, 0.0), 400.0), 3)))


@dataclass
class _Source:
    name: str
    group: Group
    section_starts: list[float] = field(default_factory=list)
    section_labels: list[str] = field(default_factory=list)

    def note_section(self, ev: SectionEvent) -> None:
        """Record a confirmed section start (a revision of the same start replaces the label)."""
        if ev.status == "tentative":
            return
        i = bisect.bisect_left(self.section_starts, ev.start)
        if i < len(self.section_starts) and abs(self.section_starts[i] - ev.start) < 1e-6:
            self.section_labels[i] = ev.label
        else:
            self.section_starts.insert(i, ev.start)
            self.section_labels.insert(i, ev.label)
        del self.section_starts[:-_SECTION_HISTORY], self.section_labels[:-_SECTION_HISTORY]

    def section_at(self, t: float) -> str:
        i = bisect.bisect_right(self.section_starts, t + 1e-6)
        return self.section_labels[i - 1] if i else "unknown"


@dataclass
class _Open:
    """A beat entry whose triggers are still in flight."""

    stream: str
    remaining: int


class TriggerService(Service):
    """Fire error-generator triggers on beats.

    Parameters
    ----------
    bus : Bus
    settings : Settings
        ``block_ms``, ``max_deliveries``, ``claim_idle_ms``, ``heartbeat``, ``lease_ttl``.
    config : TriggerConfig
        Delivery knobs and the pattern maps.
    sources : list of str, optional
        Sources to serve; None follows every live source in the registry.
    delivery : DeliveryThread, optional
        Shared delivery (e.g. the API's); by default the service starts and stops its own.
    section_fallback : callable, optional
        ``BeatEvent -> section label`` for sources that publish no sections (rhythm mode
        follows a song plan this way).
    resume : bool
        True (a daemon): an existing group continues where it stopped. False (rhythm mode):
        the group starts at the newest beat.
    """

    name = "trigger"

    def __init__(self, bus: Bus, *, settings: Settings, config: TriggerConfig, sources: list[str] | None = None,
                 delivery: DeliveryThread | None = None, section_fallback=None, resume: bool = True):
        super().__init__()
        self.section_fallback = section_fallback
        self.resume = resume
        self.bus, self.settings, self.config = bus, settings, config
        self.book: PatternBook = config.book()
        self.fixed = [keys.check_source(s) for s in sources] if sources else None
        self.consumer = f"{instance_id(keys.Role.TRIGGER)}:{next(_instances)}"
        self._own_delivery = delivery is None
        self.delivery = delivery
        self.sources: dict[str, _Source] = {}
        self.sections = Reader(bus, [], block_ms=0)
        self.outcomes: dict[str, int] = {}
        self._open: dict[str, _Open] = {}            # beat entry id -> triggers in flight
        self._settled: queue.SimpleQueue = queue.SimpleQueue()
        self._unsettled: list[tuple[str, str, Trigger, Result]] = []
        self._next_discovery = 0.0
        self._next_janitor = 0.0
        self._backoff = Backoff()
        # a cluster: one XREADGROUP may not span slots (each source has its own), so each beat
        # stream is read on a thread of its own, which says itself when its source's master is
        # down and back (a ResponseError such as NOGROUP is handed over: the step recreates the groups)
        self._fan = FanIn(self._read_stream, name="xreadgroup",
                          what=lambda stream: on_node("read beats", bus.node_name(stream))) if bus.cluster else None
        self._claim_ttl_ms = int(1000 * (config.max_age + (config.retries + 1) * (config.timeout + config.backoff_cap) + 5))

    # -- sources ------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        if self.fixed is not None:
            return self.fixed
        return self.bus.sources(max_age=max(3 * self.settings.heartbeat, self.settings.lease_ttl))

    def _discover(self) -> None:
        now = time.monotonic()
        if now < self._next_discovery:
            return
        self._next_discovery = now + self.settings.heartbeat
        for name in self._candidates():
            if name not in self.sources:
                self._adopt(name)

    def _adopt(self, name: str) -> None:
        beats = keys.stream(name, keys.StreamKind.BEATS)
        sections = keys.stream(name, keys.StreamKind.SECTIONS)
        # "$": a new group starts with the next beat; old beats would all be stale anyway.
        group = Group(self.bus, beats, self.config.group, self.consumer, max_deliveries=self.settings.max_deliveries,
                      claim_idle_ms=self.settings.claim_idle_ms, block_ms=self.settings.block_ms, start="$")
        if not self.resume:
            group.seek("$")
        src = _Source(name, group)
        for entry_id, fields in reversed(self.bus.newest(sections, _SECTION_HISTORY)):
            ev = self.bus.decode(sections, entry_id, fields, Event)
            if isinstance(ev, SectionEvent):
                src.note_section(ev)
        self.sources[name] = src
        self.sections.add(sections, "$")
        log.info("serving source", extra={"source": name, "group": self.config.group})

    def _recreate_groups(self) -> None:
        """After the broker lost our streams (restart, FLUSHALL): create the groups again."""
        for src in self.sources.values():
            src.group = Group(self.bus, src.group.stream, self.config.group, self.consumer,
                              max_deliveries=self.settings.max_deliveries,
                              claim_idle_ms=self.settings.claim_idle_ms, block_ms=self.settings.block_ms,
                              start="$")

    # -- the loop -------------------------------------------------------------------------
    def setup(self) -> None:
        if self.delivery is None:
            self.delivery = DeliveryThread(self.config, name=f"{self.name}-delivery").start()
        self._discover()

    def _read_beats(self) -> list[tuple[str, str, dict]]:
        if not self.sources:
            time.sleep(self.settings.block_ms / 1000)
            return []
        # One XREADGROUP over every source: a per-stream Group.read would block once per source
        # (only the trigger reads one group across streams, so it calls the client itself).
        streams = {src.group.stream: ">" for src in self.sources.values()}
        if self._fan is not None:
            for stream in streams:
                self._fan.start(stream)
            return self._fan.read(200, self.settings.block_ms)
        return _entries(self.bus.redis.xreadgroup(self.config.group, self.consumer, streams, count=200,
                                                  block=self.settings.block_ms))

    def _read_stream(self, stream: str, count: int, block: int) -> list[tuple[str, str, dict]] | None:
        """One blocking XREADGROUP of one beat stream (a :class:`FanIn` thread); None once its source is dropped."""
        if keys.source_of(stream) not in self.sources:
            return None
        return _entries(self.bus.redis.xreadgroup(self.config.group, self.consumer, {stream: ">"}, count=count,
                                                  block=block))

    def _janitor(self) -> list[tuple[str, str, dict]]:
        now = time.monotonic()
        if now < self._next_janitor:
            return []
        self._next_janitor = now + max(0.05, self.settings.claim_idle_ms / 2000)
        in_flight: dict[str, list[str]] = {}
        for entry_id, entry in self._open.items():
            in_flight.setdefault(entry.stream, []).append(entry_id)
        claimed: list[tuple[str, str, dict]] = []

        def claim(part: list[_Source]) -> None:
            for src in part:
                src.group.keep(in_flight.get(src.group.stream, ()))
                claimed.extend(e for e in src.group.claim_stale() if e[1] not in self._open)

        # per node: on a cluster, a node that is down (until its replica takes over) stops the claims
        # of its own sources only; raising here would drop every source's beats of this round
        self.bus.per_node(list(self.sources.values()), lambda src: src.group.stream, "claim stale beats", claim)
        return claimed

    def step(self, stop: threading.Event) -> bool:
        try:
            self._discover()
            entries = self._read_beats()
            entries += self._janitor()
            self._backoff.reset()
            note_back("read beats")
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._recreate_groups()
            return True
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "read beats")
            self._backoff.wait(stop)
            self._settle()
            return True
        try:       # sections are state: a failed read (a node down) leaves them as they were this round
            section_entries = self.sections.read(count=100, block_ms=0)
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "read sections")
            section_entries = []
        else:
            note_back("read sections")
        for stream, entry_id, fields in section_entries:
            ev = self.bus.decode(stream, entry_id, fields, Event)
            src = self.sources.get(keys.source_of(stream))
            if isinstance(ev, SectionEvent) and src is not None:
                src.note_section(ev)
        if entries:
            try:
                self._handle(entries)
            except BROKER_ERRORS as exc:    # dead-lettering a malformed entry: it stays pending
                note_reconnect(exc, "dead-letter beats")
        self._settle()
        return True

    def _handle(self, entries: list[tuple[str, str, dict]]) -> None:
        now = time.time()
        done: dict[str, list[str]] = {}       # stream -> entry ids to ack now
        batch: list[tuple[str, str, list[Trigger]]] = []
        for stream, entry_id, fields in entries:
            src = self.sources.get(keys.source_of(stream))
            ev = self.bus.decode(stream, entry_id, fields, Event)   # malformed: dead-lettered
            if src is None or not isinstance(ev, BeatEvent):
                done.setdefault(stream, []).append(entry_id)
                continue
            BUS_LAG.labels("beats").set(max(0.0, now - ev.emitted_at))
            if src.section_starts or self.section_fallback is None:
                section = src.section_at(ev.timestamp)
            else:
                section = self.section_fallback(ev)
            firings = self.book.fire(ev, section, seed=f"{src.name}:{entry_id}")
            triggers = [Trigger(key=idempotency_key(src.name, entry_id, f.n),
                                body=trigger_payload(error_type=f.pattern, beat=ev.beat, section=section,
                                                     tempo=ev.bpm),
                                due=ev.emitted_at + f.delay) for f in firings]
            if triggers:
                batch.append((stream, entry_id, triggers))
            else:
                done.setdefault(stream, []).append(entry_id)
        # the dedup claims are the trigger's own (SET NX per trigger), one round trip per node: on a
        # cluster, a master that is down (until its replica takes over) holds back its sources only
        def claim(part: list) -> None:          # unacked if it fails: the janitor hands them out again
            pipe = self.bus.pipeline()
            for stream, entry_id, triggers in part:
                src_name = keys.source_of(stream)
                for t in triggers:
                    n = int(t.key.rsplit(":", 1)[1])
                    pipe.set(keys.trigger_dedup(src_name, entry_id, n), self.consumer, nx=True,
                             px=self._claim_ttl_ms)
            claimed = iter(pipe.execute())
            for stream, entry_id, triggers in part:
                fresh = [t for t in triggers if next(claimed)]
                for _ in range(len(triggers) - len(fresh)):
                    self._count(Outcome.DUPLICATE)
                    count_outcome(Outcome.DUPLICATE)
                if not fresh:
                    done.setdefault(stream, []).append(entry_id)
                    continue
                self._open[entry_id] = _Open(stream, len(fresh))
                for t in fresh:
                    self._submit(stream, entry_id, t)

        self.bus.per_node(batch, lambda b: b[0], "claim triggers", claim)
        self._ack(done)

    def _submit(self, stream: str, entry_id: str, trigger: Trigger) -> None:
        fut = self.delivery.submit(trigger)

        def _done(f) -> None:
            result = Result(Outcome.CANCELLED) if f.cancelled() else (
                f.result() if f.exception() is None else Result(Outcome.FAILED, error=repr(f.exception())))
            self._settled.put((stream, entry_id, trigger, result))

        fut.add_done_callback(_done)

    def _count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1

    def _settle(self) -> None:
        """Record outcomes: keep or free each dedup key, ack entries whose triggers are all settled."""
        while True:
            try:
                self._unsettled.append(self._settled.get_nowait())
            except queue.Empty:
                break
        if not self._unsettled:
            return
        items, self._unsettled = self._unsettled, []
        def settle(part: list) -> None:
            pipe = self.bus.pipeline()
            for stream, entry_id, trigger, result in part:
                n = int(trigger.key.rsplit(":", 1)[1])
                k = keys.trigger_dedup(keys.source_of(stream), entry_id, n)
                if result.outcome.reached_receiver:
                    pipe.set(k, "done", ex=int(self.config.dedup_ttl))
                else:
                    pipe.delete(k)
            pipe.execute()
            done: dict[str, list[str]] = {}
            for stream, entry_id, _trigger, result in part:
                self._count(result.outcome)
                entry = self._open.get(entry_id)
                if entry is None:
                    continue
                entry.remaining -= 1
                if entry.remaining <= 0:
                    del self._open[entry_id]
                    if result.outcome is not Outcome.CANCELLED:
                        done.setdefault(stream, []).append(entry_id)
            self._ack(done)

        # one round trip per node (see _handle): a master that is down keeps its own items for later
        self._unsettled += self.bus.per_node(items, lambda item: item[0], "settle triggers", settle)

    def _ack(self, done: dict[str, list[str]]) -> None:
        """XACK per stream, per node; a failed ack leaves the entries pending (redelivered, then deduplicated)."""
        def ack(part: list[str]) -> None:
            for stream in part:
                self.sources[keys.source_of(stream)].group.ack(*done[stream])

        streams = [stream for stream, ids in done.items() if ids and keys.source_of(stream) in self.sources]
        self.bus.per_node(streams, lambda stream: stream, "ack beats", ack)

    def drain(self) -> None:
        if self._fan is not None:
            self._fan.close()
        if self.delivery is None:
            return
        deadline = time.monotonic() + min(3.0, self.config.max_age + self.config.timeout + 0.5)
        while self._open and time.monotonic() < deadline:
            self._settle()
            time.sleep(0.01)
        if self._own_delivery:
            self.delivery.close(timeout=0.5)
        self._settle()



def build_trigger_service(bus: Bus, settings: Settings, *, url: str | None = None, sources: list[str] | None = None,
                          config: TriggerConfig | None = None, config_file: str | None = None) -> TriggerService:
    """A :class:`TriggerService` for ``beatbus run ... --error-generator-url URL`` and friends.

    Parameters
    ----------
    url : str, optional
        Error-generator base URL; overrides ``config``/``BEATBUS_ERROR_GENERATOR_URL``.
    sources : list of str, optional
        Sources to serve (None: every live source).
    config : TriggerConfig, optional
        Default: :func:`load_trigger_config` (TOML ``[trigger]`` table, env).

    Raises
    ------
    ConfigError
        No URL anywhere, or an invalid configuration.
    """
    cfg = config or load_trigger_config({"url": url}, config_file=config_file)
    if url and cfg.url != url:
        check_url(url)
        cfg = msgspec.structs.replace(cfg, error_generator_url=url)
    cfg.endpoint  # noqa: B018  (raises ConfigError when no URL is configured)
    return TriggerService(bus, settings=settings, config=cfg, sources=sources)
