"""``beatbus api``'s /docs and /redoc render with no internet: their files come from the API itself.

A real `beatbus api` process on the test broker; Debian's headless Chromium with every https
request blocked (a stage network without internet) renders the pages, read from the DOM.
"""
from __future__ import annotations

import time

import httpx
import pytest
from selenium.webdriver.common.by import By

from support.api import api_command

pytestmark = pytest.mark.slow


def _until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_the_api_reference_renders_offline_in_a_browser(broker, browser, tmp_path):
    cmd, url = api_command(broker.url, "http://127.0.0.1:9", tmp_path / "api.log")
    try:
        for page in ("/docs", "/redoc"):
            html = httpx.get(url + page).text
            assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html, html
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*", "*cdn.jsdelivr.net*"]})
        browser.get(url + "/docs")
        paths = _until(lambda: {e.text.replace("\u200b", "") for e in
                                browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")})
        assert {"/health", "/api/sources", "/api/start-rhythm-mode"} <= paths, paths
        browser.get(url + "/redoc")
        title = _until(lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "h1") if "beatbus" in e.text])
        assert title, browser.page_source[:500]
        assert _until(lambda: "start-rhythm-mode" in browser.page_source), "ReDoc listed no operation"
    finally:
        assert cmd.stop() == 0, cmd.stderr()
