"""Issue #21 item 2: the beat, intensity and structure daemons degrade under load, the unwatched source first.

The real `beatbus` commands as processes against a redis-server the test starts: two click
producers, ``api``, and ``process`` / ``intensity run`` / ``structure run`` with ``--adaptive-high-load`` so low
that any load is overload (the documented setting: every source goes down the whole ladder, each in
one step - the projection never fits - one source every 2 s at most). A dashboard's WebSocket (the
`websockets` client) follows source ``seen`` only. Checked from outside: the daemons' /metrics
through prometheus_client's own text parser, the quality hash through redis-cli, the API's source
state, and the daemons' logs.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from beatbus import keys
from beatbus.bus import Bus
from beatbus.schemas import from_fields

from support.daemons import Daemon, daemon_env
from support.procs import RedisServer, eventually, free_port, wait_for

pytestmark = pytest.mark.e2e

SEEN, UNSEEN = "seen", "unseen"
METRICS_URL = re.compile(r"http://[^/\s\"]+:(\d+)/metrics")
START_TIMEOUT_S = 120


def _levels(port: int) -> dict[tuple[str, str], int]:
    """(source, role) -> level, from a daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.labels["source"], s.labels["role"]): int(s.value)
            for fam in text_string_to_metric_families(text) if fam.name == "beatbus_quality_level"
            for s in fam.samples}


def _redis_cli(url: str, *args: str) -> str:
    return subprocess.run(["redis-cli", "-u", url, *args], capture_output=True, text=True, timeout=10).stdout


class _Dashboard(threading.Thread):
    """A WebSocket client following one source's events, as the dashboard does."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.messages = url, threading.Event(), 0

    def run(self) -> None:
        with ws_connect(self.url, open_timeout=20) as ws:
            while not self.stop.is_set():
                try:
                    ws.recv(timeout=0.5)
                    self.messages += 1
                except TimeoutError:
                    continue
                except ConnectionClosed:      # the API stopped first
                    return

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)


def test_stages_degrade_the_unwatched_source_first_and_show_it_everywhere(tmp_path):
    for binary in ("redis-server", "redis-cli"):
        if not shutil.which(binary):
            pytest.skip(f"{binary} not installed (install.sh installs it)")
    (tmp_path / "logs").mkdir()
    with contextlib.ExitStack() as cleanup:
        redis = RedisServer(tmp_path).start()
        cleanup.callback(redis.stop)
        bus = Bus.connect(redis.url, name="adaptive-observer")
        cleanup.callback(bus.close)
        env = daemon_env(REDIS_URL=redis.url, BEATBUS_STATE_DIR=str(tmp_path / "state"), BEATBUS_METRICS_ADDR="off")
        ports = {"api": free_port()}

        def start(name: str, args: list[str]) -> Daemon:
            d = Daemon(name, args, env=env, workdir=tmp_path / "logs").start()
            cleanup.callback(d.stop)
            return d

        api = start("api", ["api", "--port", str(ports["api"])])
        producers = [start(f"producer-{s}", ["produce", "click", "--bpm", "120", "--source", s]) for s in (SEEN, UNSEEN)]
        assert wait_for(lambda: api.poll_ready() or not api.alive(), START_TIMEOUT_S) and api.alive(), api.stderr()
        dashboard = _Dashboard(f"ws://127.0.0.1:{ports['api']}/ws/{SEEN}")
        dashboard.start()
        cleanup.callback(dashboard.close)
        # the API marks the followed source watched before any stage decides what to degrade
        eventually(lambda: bus.redis.get(keys.watched(SEEN)) is not None, 30, what="seen marked watched")
        assert bus.redis.get(keys.watched(UNSEEN)) is None

        overload = ["--adaptive-high-load", "1e-6", "--log-format", "json"]
        # port 0: each binds a free port and logs it (a port picked here could be taken meanwhile)
        commands = {"beat": ["process"], "intensity": ["intensity", "run"], "structure": ["structure", "run"]}
        stages = {role: start(role, [*cmd, *overload, "--metrics-addr", "127.0.0.1:0"])
                  for role, cmd in commands.items()}
        everyone = [api, *producers, *stages.values()]
        for role, d in stages.items():
            found = wait_for(lambda d=d: METRICS_URL.search(d.stderr()) or not d.alive(), START_TIMEOUT_S)
            assert found and d.alive(), f"{role} did not serve /metrics:\n{d.stderr()[-2000:]}"
            ports[role] = int(found[1])

        # the order of the structure daemon's steps, as its /metrics shows them (steps are >= 2 s apart)
        seen_steps: list[tuple[str, int]] = []

        def watch_structure() -> bool:
            assert all(d.alive() for d in everyone), "\n".join(d.describe() + d.stderr()[-800:] for d in everyone)
            with contextlib.suppress(OSError):
                levels = _levels(ports["structure"])
                for source in (UNSEEN, SEEN):
                    level = levels.get((source, "structure"))
                    if level and (source, level) not in seen_steps:
                        seen_steps.append((source, level))
            return len(seen_steps) == 2

        eventually(watch_structure, 90, interval=0.2, what=lambda: f"two structure steps, saw {seen_steps}")
        # the unwatched source first, each straight to the bottom (one restart, not one per level)
        assert seen_steps == [(UNSEEN, 2), (SEEN, 2)]

        # intensity: both sources at half rate, still publishing
        eventually(lambda: all(_levels(ports["intensity"]).get((s, "intensity")) == 1 for s in (SEEN, UNSEEN)), 60,
                   what=lambda: f"intensity levels {_levels(ports['intensity'])}")
        before = bus.redis.xlen(keys.stream(UNSEEN, "intensity"))
        time.sleep(2.0)
        assert bus.redis.xlen(keys.stream(UNSEEN, "intensity")) >= before + 20      # ~20 events/s at half rate too

        # beats: both sources at the bottom of the ladder (dsp tracking 4/4), still beating, from dsp
        eventually(lambda: all(_levels(ports["beat"]).get((s, "beat")) == 3 for s in (SEEN, UNSEEN)), 90,
                   what=lambda: f"beat levels {_levels(ports['beat'])}")
        time.sleep(2.0)                   # beats decided since the step (a click at 120 BPM: 4 in 2 s)
        newest = [from_fields(f) for _, f in bus.redis.xrevrange(keys.stream(UNSEEN, "beats"), count=3)]
        assert len(newest) == 3 and {b.backend for b in newest} == {"dsp"}, newest
        assert time.time() - newest[0].emitted_at < 2.0, "beats stopped after the last step"

        # the same levels, by name, through redis-cli and the API (what the dashboard polls)
        names = {"beat": "dsp-4/4", "intensity": "half", "structure": "shed"}
        hash_text = _redis_cli(redis.url, "HGETALL", keys.quality(UNSEEN)).split()
        assert dict(zip(hash_text[::2], hash_text[1::2])) == names, hash_text
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['api']}/api/sources/{UNSEEN}", timeout=10) as r:
            assert json.load(r)["quality"] == names
        assert dashboard.messages > 0

        # each change is logged once, with its source, stage and level name
        time.sleep(1.0)
        logged = [json.loads(line) for line in stages["structure"].stderr().splitlines()
                  if '"quality level changed"' in line]
        assert [(e["source"], e["quality"]) for e in logged] == [(UNSEEN, "shed"), (SEEN, "shed")]
        assert all(e["role"] == "structure" for e in logged)
        logged = [json.loads(line) for line in stages["beat"].stderr().splitlines() if '"quality level changed"' in line]
        assert sorted((e["source"], e["quality"], e["role"]) for e in logged) == \
            [(SEEN, "dsp-4/4", "beat"), (UNSEEN, "dsp-4/4", "beat")], logged
