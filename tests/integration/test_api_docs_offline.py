"""``beatbus api``'s /docs and /redoc render with no internet: their files come from the API itself.

A real `beatbus api` process on the test broker; Debian's headless Chromium with every https
request blocked (a stage network without internet) renders the pages, read from the DOM.
"""
from __future__ import annotations

import httpx
import pytest
from selenium.webdriver.common.by import By

from support.api import api_command
from support.procs import wait_for

pytestmark = pytest.mark.slow


def test_the_api_reference_renders_offline_in_a_browser(broker, browser, tmp_path):
    cmd, url = api_command(broker.url, "http://127.0.0.1:9", tmp_path / "api.log")
    try:
        for page in ("/docs", "/redoc"):
            html = httpx.get(url + page, trust_env=False).text
            assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html, html
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*", "*cdn.jsdelivr.net*"]})
        browser.get(url + "/docs")
        paths = wait_for(lambda: {e.text.replace("\u200b", "") for e in
                                  browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}, 30)
        assert {"/health", "/api/sources", "/api/start-rhythm-mode"} <= paths, paths
        browser.get(url + "/redoc")
        title = wait_for(lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "h1") if "beatbus" in e.text], 30)
        assert title, browser.page_source[:500]
        assert wait_for(lambda: "start-rhythm-mode" in browser.page_source, 30), "ReDoc listed no operation"
    finally:
        assert cmd.stop() == 0, cmd.stderr()
