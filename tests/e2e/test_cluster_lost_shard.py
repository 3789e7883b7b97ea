"""The real `beatbus` daemons on a Redis Cluster (3 masters + 3 replicas on loopback) that loses a shard.

A master and its replica are killed -9, so one source's streams, lease and trigger keys are gone
with no failover to wait for (a host and its standby lost together, or a shard taken down by hand).
Every other source must go on as if nothing happened: its producer, the one discovering processor
and the trigger consumer (as the ``beatbus-trigger`` unit runs it) keep serving it, every one of its
beats is POSTed while still fresh (the default ``max_age``, 0.5 s) and acked, no daemon exits, and each
daemon says the outage once, not once per round. Monitoring tells the lost source apart: the API
lists it live (its producer heartbeats on) and unreachable, the dashboard following it says so (in
headless Chromium), the exporter scrapes on and reports it ``beatbus_source_reachable 0``. Looked at
only from outside: redis-py's own ``RedisCluster`` reads the streams and the trigger group's pending
entries, a test double of the error generator (an external service) records the POSTs.

``tests/integration/test_trigger_cluster.py`` races the same loss against a trigger still being
answered, in-process; ``tests/e2e/test_cluster.py`` fails a master over (its replica is promoted).
"""
from __future__ import annotations

import json
import re
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
from support.procs import eventually, free_port

pytestmark = pytest.mark.e2e

TEMPOS = (96.0, 120.0, 144.0)          # one click tempo per source (per master)
START_S = 120                          # daemons' start on two loaded cores
WATCH_S = 12.0                         # how long the live sources are watched after the loss
MAX_AGE_S = 0.5                        # the trigger consumer's default max_age: later is stale
DAEMONS = ("processor", "trigger", "exporter", "api")


def _ms(entry_id: str) -> float:
    """The broker's clock (s) at an entry's XADD: the ms part of its id."""
    return int(entry_id.split("-", 1)[0]) / 1000


def _outages(stderr: str) -> list[str]:
    """The ``during=`` of every "broker unavailable" line a daemon wrote."""
    return [m.group(1) if (m := re.search(r"during=(\S+(?: \S+)*?)(?: \w+=|$)", line)) else line
            for line in stderr.splitlines() if "broker unavailable" in line]


def _status(browser) -> tuple[str, str]:
    el = browser.find_element("id", "status")
    return el.get_attribute("data-state") or "", el.text


def test_a_lost_shard_stops_only_its_own_source(tmp_path, browser):
    receiver = ErrorGeneratorDouble()
    with RedisClusterNodes(tmp_path / "cluster") as cluster:
        observer = RedisCluster(host="127.0.0.1", port=cluster.ports[0], require_full_coverage=False)
        sources = source_on_each_master(cluster, "ls")
        master = {s: cluster.master_of_slot(key_slot(keys.stream(s, "audio").encode())) for s in sources}
        # the lost shard holds one source and nothing shared: the registry (bb:sources) must stay,
        # else no new source could join (its own failover is tests/e2e/test_cluster.py's)
        shared = {cluster.master_of_slot(key_slot(k.encode())) for k in (keys.SOURCES, keys.instances("beat"))}
        lost = next((s for s in sources if master[s] not in shared), None)
        if lost is None:
            pytest.fail(f"every master holds a shared key ({shared}); no shard to lose alone")
        live = [s for s in sources if s != lost]
        tempo = dict(zip(sources, TEMPOS))
        env = daemon_env(REDIS_URL=cluster.url, BEATBUS_STATE_DIR=str(tmp_path / "state"))
        daemons: dict[str, Daemon] = {}

        def add(name: str, *args: str) -> Daemon:
            addr = f"127.0.0.1:{free_port()}"
            daemons[name] = Daemon(name, list(args), env=dict(env, BEATBUS_METRICS_ADDR=addr), workdir=tmp_path,
                                   metrics=addr)
            return daemons[name]

        def report() -> str:
            return "\n".join(f"{d.describe()}\n    " + "\n    ".join(d.stderr().splitlines()[-12:])
                             for d in daemons.values())

        def check_alive() -> None:
            dead = [d for d in daemons.values() if not d.alive()]
            assert not dead, f"a beatbus daemon exited:\n{report()}"

        def beats(source: str, start: float) -> dict[str, dict]:
            """Beat entry id -> beat, from ``start`` on."""
            try:
                raw = observer.xrange(keys.stream(source, "beats"), min=str(int(start * 1000)), count=2000)
            except (RedisError, RedisClusterException):
                return {}
            return {i.decode(): d for i, f in raw if b"d" in f and "bpm" in (d := json.loads(f[b"d"]))}

        def posted(source: str, since: float) -> dict[str, float]:
            """Beat entry id -> arrival of its (first) trigger POST."""
            got: dict[str, float] = {}
            for t in receiver.since(since):
                src, _, rest = (t.idempotency_key or "").partition(":")
                if src == source:
                    got.setdefault(rest.rsplit(":", 1)[0], t.arrived)
            return got

        try:
            add("processor", "process", "--backend", "dsp")
            add("trigger", "consume", "trigger", "--error-generator-url", receiver.url)
            add("exporter", "exporter")
            api_port = free_port()
            # --no-generate: generation queues need a plain Redis (rq, README: Redis Cluster)
            daemons["api"] = Daemon("api", ["api", "--port", str(api_port), "--no-generate"], env=env,
                                    workdir=tmp_path, metrics=f"127.0.0.1:{api_port}")
            for d in daemons.values():
                d.start()
            eventually(lambda: all(d.poll_ready() for d in daemons.values()) or check_alive(), START_S,
                       what=lambda: f"the readers to be ready:\n{report()}", interval=0.1)
            for s in sources:
                add(f"producer-{s}", "produce", "click", "--bpm", str(tempo[s]), "--source", s).start()
            started = time.time()
            eventually(lambda: all(len(posted(s, started)) >= 4 for s in sources) or check_alive(), START_S,
                       what=lambda: f"four trigger POSTs for every source:\n{report()}", interval=0.2)

            killed = time.time()
            for port in [master[lost], *cluster.replicas_of(master[lost])]:
                cluster.kill(port)
            while time.time() < killed + WATCH_S:
                check_alive()                   # no beatbus process exits, throughout
                time.sleep(0.1)
            watched = time.time() - 1.0         # beats in the last second may still be in flight

            rows = []
            for s in live:
                around = beats(s, killed - 3)
                numbers = [b["beat"] for b in around.values()]
                # no beat of a live source lost at the kill (its round's publish shared with the lost one)
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (s, numbers)
                beats_after = [i for i in around if killed <= _ms(i) < watched]
                got = posted(s, killed - 1)
                missing = [i for i in beats_after if i not in got]
                late = {i: round(got[i] - _ms(i), 3) for i in beats_after if i in got}
                rows.append((s, len(beats_after), missing, max(late.values(), default=float("nan"))))
                # every beat of a live source, on its beat: none dropped as stale, none lost
                assert len(beats_after) >= 0.8 * WATCH_S * tempo[s] / 60 - 2, (s, len(beats_after), report())
                assert not missing, f"{s}: {len(missing)} of {len(beats_after)} beats after the loss were not triggered"
                assert max(late.values()) < MAX_AGE_S, (s, late)
            print(f"\nlost shard :{master[lost]} + its replica ({lost}); live sources over {WATCH_S:g} s after:")
            for s, n, missing, worst in rows:
                print(f"  {s} (master :{master[s]}, {tempo[s]:g} BPM): {n} beats, {n - len(missing)} POSTed, "
                      f"slowest {worst * 1000:.0f} ms after its beat's XADD")

            # monitoring sees the live sources as they are: the exporter's scrape and the API's list
            # (the lost source's producer heartbeats on: the registry is on a live master)
            m = metrics(int(daemons["exporter"].metrics.rsplit(":", 1)[1]))
            age = {s: m.get(f"beatbus_stream_age_seconds{{kind=beats,source={s}}}") for s in sources}
            reachable = {s: m.get(f"beatbus_source_reachable{{source={s}}}") for s in sources}
            print(f"  exporter: streams_up {m.get('beatbus_streams_up{}')}, reachable {reachable}, beats age {age}")
            assert m.get("beatbus_streams_up{}") == 1, daemons["exporter"].stderr()[-2000:]
            assert reachable == {s: 0.0 if s == lost else 1.0 for s in sources}, reachable
            assert age[lost] is None and all(age[s] < 3 for s in live), age
            r = httpx.get(f"http://127.0.0.1:{api_port}/api/sources", timeout=10)
            assert r.status_code == 200, r.text[:500]
            listed = {d["source"]: d for d in r.json()["sources"]}
            print("  API /api/sources: " + ", ".join(f"{s} live={d['live']} reachable={d['reachable']} bpm={d['bpm']}"
                                                      for s, d in sorted(listed.items())))
            assert all(listed[s]["live"] and listed[s]["reachable"] and listed[s]["bpm"] for s in live), listed
            assert listed[lost]["live"] and not listed[lost]["reachable"] and listed[lost]["bpm"] is None, listed[lost]
            one = httpx.get(f"http://127.0.0.1:{api_port}/api/sources/{lost}", timeout=10)
            assert one.status_code == 200 and one.json() == listed[lost], (one.status_code, one.text[:500])

            # the dashboard following each source: the lost one says why it is silent, a live one beats
            for s in (lost, live[0]):
                browser.get(f"http://127.0.0.1:{api_port}/?source={s}")
                want = ("down", "unreachable") if s == lost else ("live", "· live")
                eventually(lambda want=want: (st := _status(browser))[0] == want[0] and want[1] in st[1], 20,
                           what=lambda s=s, want=want: f"the dashboard of {s} to say {want}: it says {_status(browser)}",
                           interval=0.2)
                print(f"  dashboard of {s}: {_status(browser)}")

            # acked: nothing of the live sources is left pending in the trigger's group for the janitor
            def pending() -> dict[str, int]:
                return {s: observer.xpending(keys.stream(s, "beats"), "trigger")["pending"] for s in live}

            eventually(lambda: all(n <= 2 for n in pending().values()), 10,
                       what=lambda: f"the live sources' delivered beats to be acked: pending {pending()}")
            dead = {s: observer.xlen(keys.dead_letter(keys.stream(s, "beats"))) for s in live}
            assert not any(dead.values()), f"beats dead-lettered: {dead}"

            # the loss is said once per thing that waits on it, not once per round
            for name in (*DAEMONS, f"producer-{lost}"):
                said = _outages(daemons[name].stderr())
                repeated = sorted({d for d in said if said.count(d) > 1})
                print(f"  {name}: {len(said)} 'broker unavailable' lines: {said}")
                assert not repeated, f"{name} said an outage more than once: {repeated}\n{daemons[name].stderr()}"
                # each names what waits on it: the lost node (one line, however many sources it held)
                assert name not in DAEMONS or all(d.endswith(f" on 127.0.0.1:{master[lost]}") for d in said), said
            check_alive()
        finally:
            for d in reversed(daemons.values()):     # producers first: they drain and end their streams
                d.stop()
            observer.close()
            receiver.close()
        # SIGTERM: every daemon exits 0 in time, the lost source's producer too (it cannot flush)
        problems = [f"{d.describe()}: {d.stop_problem}" for d in daemons.values() if d.stop_problem]
        assert not problems, "\n".join(problems)
