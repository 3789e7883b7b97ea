"""The trigger consumer on a real Redis Cluster (3 masters + 3 replicas on loopback) losing a shard.

A master and its replica are killed, so the sources whose beat streams live there cannot be read,
claimed or acked at all. Every other source's triggers must go on, each while it is still fresh
(``max_age``), and be acked: a pending beat would be handed out again and, after
``max_deliveries``, dead-lettered although it was delivered. The receiver is the reference receiver
(a test double of the external error generator).
"""
from __future__ import annotations

import logging
import time

import pytest
from redis.crc import key_slot

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.trigger import TriggerService, load_trigger_config
from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.cluster import RedisClusterNodes, source_on_each_master
from support.events import beat_event
from support.procs import wait_for
from support.services import running

pytestmark = pytest.mark.slow

LIVE_BEATS = range(1000, 1030)       # the live source's beats after the loss (the others: 0..)


def test_a_lost_shard_stops_only_its_own_sources_triggers(tmp_path, caplog):
    with RedisClusterNodes(tmp_path / "cluster") as cluster, ReferenceReceiver() as rx, \
            caplog.at_level(logging.WARNING, logger="beatbus.bus"):
        lost, live = source_on_each_master(cluster, prefix="trig")[:2]
        bus = Bus.connect(cluster.url, name="test")
        settings = load_settings({"redis_url": cluster.url, "metrics_addr": "off", "block_ms": 100,
                                  "claim_idle_ms": 300, "max_deliveries": 3}, env={})
        # max_age: a beat not triggered within 2 s is dropped as stale
        config = load_trigger_config({"url": rx.url, "max_age": 2.0, "timeout": 5.0}, env={})
        svc = TriggerService(bus, settings=settings, config=config, sources=[lost, live])

        def triggered() -> dict[int, float]:
            return {r["body"]["beat"]: r["arrived_at"] for r in rx.received() if r["body"] is not None}

        with running(svc):
            for i in range(4):
                for src in (lost, live):
                    bus.publish(keys.stream(src, "beats"), beat_event(i, source=src), maxlen=1000)
            assert wait_for(lambda: len(rx.received()) >= 8, timeout=20), rx.received()
            # the lost source's next trigger is answered late, so its outcome is still to be
            # recorded (on the lost master) when the shard is gone
            rx.set_fault(status=200, count=1, delay_ms=1500)
            bus.publish(keys.stream(lost, "beats"), beat_event(4, source=lost), maxlen=1000)
            assert wait_for(lambda: rx.fault.count == 0, timeout=10), "the late answer was not taken"
            port = cluster.master_of_slot(key_slot(keys.stream(lost, "beats").encode()))
            for p in [port, *cluster.replicas_of(port)]:
                cluster.kill(p)
            sent = {}
            for i in LIVE_BEATS:
                sent[i] = time.time()
                bus.publish(keys.stream(live, "beats"), beat_event(i, source=live), maxlen=1000)
                time.sleep(0.06)
            got = wait_for(lambda: triggered() if set(LIVE_BEATS) <= set(triggered()) else None, timeout=10)
            assert got, f"the live source's beats were not all triggered: {sorted(triggered())}"
            live_group = svc.sources[live].group
            acked = wait_for(lambda: live_group.pending_count() == 0, timeout=10)
            dead_letters = bus.redis.xlen(keys.dead_letter(keys.stream(live, "beats")))
        bus.close()
    assert max(got[i] - sent[i] for i in LIVE_BEATS) < 2.0
    assert acked, "the live source's delivered beats were left pending"
    assert dead_letters == 0
    # each outage (a call on the lost master) is said once, not every round
    downs = [r.during for r in caplog.records if r.getMessage().startswith("broker unavailable")]
    assert downs and len(downs) == len(set(downs)), downs
