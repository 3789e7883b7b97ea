"""Shared pieces of the ops, scale-out and fault tests: real daemons as subprocesses, their metrics."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from beatbus import keys
from beatbus.schemas import BeatEvent, from_fields

from .paths import ROOT

TTL, HEARTBEAT = 1.0, 0.2
HOST = socket.gethostname()


def env_for(url: str, **extra) -> dict:
    """A daemon's environment: fast leases and heartbeats, no inherited BEATBUS_* or systemd socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k not in ("REDIS_URL",
                                                                                            "NOTIFY_SOCKET")}
    env.update({"REDIS_URL": url, "BEATBUS_LEASE_TTL": str(TTL), "BEATBUS_HEARTBEAT": str(HEARTBEAT),
                "BEATBUS_BLOCK_MS": "100", "BEATBUS_METRICS_ADDR": "off", "BEATBUS_LOG_LEVEL": "warning",
                "BEATBUS_CLAIM_IDLE_MS": "300", **{k: str(v) for k, v in extra.items()}})
    return env


_METRICS_URL = re.compile(rb"http://[^/\s\"]+:(\d+)/metrics")


class DaemonProcess(subprocess.Popen):
    """A daemon subprocess; ``port`` is its /metrics port once it has logged it (None before, and
    for a daemon started without metrics)."""

    name: str
    log_path: Path
    _port: int | None = None

    @property
    def port(self) -> int | None:
        if self._port is None:
            try:
                found = _METRICS_URL.search(self.log_path.read_bytes())
            except FileNotFoundError:
                found = None
            self._port = int(found[1]) if found else None
        return self._port


class Daemons:
    """The subprocesses of one test (``python -m beatbus.cli ...``), killed at the end whatever happens."""

    def __init__(self, url: str, tmp):
        self.url, self.tmp, self.procs = url, tmp, []

    def start(self, name: str, *args: str, module: str = "beatbus.cli", metrics: bool = False,
              **env) -> DaemonProcess:
        if metrics:
            # port 0: the daemon binds a free port itself and logs it (a port picked here could be
            # taken by another test's daemon before this one binds it)
            env.setdefault("BEATBUS_METRICS_ADDR", "127.0.0.1:0")
            env.setdefault("BEATBUS_LOG_LEVEL", "info")
        log = open(self.tmp / f"{name}.log", "wb")
        proc = DaemonProcess([sys.executable, "-m", module, *args], env=env_for(self.url, **env), cwd=ROOT,
                             stdout=log, stderr=subprocess.STDOUT)
        proc.name, proc.logfile, proc.log_path = name, log, self.tmp / f"{name}.log"
        self.procs.append(proc)
        return proc

    def log(self, proc) -> str:
        return (self.tmp / f"{proc.name}.log").read_text(errors="replace")[-3000:]

    def check(self) -> None:
        """Fail if a daemon died (a SIGKILL the test sent itself excepted)."""
        for p in self.procs:
            assert p.poll() is None or p.returncode == -signal.SIGKILL, f"{p.name} died:\n{self.log(p)}"

    def terminate(self, proc, timeout: float = 20) -> int:
        """SIGTERM and wait: the daemon drains and exits (its code is returned)."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.logfile.close()


def wait_until(cond, timeout: float, what: str, daemons: Daemons | None = None):
    """Poll ``cond`` until truthy (returned) or fail after ``timeout`` s, checking the daemons live."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if daemons is not None:
            daemons.check()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def metrics(port: int | None) -> dict[str, float]:
    """``name{k=v,...}`` -> value from a daemon's /metrics ({} while it does not answer)."""
    if not port:
        return {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {f"{smp.name}{{{','.join(f'{k}={v}' for k, v in sorted(smp.labels.items()))}}}": smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


def owner(proc) -> str:
    """The lease owner id of a ``beatbus process`` daemon."""
    return f"{HOST}:{proc.pid}:beat"


def holders(bus, sources) -> dict[str, str | None]:
    vals = bus.redis.mget([keys.lease(s, "beat") for s in sources])
    return {s: v.decode() if v else None for s, v in zip(sources, vals)}


def beats(bus, source: str, *, after: float = 0.0, count: int = 10000) -> list[BeatEvent]:
    """BeatEvents of a source emitted after ``after`` (oldest first)."""
    out = []
    for _, fields in bus.redis.xrange(keys.stream(source, "beats"), count=count):
        ev = from_fields(fields)
        if isinstance(ev, BeatEvent) and ev.emitted_at > after:
            out.append(ev)
    return out
