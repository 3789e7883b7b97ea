"""One real deployment on this machine: what the e2e suite starts, once, and stops.

``redis-server`` (started here), then the real `beatbus` commands, each its own process with its
own metrics port, exactly as the README and the systemd units run them: beat processor (default
backend), intensity, structure, the generation worker, the exporter, the trigger consumer (to a
test double of the error generator), the LED consumer with every output (DDP, sACN, Art-Net, OPC,
WLED, web preview, and one DDP controller that is switched off), the API; a click producer last.
Debian's Prometheus scrapes them all. The tests look only from outside: sockets, HTTP, a browser,
Prometheus, /proc.

Each daemon's stderr is kept in a file (:data:`LAUNCHED`, shown under a failing test by conftest.py).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beatbus import keys
from beatbus.bus import Bus

from support.daemons import Daemon, daemon_env
from support.listeners import ErrorGeneratorDouble, OpcCapture, SacnCapture, UdpCapture, free_udp_port
from support.procs import RedisServer, free_port, wait_for
from support.prometheus import PrometheusServer

SOURCE = "e2e"
CLICK_BPM = 120.0
PIXELS = 200            # sACN and Art-Net: two universes (170 pixels each); WLED DRGB: one packet
DDP_PIXELS = 500        # 1500 bytes: two DDP packets per frame, push on the second
WEB_PIXELS = 37         # the dashboard's ?led=strip preview must draw this many bars
WEB_DEVICE = "strip"
SACN_UNIVERSE = 1
ARTNET_UNIVERSE = 0
START_TIMEOUT_S = 150   # torch imports on two shared cores
RHYTHM_MODE_S = 2.0

LAUNCHED: list[Daemon] = []
EXTRA_LOGS: list[tuple[str, Path]] = []


@dataclass
class Stack:
    """What the fixture started, for the tests to look at."""
    redis: RedisServer
    bus: Bus
    daemons: dict[str, Daemon]
    ddp: UdpCapture
    sacn: SacnCapture
    artnet: UdpCapture
    opc: OpcCapture
    wled: UdpCapture
    error_generator: ErrorGeneratorDouble
    prometheus: PrometheusServer
    api_url: str
    steady_at: float = 0.0                  # when beats flowed: wall time, the clock of the events
    cpu_at_steady: dict[str, tuple[float, float]] = field(default_factory=dict)   # user, system s
    rhythm_mode: tuple[int, str] = (0, "")  # status and body of POST /api/start-rhythm-mode
    rhythm_mode_at: float = 0.0
    groups_before_rhythm_mode: set[str] = field(default_factory=set)

    def wait_steady(self, seconds: float) -> None:
        """Sleep until ``seconds`` of steady running have passed."""
        time.sleep(max(0.0, self.steady_at + seconds - time.time()))

    def beat_groups(self) -> set[str]:
        """Consumer groups on the source's beat stream."""
        return {g["name"].decode() for g in self.bus.redis.xinfo_groups(keys.stream(SOURCE, "beats"))}

    def beats(self, count: int = 1000) -> list[dict]:
        """The newest beat events of the source, oldest first."""
        entries = self.bus.redis.xrevrange(keys.stream(SOURCE, "beats"), count=count)
        return [json.loads(fields[b"d"]) for _id, fields in reversed(entries) if b"d" in fields]


def http_json(method: str, url: str, doc: dict | None = None, timeout: float = 10.0) -> tuple[int, str]:
    """Status and body text of one request (4xx/5xx returned, not raised)."""
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.skip(f"{binary} not installed (install.sh installs it)")
    return path


def start_all(tmp: Path, cleanup: contextlib.ExitStack) -> Stack:
    """Start everything; ``cleanup`` stops each part (in reverse order) even if a later one fails."""
    prometheus_bin = _need("prometheus")
    _need("redis-server")
    redis = RedisServer(tmp).start()
    cleanup.callback(redis.stop)
    bus = Bus.connect(redis.url, name="e2e-observer")
    cleanup.callback(bus.close)
    ddp, artnet, wled, opc = UdpCapture(), UdpCapture(), UdpCapture(), OpcCapture()
    sacn = SacnCapture([SACN_UNIVERSE, SACN_UNIVERSE + 1])
    error_generator = ErrorGeneratorDouble()
    for part in (ddp, artnet, wled, opc, sacn, error_generator):
        cleanup.callback(part.close)
    offline_ddp = free_udp_port()       # a controller that is switched off: nothing listens there
    api_port = free_port()
    env = daemon_env(REDIS_URL=redis.url, BEATBUS_ERROR_GENERATOR_URL=error_generator.url,
                     BEATBUS_STATE_DIR=str(tmp / "state"))
    logs = tmp / "logs"
    logs.mkdir()

    outputs = [f"ddp://127.0.0.1:{ddp.port}?pixels={DDP_PIXELS}",
               f"sacn://127.0.0.1:{sacn.port}?universe={SACN_UNIVERSE}",
               f"artnet://127.0.0.1:{artnet.port}?universe={ARTNET_UNIVERSE}",
               f"opc://127.0.0.1:{opc.port}",
               f"wled://127.0.0.1:{wled.port}?mode=drgb",
               f"web://{WEB_DEVICE}?pixels={WEB_PIXELS}",
               f"ddp://127.0.0.1:{offline_ddp}?name=offline"]
    # name -> (arguments, systemd unit it stands for); the API serves /metrics on its HTTP port
    roles = {
        "processor": (["process"], "beatbus-processor@1"),
        "intensity": (["intensity", "run"], "beatbus-intensity@1"),
        "structure": (["structure", "run"], "beatbus-structure@1"),
        "worker": (["worker"], "beatbus-worker@1"),
        "exporter": (["exporter"], "beatbus-exporter"),
        "trigger": (["consume", "trigger"], "beatbus-trigger"),
        "led": (["consume", "led", "--source", SOURCE, "--pixels", str(PIXELS), "--effect", "beat_flash",
                 *(a for url in outputs for a in ("--output", url))], f"beatbus-led@{WEB_DEVICE}"),
        "api": (["api", "--port", str(api_port)], "beatbus-api"),
        "producer": (["produce", "click", "--bpm", str(CLICK_BPM), "--source", SOURCE],
                     f"beatbus-producer@{SOURCE}"),
    }
    daemons, targets = {}, []
    for name, (args, unit) in roles.items():
        metrics = f"127.0.0.1:{api_port}" if name == "api" else f"127.0.0.1:{free_port()}"
        extra = {} if name == "api" else {"BEATBUS_METRICS_ADDR": metrics}
        daemons[name] = Daemon(name, args, env={**env, **extra}, workdir=logs, metrics=metrics, unit=unit)
        targets.append({"targets": [metrics], "labels": {"daemon": name, "unit": unit}})

    prometheus = PrometheusServer(prometheus_bin, tmp / "prometheus", free_port(), targets)
    EXTRA_LOGS.append(("prometheus", prometheus.log_path))
    prometheus.start()
    cleanup.callback(prometheus.stop)
    stack = Stack(redis, bus, daemons, ddp, sacn, artnet, opc, wled, error_generator, prometheus,
                  f"http://127.0.0.1:{api_port}")
    # everything that reads the source first, then the producer (as beatbus.target orders them);
    # stopped in reverse: the producer first, so it drains and ends its stream
    readers = [d for n, d in daemons.items() if n != "producer"]
    for d in [*readers, daemons["producer"]]:
        if d is daemons["producer"]:
            wait_for(lambda: all(r.poll_ready() or not r.alive() for r in readers), START_TIMEOUT_S)
        LAUNCHED.append(d.start())
        cleanup.callback(d.stop)
    wait_for(lambda: daemons["producer"].poll_ready() or not daemons["producer"].alive(), 30)
    # steady: beats flow (a click track locks within a few seconds)
    wait_for(lambda: len(stack.beats(8)) >= 4, 60)
    stack.steady_at = time.time()
    stack.cpu_at_steady = {n: d.cpu_times() for n, d in daemons.items() if d.alive()}
    # the documented rhythm-mode workflow, once, early: afterwards nothing it made may raise an alert
    stack.groups_before_rhythm_mode = stack.beat_groups()
    stack.rhythm_mode = http_json("POST", f"{stack.api_url}/api/start-rhythm-mode",
                                  {"song_data": {"tempo": CLICK_BPM}, "duration": RHYTHM_MODE_S, "source": SOURCE})
    stack.rhythm_mode_at = time.time()
    wait_for(prometheus.ready, 30)
    return stack
