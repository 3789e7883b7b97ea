"""Processes and ports: the real CLI in a subprocess, a plain redis-server, condition waits."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beatbus.bus import Bus

from .paths import ROOT

_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing is bound to now, and never one this test process handed out before:
    the kernel may give two bind(0) calls in a row the same port, and two daemons told the same port
    collide when the later one binds (a worker once exited 2 on the structure daemon's metrics port)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class RedisServer:
    """A plain redis-server on a loopback port that a test can stop and restart."""

    def __init__(self, tmp: Path):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.tmp = tmp
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                Bus.connect(self.url).close()
                return self
            except Exception:  # noqa: BLE001  (not accepting connections yet)
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def beatbus_cmd(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "beatbus.cli", *args], capture_output=True, text=True,
                          env=cli_env(env), cwd=ROOT, **kw)


def wait_for(cond, timeout: float = 10.0, interval: float = 0.02):
    """``cond()``'s first truthy value within ``timeout`` s, else its last value (for asserts that show it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def eventually(cond, timeout: float = 20.0, what="condition", interval: float = 0.02):
    """Poll ``cond`` until it returns a truthy value (returned) or fail naming ``what`` after ``timeout`` s.

    Tests wait on conditions with generous deadlines, never on fixed sleeps: a loaded CI machine
    only makes them slower, never red. ``what`` may be a callable, asked at the failure (to show the
    state that was still wrong then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def cli_env(env: dict | None = None) -> dict:
    """The test process's environment without beatbus settings, plus ``env``."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("BEATBUS_") and k not in ("REDIS_URL", "ERROR_GENERATOR_URL")}
    full.update(env or {})
    return full


def spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``beatbus ARGS`` in the background (text pipes for stdout and stderr)."""
    return subprocess.Popen([sys.executable, "-m", "beatbus.cli", *args], cwd=ROOT, env=cli_env(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> tuple[int, str, str]:
    """SIGTERM (then SIGKILL after 15 s): exit code, stdout, stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err
