"""The dashboard in a real headless Chromium (Debian's; conftest's ``browser``), against a running click ->
beats pipeline."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from beatbus import keys
from beatbus.api.app import create_app
from beatbus.api.auth import KeyStore
from beatbus.api.deps import Guard
from beatbus.api.server import ApiServer
from beatbus.bus import Bus
from beatbus.processors.beat import BeatProcessor
from beatbus.processors.beat.service import BeatService
from beatbus.producers import ClickSource
from beatbus.producers.service import Publisher

from support.procs import free_port


@pytest.fixture
def pipeline(bus, settings, broker):
    """produce click (120 BPM, real time) -> beat processor, running until the test ends."""
    stop = threading.Event()
    pub_bus, proc_bus = Bus.connect(broker.url, name="click"), Bus.connect(broker.url, name="proc")
    services = [BeatService(proc_bus, settings=settings, make_processor=lambda: BeatProcessor(backend="dsp"),
                            sources=["default"]),
                Publisher(pub_bus, ClickSource(120, realtime=True, duration=120.0), settings=settings)]
    threads = []
    for svc in services:
        t = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        t.start()
        threads.append(t)
        assert svc.ready.wait(10)
    yield
    stop.set()
    for t in threads:
        t.join(10)
    assert all(s.error is None for s in services), [s.error for s in services]
    pub_bus.close(), proc_bus.close()


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_dashboard_shows_live_bpm_and_beats(browser, pipeline, bus, broker, settings, tmp_path):
    api_bus = Bus.connect(broker.url, name="api")
    store = KeyStore(tmp_path / "api-keys.json")
    _, token = store.create(["read", "control", "trigger"], name="dashboard")
    with ApiServer(create_app(api_bus, settings, guard=Guard(store=store)), port=free_port()) as srv:
        # the key is entered once, into the form the dashboard shows after a 401 ...
        browser.get(f"{srv.url}/?source=default")
        deadline = time.monotonic() + 10
        while not browser.find_element("id", "key-form").is_displayed() and time.monotonic() < deadline:
            time.sleep(0.1)
        browser.find_element("id", "key-input").send_keys(token)
        browser.find_element("css selector", "#key-form button[type=submit]").click()
        time.sleep(0.5)
        browser.get_log("browser")                    # the 401s before the key was entered
        # ... and kept in this tab's sessionStorage (not localStorage), across reloads
        browser.refresh()
        assert browser.execute_script("return sessionStorage.getItem('beatbus.apiKey')") == token
        assert browser.execute_script("return localStorage.length") == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            bpm = _text(browser, "bpm")
            if bpm not in ("", "–") and abs(float(bpm) - 120) < 3 and _text(browser, "status").endswith("live"):
                break
            time.sleep(0.2)
        assert abs(float(_text(browser, "bpm")) - 120) < 3, _text(browser, "bpm")
        assert _text(browser, "status").endswith("live")
        # the beat indicator moves: the lit metronome dot and the beat count change beat by beat
        seen, counts = set(), set()
        deadline = time.monotonic() + 6
        dots: list = []
        while time.monotonic() < deadline and (len(seen) < max(2, len(dots)) or len(counts) < 4):
            now_dots = browser.execute_script(    # one atomic read: the dots are rebuilt when the meter changes
                "return [...document.querySelectorAll('#metronome .dot')].map(d => d.classList.contains('on'))")
            if len(now_dots) != len(dots):
                seen.clear()                       # a new meter: start counting positions again
            dots = now_dots
            seen.update(i for i, on in enumerate(dots) if on)
            counts.add(_text(browser, "beat-count"))
            time.sleep(0.05)
        assert len(dots) >= 2 and seen == set(range(len(dots))), seen  # every position of the bar lit in turn
        assert len(counts) >= 4
        bar, beat_in_bar = _text(browser, "position").split(".")
        assert int(bar) >= 1 and 1 <= int(beat_in_bar) <= len(dots)
        assert "simulated" in _text(browser, "led-mode")            # no LED consumer here: beat flashes
        # controls: a slider change becomes a ControlEvent on the source's control stream
        browser.execute_script("const s = document.getElementById('sensitivity'); s.value = 0.8;"
                               "s.dispatchEvent(new Event('change'));")
        control = keys.stream("default", "control")
        deadline = time.monotonic() + 5
        while not bus.redis.xlen(control) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b'"sensitivity":0.8' in bus.redis.xrange(control)[-1][1][b"d"]
        # tap to calibrate: taps at the beat rate show the tapped tempo
        for _ in range(6):
            browser.find_element("id", "tap").click()
            time.sleep(0.5)
        assert 40 < float(_text(browser, "tap-bpm")) < 125          # ~0.5 s apart plus click overhead
        # rhythm mode's analysis form draws the planned sections
        browser.find_element("id", "song-tempo").send_keys("120")
        browser.find_element("css selector", "#analyze button[type=submit]").click()
        deadline = time.monotonic() + 5
        while "metadata-heuristic" not in _text(browser, "rhythm-result") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "metadata-heuristic: 120" in _text(browser, "rhythm-result")
        assert len(browser.find_elements("css selector", "#plan div")) == 8
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        shutil.copy(shot, Path("/tmp") / "beatbus-dashboard.png")    # for a human to look at
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    api_bus.close()
