"""The trigger consumer on a real Redis Cluster (3 masters + 3 replicas on loopback) losing a master.

Until the dead master's replica takes over (the cluster's node timeout, 3 s here), the sources whose
beat streams live on it cannot be read or claimed; every other source's triggers must go on, each
while it is still fresh (``max_age``). The receiver is the reference receiver (a test double of the external error generator).
"""
from __future__ import annotations

import time

import pytest
from redis.crc import key_slot

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.trigger import TriggerService, load_trigger_config
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.cluster import NODE_TIMEOUT_MS, RedisClusterNodes, source_on_each_master
from support.events import beat_event
from support.procs import wait_for
from support.services import running

pytestmark = pytest.mark.slow


def ok(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == 200]

LIVE_BEATS = range(1000, 1030)       # the live source's beats during the outage (the others: 0..)


def test_a_dead_master_stops_only_its_own_sources_triggers(tmp_path):
    with RedisClusterNodes(tmp_path / "cluster") as cluster, ReferenceReceiver() as rx:
        dead, live = source_on_each_master(cluster, prefix="trig")[:2]
        bus = Bus.connect(cluster.url, name="test")
        settings = load_settings({"redis_url": cluster.url, "metrics_addr": "off", "block_ms": 100,
                                  "claim_idle_ms": 300}, env={})
        # max_age: a beat not triggered within 2 s is dropped as stale (before the fix, the live
        # source's beats waited for the failover, 3-4 s, and were all dropped)
        config = load_trigger_config({"url": rx.url, "max_age": 2.0, "timeout": 5.0}, env={})
        svc = TriggerService(bus, settings=settings, config=config, sources=[dead, live])
        with running(svc):
            for i in range(4):
                for src in (dead, live):
                    bus.publish(keys.stream(src, "beats"), beat_event(i, source=src), maxlen=1000)
            assert wait_for(lambda: len(ok(rx.received())) >= 8, timeout=20), rx.received()
            cluster.kill(cluster.master_of_slot(key_slot(keys.stream(dead, "beats").encode())))
            sent = {}
            for i in LIVE_BEATS:        # 0.06 s apart: 1.8 s, inside the node timeout
                sent[i] = time.time()
                bus.publish(keys.stream(live, "beats"), beat_event(i, source=live), maxlen=1000)
                time.sleep(0.06)
            assert time.time() - sent[LIVE_BEATS[0]] < NODE_TIMEOUT_MS / 1000, "the test ran past the failover"
            got = wait_for(lambda: {r["body"]["beat"]: r["arrived_at"] for r in ok(rx.received())
                                    if r["body"]["beat"] in LIVE_BEATS}
                           if len({r["body"]["beat"] for r in ok(rx.received())} & set(LIVE_BEATS)) == len(LIVE_BEATS)
                           else None, timeout=10)
        bus.close()
    assert got, "the live source's beats were not all triggered while the other master was down"
    assert max(got[i] - sent[i] for i in LIVE_BEATS) < 2.0
