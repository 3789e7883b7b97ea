"""The dashboard's Lights panel in headless Chromium, against the real commands.

`beatbus consume led --name stage` starts with no device and `beatbus api` serves the page (API keys
on) on the test broker, beats of source ``default`` come from a live beat source (support.api). A
DDP device is added in the page and a receiver on loopback (a DDP parser written from the spec)
gets its frames; the effect and palette are changed in the page and the frames change with them;
the LED daemon is restarted and the device, its effect and its palette are still there; segments
typed in the page reorder the pixels on the wire; a preset is deleted in the page.
"""
from __future__ import annotations

import time

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from beatbus.api.auth import KeyStore

from support.api import BeatSource, Command, api_command
from support.led import UdpCapture, parse_ddp
from support.procs import eventually

pytestmark = pytest.mark.slow          # two daemons and a browser: ~30 s

PIXELS = 30


def pixels_of(packet: bytes) -> list[tuple[int, int, int]]:
    data = parse_ddp(packet)["data"]
    return [tuple(data[i:i + 3]) for i in range(0, len(data), 3)]


def frames_after(cap: UdpCapture, t: float, n: int = 30) -> list[list[tuple[int, int, int]]]:
    """The first ``n`` DDP frames that arrived after wall time ``t`` (one packet each: 30 pixels)."""
    eventually(lambda: len(cap.since(t)) >= n, timeout=10, what=f"{n} DDP frames")
    return [pixels_of(p) for _, p in cap.since(t)[:n]]


def uniform(frame) -> bool:
    return len(set(frame)) == 1


# read in one script: the list is redrawn whenever the setup changes
ROW = """const r = [...document.querySelectorAll('#lights-devices tr')].find((x) => x.dataset.device === arguments[0]);
return r ? [r.dataset.state, r.querySelector('.dev-effect').textContent] : null;"""
TOGGLE = """const r = [...document.querySelectorAll('#lights-devices tr')].find((x) => x.dataset.device === arguments[0]);
r.querySelector('.dev-enabled').click();"""
EDIT = """const r = [...document.querySelectorAll('#lights-devices tr')].find((x) => x.dataset.device === arguments[0]);
r.querySelector('.dev-edit').click();"""
SEGMENTS = """const r = [...document.querySelectorAll('#lights-devices tr')].find((x) => x.dataset.device === arguments[0]);
return r ? r.querySelector('.dev-segments').textContent : null;"""


def row_is(browser, device: str, state: str, effect: str) -> bool:
    return browser.execute_script(ROW, device) == [state, effect]


def type_into(browser, element_id: str, value: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def result(browser) -> tuple[str, bool]:
    el = browser.find_element(By.ID, "lights-result")
    return el.text, "error" in el.get_attribute("class").split()


def led_daemon(broker_url: str, tmp, n: int) -> Command:
    return Command(["consume", "led", "--name", "stage", "--log-format", "json"],
                   env={"REDIS_URL": broker_url, "BEATBUS_METRICS_ADDR": "off", "BEATBUS_STATE_DIR": str(tmp / "state")},
                   log=tmp / f"led-{n}.log")


def test_a_device_added_and_styled_in_the_page_sends_those_frames_and_survives_a_restart(broker, browser, tmp_path):
    _, token = KeyStore(tmp_path / "api-keys.json").create(["read", "control"], name="lights")
    led = led_daemon(broker.url, tmp_path, 1)
    api, url = api_command(broker.url, "http://127.0.0.1:9", tmp_path / "api.log",
                           BEATBUS_API_KEYS_FILE=str(tmp_path / "api-keys.json"))
    try:
        with BeatSource(broker.url, "default", bpm=120), UdpCapture() as cap:
            browser.get(f"{url}/#key={token}")
            eventually(lambda: browser.find_element(By.ID, "lights-status").text.startswith("stage · 0 devices"),
                       timeout=30, what=lambda: f"the LED consumer in the page ({led.stderr()[-2000:]})")
            # a bad URL: the consumer's one-line refusal, inline
            type_into(browser, "dev-output", "ddp://")
            browser.find_element(By.ID, "dev-submit").click()
            eventually(lambda: result(browser)[1], timeout=10, what="the refusal shown")
            text, _ = result(browser)
            assert "a host is required" in text and "\n" not in text, text
            # add the DDP device: the receiver gets frames of 30 pixels, beat_flash (every pixel alike)
            type_into(browser, "dev-name", "porch")
            type_into(browser, "dev-output", f"ddp://127.0.0.1:{cap.port}")
            type_into(browser, "dev-pixels", str(PIXELS))
            browser.find_element(By.ID, "dev-submit").click()
            eventually(lambda: row_is(browser, "porch", "sending", "beat_flash"), timeout=10,
                       what=lambda: f"porch sending in the list ({result(browser)})")
            assert result(browser) == ("added porch", False)
            flashes = frames_after(cap, time.time())
            assert all(len(f) == PIXELS and uniform(f) for f in flashes)
            assert any(max(map(max, f)) > 60 for f in flashes), "a 120 BPM beat flashes within a second"
            # the effect picker: chase with the ocean palette (no red in it), built from the catalogue
            Select(browser.find_element(By.ID, "fx-device")).select_by_value("porch")
            Select(browser.find_element(By.ID, "fx-effect")).select_by_value("chase")
            assert browser.find_element(By.ID, "fx-param-pulses").get_attribute("value") == "3"   # its default
            Select(browser.find_element(By.ID, "fx-param-color_palette")).select_by_value("ocean")
            browser.find_element(By.ID, "fx-apply").click()
            eventually(lambda: row_is(browser, "porch", "sending", "chase"), timeout=10,
                       what=lambda: f"porch on chase ({result(browser)})")
            chased = frames_after(cap, time.time() + 0.1)
            assert not any(uniform(f) for f in chased), "chase draws pulses along the strip"
            assert all(r == 0 for f in chased for r, _, _ in f) and any(b > 60 for f in chased for *_, b in f)
            # a preset keeps it; the enable toggle stops and restarts the frames
            type_into(browser, "preset-name", "show")
            browser.find_element(By.ID, "preset-save").click()
            eventually(lambda: result(browser) == ("saved preset show", False), timeout=10, what="the preset saved")
            browser.execute_script(TOGGLE, "porch")          # a user's click on the row's checkbox
            eventually(lambda: row_is(browser, "porch", "off", "chase"), timeout=10, what="porch off")
            assert not any(map(max, pixels_of(cap.packets[-1][1]))), "switched off: the strip is dark"
            browser.execute_script(TOGGLE, "porch")
            eventually(lambda: row_is(browser, "porch", "sending", "chase"), timeout=10, what="porch on again")
            Select(browser.find_element(By.ID, "fx-effect")).select_by_value("strobe")
            browser.find_element(By.ID, "fx-apply").click()
            eventually(lambda: row_is(browser, "porch", "sending", "strobe"), timeout=10, what="porch on strobe")
            Select(browser.find_element(By.ID, "preset-select")).select_by_value("show")
            browser.find_element(By.ID, "preset-apply").click()
            eventually(lambda: row_is(browser, "porch", "sending", "chase"), timeout=10, what="the preset applied")

            # restart the LED daemon: the device, its effect and palette come back from the saved setup
            assert led.stop() == 0
            led = led_daemon(broker.url, tmp_path, 2)
            restarted = time.time()
            eventually(lambda: "LED setup loaded" in led.stderr(), timeout=30, what=lambda: led.stderr()[-2000:])
            browser.refresh()
            eventually(lambda: row_is(browser, "porch", "sending", "chase"), timeout=30,
                       what="porch listed again after the restart")
            again = frames_after(cap, restarted + 0.5)
            assert not any(uniform(f) for f in again) and all(r == 0 for f in again for r, _, _ in f)

            # segments: a static gradient (no scroll, no beat pulse), then "0-14, 29-15" in the device form:
            # the first half stays, the second half is reversed on the wire
            Select(browser.find_element(By.ID, "fx-effect")).select_by_value("gradient")
            type_into(browser, "fx-param-beats_per_cycle", "0")
            type_into(browser, "fx-param-pulse", "0")
            Select(browser.find_element(By.ID, "fx-param-color_palette")).select_by_value("rainbow")
            browser.find_element(By.ID, "fx-apply").click()
            eventually(lambda: row_is(browser, "porch", "sending", "gradient"), timeout=10, what="porch on gradient")
            plain = frames_after(cap, time.time() + 0.2, 10)
            assert all(f == plain[0] for f in plain), "a static gradient: every frame alike"
            base = plain[0]
            assert base[15:] != base[15:][::-1], "the gradient's second half is not its own mirror image"
            browser.execute_script(EDIT, "porch")
            assert browser.find_element(By.ID, "dev-segments").get_attribute("value") == ""
            type_into(browser, "dev-segments", "0-14, x")          # not a range: said in the page, nothing sent
            browser.find_element(By.ID, "dev-submit").click()
            text, is_error = result(browser)
            assert is_error and 'segments: "x" is not a pixel range' in text, text
            type_into(browser, "dev-segments", "0-14, 10-20")      # overlapping: the consumer's one-line refusal
            browser.find_element(By.ID, "dev-submit").click()
            eventually(lambda: "overlap" in result(browser)[0], timeout=10, what=lambda: f"the refusal ({result(browser)})")
            text, is_error = result(browser)
            assert is_error and "\n" not in text, text
            type_into(browser, "dev-segments", "0-14, 29-15")
            browser.find_element(By.ID, "dev-submit").click()
            eventually(lambda: browser.execute_script(SEGMENTS, "porch") == "2", timeout=10,
                       what=lambda: f"porch with 2 segments in the list ({result(browser)})")
            assert not result(browser)[1] and "segments" in result(browser)[0], result(browser)
            segmented = frames_after(cap, time.time() + 0.2, 10)
            assert all(f == base[:15] + base[15:][::-1] for f in segmented), (segmented[0], base)
            browser.execute_script(EDIT, "porch")                   # shown back as typed
            assert browser.find_element(By.ID, "dev-segments").get_attribute("value") == "0-14, 29-15"
            browser.find_element(By.ID, "dev-cancel").click()

            # delete a preset in the page: gone from the select and from the API; the other one stays
            type_into(browser, "preset-name", "spare")
            browser.find_element(By.ID, "preset-save").click()
            eventually(lambda: result(browser) == ("saved preset spare", False), timeout=10, what="the second preset")
            Select(browser.find_element(By.ID, "preset-select")).select_by_value("show")
            browser.find_element(By.ID, "preset-delete").click()
            eventually(lambda: result(browser) == ("deleted preset show", False), timeout=10,
                       what=lambda: f"the preset deleted ({result(browser)})")
            options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "preset-select")).options]
            assert options == ["spare"], options
            listed = httpx.get(f"{url}/api/led/presets", headers={"Authorization": f"Bearer {token}"}, trust_env=False)
            assert [p["name"] for p in listed.json()["presets"]] == ["spare"], listed.text
            assert row_is(browser, "porch", "sending", "gradient"), "the devices keep their effects"

            # the errors: the refused answers (URL, overlapping segments), which Chromium logs as failed requests
            errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert all(("/api/led/devices - " in e or "/api/led/devices/porch - " in e) and "status of 422" in e
                       for e in errors) and len(errors) <= 2, errors
    finally:
        codes = {"led": led.stop(), "api": api.stop()}
    for name, cmd in (("led", led), ("api", api)):
        assert codes[name] == 0 and "Traceback" not in cmd.stderr(), cmd.stderr()[-3000:]
