import os
import stat
import time

import pytest

from beatbus import keys
from beatbus.broker import EmbeddedBroker
from beatbus.bus import Bus, Group, Lease, Reader
from beatbus.errors import BrokerError
from beatbus.schemas import StreamEnd, TriggerRequest, from_fields

from support.procs import eventually

S = keys.stream("t1", keys.StreamKind.BEATS)


def _end(i: float) -> StreamEnd:
    return StreamEnd(source="t1", timestamp=i)


def test_key_layout_uses_hash_tags():
    assert keys.stream("mic-1", "audio") == "bb:{mic-1}:audio"
    assert keys.dead_letter(keys.stream("a", "beats")) == "bb:{a}:beats:dead"
    assert keys.lease("a", "beat").startswith("bb:{a}:")
    with pytest.raises(Exception, match="invalid"):
        keys.stream("a}b", "audio")


def test_publish_caps_stream_with_maxlen(bus):
    for i in range(2000):
        bus.publish(S, _end(i), maxlen=100)
    n = bus.redis.xlen(S)
    assert 100 <= n < 300          # MAXLEN ~ trims in whole macro-nodes


def test_reader_from_dollar_sees_only_new_entries(bus):
    bus.publish(S, _end(1), maxlen=100)
    reader = Reader(bus, [S], block_ms=50)
    bus.publish(S, _end(2), maxlen=100)   # published after the reader resolved "$"
    bus.publish(S, _end(3), maxlen=100)
    got = [from_fields(f).timestamp for _, _, f in reader.read()]
    assert got == [2, 3]
    assert reader.read(block_ms=20) == []


def test_unreachable_broker_is_one_line_error():
    with pytest.raises(BrokerError) as err:
        Bus.connect("redis://:pw@127.0.0.1:1/0")
    msg = str(err.value)
    assert "cannot reach broker at redis://:***@127.0.0.1:1/0" in msg and "pw" not in msg.replace("://", "")


def test_invalid_url_is_broker_error():
    with pytest.raises(BrokerError, match="invalid"):
        Bus("http://nope")


def test_consumer_group_redelivers_after_consumer_dies(bus):
    trig = TriggerRequest(error_type="basic", beat=1, section="verse", tempo=120.0)
    a = Group(bus, S, "g", "a", claim_idle_ms=100, block_ms=50)
    bus.publish(S, trig, maxlen=100)
    got = a.read()
    assert len(got) == 1                       # a took it and "crashed" without XACK
    patient = Group(bus, S, "g", "b", claim_idle_ms=60_000, block_ms=50)
    assert patient.read(block_ms=20) == []     # not delivered twice as new
    assert patient.claim_stale() == []         # not idle long enough yet (60 s: no load makes it so)
    b = Group(bus, S, "g", "b", claim_idle_ms=100, block_ms=50)
    claimed = eventually(b.claim_stale, what="the dead consumer's entry to be claimable")
    assert [e[1] for e in claimed] == [got[0][1]]
    assert from_fields(claimed[0][2]) == trig
    b.ack(claimed[0][1])
    assert b.pending_count() == 0


def test_dead_letter_after_max_deliveries(bus):
    g = Group(bus, S, "g", "c", max_deliveries=2, claim_idle_ms=10, block_ms=50)
    bus.publish(S, _end(7), maxlen=100)
    g.read()                                   # delivery 1, never acked
    retried = []
    for _ in range(4):
        time.sleep(0.03)
        retried += g.claim_stale()             # deliveries 2, 3 -> dead-lettered
    assert len(retried) == 1                   # retried once (2 deliveries), then given up
    dead = bus.redis.xrange(keys.dead_letter(S))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"reason"] == b"max_deliveries" and int(fields[b"deliveries"]) == 3
    assert from_fields(fields).timestamp == 7  # the payload is kept, nothing lost
    assert g.pending_count() == 0


def test_malformed_entry_is_counted_and_dead_lettered(bus):
    from beatbus.metrics import MALFORMED

    before = MALFORMED.labels("beats")._value.get()
    entry_id = bus.redis.xadd(S, {b"d": b'{"type":"beat","bpm":"x"}'}).decode()
    assert bus.decode(S, entry_id, {b"d": b'{"type":"beat","bpm":"x"}'}, StreamEnd) is None
    assert MALFORMED.labels("beats")._value.get() == before + 1
    dead = bus.redis.xrange(keys.dead_letter(S))
    assert dead[0][1][b"origin_id"].decode() == entry_id and dead[0][1][b"reason"] == b"malformed"


def test_lease_exclusive_and_taken_over_when_owner_stops_renewing(bus):
    key = keys.lease("t1", "beat")
    a, b = Lease(bus, key, "a", ttl=30), Lease(bus, key, "b", ttl=30)
    assert a.acquire() and not b.acquire()
    assert not b.renew()                       # a non-owner cannot extend it
    bus.redis.pexpire(key, 1000)               # most of a's lease has run out ...
    assert a.renew() and bus.redis.pttl(key) > 1000   # ... the owner extends it to a full ttl again
    assert not b.acquire()
    a.ttl_ms = 300
    assert a.renew()                           # a's last renewal is short; then a stops renewing
    eventually(b.acquire, what="b to take the lapsed lease")   # the lease lapses and b takes it
    assert b.holder() == "b"
    assert not a.renew() and not a.release()   # the old owner finds out and cannot delete b's lease
    assert b.holder() == "b"


def test_source_registry_heartbeats(bus):
    bus.heartbeat("alive")
    bus.redis.zadd(keys.SOURCES, {"stale": time.time() - 60})
    assert bus.sources(max_age=5) == ["alive"]


def test_embedded_broker_unix_socket_only_and_private(tmp_path):
    with EmbeddedBroker() as b:
        mode = stat.S_IMODE(os.stat(b.socket).st_mode)
        assert mode & 0o077 == 0, oct(mode)
        assert stat.S_IMODE(os.stat(b.dir).st_mode) == 0o700
        cfg = Bus.connect(b.url).redis.config_get("port")
        assert cfg["port"] == "0"              # no TCP listener
        d = b.dir
    assert not d.exists()                      # stopped and cleaned up on exit
