"""Every daemon's /metrics (issue #15 items 6 and 19): its own default port, and only its own metrics.

Item 6: every daemon defaulted to 127.0.0.1:9464, so the README's `beatbus intensity run &` then
`beatbus structure run` ended with "Address already in use". Each role now has the port
`deploy install` gives it (a second instance of a per-instance role takes the next one).
Item 19: every process published every stage's unlabelled metrics as zeros (the exporter said
`beatbus_led_ambient_ratio 0` and `beatbus_trigger_circuit_state 0`). A process now publishes a
family only once it uses it, and a stage's unlabelled ones only while it runs that stage.
"""
from __future__ import annotations

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from beatbus import keys
from beatbus.bus import Bus
from beatbus.deploy.units import DAEMONS
from beatbus.metrics import METRICS_PORTS, PER_INSTANCE

from support.daemons import Daemon, daemon_env
from support.procs import free_port, wait_for

_SERVED = re.compile(r"metrics served\s+url=http://127\.0\.0\.1:(\d+)/metrics")


def _scrape(port: int) -> dict:
    """Family name -> family, parsed by prometheus_client's own text parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def _port(d: Daemon) -> int | None:
    m = _SERVED.search(d.stderr())
    return int(m.group(1)) if m else None


def test_daemons_started_with_defaults_each_serve_metrics_on_their_own_port(broker, tmp_path):
    env = daemon_env(REDIS_URL=broker.url)
    started = [Daemon(name, args, env=env, workdir=tmp_path).start() for name, args in (
        ("intensity", ["intensity", "run"]),           # the README walkthrough: `intensity run &`, then
        ("structure", ["structure", "run"]),           # `structure run` on the same host
        ("intensity-2", ["intensity", "run"]),         # a second instance of a role: the next port
        ("processor", ["process", "--backend", "dsp"]))]
    try:
        assert wait_for(lambda: all(_port(d) for d in started) or not all(d.alive() for d in started), 120), \
            [d.stderr()[-600:] for d in started]
        wait_for(lambda: False, 2)                                          # still up a moment later
        assert all(d.alive() for d in started), [d.stderr()[-600:] for d in started if not d.alive()]
        ports = {d.name: _port(d) for d in started}
        assert len(set(ports.values())) == len(ports), ports
        for d in started:
            role = {"intensity-2": "intensity", "processor": "processor"}.get(d.name, d.name)
            base = METRICS_PORTS[role]
            assert base < ports[d.name] <= base + PER_INSTANCE[role], (d.name, ports[d.name])
            assert base == DAEMONS[role].port                             # the ones `deploy install` uses
            families = _scrape(ports[d.name])
            assert "beatbus_broker_reconnects" in families
            assert not [n for n in families if n.startswith(("beatbus_led", "beatbus_trigger"))], sorted(families)
    finally:
        for d in started:
            d.stop()


# What the exporter sets: its collectors' families (deploy/stream_metrics.py, deploy/rq_metrics.py)
# and the broker reconnects of its own loop.
EXPORTER_FAMILIES = ("beatbus_stream_", "beatbus_streams_up", "beatbus_dead_letter_entries", "beatbus_group_",
                     "beatbus_checkpoint_lag",
                     "beatbus_source_owned", "beatbus_source_heartbeat_age", "beatbus_source_reachable",
                     "beatbus_sources_live", "beatbus_rq_", "beatbus_broker_reconnects")


def test_exporter_publishes_only_the_metrics_it_sets(broker, tmp_path):
    # a live source of its own, so the per-source families are scraped whatever earlier tests left in
    # the shared broker (CI once ran this after a test that left one, and a new family was unlisted)
    bus = Bus.connect(broker.url, name="test")
    bus.redis.flushall()
    bus.heartbeat("metered")
    bus.publish_fields(keys.stream("metered", keys.StreamKind.BEATS), {"n": "1"}, maxlen=100)
    bus.close()
    port = free_port()
    exporter = Daemon("exporter", ["exporter"], env=daemon_env(REDIS_URL=broker.url,
                                                               BEATBUS_METRICS_ADDR=f"127.0.0.1:{port}"),
                      workdir=tmp_path).start()
    try:
        assert wait_for(lambda: exporter.poll_ready() or not exporter.alive(), 90), exporter.stderr()[-2000:]
        families = _scrape(port)
        ours = sorted(n for n in families if n.startswith("beatbus_"))
        assert "beatbus_streams_up" in ours and "beatbus_rq_up" in ours, ours
        foreign = [n for n in ours if not n.startswith(EXPORTER_FAMILIES)]
        assert not foreign, f"the exporter publishes families it never sets: {foreign}"
        assert all(f.samples for f in families.values()), [n for n, f in families.items() if not f.samples]
        reachable = [(x.labels, x.value) for x in families["beatbus_source_reachable"].samples]
        assert reachable == [({"source": "metered"}, 1.0)], reachable
    finally:
        exporter.stop()
