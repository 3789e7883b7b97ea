"""WLED discovery (issue #20 item 3) against a real mDNS announcement, checked from outside.

The test announces a WLED controller as WLED does, ``_wled._tcp.local.`` with a ``mac`` in its TXT
record, through python-zeroconf bound to loopback (a test double of the controller's mDNS
responder; no WLED hardware here). Then the real `beatbus devices --leds` process, the real
`beatbus api` process (API keys on) and the dashboard in headless Chromium must each find it,
browsing on loopback only (``BEATBUS_MDNS_INTERFACES=127.0.0.1``), and offer ``ddp://127.0.0.1``.
"""
from __future__ import annotations

import os
import socket

import httpx
import pytest
import zeroconf
from selenium.webdriver.common.by import By

from beatbus.api.auth import KeyStore

from support.api import api_command
from support.procs import beatbus_cmd, eventually

LOOPBACK = {"BEATBUS_MDNS_INTERFACES": "127.0.0.1"}
MAC = "0123456789ab"


@pytest.fixture
def wled():
    """A WLED controller's announcement on loopback; yields its instance name (with a space, as
    mDNS allows and LED device names do not)."""
    name = f"WLED test {os.getpid()}"
    zc = zeroconf.Zeroconf(interfaces=["127.0.0.1"])
    info = zeroconf.ServiceInfo("_wled._tcp.local.", f"{name}._wled._tcp.local.", port=80,
                                addresses=[socket.inet_aton("127.0.0.1")], properties={"mac": MAC},
                                server=f"wled-test-{os.getpid()}.local.")
    zc.register_service(info)
    try:
        yield name
    finally:
        zc.unregister_service(info)
        zc.close()


@pytest.fixture(scope="module")
def api(broker, tmp_path_factory):
    """`beatbus api` browsing on loopback, API keys on; yields (url, read-only token)."""
    tmp = tmp_path_factory.mktemp("wled-api")
    _, token = KeyStore(tmp / "api-keys.json").create(["read"], name="viewer")
    cmd, url = api_command(broker.url, "http://127.0.0.1:9", tmp / "api.log",
                           BEATBUS_API_KEYS_FILE=str(tmp / "api-keys.json"), **LOOPBACK)
    try:
        yield url, token
    finally:
        cmd.stop()


def test_beatbus_devices_leds_lists_the_controller_with_its_ddp_url(wled):
    r = beatbus_cmd("devices", "--leds", "--timeout", "2", env=LOOPBACK, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next((x for x in r.stdout.splitlines() if x.startswith(wled)), None)
    assert line is not None, r.stdout
    assert "ddp://127.0.0.1 " in line and f"wled-test-{os.getpid()}.local" in line, line
    assert "port 80" in line and f"mac {MAC}" in line, line
    assert "--output" in r.stdout.splitlines()[-1]          # how to add one


def test_beatbus_devices_leds_says_so_when_none_answers_and_without_the_extra(tmp_path):
    # no fixture: nothing announces _wled._tcp on loopback
    r = beatbus_cmd("devices", "--leds", "--timeout", "0.5", env=LOOPBACK, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no WLED device answered within 0.5 s"), r.stdout
    # zeroconf not importable (as without the extra): one line, no traceback
    shadow = tmp_path / "zeroconf"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed (hidden by the test)')\n")
    r = beatbus_cmd("devices", "--leds", env={**LOOPBACK, "PYTHONPATH": str(tmp_path)}, timeout=60)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr == "beatbus: error: WLED discovery needs the optional extra: pip install 'beatbus[wled]'\n"
    # --timeout belongs to --leds
    r = beatbus_cmd("devices", "--timeout", "1", timeout=60)
    assert r.returncode == 2 and "--timeout applies to --leds" in r.stderr, r.stderr


def test_the_discover_route_answers_the_controller_with_a_device_name_and_ddp_url(wled, api):
    url, token = api
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as c:
        doc = c.get("/openapi.json").json()
        op = doc["paths"]["/api/led/discover"]["get"]
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/WledDiscovery"}
        assert {"401", "403", "503"} <= set(op["responses"]), op["responses"]
        assert c.get("/api/led/discover").status_code == 401                  # keys are on: read scope
        r = c.get("/api/led/discover", params={"timeout": 3}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["timeout_s"] == 3
        found = {d["name"]: d for d in body["devices"]}
        assert wled in found, body
        d = found[wled]
        assert d["output"] == "ddp://127.0.0.1" and d["addresses"] == ["127.0.0.1"] and d["port"] == 80
        assert d["device"] == wled.replace(" ", "-") and d["mac"] == MAC and d["properties"] == {"mac": MAC}
        r = c.get("/api/led/discover", params={"timeout": 60}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 422 and "timeout" in r.json()["detail"], r.text


@pytest.mark.slow
def test_find_wled_in_the_page_fills_the_device_form(wled, api, browser):
    url, token = api
    browser.get(f"{url}/#key={token}")
    browser.find_element(By.ID, "wled-find").click()
    row = f'#wled-found tr[data-wled="{wled}"]'
    eventually(lambda: browser.find_elements(By.CSS_SELECTOR, row), timeout=20,
               what=lambda: f"the controller listed ({browser.find_element(By.ID, 'wled-status').text!r})")
    assert browser.find_element(By.ID, "wled-status").text.endswith(" found")
    browser.find_element(By.CSS_SELECTOR, f"{row} .wled-add").click()
    assert browser.find_element(By.ID, "dev-output").get_attribute("value") == "ddp://127.0.0.1"
    assert browser.find_element(By.ID, "dev-name").get_attribute("value") == wled.replace(" ", "-")
    assert browser.find_element(By.ID, "dev-submit").text == "add device"     # adding, not editing: the user saves
