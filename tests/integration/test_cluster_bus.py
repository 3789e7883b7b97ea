"""The bus on a real Redis Cluster (3 masters + 3 replicas on loopback): readers of sources on
every master, leases and stream ends across slots, and the one-line refusal of a plain client."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from beatbus import keys
from beatbus.bus import Bus, EventReader, Group, Lease, Reader
from beatbus.errors import BrokerError
from beatbus.leases import SourceLeases
from beatbus.schemas import ControlEvent, StreamEnd

from support.cluster import RedisClusterNodes, source_on_each_master
from support.procs import RedisServer, eventually


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster")).start()
    yield nodes
    nodes.stop()


@pytest.fixture
def bus(cluster):
    b = Bus.connect(cluster.url, name="test")
    yield b
    b.close()


def read_until(reader: Reader, n: int, timeout: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += reader.read(count=100, block_ms=200)
    return got


def slot_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("xread-slot-")]


def test_one_reader_follows_sources_on_every_master(cluster, bus):
    sources = source_on_each_master(cluster, "rd")
    streams = [keys.stream(s, "beats") for s in sources]
    assert len({cluster.master_of_slot(key_slot(s.encode())) for s in streams}) == 3
    reader = Reader(bus, streams)
    for i in range(30):
        bus.publish_fields(streams[i % 3], {"n": str(i)}, maxlen=1000)
    got = read_until(reader, 30)
    # every entry once, in each stream's order
    assert sorted(int(f[b"n"]) for _, _, f in got) == list(range(30))
    for stream in streams:
        mine = [int(f[b"n"]) for s, _, f in got if s == stream]
        assert mine == sorted(mine) and len(mine) == 10
    assert len(slot_threads()) >= 3
    # a stream removed is no longer delivered; one added is, from where it is added
    reader.remove(streams[0])
    late = keys.stream(source_on_each_master(cluster, "late")[0], "beats")
    reader.add(late)
    for stream in (streams[0], late, streams[1]):
        bus.publish_fields(stream, {"n": "x"}, maxlen=1000)
    got = read_until(reader, 2)
    assert sorted(s for s, _, _ in got) == sorted([late, streams[1]])
    assert not read_until(reader, 1, timeout=0.6)
    # a poll (block 0) reads every slot without threads of its own
    poll = Reader(bus, streams, block_ms=0)
    for stream in streams:
        bus.publish_fields(stream, {"n": "p"}, maxlen=1000)
    assert sorted(s for s, _, _ in eventually(lambda: poll.read(block_ms=0), what="a poll")) == sorted(streams)
    # closing the reader ends its threads
    reader.close()
    eventually(lambda: not slot_threads(), timeout=5, what=lambda: f"slot threads to end ({slot_threads()})")


def _rejected(cluster, port: int, command: str) -> int:
    """Calls of ``command`` the node on ``port`` refused before running them (MOVED among them)."""
    stats = cluster.cmd(port, "INFO", "commandstats")
    line = next((ln for ln in stats.splitlines() if ln.startswith(f"cmdstat_{command}:")), "")
    return int(dict(kv.split("=") for kv in line.partition(":")[2].split(",") if "=" in kv).get("rejected_calls", 0))


def test_a_pipeline_follows_a_slot_an_operator_moved(cluster, bus):
    """After an operator reshards a source's slot to another master, the bus's slot map is stale: its
    next pipeline (a processor's round of beats and checkpoints) goes to the old master, which refuses
    with MOVED. The commands land once, where the slot now is, and the bus has learnt the new map."""
    source = "moved0"
    stream = keys.stream(source, "beats")
    slot = key_slot(stream.encode())
    bus.publish_fields(stream, {"n": "0"}, maxlen=100)
    old = cluster.master_of_slot(slot)
    new = next(p for p in cluster.master_ports() if p != old)
    assert bus.node_name(stream) == f"127.0.0.1:{old}"
    ids = {n["port"]: n["id"] for n in cluster.nodes()}
    # resharding one slot by hand, as redis-cli --cluster reshard does it: IMPORTING, MIGRATING, MIGRATE, NODE
    assert cluster.cmd(new, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[old]) == "OK"
    assert cluster.cmd(old, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[new]) == "OK"
    for key in cluster.cmd(old, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
        assert cluster.cmd(old, "MIGRATE", "127.0.0.1", str(new), key, "0", "5000") == "OK"
    for port in cluster.master_ports():
        cluster.cmd(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[new])
    refused = _rejected(cluster, old, "xadd")

    pipe = bus.pipeline()
    bus.publish_fields(stream, {"n": "1"}, maxlen=100, pipeline=pipe)
    bus.set_checkpoint(source, "beat", "1-0", pipeline=pipe)
    pipe.execute()
    redirected = _rejected(cluster, old, "xadd")
    assert redirected > refused        # it went to the old master first
    other = RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    assert [f[b"n"] for _, f in other.xrange(stream)] == [b"0", b"1"]
    assert other.get(keys.checkpoint(source, "beat")) == b"1-0"
    other.close()
    assert bus.node_name(stream) == f"127.0.0.1:{new}"
    # and the next pipeline goes straight to the new master
    pipe = bus.pipeline()
    bus.publish_fields(stream, {"n": "2"}, maxlen=100, pipeline=pipe)
    pipe.execute()
    assert _rejected(cluster, old, "xadd") == redirected
    assert [f[b"n"] for _, f in bus.redis.xrange(stream)] == [b"0", b"1", b"2"]


def test_leases_and_stream_ends_on_every_master(cluster, bus):
    sources = source_on_each_master(cluster, "ls")
    leases = [Lease(bus, keys.lease(s, "beat"), "owner-1", 5) for s in sources]
    assert [lease.acquire() for lease in leases] == [True] * 3
    assert bus.get_many([keys.lease(s, "beat") for s in sources]) == ["owner-1"] * 3
    assert all(lease.renew() for lease in leases)
    # stream ends in one pipeline across nodes, each written with its record (EVAL by key slot)
    streams = [keys.stream(s, "audio") for s in sources]
    reader = Reader(bus, streams)
    pipe = bus.pipeline()
    for s, stream in zip(sources, streams):
        bus.end_stream(stream, StreamEnd(source=s, timestamp=1.0), maxlen=100, pipeline=pipe)
    pipe.execute()
    ends = [bus.decode(s, i, f, StreamEnd) for s, i, f in read_until(reader, 3)]
    assert sorted(e.source for e in ends if e is not None) == sorted(sources)
    reader.close()
    # checked from outside with redis-py's own cluster client
    other = RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    assert [other.get(keys.lease(s, "beat")) for s in sources] == [b"owner-1"] * 3
    assert all(other.zcard(keys.stream_ends(stream)) == 1 for stream in streams)
    other.close()


def test_a_lost_shard_stops_only_its_own_streams(tmp_path, caplog):
    """A master and its replica both dead (no failover): the other masters' streams are read on,
    their leases renewed, and the lost master is said once in the log however many sources it held
    (not raised to the caller)."""
    with RedisClusterNodes(tmp_path / "cluster") as own, caplog.at_level(logging.INFO, logger="beatbus.bus"):
        bus = Bus.connect(own.url, name="test")
        lost_source, live_source = source_on_each_master(own, "sh")[:2]
        lost, live = keys.stream(lost_source, "beats"), keys.stream(live_source, "beats")
        group = Group(bus, live, "g", "c", start="0")
        # the lost source's lease first: renewing it must not stop the live one's renewal
        leases = SourceLeases(bus, "beat", "me", ttl=1.0, heartbeat=0.2, fixed=[lost_source, live_source])
        leases.scan()
        assert list(leases.held) == [lost_source, live_source]
        port = own.master_of_slot(key_slot(lost.encode()))
        node = f"127.0.0.1:{port}"
        # more sources on the lost master: still one line for all of them
        more = [keys.stream(n, "beats") for n in (f"more{i}" for i in range(300))
                if own.master_of_slot(key_slot(keys.stream(n, "beats").encode())) == port][:4]
        # redis-py asks its default node for XREAD/XREADGROUP's keys: make that the lost master
        bus.redis.set_default_node(bus.redis.get_node(host="127.0.0.1", port=port))
        for p in [port, *own.replicas_of(port)]:
            own.kill(p)
        poll = Reader(bus, [lost, *more, live], start="0", block_ms=0)
        threads = Reader(bus, [lost, *more, live], start="0")          # blocking: a thread per slot
        for n in (b"1", b"2", b"3"):
            bus.publish_fields(live, {"n": n}, maxlen=100)
            assert [f[b"n"] for _, _, f in group.read(block_ms=100)] == [n]
            assert [f[b"n"] for _, _, f in poll.read(block_ms=0)] == [n]
            assert [f[b"n"] for _, _, f in read_until(threads, 1)] == [n]
        threads.close()
        # one-source readers (a dashboard's feed each): the lost master is one line for all of them
        feeds = [EventReader(bus, [stream], what="websocket feed", block_ms=100) for stream in (lost, *more[:2])]
        live_feed = EventReader(bus, [live], what="websocket feed", block_ms=100)
        live_feed.open()
        bus.publish(live, ControlEvent(source=live_source, issued_at=time.time()), maxlen=100)
        for _ in range(3):
            assert all(feed.read(None) == [] for feed in feeds)
        assert [type(ev) for _, _, ev in live_feed.read(None)] == [ControlEvent]
        for feed in (*feeds, live_feed):
            feed.close()
        # three TTLs of scans and renewals: the live lease never lapses, the lost one stays held
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            leases.scan() if leases.due() else leases.renew()
            assert bus.redis.get(keys.lease(live_source, "beat")) == b"me"
            time.sleep(0.05)
        assert list(leases.held) == [lost_source, live_source]
        bus.close()
    said = [(r.getMessage().split(";")[0], r.during) for r in caplog.records if r.name == "beatbus.bus"]
    assert sorted(said) == [("broker unavailable", f"read sources on {node}"),
                            ("broker unavailable", f"renew leases (beat) on {node}"),
                            ("broker unavailable", f"websocket feed on {node}")], said


def test_a_plain_client_on_a_cluster_node_is_refused_in_one_line(cluster):
    with pytest.raises(BrokerError) as err:
        Bus.connect(cluster.node_url(cluster.ports[0]))
    msg = str(err.value)
    assert "\n" not in msg and "is a Redis Cluster node" in msg and "redis+cluster://" in msg


def test_a_cluster_url_on_a_plain_server_is_refused_in_one_line(tmp_path):
    server = RedisServer(tmp_path).start()
    try:
        with pytest.raises(BrokerError) as err:
            Bus.connect(server.url.replace("redis://", "redis+cluster://", 1))
        assert "\n" not in str(err.value) and "Redis Cluster" in str(err.value), err.value
    finally:
        server.stop()


def test_a_node_port_taken_before_the_cluster_starts_is_replaced(tmp_path):
    """Ports are picked before the servers bind them; one taken meanwhile (a CI run once lost a
    node this way) gets another port, and the cluster starts."""
    nodes = RedisClusterNodes(tmp_path / "cluster")
    taken = nodes.ports[2]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with nodes:
            assert taken not in nodes.ports and len(set(nodes.ports)) == 6
            assert all(nodes.info(p).get("cluster_state") == "ok" for p in nodes.ports)
