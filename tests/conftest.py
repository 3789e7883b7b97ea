"""Shared fixtures: a real broker (the embedded Valkey server), never a fake."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beatbus.broker import EmbeddedBroker
from beatbus.bus import Bus
from beatbus.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# The real annotated audio lives in ../shared beside the checkout (CI clones next to it).
DATA = ROOT.parent / "shared" / "data"
BEATS_DIR = DATA / "beats"


def pytest_sessionstart(session):
    """Real-data tests never skip silently: without the data the run stops with one clear line."""
    if not BEATS_DIR.is_dir():
        pytest.exit(f"tests: real annotated audio missing: expected {BEATS_DIR} (../shared beside the "
                    "checkout)", returncode=4)


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def bus(broker):
    b = Bus.connect(broker.url, name="test")
    b.redis.flushall()
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _led_preview_hub_per_test():
    """The in-process LED preview hub is process-wide: no test sees the ``web://`` devices of another."""
    yield
    web = sys.modules.get("beatbus.consumers.led.outputs.web")     # only if a test loaded the LED consumer
    if web is not None:
        with web.HUB._cond:
            web.HUB.meta.clear()
            web.HUB._frames.clear()


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium, headless, driven by its chromedriver (the dashboard tests)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (install.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--window-size=1400,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def settings(broker):
    """Fast-cycling settings against the test broker (no env leakage)."""
    return load_settings({"redis_url": broker.url, "metrics_addr": "off", "lease_ttl": 1.0,
                          "heartbeat": 0.2, "block_ms": 100, "claim_idle_ms": 200}, env={})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                Bus.connect(self.url).close()
                return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed (install.sh installs it)")
    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


def beatbus_cmd(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as a user would)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "beatbus.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, **kw)


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
