"""Source ownership (beatbus.leases.SourceLeases) on the real broker: fair share between instances,
renewal inside long processing, and a malformed entry dead-lettered once however many read it."""
from __future__ import annotations

import threading
import time

import numpy as np

from beatbus import keys
from beatbus.audio_stage import AudioStreamService
from beatbus.config import load_settings
from beatbus.leases import SourceLeases
from beatbus.metrics import MALFORMED
from beatbus.processors.beat.processor import BeatProcessor
from beatbus.processors.beat.service import BeatService
from beatbus.schemas import AudioFrame, StreamEnd, float_to_pcm


def _leases(bus, owner: str, **kw) -> SourceLeases:
    return SourceLeases(bus, "beat", owner, ttl=kw.pop("ttl", 1.0), heartbeat=kw.pop("heartbeat", 0.2), **kw)


def _live(bus, names) -> None:
    for name in names:
        bus.heartbeat(name)


def test_an_instance_alone_takes_every_source_and_shares_them_when_another_joins(bus):
    names = [f"fs-{i}" for i in range(7)]
    _live(bus, names)
    a, b = _leases(bus, "a"), _leases(bus, "b")
    a.scan()
    assert sorted(a.held) == names                       # alone: everything
    b.scan()                                             # b joins: nothing free yet
    assert b.held == {}
    a.scan()                                             # a hands back what is above ceil(7 / 2)
    assert list(a.held) == names[:4]                     # the newest went: the least state lost
    b.scan()
    assert sorted(b.held) == names[4:]
    held_before = dict(a.held)
    a.scan(), b.scan()
    assert a.held == held_before                         # stable at the share: no ping-pong
    b.release_all()                                      # b leaves: a takes everything again
    a.scan()
    assert sorted(a.held) == names
    a.release_all()
    assert bus.instances("beat", 10) == []


def test_a_late_producer_heartbeat_does_not_move_its_source_or_the_share(bus):
    """An overloaded producer host heartbeats late: its sources, still leased, keep counting."""
    names = [f"late-{i}" for i in range(6)]
    _live(bus, names)
    a, b = _leases(bus, "a"), _leases(bus, "b")
    a.scan(), b.scan(), a.scan(), b.scan()
    assert (list(a.held), sorted(b.held)) == (names[:3], names[3:])
    bus.redis.zadd(keys.SOURCES, {n: time.time() - 30 for n in names[3:]})   # b's producers fall silent
    a.scan(), b.scan()
    assert (list(a.held), sorted(b.held)) == (names[:3], names[3:])


def test_fixed_sources_are_taken_whatever_the_share_and_do_not_count_as_an_instance(bus):
    names = ["fx-a", "fx-b", "fx-c"]
    _live(bus, names)
    disc = _leases(bus, "disc")
    fixed = _leases(bus, "fixed", fixed=names)
    disc.scan()
    fixed.scan()
    assert len(disc.held) == 3 and fixed.held == {}      # leased already: the fixed instance waits
    assert bus.instances("beat", 10) == ["disc"]
    disc.release_all()
    fixed.scan()
    assert sorted(fixed.held) == names


def test_two_processors_split_the_live_sources(bus, settings):
    names = [f"split-{i}" for i in range(5)]
    _live(bus, names)
    make = lambda: BeatProcessor(backend="dsp")     # noqa: E731
    procs = [BeatService(bus, settings=settings, make_processor=make, owner=f"p{i}") for i in range(2)]
    stop = threading.Event()
    for p in procs:
        p.setup()                                        # the first one alone takes all five
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and sorted(len(p.owned) for p in procs) != [2, 3]:
        _live(bus, names)
        for p in procs:
            p.step(stop)
    assert sorted(len(p.owned) for p in procs) == [2, 3]
    assert not set(procs[0].owned) & set(procs[1].owned)
    holders = {n: bus.redis.get(keys.lease(n, "beat")).decode() for n in names}
    assert holders == {n: p.owner for p in procs for n in p.owned}
    assert all(len(p.batch) == len(p.owned) for p in procs)       # handed-back sources left the batch
    for p in procs:
        p.drain()


def test_renew_keeps_the_lease_through_long_work_and_is_a_clock_check_otherwise(bus):
    leases = _leases(bus, "busy", ttl=0.5, heartbeat=0.1, fixed=["long"])
    leases.scan()
    calls = []
    real = leases._renew_all
    leases._renew_all = lambda: calls.append(1) or real()
    t_end = time.monotonic() + 1.5                        # three TTLs of work between two scans
    while time.monotonic() < t_end:
        leases.renew()
        time.sleep(0.01)
        assert bus.redis.get(keys.lease("long", "beat")) == b"busy"
    assert 8 <= len(calls) <= 20, len(calls)              # about every interval (0.1 s), not every call
    assert leases.owns("long")


class _SlowStage(AudioStreamService):
    """A stage whose every chunk takes 50 ms: a catch-up of many chunks in one step."""

    role = "slow"

    def make_state(self, source):
        return None

    def on_audio(self, src, samples, frame, now):
        time.sleep(0.05)
        return []

    def on_end(self, src, end, now):
        return [StreamEnd(source=src.name, timestamp=end.timestamp, emitted_at=now)]


def test_a_step_longer_than_the_lease_ttl_keeps_the_lease(bus, broker):
    settings = load_settings({"redis_url": broker.url, "lease_ttl": 0.5, "heartbeat": 0.2, "block_ms": 100},
                             env={})
    stage = _SlowStage(bus, settings=settings, sources=["catchup"], exit_when_ended=True, owner="slow-1")
    stage.setup()
    stream, n = keys.stream("catchup", keys.StreamKind.AUDIO), 441
    for i in range(30):                                   # 30 x 50 ms = 1.5 s of work in one read: 3 TTLs
        frame = AudioFrame(source="catchup", seq=i, sample_index=i * n, wall_ns=time.time_ns(), sr=settings.sr,
                           n_samples=n, pcm=float_to_pcm(np.zeros(n, dtype=np.float32)))
        bus.publish(stream, frame, maxlen=1000)
    bus.publish(stream, StreamEnd(source="catchup", timestamp=30 * n / settings.sr), maxlen=1000)
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            v = bus.redis.get(keys.lease("catchup", "slow"))
            seen.add(v.decode() if v else None)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.monotonic()
    try:
        stage.step(threading.Event())
    finally:
        done.set()
        watcher.join()
    assert time.monotonic() - t0 > 1.0
    assert seen == {"slow-1"}                             # never lapsed, never anyone else's
    assert "catchup" in stage.owned and stage.owned["catchup"].ended
    assert bus.get_checkpoint("catchup", "slow") == bus.last_id(stream)
    stage.drain()


def test_a_malformed_entry_read_by_many_is_dead_lettered_once_and_counted_by_each(bus):
    stream = keys.stream("fan", keys.StreamKind.BEATS)
    fields = {b"d": b'{"type":"beat","bpm":"x"}'}
    entry_id = bus.redis.xadd(stream, fields).decode()
    other = bus.redis.xadd(stream, fields).decode()
    before = MALFORMED.labels("beats")._value.get()
    for _ in range(3):                                    # three fan-out readers
        assert bus.decode(stream, entry_id, fields, StreamEnd) is None
    bus.decode(stream, other, fields, StreamEnd)
    assert MALFORMED.labels("beats")._value.get() == before + 4
    dead = [f[b"origin_id"].decode() for _, f in bus.redis.xrange(keys.dead_letter(stream))]
    assert dead == [entry_id, other]
    assert 0 < bus.redis.ttl(keys.dead_letter_mark(stream, entry_id)) <= 3600
