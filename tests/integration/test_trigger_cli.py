"""The trigger commands as a user runs them: real processes, real HTTP on loopback, a real broker."""
from __future__ import annotations

import httpx
import orjson
import pytest

from beatbus import keys

from support.events import beat_event
from support.procs import beatbus_cmd, free_port, spawn, stop, wait_for


def test_consume_trigger_daemon_posts_to_the_reference_receiver(broker, bus):
    port = free_port()
    rx = spawn("dev", "error-generator", "--port", str(port))
    consumer = None
    try:
        line = rx.stdout.readline()
        assert line.startswith(f"BEATBUS_ERROR_GENERATOR_URL=http://127.0.0.1:{port}") and "test double" in line
        consumer = spawn("consume", "trigger", "--sources", "cli", "--max-age", "5",
                          env={"REDIS_URL": broker.url, "BEATBUS_ERROR_GENERATOR_URL": f"http://127.0.0.1:{port}",
                               "BEATBUS_METRICS_ADDR": "off"})
        stream = keys.stream("cli", "beats")
        assert wait_for(lambda: bus.redis.exists(stream) and bus.redis.xinfo_groups(stream), timeout=20), \
            consumer.stderr.read() if consumer.poll() is not None else "no group"
        for i in range(4):
            bus.publish(stream, beat_event(i, source="cli"), maxlen=100)
        assert wait_for(lambda: len(httpx.get(f"http://127.0.0.1:{port}/received", trust_env=False).json()) == 4)
        got = httpx.get(f"http://127.0.0.1:{port}/received", trust_env=False).json()
        assert sorted(r["body"]["beat"] for r in got) == [0, 1, 2, 3]
        assert all(r["idempotency_key"].startswith("cli:") and r["arrived_at"] > 0 for r in got)
        # fault injection through the control endpoint
        r = httpx.post(f"http://127.0.0.1:{port}/control", json={"status": 503, "count": 1}, trust_env=False)
        assert r.json() == {"status": 503, "count": 1, "delay_ms": 0.0}
        assert httpx.post(f"http://127.0.0.1:{port}/control", json={"status": 42},
                          trust_env=False).status_code == 400
    finally:
        try:
            if consumer is not None:
                rc, _out, err = stop(consumer)
                assert rc == 0 and "Traceback" not in err, err
                assert "triggers -> http://127.0.0.1:" in err
        finally:                      # the receiver goes even when the consumer's checks fail
            rc, _out, err = stop(rx)
        assert rc == 0 and "Traceback" not in err, err


def test_a_burst_of_beats_reaches_the_receiver_whole(broker, bus):
    """160 beats at once (as after a reconnect): the daemon opens its whole pool (32 connections) at
    once. The receiver listened with the stdlib's backlog of 5, the kernel reset some connections,
    five resets in a row opened the daemon's breaker and beats were dropped (stop 35's CI)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rx = spawn("dev", "error-generator", "--port", str(port))
    consumer = None
    try:
        assert rx.stdout.readline().startswith(f"BEATBUS_ERROR_GENERATOR_URL={url}")
        consumer = spawn("consume", "trigger", "--sources", "burst", "--max-age", "30",
                         env={"REDIS_URL": broker.url, "BEATBUS_ERROR_GENERATOR_URL": url,
                              "BEATBUS_METRICS_ADDR": "off"})
        stream = keys.stream("burst", "beats")
        assert wait_for(lambda: bus.redis.exists(stream) and bus.redis.xinfo_groups(stream), timeout=20)
        pipe = bus.pipeline()
        for i in range(160):
            bus.publish(stream, beat_event(i, source="burst"), maxlen=1000, pipeline=pipe)
        pipe.execute()
        assert wait_for(lambda: len(httpx.get(f"{url}/received", trust_env=False).json()) >= 160, timeout=30)
        got = httpx.get(f"{url}/received", trust_env=False).json()
        assert sorted(r["body"]["beat"] for r in got if r["status"] == 200) == list(range(160))
    finally:
        try:
            if consumer is not None:
                rc, _out, err = stop(consumer)
                assert rc == 0 and "Traceback" not in err, err
                assert "circuit breaker" not in err, err
        finally:                      # the receiver goes even when the consumer's checks fail
            rc, _out, err = stop(rx)
        assert rc == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("args, env, needle", [
    (["consume", "trigger"], {"REDIS_URL": "redis://127.0.0.1:1/0"},
     "no error generator URL: pass --error-generator-url or set BEATBUS_ERROR_GENERATOR_URL"),
    (["consume", "trigger", "--error-generator-url", "ftp://x"], {}, "must be an http:// or https:// URL"),
    (["consume", "trigger", "--error-generator-url", "http://127.0.0.1:9"], {}, "no broker: set REDIS_URL"),
    (["consume", "trigger", "--timeout", "0"], {"BEATBUS_ERROR_GENERATOR_URL": "http://h"}, "timeout"),
])
def test_trigger_user_errors_are_one_line(args, env, needle):
    r = beatbus_cmd(*args, env=env, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("beatbus: error: ") and needle in last, r.stderr
    assert "Traceback" not in r.stderr


def test_bench_trigger_prints_a_latency_table(tmp_path):
    out = tmp_path / "bench.json"
    r = beatbus_cmd("bench", "trigger", "--sources", "2", "--rate", "4", "--duration", "2", "--json", str(out),
                    timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-3].startswith("| sources |") and "| p50 ms | p99 ms |" in lines[-3]
    assert [c.strip() for c in lines[-1].strip("|").split("|")][:5] == ["2", "4.0", "16", "16", "0"]  # all arrived once
    doc = orjson.loads(out.read_bytes())
    assert doc["duplicates"] == 0 and doc["p50_ms"] > 0
