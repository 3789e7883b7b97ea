"""Regenerate the README's Lighting walkthrough screenshots (``docs/img/lighting-*.png``).

    .venv/bin/python docs/screenshots.py SONG.flac

Runs the walkthrough as a user would: ``beatbus run SONG --loop --led web://preview`` (its own
embedded broker, the dashboard served in its process), then headless Chromium (Debian's, as the
dashboard tests use) opens the printed URL, waits for the beats and a few sections, adds a DDP
device in the Lights panel, gives it the ``scenes`` effect, saves a preset and photographs the
page. Nothing here is part of the installed package.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"


def wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"screenshots: gave up waiting for {what}")


def main(song: str) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    OUT.mkdir(parents=True, exist_ok=True)
    # stands in for the porch's WLED: a UDP port that takes the DDP frames (a closed one reads "output down")
    strip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    strip.bind(("127.0.0.1", 0))
    tmp = Path(tempfile.mkdtemp(prefix="beatbus-shots-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
    env["BEATBUS_STATE_DIR"] = str(tmp / "state")
    err = open(tmp / "run.err", "w+")
    run = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "run", song, "--loop", "--led", "web://preview",
                            "--pixels", "120", "--effect", "section_colors"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=err)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    try:
        url = wait(lambda: (m := re.search(r"in the dashboard: (\S+)", (tmp / "run.err").read_text())) and m[1],
                   120, "the dashboard URL from `beatbus run`")
        driver.get(url)
        text = lambda el: driver.find_element(By.ID, el).text          # noqa: E731
        wait(lambda: re.fullmatch(r"\d+(\.\d)?", text("bpm")), 60, "the live BPM")
        wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#timeline div")) >= 2, 120, "two sections")
        driver.set_window_size(1280, driver.execute_script("return document.body.scrollHeight") + 40)
        driver.save_screenshot(str(OUT / "lighting-1-dashboard.png"))

        # Lights: add the strip on the porch (a stand-in UDP port here), give it scenes, save a preset
        driver.find_element(By.ID, "dev-name").send_keys("porch")
        driver.find_element(By.ID, "dev-output").send_keys(f"ddp://127.0.0.1:{strip.getsockname()[1]}")
        pixels = driver.find_element(By.ID, "dev-pixels")
        pixels.clear()
        pixels.send_keys("150")
        driver.find_element(By.ID, "dev-submit").click()
        wait(lambda: "porch" in text("lights-devices"), 30, "the new device in the list")
        wait(lambda: "porch" in [o.get_attribute("value") for o in
                                 Select(driver.find_element(By.ID, "fx-device")).options], 10, "porch to pick")
        Select(driver.find_element(By.ID, "fx-device")).select_by_value("porch")
        Select(driver.find_element(By.ID, "fx-effect")).select_by_value("scenes")
        wait(lambda: driver.find_elements(By.ID, "fx-param-every_bars"), 10, "the scenes parameters")
        every = driver.find_element(By.ID, "fx-param-every_bars")
        every.clear()
        every.send_keys("16")
        driver.find_element(By.ID, "fx-apply").click()
        wait(lambda: "scenes" in text("lights-devices") and "down" not in text("lights-devices"), 30,
             "scenes on the porch, sending")
        driver.find_element(By.ID, "preset-name").send_keys("club")
        driver.find_element(By.ID, "preset-save").click()
        wait(lambda: "club" in [o.text for o in Select(driver.find_element(By.ID, "preset-select")).options],
             30, "the saved preset")
        time.sleep(2)                                      # a few frames of the new effect in the preview
        driver.set_window_size(1280, driver.execute_script("return document.body.scrollHeight") + 40)
        driver.find_element(By.ID, "lights-card").screenshot(str(OUT / "lighting-2-lights.png"))
        driver.find_element(By.ID, "led-card").screenshot(str(OUT / "lighting-3-preview.png"))
    finally:
        driver.quit()
        run.terminate()
        run.wait(30)
        strip.close()
    for name in sorted(OUT.glob("lighting-*.png")):
        print(name.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))
