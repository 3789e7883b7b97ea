"""The dashboard of `beatbus api` in Debian's headless Chromium: live BPM, and the LED frames that
another process (`beatbus consume led ... --output web://strip`) renders (item 4)."""
from __future__ import annotations

import re
import shutil
import time

import pytest

from beatbus import keys

from .deployment import CLICK_BPM, DDP_PIXELS, PIXELS, SOURCE, WEB_DEVICE, WEB_PIXELS

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1100")
# the canvas's background between LED bars (api/static/app.js fills it first)
BACKGROUND = (5, 6, 8)
# One row of the LED canvas as [r, g, b] per bar centre, read the way a screenshot would see it.
READ_BARS = """
const c = document.getElementById('led-canvas'), n = arguments[0];
const row = c.getContext('2d').getImageData(0, c.height >> 1, c.width, 1).data;
const out = [];
for (let i = 0; i < n; i++) {
  const x = Math.floor((i + 0.5) * c.width / n) * 4;
  out.push([row[x], row[x+1], row[x+2]]);
}
return out;
"""
# The brightest point of that row (r + g + b), whatever the device's bar width.
ROW_PEAK = """
const c = document.getElementById('led-canvas');
const row = c.getContext('2d').getImageData(0, c.height >> 1, c.width, 1).data;
let peak = 0;
for (let x = 0; x < row.length; x += 4) peak = Math.max(peak, row[x] + row[x+1] + row[x+2]);
return peak;
"""


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (install.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def _led_frames(driver, bars: int, count: int = 30) -> list[list[list[int]]]:
    """``count`` readings of the LED canvas, 50 ms apart."""
    frames = []
    for _ in range(count):
        frames.append(driver.execute_script(READ_BARS, bars))
        time.sleep(0.05)
    return frames


def _lit(frames) -> list:
    return [f for f in frames if any(tuple(bar) != BACKGROUND and sum(bar) > 60 for bar in f)]


def test_dashboard_shows_live_bpm_and_the_real_led_frames(stack, browser):
    stack.wait_steady(3)
    browser.get(f"{stack.api_url}/")

    def bpm_near_click():
        bpm = _text(browser, "bpm")
        return bpm not in ("", "–") and abs(float(bpm) - CLICK_BPM) < 3 and _text(browser, "status").endswith("live")

    assert _until(bpm_near_click, 30), f"BPM {_text(browser, 'bpm')!r}, status {_text(browser, 'status')!r}"
    # with an LED consumer running anywhere, the preview is one of its devices, not the simulated strip
    mode = _until(lambda: re.fullmatch(r"(.+) · (\d+) px", _text(browser, "led-mode")), 15)
    assert mode and int(mode[2]) in (PIXELS, DDP_PIXELS, WEB_PIXELS), f"LED preview: {_text(browser, 'led-mode')!r}"
    peaks = []
    for _ in range(20):
        peaks.append(browser.execute_script(ROW_PEAK))
        time.sleep(0.05)
    assert max(peaks) > 60 and len(set(peaks)) >= 3, f"the LED canvas over 1 s of a 120 BPM click: {peaks}"

    # ?led=NAME shows that device: the web:// output, its 37 pixels lit on the beats, fading between
    browser.get(f"{stack.api_url}/?led={WEB_DEVICE}")
    assert _until(lambda: _text(browser, "led-mode") == f"{WEB_DEVICE} · {WEB_PIXELS} px", 15), \
        f"LED preview: {_text(browser, 'led-mode')!r} (expected the device {WEB_DEVICE!r}, {WEB_PIXELS} px)"
    frames = _led_frames(browser, WEB_PIXELS)
    lit = _lit(frames)
    assert lit, "the LED canvas stayed dark for 1.5 s of a 120 BPM click"
    assert all(len({tuple(bar) for bar in f}) == 1 for f in lit), "beat_flash lights every pixel alike"
    assert len({tuple(f[0]) for f in frames}) >= 3, "the LED canvas does not change from frame to frame"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_dashboard_shows_which_stage_serves_the_source_below_full_quality(stack, browser):
    """Adaptive quality's level, as the stages publish it (the keys.quality hash; the daemons' own
    writes are checked in test_adaptive_stages.py), reaches the page through the API's source state."""
    stack.wait_steady(3)
    quality = keys.quality(SOURCE)
    before = stack.bus.redis.hgetall(quality)
    browser.get(f"{stack.api_url}/")
    try:
        assert _until(lambda: _text(browser, "status").endswith("live"), 30)
        assert not browser.find_element("id", "quality-row").is_displayed()
        stack.bus.redis.hset(quality, mapping={"intensity": "half", "structure": "shed", "beat": "dsp"})
        assert _until(lambda: browser.find_element("id", "quality-row").is_displayed(), 15), "no 'under load' line"
        assert _text(browser, "quality") == "beat dsp · intensity half · structure shed"
        stack.bus.redis.hset(quality, mapping={"intensity": "full", "structure": "full"})
        assert _until(lambda: _text(browser, "quality") == "beat dsp", 15), _text(browser, "quality")
        stack.bus.redis.hset(quality, "beat", "full")
        assert _until(lambda: not browser.find_element("id", "quality-row").is_displayed(), 15)
    finally:
        stack.bus.redis.delete(quality)
        if before:
            stack.bus.redis.hset(quality, mapping=before)
