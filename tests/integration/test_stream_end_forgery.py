"""Only a stream's writer ends it (issue #15 item 17).

A schema-valid ``stream_end`` anyone XADDs by hand stopped `beatbus run` and its producer. A
writer now records each StreamEnd it writes (``bb:{src}:KIND:ends``, in the same script as the
XADD; the producer only while it holds the source's lease), and readers dead-letter an end that
is not recorded there (reason ``unverified_end``) instead of acting on it.
"""
from __future__ import annotations

import threading
import time
import urllib.request

import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from beatbus import keys
from beatbus.producers import ClickSource
from beatbus.producers.service import Publisher
from beatbus.schemas import StreamEnd, from_fields

from support.daemons import Daemon, daemon_env
from support.procs import free_port, wait_for

SRC = "forge"


def _forged_end(source: str) -> dict:
    """A stream_end as someone would type it: valid against the published JSON Schema."""
    return {"d": orjson.dumps({"type": "stream_end", "v": 1, "source": source, "timestamp": 1.0, "reason": "eof",
                               "emitted_at": time.time()})}


def _dead_letters(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.labels["kind"], s.labels["reason"]): s.value for f in text_string_to_metric_families(text)
            if f.name == "beatbus_dead_letters" for s in f.samples if s.name.endswith("_total")}


def test_a_hand_written_stream_end_stops_nothing_and_is_dead_lettered(broker, bus, tmp_path):
    port = free_port()
    run = Daemon("run", ["run", "--click", "120", "--backend", "dsp", "--metrics-addr", f"127.0.0.1:{port}"],
                 env=daemon_env(REDIS_URL=broker.url, BEATBUS_SOURCE=SRC), workdir=tmp_path).start()
    client = redis.Redis.from_url(broker.url)                       # redis-py, as a user with XADD rights
    try:
        beats = lambda: run.stdout_path.read_text().count("BPM")   # noqa: E731
        assert wait_for(lambda: beats() >= 3 or not run.alive(), 90), run.stderr()[-2000:]
        forged = {kind: client.xadd(keys.stream(SRC, kind), _forged_end(SRC)).decode()
                  for kind in ("audio", "beats")}
        seen = beats()
        time.sleep(3.0)
        assert run.alive(), run.stderr()[-2000:]
        assert beats() >= seen + 4, "beats stopped after the forged end"
        assert "end of stream" not in run.stdout_path.read_text()
        for kind, entry_id in forged.items():
            dead = client.xrange(keys.dead_letter(keys.stream(SRC, kind)))
            assert [(f[b"origin_id"].decode(), f[b"reason"]) for _, f in dead] == [(entry_id, b"unverified_end")]
        counted = _dead_letters(port)
        assert counted[("audio", "unverified_end")] == 1 and counted[("beats", "unverified_end")] == 1
    finally:
        client.close()
        run.stop()
    # a genuine end still ends the stream: the producer's, recorded, then the processor's
    audio = [from_fields(f) for _, f in bus.redis.xrange(keys.stream(SRC, "audio"))]
    assert isinstance(audio[-1], StreamEnd) and audio[-1].reason == "stopped"
    recorded = bus.redis.zrange(keys.stream_ends(keys.stream(SRC, "audio")), 0, -1)
    assert recorded and forged["audio"].encode() not in recorded


def test_a_producer_that_lost_its_source_writes_no_end(bus, settings):
    stream = keys.stream("taken", "audio")
    pub = Publisher(bus, iter(ClickSource(120, realtime=False, duration=1.0)), settings=settings, source="taken")
    pub.setup()
    pub.step(threading.Event())
    bus.redis.set(keys.producer_claim("taken"), "someone-else")      # the lease lapsed and another took it
    pub.drain()
    entries = [from_fields(f) for _, f in bus.redis.xrange(stream)]
    assert entries and not any(isinstance(e, StreamEnd) for e in entries)
