"""The real `beatbus` daemons on a real Redis Cluster (3 masters + 3 replicas on loopback), issue #19 item 4.

One click producer per master (each at its own tempo), ONE beat processor that discovers them, the
API, the exporter and a trigger consumer following every live source (to a test double of the error
generator), every one with ``REDIS_URL=redis+cluster://`` to one seed node. Looked at only from outside: redis-py's own
``RedisCluster`` (a client beatbus did not write) reads the streams, httpx the API, Prometheus's
parser the exporter. Then the master of one source is killed -9, as a crashed host would be.

The processor runs the ``dsp`` backend: the cluster is what is under test here, and two shared
cores also run six redis-servers and seven daemons. The API runs ``--no-generate``: generation
queues need a plain Redis (rq, README: Redis Cluster).
"""
from __future__ import annotations

import json
import statistics
import time

import httpx
import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from beatbus import keys

from support.cluster import RedisClusterNodes, source_on_each_master
from support.daemons import Daemon, daemon_env
from support.listeners import ErrorGeneratorDouble
from support.ops import metrics
from support.procs import beatbus_cmd, eventually, free_port

pytestmark = pytest.mark.e2e

TEMPOS = (96.0, 120.0, 144.0)          # one click tempo per source (per master)
START_S = 120                          # daemons' start on two loaded cores
FAILOVER_BOUND_S = 10.0                # issue #19: every source beats again within this of the promotion
SR, HOP = 22050, 441                   # the producers' defaults: one frame is 20 ms
UNREACHABLE = "(unreachable)"


# -- the deployment -------------------------------------------------------------------
class Pipeline:
    """What the fixture started: the cluster, the sources and their tempos, the daemons."""

    def __init__(self, cluster: RedisClusterNodes, workdir, receiver: ErrorGeneratorDouble):
        self.cluster, self.workdir, self.receiver = cluster, workdir, receiver
        self.sources = source_on_each_master(cluster, "cl")
        self.tempo = dict(zip(self.sources, TEMPOS))
        seed = cluster.ports[0]
        # the trigger's (and the failover's) source: one whose master is not the seed node
        self.x = next(s for s in self.sources if self.master_of(s) != seed)
        self.api_port = free_port()
        self.daemons: dict[str, Daemon] = {}
        self.observer = RedisCluster(host="127.0.0.1", port=seed, require_full_coverage=False)

    def master_of(self, source: str) -> int:
        return self.cluster.master_of_slot(key_slot(keys.stream(source, "audio").encode()))

    def add(self, name: str, *args: str) -> Daemon:
        metrics_addr = f"127.0.0.1:{self.api_port if name == 'api' else free_port()}"
        env = daemon_env(REDIS_URL=self.cluster.url, BEATBUS_STATE_DIR=str(self.workdir / "state"),
                         **({} if name == "api" else {"BEATBUS_METRICS_ADDR": metrics_addr}))
        self.daemons[name] = Daemon(name, list(args), env=env, workdir=self.workdir, metrics=metrics_addr)
        return self.daemons[name]

    def port(self, name: str) -> int:
        return int(self.daemons[name].metrics.rsplit(":", 1)[1])

    def report(self) -> str:
        """Every daemon's state and the end of its stderr (shown when a wait fails)."""
        return "\n".join(f"{d.describe()}\n    " + "\n    ".join(d.stderr().splitlines()[-12:])
                         for d in self.daemons.values())

    def check_alive(self) -> None:
        dead = [d for d in self.daemons.values() if not d.alive()]
        assert not dead, f"a beatbus daemon exited:\n{self.report()}"

    # -- reading from outside, with a client beatbus did not write ----------------------
    def entries(self, source: str, kind: str, count: int = 200, start: str = "-") -> list[tuple[str, dict]]:
        """Entries of a stream (``start`` on), oldest first, as (id, JSON header); [] while its slot is down."""
        try:
            if start == "-":
                raw = list(reversed(self.observer.xrevrange(keys.stream(source, kind), count=count)))
            else:
                raw = self.observer.xrange(keys.stream(source, kind), min=start, count=count)
        except (RedisError, RedisClusterException):
            return []
        return [(i.decode(), json.loads(f[b"d"])) for i, f in raw if b"d" in f]

    def beats(self, source: str, count: int = 200) -> list[dict]:
        return [d for _, d in self.entries(source, "beats", count) if "bpm" in d]

    def get(self, key: str) -> str | None:
        """A key's value: None when it is not set, ``UNREACHABLE`` while its slot does not answer."""
        try:
            v = self.observer.get(key)
        except (RedisError, RedisClusterException):
            return UNREACHABLE
        return v.decode() if v is not None else None


def _ms(entry_id: str) -> float:
    """The broker's clock (s) at an entry's XADD: the ms part of its id."""
    return int(entry_id.split("-", 1)[0]) / 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster")).start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def pipeline(cluster, tmp_path_factory):
    receiver = ErrorGeneratorDouble()
    p = Pipeline(cluster, tmp_path_factory.mktemp("cluster-e2e"), receiver)
    try:
        # readers first, then the producers (as beatbus.target orders them)
        p.add("processor", "process", "--backend", "dsp")
        p.add("api", "api", "--port", str(p.api_port), "--no-generate")
        p.add("exporter", "exporter")
        # as the beatbus-trigger unit runs it: every live source, one consumer group on each beat stream
        p.add("trigger", "consume", "trigger", "--error-generator-url", receiver.url)
        for d in p.daemons.values():
            d.start()
        eventually(lambda: all(d.poll_ready() for d in p.daemons.values()) or p.check_alive(), START_S,
                   what=lambda: f"the readers to be ready:\n{p.report()}", interval=0.1)
        for source in p.sources:
            p.add(f"producer-{source}", "produce", "click", "--bpm", str(p.tempo[source]), "--source", source).start()
        # steady: every source has beats at its tempo
        eventually(lambda: all(len(p.beats(s, 8)) >= 4 for s in p.sources) or p.check_alive(), START_S,
                   what=lambda: f"beats on every source:\n{p.report()}", interval=0.2)
        yield p
    finally:
        for d in reversed(p.daemons.values()):    # producers first: they drain and end their streams
            d.stop()
        p.observer.close()
        receiver.close()
    # every daemon drained on SIGTERM and exited 0, on a cluster that lost a master too
    problems = [f"{d.describe()}: {d.stop_problem}" for d in p.daemons.values() if d.stop_problem]
    assert not problems, "\n".join(problems)


# -- 1: every master's source, end to end ----------------------------------------------------------
def test_sources_on_every_master_are_tracked_end_to_end(pipeline):
    p = pipeline
    assert len({p.master_of(s) for s in p.sources}) == 3, "the sources must sit on three different masters"

    def tempos_right():
        for s in p.sources:
            recent = p.beats(s, 6)
            if len(recent) < 6 or any(abs(b["bpm"] - p.tempo[s]) > 0.03 * p.tempo[s] for b in recent[-4:]):
                return False
        return True

    eventually(lambda: tempos_right() or p.check_alive(), 60, interval=0.2,
               what=lambda: "each source's newest beats at its click tempo: "
                            f"{ {s: [round(b['bpm'], 1) for b in p.beats(s, 6)] for s in p.sources} }")

    # the API lists all three with their BPM
    def api_sources():
        try:
            r = httpx.get(f"http://127.0.0.1:{p.api_port}/api/sources", timeout=5)
        except httpx.HTTPError:
            return None
        got = {s["source"]: s for s in r.json()["sources"]} if r.status_code == 200 else {}
        ok = set(p.sources) <= set(got) and all(got[s]["live"] and got[s]["bpm"] is not None
                                                and abs(got[s]["bpm"] - p.tempo[s]) <= 0.03 * p.tempo[s] for s in p.sources)
        return got if ok else None

    got = eventually(api_sources, 30, what=lambda: f"GET /api/sources to list every source at its tempo:\n{p.report()}")
    print("\nAPI /api/sources: " + ", ".join(f"{s} {got[s]['bpm']} BPM (click {p.tempo[s]:g})" for s in p.sources))

    # the exporter has per-source stream metrics for all three
    def exported():
        m = metrics(p.port("exporter"))
        ok = all(m.get(f"beatbus_stream_entries{{kind={kind},source={s}}}", 0) > 0
                 and f"beatbus_stream_age_seconds{{kind={kind},source={s}}}" in m
                 for s in p.sources for kind in ("audio", "beats"))
        return m if ok and m.get("beatbus_sources_live{}", 0) >= 3 else None

    m = eventually(exported, 30, what="the exporter's stream metrics of every source")
    assert all(m[f"beatbus_source_owned{{role=beat,source={s}}}"] == 1 for s in p.sources), m
    assert m["beatbus_streams_up{}"] == 1

    # the trigger consumer posts for every source; those of the source on a non-seed master on its beat
    start = time.time()

    def triggers():
        got = {s: [t for t in p.receiver.since(start) if (t.idempotency_key or "").startswith(f"{s}:")]
               for s in p.sources}
        return got if len(got[p.x]) >= 4 and all(got.values()) else None

    got_triggers = eventually(triggers, 40, what=lambda: f"triggers for every source, four for {p.x}:\n{p.report()}")[p.x]
    assert not p.receiver.bad_requests, p.receiver.bad_requests
    beat_times = [b["system_time"] for b in p.beats(p.x, 200)]
    delays = [min((t.arrived - b for b in beat_times if b <= t.arrived + 0.1), default=99.0) for t in got_triggers]
    print(f"trigger on {p.x} (master :{p.master_of(p.x)}, not the seed): {len(got_triggers)} POSTs, "
          f"{statistics.median(delays) * 1000:.0f} ms after their beat (median), {max(delays) * 1000:.0f} ms at most")
    for t in got_triggers:
        assert abs(t.body["tempo"] - p.tempo[p.x]) <= 0.03 * p.tempo[p.x], t.body
    assert statistics.median(delays) < 0.2 and max(delays) < 1.0, [round(d, 3) for d in delays]
    p.check_alive()


# -- 2: kill -9 of a master ------------------------------------------------------------------------
def _audio_continuity(frames: list[dict], killed: float) -> tuple[int, int, list[str]]:
    """Frames lost and duplicated between consecutive audio entries, and one line per gap.

    A gap whose frames were all captured before ``killed`` is the async-replication window (writes the
    old master acknowledged and its replica never got); anything captured after it was the
    producer's to buffer."""
    lost = dup = 0
    gaps = []
    for a, b in zip(frames, frames[1:]):
        end = a["sample_index"] + a["n_samples"]
        if b["sample_index"] > end:
            n = (b["sample_index"] - end) // HOP
            lost += n
            first_wall = a["wall_ns"] / 1e9 + a["n_samples"] / SR
            last_wall = b["wall_ns"] / 1e9 - HOP / SR
            gaps.append(f"{n} frame(s) captured {first_wall - killed:+.3f} .. {last_wall - killed:+.3f} s from the kill")
            assert last_wall < killed, f"frames captured after the kill are missing (the buffer did not cover it): {gaps}"
        elif b["sample_index"] < end:
            dup += 1
    return lost, dup, gaps


def test_kill_9_of_a_master_loses_nothing_and_beats_resume_within_10_s(pipeline):
    p, c, x = pipeline, pipeline.cluster, pipeline.x
    slot = key_slot(keys.stream(x, "audio").encode())
    old = c.master_of_slot(slot)
    old_id = next(n["id"] for n in c.nodes() if n["port"] == old)
    replica = next(n["port"] for n in c.nodes() if n["master"] == old_id)
    eventually(lambda: replica in c.replicas_in_sync(), 30, what=f"replica :{replica} in sync with :{old}")
    # steady before the kill: every source beat within the last 2 s
    eventually(lambda: all((b := p.beats(s, 1)) and b[-1]["emitted_at"] > time.time() - 2 for s in p.sources)
               or p.check_alive(), 60, what=lambda: f"every source beating:\n{p.report()}", interval=0.1)
    lease_key, ckpt_key = keys.lease(x, "beat"), keys.checkpoint(x, "beat")
    holder, ckpt_before = p.get(lease_key), p.get(ckpt_key)
    last_before = p.beats(x, 1)[-1]
    assert holder and ckpt_before, (holder, ckpt_before)

    killed = time.time()
    c.kill(old)
    promoted: float | None = None
    resumed: dict[str, float] = {}          # source -> broker time of its first beat XADD after the promotion
    audio_back = trigger_back = lapsed = None
    deadline = killed + 90
    while time.time() < deadline:
        p.check_alive()                     # no beatbus process exits, throughout
        now = time.time()
        if promoted is None:
            # nothing else meanwhile: a read of the dead slot would block and make the promotion look later
            if c.cmd(replica, "ROLE").splitlines()[:1] == ["master"]:
                promoted = now
        else:
            if audio_back is None:
                back = p.entries(x, "audio", 1, start=f"{int(killed * 1000) + 1}")
                audio_back = _ms(back[0][0]) if back else None
            for s in p.sources:
                if s not in resumed:
                    after = [_ms(i) for i, d in p.entries(s, "beats", 50, start=f"{int(promoted * 1000) + 1}")
                             if s != x or d.get("system_time", 0) > killed]
                    if after:
                        resumed[s] = min(after)
            if lapsed is None and p.get(lease_key) is None:
                lapsed = now                # the TTL ran out during the outage: its holder must retake it
            if trigger_back is None and (mine := [t for t in p.receiver.since(promoted)
                                                  if (t.idempotency_key or "").startswith(f"{x}:")]):
                trigger_back = mine[0].arrived
        if promoted is not None and len(resumed) == len(p.sources) and audio_back and trigger_back:
            break
        time.sleep(0.05)
    rows = [("replica promoted (its ROLE: master)", promoted),
            (f"{x}: audio written again (buffered frames flushed)", audio_back),
            *((f"{s}: first beat after the promotion{' (audio after the kill)' if s == x else ''}", resumed.get(s))
              for s in p.sources),
            (f"{x}: first trigger POST after the promotion", trigger_back)]
    # the longest pause between two beat writes of each source around the failover (broker clock)
    pauses = {}
    for s in p.sources:
        t = [_ms(i) for i, _ in p.entries(s, "beats", 200) if _ms(i) > killed - 2]
        pauses[s] = max((b - a for a, b in zip(t, t[1:])), default=float("nan"))
    print(f"\nkill -9 of :{old} (master of slot {slot}, source {x}); its replica :{replica}")
    print(f"  {'event':<58} {'after kill':>10} {'after promotion':>16}")
    for what, t in rows:
        cells = ("-", "-") if t is None else (f"{t - killed:.2f} s", f"{t - promoted:.2f} s" if promoted else "-")
        print(f"  {what:<58} {cells[0]:>10} {cells[1]:>16}")
    print("  longest pause between beats: " + ", ".join(
        f"{s} {pauses[s]:.2f} s ({60 / p.tempo[s]:.2f} s apart)" for s in p.sources))
    assert promoted is not None, f"replica :{replica} was not promoted within 90 s"
    # the cluster's own view: the replica is the slot's master, the killed node is failed
    view = eventually(lambda: {n["port"]: n for n in c.nodes()} if c.master_of_slot(slot) == replica else None, 30,
                      what=lambda: f"CLUSTER NODES to show :{replica} serving slot {slot}: {c.nodes()}")
    assert view[old]["failed"] and view[replica]["role"] == "master", view
    assert set(resumed) == set(p.sources), f"no beats after the promotion for {set(p.sources) - set(resumed)}"
    late = {s: round(t - promoted, 2) for s, t in resumed.items() if t - promoted > FAILOVER_BOUND_S}
    assert not late, f"beats resumed later than {FAILOVER_BOUND_S:g} s after the promotion: {late}"
    assert trigger_back is not None, "the trigger consumer posted nothing after the failover"

    # the processor kept (or retook) its lease and resumed from its checkpoint: the numbering goes on
    eventually(lambda: len([b for b in p.beats(x, 100) if b["system_time"] > killed]) >= 6 or p.check_alive(), 60,
               what=lambda: f"six beats of {x} after the failover:\n{p.report()}")
    around = [b for b in p.beats(x, 200) if b["emitted_at"] > last_before["emitted_at"] - 5]
    after = [b for b in around if b["system_time"] > killed]
    numbers = [b["beat"] for b in after]
    assert numbers[0] > last_before["beat"], (last_before["beat"], numbers)     # not started over at 0
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    # across the kill: a beat written to the old master and not replicated yet, or one whose publish
    # failed at the kill, leaves a hole in the numbering (measured, not hidden)
    span = [b["beat"] for b in around]
    assert span == sorted(set(span)), span
    missing = span[-1] - span[0] + 1 - len(span)
    assert all(abs(b["bpm"] - p.tempo[x]) <= 0.03 * p.tempo[x] for b in after[-4:]), [b["bpm"] for b in after]
    eventually(lambda: p.get(lease_key) == holder, 20,
               what=lambda: f"the processor ({holder}) to hold {lease_key} again: {p.get(lease_key)}")
    ckpt_after = p.get(ckpt_key)
    assert ckpt_after not in (None, UNREACHABLE) and _ms(ckpt_after) > promoted, (ckpt_before, ckpt_after)
    kept = "kept" if lapsed is None else f"lapsed {lapsed - promoted:.2f} s after the promotion, retaken"
    print(f"  {x}: lease {kept} by {holder}; checkpoint {ckpt_before} -> {ckpt_after}; "
          f"beats {last_before['beat']} (last read before the kill) -> {numbers[0]}..{numbers[-1]} "
          f"(on audio after the kill), {missing} missing in {span[0]}..{span[-1]}")

    # no audio frame lost: the producer's buffer covered the outage, contiguous sample indices across it
    frames = [d for _, d in p.entries(x, "audio", 5000, start=str(int((killed - 3) * 1000)))
              if "sample_index" in d]
    assert frames and frames[0]["wall_ns"] / 1e9 < killed and frames[-1]["wall_ns"] / 1e9 > promoted
    lost, dup, gaps = _audio_continuity(frames, killed)
    print(f"  {x}: {len(frames)} audio frames from 3 s before the kill: {lost} lost to async replication "
          f"(acknowledged by the old master, never replicated){': ' + '; '.join(gaps) if gaps else ''}, "
          f"{dup} written twice")
    producer = metrics(p.port(f"producer-{x}"))
    assert producer.get("beatbus_frames_dropped_total{reason=broker_down}") == 0, producer
    # the exporter follows the promoted master too
    eventually(lambda: (m := metrics(p.port("exporter"))).get("beatbus_streams_up{}") == 1
               and m.get(f"beatbus_stream_age_seconds{{kind=beats,source={x}}}", 99) < 3, 30,
               what=f"the exporter to report {x}'s fresh beats after the failover")
    p.check_alive()


# -- 2b: the registry's master ----------------------------------------------------------------
def test_the_registry_master_failing_over_holds_no_other_source_back(pipeline):
    """``bb:sources`` and ``bb:instances:beat`` live on a node of their own: while it fails over, the
    sources of the other masters keep beating (producers publish on, the processor serves the
    sources it holds), and the registry fills again after the promotion."""
    p, c = pipeline, pipeline.cluster
    reg = c.master_of_slot(key_slot(keys.SOURCES.encode()))
    reg_id = next(n["id"] for n in c.nodes() if n["port"] == reg)
    replica = next(n["port"] for n in c.nodes() if n["master"] == reg_id and not n["failed"])
    eventually(lambda: replica in c.replicas_in_sync(), 30, what=f"replica :{replica} in sync with :{reg}")
    others = [s for s in p.sources if p.master_of(s) != reg]
    assert others, "every source on the registry's master"
    eventually(lambda: all((b := p.beats(s, 1)) and b[-1]["emitted_at"] > time.time() - 2 for s in p.sources)
               or p.check_alive(), 60, what=lambda: f"every source beating:\n{p.report()}", interval=0.1)
    killed = time.time()
    c.kill(reg)
    promoted = None
    while time.time() < killed + 90 and promoted is None:
        p.check_alive()
        if c.cmd(replica, "ROLE").splitlines()[:1] == ["master"]:
            promoted = time.time()
        time.sleep(0.05)
    assert promoted is not None, f"replica :{replica} was not promoted within 90 s"
    # every source beats after the promotion, and the registry lists them all again
    eventually(lambda: all(any(_ms(i) > promoted for i, _ in p.entries(s, "beats", 20)) for s in p.sources)
               or p.check_alive(), FAILOVER_BOUND_S,
               what=lambda: f"beats on every source within {FAILOVER_BOUND_S:g} s of the promotion:\n{p.report()}")

    def registry():
        try:
            return {m.decode() for m in p.observer.zrangebyscore(keys.SOURCES, time.time() - 3, "+inf")}
        except (RedisError, RedisClusterException):
            return set()

    eventually(lambda: registry() >= set(p.sources), 20, what=lambda: f"the registry to list {p.sources}: {registry()}")
    # the other masters' sources never paused longer than a beat or two (broker clock of their XADDs)
    pauses = {}
    for s in others:
        t = [_ms(i) for i, _ in p.entries(s, "beats", 200) if killed - 2 < _ms(i) < promoted + 3]
        pauses[s] = max((b - a for a, b in zip(t, t[1:])), default=float("nan"))
    print(f"\nkill -9 of :{reg} (the registry's master); promoted :{replica} after {promoted - killed:.2f} s; "
          "longest pause between beats of the other masters' sources: "
          + ", ".join(f"{s} {pauses[s]:.2f} s ({60 / p.tempo[s]:.2f} s apart)" for s in others))
    assert all(pauses[s] <= 2 * 60 / p.tempo[s] + 0.5 for s in others), pauses
    p.check_alive()


# -- 3: a plain URL pointed at a cluster node ------------------------------------------------------
@pytest.mark.parametrize("args", [("produce", "click", "--source", "plain"), ("exporter",)], ids=["produce", "exporter"])
def test_a_plain_url_to_a_cluster_node_is_refused_in_one_line(cluster, args):
    node = cluster.master_ports()[0]
    r = beatbus_cmd(*args, env={"REDIS_URL": cluster.node_url(node), "BEATBUS_METRICS_ADDR": "off"}, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis+cluster://" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("beatbus: error: "), lines
