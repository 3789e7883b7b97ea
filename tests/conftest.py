"""Shared fixtures: a real broker (the embedded Valkey server), never a fake. Helpers are in support/."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys

import pytest

from beatbus.broker import EmbeddedBroker
from beatbus.bus import Bus
from beatbus.config import load_settings

from support.paths import BEATS_DIR
from support.procs import RedisServer
from support.soundserver import SoundServer

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def pytest_sessionstart(session):
    """Real-data tests never skip silently: without the data the run stops with one clear line."""
    if not BEATS_DIR.is_dir():
        pytest.exit(f"tests: real annotated audio missing: expected {BEATS_DIR} (../shared beside the "
                    "checkout)", returncode=4)


def _children() -> dict[int, str]:
    """pid -> command line of this process's children still running (from /proc)."""
    out = {}
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        try:
            with open(f"/proc/{d.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                with open(f"/proc/{d.name}/cmdline", "rb") as f:
                    out[int(d.name)] = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except (OSError, IndexError, ValueError):
            continue
    return out


def _kill_leftovers() -> None:
    """Commands a failing test left running go with the run (said once), not on with the machine."""
    left = _children() if sys.platform == "linux" else {}
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        sys.stderr.write(f"tests: killed {len(left)} command(s) left running: {sorted(left.values())[:5]}\n")


def pytest_sessionfinish(session, exitstatus):
    """Commands failing tests left running are killed. Under CI (``CI=true``, the full install) a skipped
    test is a failure: a skip there means a
    missing install step or a dependency that broke, not a test that does not apply."""
    _kill_leftovers()
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(sorted({r.nodeid or str(r.location) for r in skipped})[:10])
        sys.stderr.write(f"tests: {len(skipped)} test(s) skipped under CI, where everything is installed: {names}\n")
        session.exitstatus = 1


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
    """Fast-cycling settings against the test broker (no env leakage). Adaptive quality off: services
    run in process, often fed faster than real time, would degrade on the machine's load rather than on
    the test's subject (the adaptive tests turn it on)."""
    return load_settings({"redis_url": broker.url, "metrics_addr": "off", "lease_ttl": 1.0,
                          "heartbeat": 0.2, "block_ms": 100, "claim_idle_ms": 200, "adaptive": False}, env={})


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed (install.sh installs it)")
    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture
def sound_server():
    """A private PulseAudio with the null sink ``beatbus_null`` (clients: ``sound_server.env``)."""
    srv = SoundServer().start()
    yield srv
    srv.stop()
