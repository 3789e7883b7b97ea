"""Scale-out with real daemons: processors share sources through leases, trigger consumers share a group.

Every process here is a real ``beatbus`` (or :mod:`lab.bench.loadgen`) subprocess against the
embedded broker; the reference receiver is the test double of the error generator.
"""
from __future__ import annotations

import signal
import time

import pytest

from beatbus import keys
from beatbus.consumers.trigger import idempotency_key
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.events import beat_event
from support.ops import Daemons, beats, holders, metrics, owner, wait_until

# Leases here are longer than the other tests' 1 s: a processor starved of CPU on a loaded
# machine must not lose its shard before the kill (which would be right, but not this test).
TTL, HEARTBEAT = 2.5, 0.25
LEASES = {"BEATBUS_LEASE_TTL": TTL, "BEATBUS_HEARTBEAT": HEARTBEAT}


@pytest.fixture
def daemons(broker, tmp_path):
    d = Daemons(broker.url, tmp_path)
    yield d
    d.stop_all()


def beats_after(bus, source: str, t: float):
    return beats(bus, source, after=t)


def test_processors_share_sources_and_a_standby_takes_over_a_killed_one(bus, daemons):
    """Must not be lost: any source's beats. Two processors own three sources each (their shards);
    a third, discovering every live source, holds none until one of them is killed -9: then it
    owns the dead one's sources within the lease TTL and their beats resume; the survivor's
    sources never change hands."""
    sources = [f"so-{i:03d}" for i in range(6)]
    p1 = daemons.start("processor-1", "process", "--sources", *sources[:3], **LEASES)
    p2 = daemons.start("processor-2", "process", "--sources", *sources[3:], **LEASES)
    daemons.start("loadgen", "--sources", "6", "--prefix", "so", module="beatbus.lab.bench.loadgen", **LEASES)
    want = {**{s: owner(p1) for s in sources[:3]}, **{s: owner(p2) for s in sources[3:]}}
    wait_until(lambda: holders(bus, sources) == want, 90, "the shards to be leased", daemons)
    standby = daemons.start("processor-3", "process", metrics=True, **LEASES)   # follows every live source
    wait_until(lambda: "beatbus_leases_held{role=beat}" in metrics(standby.port), 60, "the standby's loop", daemons)
    time.sleep(3 * HEARTBEAT)
    assert holders(bus, sources) == want                                # nothing left to take
    assert metrics(standby.port)["beatbus_leases_held{role=beat}"] == 0
    wait_until(lambda: all(beats_after(bus, s, time.time() - 2) for s in sources), 40, "beats on every source",
               daemons)

    p1.send_signal(signal.SIGKILL)
    p1.wait()
    killed = time.time()
    taken = wait_until(lambda: (h := holders(bus, sources)) and all(h[s] == owner(standby) for s in sources[:3])
                       and time.time(), 10, "the standby to take the dead shard", daemons)
    assert taken - killed <= TTL + 4 * HEARTBEAT + 0.5, taken - killed
    assert {s: holders(bus, sources)[s] for s in sources[3:]} == {s: owner(p2) for s in sources[3:]}
    resumed = wait_until(lambda: all(beats_after(bus, s, killed) for s in sources[:3]) and time.time(), 15,
                         "beats from the new owner", daemons)
    print(f"\ntakeover {taken - killed:.2f} s after kill -9 (lease TTL {TTL} s); "
          f"beats on every taken source {resumed - killed:.2f} s after it")
    # lab.bench.loadgen gives source i of 6 a click track at 90 + 12 i BPM: the new owner tracks that tempo
    clicks = {s: 90.0 + 60.0 * i / (len(sources) - 1) for i, s in enumerate(sources)}
    taken_beats = {s: wait_until(lambda s=s: len(b := beats_after(bus, s, killed)) >= 4 and b, 30,
                                 f"four beats on {s} from the new owner", daemons) for s in sources[:3]}
    for s, got in taken_beats.items():
        assert [b.bpm for b in got] == pytest.approx([clicks[s]] * len(got), abs=3), s
    assert standby.poll() is None and p2.poll() is None


def test_trigger_consumers_share_a_group_and_post_each_trigger_once(bus, daemons):
    """Must not be lost: any beat's trigger. Three consumers in one group share the beats of
    two sources: every trigger is POSTed exactly once, and the work is spread."""
    sources = ["tg-a", "tg-b"]
    with ReferenceReceiver() as rx:
        consumers = [daemons.start(f"trigger-{i}", "consume", "trigger", "--error-generator-url", rx.url,
                                   "--max-age", "30", "--sources", *sources, metrics=True) for i in range(3)]
        wait_until(lambda: all(len(bus.redis.xinfo_consumers(keys.stream(s, "beats"), "trigger")) == 3
                               for s in sources if bus.redis.exists(keys.stream(s, "beats")))
                   and all(bus.redis.exists(keys.stream(s, "beats")) for s in sources), 90,
                   "three consumers in the group", daemons)
        ids = {}
        for i in range(40):
            src = sources[i % 2]
            ids[bus.publish(keys.stream(src, "beats"), beat_event(i, source=src), maxlen=1000)] = src
            time.sleep(0.02)
        expected = sorted(idempotency_key(src, entry_id, 0) for entry_id, src in ids.items())
        wait_until(lambda: len(rx.received()) >= len(expected), 30, "every trigger", daemons)
        time.sleep(1.0)                                    # any duplicate would arrive by now
        got = sorted(r["idempotency_key"] for r in rx.received())
        assert got == expected                             # each once, none missing
        assert all(r["status"] == 200 for r in rx.received())
        wait_until(lambda: all(bus.redis.xpending(keys.stream(s, "beats"), "trigger")["pending"] == 0
                               for s in sources), 10, "every entry acknowledged")
        per_consumer = [metrics(p.port).get("beatbus_triggers_total{outcome=delivered}", 0) for p in consumers]
    print(f"\ntriggers delivered per consumer: {per_consumer}")
    assert sum(per_consumer) == len(expected)
    assert sum(1 for n in per_consumer if n > 0) >= 2           # the group spread the work
    assert all(p.poll() is None for p in consumers)
