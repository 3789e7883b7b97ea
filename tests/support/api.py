"""`beatbus api` (and friends) as real processes for the API tests: started as a user starts them."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from beatbus import keys
from beatbus.bus import Bus
from beatbus.schemas import BeatEvent

from .paths import ROOT

__all__ = ["Command", "api_command", "BeatSource"]





class Command:
    """One ``beatbus ...`` process, stderr kept in a file, stopped with SIGTERM (or killed)."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path):
        full = {k: v for k, v in os.environ.items()
                if not k.startswith("BEATBUS_") and k not in ("REDIS_URL", "ERROR_GENERATOR_URL")}
        full.update(env)
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", *args], cwd=ROOT, env=full,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 60.0) -> str:
        """The first group of the first match of ``pattern`` in stderr (waiting for it)."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.stderr())
            if m:
                return m.group(1)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line like {pattern!r}; stderr:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def wait_http(self, url: str, timeout: float = 60.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return httpx.get(url, trust_env=False, timeout=2)
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{url} never answered; stderr:\n{self.stderr()[-3000:]}") from None
                time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def api_command(broker_url: str, error_generator: str, log: Path, **env: str) -> tuple[Command, str]:
    """``beatbus api`` answering /health; (command, url). ``--port 0``: the kernel picks a free port when
    the API binds it, and the API prints it (a port picked here first could be taken before that)."""
    cmd = Command(["api", "--port", "0", "--no-generate", "--error-generator-url", error_generator],
                  env={"REDIS_URL": broker_url, **env}, log=log)
    url = cmd.wait_log(r"API and dashboard on (http://[^/\s]+)/")
    cmd.wait_http(f"{url}/health")
    return cmd, url


class BeatSource(threading.Thread):
    """A live source as a producer and beat processor make one: heartbeats and a beat every period."""

    def __init__(self, broker_url: str, source: str = "default", bpm: float = 120.0):
        super().__init__(name=f"beats-{source}", daemon=True)
        self.bus = Bus.connect(broker_url, name="beat-source")
        self.source, self.period = source, 60.0 / bpm
        self.halt = threading.Event()

    def run(self) -> None:
        stream, i, t0 = keys.stream(self.source, keys.StreamKind.BEATS), 0, time.time()
        while not self.halt.wait(max(0.0, t0 + i * self.period - time.time())):
            now = time.time()
            self.bus.heartbeat(self.source)
            self.bus.publish(stream, BeatEvent(
                source=self.source, timestamp=i * self.period, system_time=now - 0.03, is_downbeat=i % 4 == 0,
                bpm=60.0 / self.period, intensity=0.5, confidence=0.9, beat=i, beat_in_bar=i % 4 + 1, bar=i // 4,
                meter=4, next_beat_time=(i + 1) * self.period, next_beat_system_time=now + self.period,
                emitted_at=now), maxlen=1000)
            i += 1

    def __enter__(self) -> BeatSource:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.join(5)
        self.bus.close()
