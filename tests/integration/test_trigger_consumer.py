"""Trigger consumer against the reference receiver (a test double of the Go service) over real HTTP."""
from __future__ import annotations

import time
from collections import Counter, defaultdict

import msgspec
import pytest
from prometheus_client import REGISTRY

from beatbus import keys
from beatbus.consumers.trigger import TriggerService, load_trigger_config
from beatbus.consumers.trigger.delivery import BreakerState
from beatbus.errors import ConfigError
from beatbus.keys import trigger_dedup as dedup_key
from beatbus.lab.doubles.error_generator import ReferenceReceiver
from beatbus.runtime import run_services
from beatbus.schemas import BeatEvent, SectionEvent

from support.events import beat_event
from support.procs import wait_for
from support.services import running

SRC = "tsrc"                  # support.events.beat_event's default source


def section_event(label: str, start: float, *, source: str = SRC) -> SectionEvent:
    now = time.time()
    return SectionEvent(source=source, start=start, system_time=now, emitted_at=now, label=label,
                        confidence=0.9, status="confirmed")


def publish(bus, kind: str, event, source: str = SRC) -> str:
    return bus.publish(keys.stream(source, kind), event, maxlen=10000)


def drained(bus, source: str = SRC, group: str = "trigger") -> bool:
    """Every beat entry read by the group and acknowledged."""
    info = {g["name"]: g for g in bus.redis.xinfo_groups(keys.stream(source, "beats"))}
    g = info.get(group.encode(), info.get(group))
    return bool(g) and g["pending"] == 0 and g["lag"] == 0


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def receiver():
    with ReferenceReceiver() as rx:
        yield rx


def make_service(bus, settings, receiver, **overrides) -> TriggerService:
    # generous time limits: a loaded CI machine (a CPU hog beside the suite) may take seconds to answer,
    # and these tests are about which triggers fire, not how fast (the timing tests override them)
    cfg = load_trigger_config({"url": receiver.url, "max_age": 30.0, "timeout": 5.0, **overrides}, env={})
    return TriggerService(bus, settings=settings, config=cfg, sources=[SRC])


def ok(records):
    return [r for r in records if r["status"] == 200]


def test_each_section_plays_its_pattern_with_its_rule(bus, settings, receiver):
    """intro/verse/chorus/bridge/outro -> minimal/basic/business/chaotic/philosophical, each by its rule."""
    labels = ["intro", "verse", "chorus", "bridge", "outro"]
    bars_per_section, meter = 8, 4
    section_len = bars_per_section * meter * 0.5          # seconds at 120 BPM
    svc = make_service(bus, settings, receiver)
    with running(svc):
        for k, label in enumerate(labels):
            publish(bus, "sections", section_event(label, k * section_len))
        n_beats = len(labels) * bars_per_section * meter
        for i in range(n_beats):
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: drained(bus), timeout=20)
    by_beat: dict[int, list[dict]] = defaultdict(list)
    for r in ok(receiver.received()):
        by_beat[r["body"]["beat"]].append(r["body"])
    per_section = 32
    for i in range(n_beats):
        label = labels[i // per_section]
        got = by_beat.get(i, [])
        assert all(b["section"] == label and b["tempo"] == 120.0 and b["trigger"] == "rhythm" for b in got)
        bar, downbeat = i // meter, i % meter == 0
        if label == "intro":          # minimal: downbeats of every other bar
            expected = 1 if downbeat and bar % 2 == 0 else 0
        elif label == "verse":        # basic: every beat
            expected = 1
        elif label == "chorus":       # business: every beat plus a downbeat accent
            expected = 2 if downbeat else 1
        elif label == "outro":        # philosophical: every fourth downbeat
            expected = 1 if downbeat and bar % 4 == 0 else 0
        else:                         # chaotic: bursts of 2-5
            assert 2 <= len(got) <= 5, (i, len(got))
            assert {b["error_type"] for b in got} == {"chaotic"}
            continue
        assert len(got) == expected, (i, label, got)
        pattern = {"intro": "minimal", "verse": "basic", "chorus": "business", "outro": "philosophical"}[label]
        assert all(b["error_type"] == pattern for b in got)
    bursts = Counter(len(by_beat[i]) for i in range(3 * per_section, 4 * per_section))
    assert len(bursts) >= 3                                  # burst sizes vary beat to beat
    keys_seen = [r["idempotency_key"] for r in receiver.received()]
    assert len(keys_seen) == len(set(keys_seen))             # one POST per trigger
    assert all(k.startswith(f"{SRC}:") and k.count(":") == 2 for k in keys_seen)
    stream = keys.stream(SRC, "beats")
    assert bus.redis.xpending(stream, "trigger")["pending"] == 0   # everything acknowledged


def test_patterns_follow_confirmed_sections_only(bus, settings, receiver):
    """A tentative boundary is a hint the structure stage may withdraw: no pattern follows it."""
    svc = make_service(bus, settings, receiver)
    with running(svc):
        publish(bus, "sections", section_event("verse", 0.0))
        hint = section_event("chorus", 4.0)
        publish(bus, "sections", msgspec.structs.replace(hint, status="tentative"))
        publish(bus, "sections", section_event("bridge", 8.0))
        for i in range(24):                                   # 12 s at 120 BPM
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: drained(bus), timeout=20)
    sections = {r["body"]["beat"]: r["body"]["section"] for r in ok(receiver.received())}
    assert {sections[i] for i in range(16) if i in sections} == {"verse"}      # 0-8 s: the tentative chorus ignored
    assert {sections[i] for i in range(16, 24) if i in sections} == {"bridge"}


def test_patterns_and_sections_are_configurable(bus, settings, receiver, tmp_path):
    cfg_file = tmp_path / "beatbus.toml"
    cfg_file.write_text('[beatbus]\nsource = "x"\n\n[trigger]\nretries = 1\n\n'
                        '[trigger.sections]\nverse = "every_third"\n\n'
                        '[trigger.patterns.every_third]\non = "beat"\nevery = 3\naccent = 2\n')
    cfg = load_trigger_config({"url": receiver.url, "max_age": 30.0}, config_file=cfg_file, env={})
    assert cfg.retries == 1 and cfg.sections["chorus"] == "business"     # merged over the defaults
    svc = TriggerService(bus, settings=settings, config=cfg, sources=[SRC])
    with running(svc):
        publish(bus, "sections", section_event("verse", 0.0))
        for i in range(12):
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: drained(bus))
    beats = Counter(r["body"]["beat"] for r in ok(receiver.received()))
    # beats 0, 3, 6, 9 fire; downbeats 0 and ... (0, 4, 8) get +2: only beat 0 is both
    assert beats == {0: 3, 3: 1, 6: 1, 9: 1}
    assert {r["body"]["error_type"] for r in receiver.received()} == {"every_third"}


@pytest.mark.parametrize("overrides, needle", [
    ({"sections": {"chorus": "nope"}}, "sections.chorus = 'nope' names no pattern"),
    ({"sections": {"hook": "basic"}}, "sections.hook"),
    ({"patterns": {"x": {"burst_min": 4, "burst_max": 2}}}, "burst_max=2 must be >= burst_min=4"),
    ({"patterns": {"Bad-Name": {}}}, "snake_case"),
    ({"url": "ftp://host"}, "http:// or https://"),
    ({"timeout": -1}, "timeout"),
])
def test_bad_trigger_config_is_one_clear_error(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_trigger_config(overrides, env={})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_retries_503_but_not_400(bus, settings, receiver):
    svc = make_service(bus, settings, receiver, retries=3, backoff_base=0.01)
    with running(svc):
        receiver.set_fault(status=503, count=2)
        entry = publish(bus, "beats", beat_event(1))
        key = f"{SRC}:{entry}:0"
        assert wait_for(lambda: len(receiver.received()) >= 3 and not svc._open)
        attempts = [r for r in receiver.received() if r["idempotency_key"] == key]
        assert [r["status"] for r in attempts] == [503, 503, 200]          # same key every time
        assert svc.outcomes.get("delivered") == 1

        receiver.clear()
        receiver.set_fault(status=400, count=5)
        entry = publish(bus, "beats", beat_event(2))
        assert wait_for(lambda: receiver.received() and not svc._open)
        time.sleep(0.3)                                                     # room for a wrong retry
        assert [r["status"] for r in receiver.received()] == [400]         # 4xx: never retried
        assert svc.outcomes.get("rejected") == 1
    assert bus.redis.xpending(keys.stream(SRC, "beats"), "trigger")["pending"] == 0
    # a rejected trigger reached the receiver: its key is kept so a redelivery does not resend it
    assert bus.redis.get(dedup_key(SRC, entry, 0)) == b"done"


def test_circuit_opens_while_receiver_is_down_and_closes_when_it_returns(bus, settings):
    rx = ReferenceReceiver().start()
    port = rx.port
    rx.stop()                                                               # the service is down
    cfg = load_trigger_config({"url": f"http://127.0.0.1:{port}", "max_age": 30.0, "retries": 0,
                               "breaker_failures": 3, "breaker_reset": 0.5}, env={})
    svc = TriggerService(bus, settings=settings, config=cfg, sources=[SRC])
    with running(svc):
        for i in range(3):
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: svc.delivery.breaker.state is BreakerState.OPEN)
        assert metric("beatbus_trigger_circuit_state") == 2
        errors_when_open = metric("beatbus_trigger_attempts_total", result="error")
        for i in range(3, 6):
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: svc.outcomes.get("circuit_open", 0) >= 3 and not svc._open)
        # while open, nothing was attempted: triggers were dropped without a connection
        assert metric("beatbus_trigger_attempts_total", result="error") == errors_when_open
        rx = ReferenceReceiver(port=port).start()                          # it comes back
        try:
            time.sleep(0.6)                                                 # past breaker_reset
            publish(bus, "beats", beat_event(6))                            # the half-open probe
            assert wait_for(lambda: len(ok(rx.received())) == 1)
            assert wait_for(lambda: svc.delivery.breaker.state is BreakerState.CLOSED)
            for i in range(7, 10):
                publish(bus, "beats", beat_event(i))
            assert wait_for(lambda: len(ok(rx.received())) == 4 and not svc._open)
            assert svc.delivery.breaker.state is BreakerState.CLOSED
            assert metric("beatbus_trigger_circuit_state") == 0
            assert sorted(r["body"]["beat"] for r in rx.received()) == [6, 7, 8, 9]
        finally:
            rx.stop()
    assert svc.outcomes["failed"] == 3 and svc.outcomes["circuit_open"] == 3 and svc.outcomes["delivered"] == 4


def test_stale_triggers_are_dropped(bus, settings, receiver):
    stale_before = metric("beatbus_triggers_total", outcome="stale")
    # a beat emitted 20 s ago is off-beat by now
    # (the margins, 1.5 s to send the first trigger, 1.5 s past max_age for those queued behind a
    # 3 s POST, hold on a loaded machine)
    svc = make_service(bus, settings, receiver, max_age=1.5, timeout=10.0, concurrency=1)
    with running(svc):
        publish(bus, "beats", beat_event(1, emitted_at=time.time() - 20.0))
        assert wait_for(lambda: svc.outcomes.get("stale") == 1)
        assert receiver.received() == []
        # a slow receiver and one connection: triggers queued behind a 3 s POST go stale
        receiver.set_fault(status=None, delay_ms=3000)
        now = time.time()
        for i in range(2, 6):
            publish(bus, "beats", beat_event(i, emitted_at=now))
        assert wait_for(lambda: sum(svc.outcomes.values()) >= 5 and not svc._open, timeout=30)
    assert [r["body"]["beat"] for r in receiver.received()] == [2]
    assert svc.outcomes == {"stale": 4, "delivered": 1}
    assert metric("beatbus_triggers_total", outcome="stale") - stale_before == 4
    assert bus.redis.xpending(keys.stream(SRC, "beats"), "trigger")["pending"] == 0


def test_redelivered_entries_fire_no_duplicate_posts(bus, settings, receiver):
    stream = keys.stream(SRC, "beats")
    first = make_service(bus, settings, receiver)
    with running(first):
        for i in range(8):
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: len(receiver.received()) == 8 and not first._open)
    # the group forgets it handled them (as after a crash before XACK): all 8 come again
    bus.redis.xgroup_setid(stream, "trigger", "0")
    second = make_service(bus, settings, receiver)
    with running(second):
        assert wait_for(lambda: second.outcomes.get("duplicate") == 8)
        time.sleep(0.3)
    assert len(receiver.received()) == 8
    assert len({r["idempotency_key"] for r in receiver.received()}) == 8
    assert bus.redis.xpending(stream, "trigger")["pending"] == 0


def test_janitor_delivers_what_a_crashed_consumer_left_pending(bus, settings, receiver):
    stream = keys.stream(SRC, "beats")
    svc = make_service(bus, settings, receiver)        # creates the group
    with running(svc):
        pass
    ids = [publish(bus, "beats", beat_event(i)) for i in range(4)]
    # a consumer takes the entries and dies before acting on them
    got = bus.redis.xreadgroup("trigger", "ghost", {stream: ">"}, count=10)
    assert len(got[0][1]) == 4
    rescuer = make_service(bus, settings, receiver)     # claim_idle_ms=200 in the test settings
    with running(rescuer):
        assert wait_for(lambda: len(receiver.received()) == 4 and not rescuer._open)
        time.sleep(0.5)                                  # another janitor round changes nothing
    assert sorted(r["idempotency_key"] for r in receiver.received()) == sorted(f"{SRC}:{i}:0" for i in ids)
    assert bus.redis.xpending(stream, "trigger")["pending"] == 0


def test_a_slow_receiver_never_gets_entries_in_flight_dead_lettered(bus, settings, receiver):
    """Entries wait unacknowledged while their triggers are in flight. The janitor claims entries idle
    past claim_idle_ms (200 ms here) and dead-letters those claimed too often: before the consumer kept
    its own entries alive, a receiver taking 1.5 s got them dead-lettered (and acknowledged, so the
    stream looked drained while triggers were still on their way; stop 35's CI)."""
    stream = keys.stream(SRC, "beats")
    receiver.set_fault(status=None, delay_ms=1500)      # every answer a 200, after 1.5 s
    svc = make_service(bus, settings, receiver)
    with running(svc):
        for i in range(8):
            publish(bus, "beats", beat_event(i))
        assert wait_for(lambda: len(ok(receiver.received())) == 8, timeout=20)
        assert wait_for(lambda: drained(bus), timeout=10)
    assert bus.redis.xrange(keys.dead_letter(stream)) == []
    assert svc.outcomes == {"delivered": 8}
    assert sorted(r["body"]["beat"] for r in ok(receiver.received())) == list(range(8))


def test_malformed_beat_entry_is_dead_lettered_and_the_consumer_lives(bus, settings, receiver):
    stream = keys.stream(SRC, "beats")
    svc = make_service(bus, settings, receiver)
    with running(svc):
        bus.redis.xadd(stream, {b"d": b"{not json"})
        publish(bus, "beats", beat_event(1))
        assert wait_for(lambda: len(receiver.received()) == 1 and not svc._open)
        assert wait_for(lambda: bus.redis.xpending(stream, "trigger")["pending"] == 0)
    dead = bus.redis.xrange(keys.dead_letter(stream))
    assert len(dead) == 1 and dead[0][1][b"reason"] == b"malformed"


def test_groups_come_back_after_the_broker_lost_its_data(bus, settings, receiver):
    svc = make_service(bus, settings, receiver)
    with running(svc):
        publish(bus, "beats", beat_event(0))
        assert wait_for(lambda: len(receiver.received()) == 1)
        bus.redis.flushall()                              # as after a broker restart without persistence
        time.sleep(0.3)
        publish(bus, "beats", beat_event(1))
        assert wait_for(lambda: len(receiver.received()) == 2, timeout=5)
    assert svc.error is None


def test_click_pipeline_fires_triggers_through_build_trigger_service(bus, settings, receiver):
    """produce click -> beat processor -> build_trigger_service (what `beatbus run --trigger URL` wires)."""
    from beatbus.consumers.trigger import build_trigger_service
    from beatbus.processors.beat import BeatProcessor
    from beatbus.processors.beat.service import BeatService
    from beatbus.producers import ClickSource
    from beatbus.producers.service import Publisher
    from beatbus.schemas import from_fields

    with pytest.raises(ConfigError, match="no error generator URL"):
        build_trigger_service(bus, settings, sources=["default"], config=load_trigger_config({}, env={}))
    trigger = build_trigger_service(bus, settings, url=receiver.url, sources=["default"],
                                    config=load_trigger_config({"max_age": 30.0}, env={}))
    assert trigger.config.url == receiver.url and trigger.config.max_age == 30.0
    processor = BeatService(bus, settings=settings, make_processor=lambda: BeatProcessor(backend="dsp"),
                            sources=["default"], exit_when_ended=True)
    producer = Publisher(bus, ClickSource(120, realtime=False, duration=8.0), settings=settings)
    # the trigger runs on, as its daemon does, until it has caught up with the last beats (stopped
    # with the processor, it may not have read them yet: a loaded CI machine once saw that)
    with running(trigger):
        assert run_services([processor, producer], until=[processor], duration=60) == 0
        events = [from_fields(f) for _, f in bus.redis.xrange(keys.stream("default", "beats"))]
        beats = {e.beat for e in events if isinstance(e, BeatEvent)}
        wait_for(lambda: {r["body"]["beat"] for r in ok(receiver.received())} >= beats, timeout=10)
    got = ok(receiver.received())
    assert len(beats) >= 8 and {r["body"]["beat"] for r in got} == beats
    assert all(r["body"]["error_type"] == "basic" and abs(r["body"]["tempo"] - 120) < 3 for r in got
               if r["body"]["beat"] >= 4)


def test_without_a_source_list_it_follows_every_live_source(bus, settings, receiver):
    cfg = load_trigger_config({"url": receiver.url, "max_age": 30.0}, env={})
    svc = TriggerService(bus, settings=settings, config=cfg)              # sources=None: discover
    with running(svc):
        for name in ("a1", "b2"):
            bus.heartbeat(name)                                            # a producer says it is alive
        assert wait_for(lambda: set(svc.sources) == {"a1", "b2"}, timeout=5)
        for name in ("a1", "b2"):
            publish(bus, "beats", beat_event(1, source=name), source=name)
        assert wait_for(lambda: len(receiver.received()) == 2)
    assert sorted(r["idempotency_key"].split(":")[0] for r in receiver.received()) == ["a1", "b2"]
