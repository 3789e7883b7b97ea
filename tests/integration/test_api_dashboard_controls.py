"""Every control and display of the dashboard, operated in headless Chromium against the real commands.

Started once for the module, as a user starts them, on the test broker: `beatbus api` (API keys on,
triggers to `beatbus dev error-generator`), `beatbus produce file --loop` (a synthetic pop song,
150 BPM, with sections) as source ``default`` and `beatbus produce click --bpm 90` as ``second``,
`beatbus process`, `beatbus intensity run`, `beatbus structure run` and `beatbus consume led
--output web://strip`. Each control is operated as a user does (clicks, typing, keys and drags on
sliders) and its effect is read outside the browser where there is one: the broker's streams,
the REST API, the error generator double's ``/received``, the LED consumer's log.
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
import soundfile as sf
from selenium.webdriver import ActionChains, Keys
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from beatbus import keys
from beatbus.api.auth import KeyStore
from beatbus.bus import Bus
from beatbus.consumers.trigger import PatternBook

from support.api import Command, api_command
from support.procs import eventually, free_port
from support.synth_cache import song

pytestmark = pytest.mark.slow      # a whole live stack and a browser: ~1-2 min

SONG_BPM, CLICK_BPM = 150.0, 90.0        # the pop song of support.synth_cache; the second source's click
LED_DEVICE, LED_PIXELS = "strip", 30
SECTION_LABELS = {"intro", "verse", "chorus", "bridge", "outro"}   # what the structure daemon names
CONTROL = keys.stream("default", keys.StreamKind.CONTROL)
BEATS = keys.stream("default", keys.StreamKind.BEATS)


@dataclass
class Stack:
    url: str
    token: str
    http: httpx.Client          # the API, with the key
    receiver: httpx.Client      # the error generator double
    bus: Bus
    led: Command
    song: str                   # the audio file source ``default`` plays

    def page(self, source: str = "default") -> str:
        """The dashboard's address with the key as a fragment (moved to sessionStorage, never sent)."""
        return f"{self.url}/?source={source}#key={self.token}"

    def state(self, source: str = "default") -> dict:
        return self.http.get(f"/api/sources/{source}").json()


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard-controls")
    audio = song(tmp_path_factory, "pop").audio
    bus = Bus.connect(broker.url, name="dashboard-controls")
    bus.redis.flushall()
    _, token = KeyStore(tmp / "api-keys.json").create(["read", "control", "trigger"], name="dashboard")
    daemon_env = {"REDIS_URL": broker.url, "BEATBUS_METRICS_ADDR": "off"}
    rx_port = free_port()
    commands: dict[str, Command] = {}
    try:
        # the daemons first: their start (imports, the tracker's first seconds) is the long part
        for name, args in (("song", ["produce", "file", "--loop", str(audio)]),
                           ("click", ["produce", "click", "--bpm", str(CLICK_BPM), "--source", "second"]),
                           ("process", ["process"]),
                           ("intensity", ["intensity", "run", "--sources", "default"]),
                           ("structure", ["structure", "run", "--sources", "default"]),
                           ("led", ["consume", "led", "--output", f"web://{LED_DEVICE}", "--pixels", str(LED_PIXELS),
                                    "--log-format", "json"]),
                           ("error-generator", ["dev", "error-generator", "--port", str(rx_port)])):
            commands[name] = Command(args, env=daemon_env, log=tmp / f"{name}.log")
        commands["error-generator"].wait_http(f"http://127.0.0.1:{rx_port}/health")
        commands["api"], url = api_command(broker.url, f"http://127.0.0.1:{rx_port}", tmp / "api.log",
                                           BEATBUS_API_KEYS_FILE=str(tmp / "api-keys.json"))
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False,
                          timeout=30) as http, \
                httpx.Client(base_url=f"http://127.0.0.1:{rx_port}", trust_env=False, timeout=10) as receiver:
            stack = Stack(url=url, token=token, http=http, receiver=receiver, bus=bus, led=commands["led"],
                          song=str(audio))

            def both_beating() -> bool:
                for name, cmd in commands.items():
                    assert cmd.proc.poll() is None, f"{name} exited:\n{cmd.stderr()[-3000:]}"
                sources = {s["source"]: s for s in http.get("/api/sources").json()["sources"]}
                return all((sources.get(name) or {}).get("bpm") for name in ("default", "second"))

            eventually(both_beating, timeout=120, what="beats of both sources", interval=0.5)
            yield stack
    finally:
        with ThreadPoolExecutor(max(1, len(commands))) as pool:     # they drain at the same time
            codes = dict(zip(commands, pool.map(Command.stop, commands.values())))
        bus.close()
    for name, code in codes.items():      # every command drains on SIGTERM and exits 0
        log = commands[name].stderr()
        assert code == 0 and "Traceback" not in log, f"{name}: exit {code}\n{log[-3000:]}"


# -- helpers --------------------------------------------------------------------------------
def text(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def value(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).get_attribute("value")


def open_live(browser, stack: Stack, source: str = "default") -> None:
    """Open the dashboard on ``source`` and wait until its beats arrive."""
    browser.get(stack.page(source))
    eventually(lambda: text(browser, "status") == f"{source} · live", timeout=30,
               what=lambda: f"the dashboard live on {source} (status {text(browser, 'status')!r})")


def no_console_errors(browser) -> None:
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def newest_control_id(bus: Bus) -> str:
    newest = bus.redis.xrevrange(CONTROL, count=1)
    return newest[0][0].decode() if newest else "0-0"


def beat_bpms_since(bus: Bus, since: str) -> set[float]:
    """The BPMs of source ``default``'s beats from entry ``since`` on, as the API rounds them."""
    return {round(json.loads(f[b"d"])["bpm"], 2) for _, f in bus.redis.xrange(BEATS, min=since)}


def controls_after(bus: Bus, after: str) -> list[tuple[str, dict]]:
    """ControlEvents on ``bb:default:control`` newer than entry ``after``: (id, event)."""
    return [(i.decode(), json.loads(f[b"d"])) for i, f in bus.redis.xrange(CONTROL, min=f"({after}")]


def led_applied(stack: Stack, after_chars: int) -> list[dict]:
    """The LED consumer's "LED control applied" log records written after ``after_chars`` of its log."""
    records = [json.loads(line) for line in stack.led.stderr()[after_chars:].splitlines() if line.startswith("{")]
    return [doc for doc in records if doc.get("msg") == "LED control applied"]


def received(stack: Stack) -> list[dict]:
    return stack.receiver.get("/received").json()


# -- displays -------------------------------------------------------------------------------
def test_tempo_section_intensity_and_led_displays_follow_the_live_daemons(stack, browser):
    open_live(browser, stack)
    # tempo: the processor's BPM of the 150 BPM song, as the REST API reads it from the broker
    eventually(lambda: abs(float(text(browser, "bpm")) - SONG_BPM) < 3, timeout=20,
               what=lambda: f"BPM near {SONG_BPM} (shown {text(browser, 'bpm')!r})")
    # the page and the API read the newest beat at two moments: in the song's breakdown the tracker's
    # tempo moves a few BPM per beat, so they are compared until both saw the same stretch
    eventually(lambda: abs(float(text(browser, "bpm")) - stack.state()["bpm"]) < 3, timeout=20,
               what=lambda: f"the shown BPM {text(browser, 'bpm')!r} near the API's {stack.state()['bpm']}")
    assert re.fullmatch(r"\d+\.[1-4]", text(browser, "position")), text(browser, "position")
    counts = set()
    eventually(lambda: counts.add(int(text(browser, "beat-count"))) or len(counts) >= 3, timeout=10,
               what="the beat count going up")
    assert 0 <= float(text(browser, "confidence")) <= 1
    assert re.fullmatch(r"-?\d+ ms", text(browser, "lag")), text(browser, "lag")
    newest_beat = json.loads(stack.bus.redis.xrevrange(keys.stream("default", "beats"), count=1)[0][1][b"d"])
    assert text(browser, "backend") == newest_beat["backend"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#metronome .dot")) == stack.state()["meter"]
    # section: a label the structure daemon decided, the one the REST API reads from the broker
    def section_shown() -> str | None:
        label = browser.find_element(By.ID, "section").get_attribute("data-label")
        return label if label in SECTION_LABELS and label == stack.state()["section"] else None

    label = eventually(section_shown, timeout=60,
                       what=lambda: "a section label from the structure daemon (shown "
                                    f"{text(browser, 'section')!r}, broker {stack.state().get('section')!r})")
    assert text(browser, "section").lower() == label                # the stylesheet capitalises it
    assert browser.find_elements(By.CSS_SELECTOR, f"#timeline .seg-{label}"), "no timeline segment"
    # a page opened mid-song draws the song so far from the server's history, not from what it saw
    history = stack.http.get("/api/sources/default/sections").json()["sections"]
    open_live(browser, stack)

    def timeline_is_the_history() -> bool:
        # read in one script: live section events redraw the timeline between two WebDriver calls
        drawn = browser.execute_script(
            "return Array.from(document.querySelectorAll('#timeline div'), (el) => el.title)")
        return drawn[:len(history)] == [s["label"] for s in history]

    eventually(timeline_is_the_history, timeout=10,
               what=lambda: f"the timeline drawing the server's history {[s['label'] for s in history]}")
    # intensity and level: values the intensity daemon publishes, changing as the song plays
    shown: set[str] = set()

    def intensity_moves() -> bool:
        shown.add(text(browser, "intensity"))
        return len(shown - {"–"}) >= 3

    eventually(intensity_moves, timeout=30, what=lambda: f"the intensity display changing (saw {shown})",
               interval=0.1)
    published = [json.loads(f[b"d"]) for _, f in
                 stack.bus.redis.xrevrange(keys.stream("default", "intensity"), count=1000)]
    daemon_values = {f"{ev['intensity']:.2f}" for ev in published if ev["type"] == "intensity"}
    assert shown - {"–"} & daemon_values, (shown, sorted(daemon_values)[:20])
    assert all(0 <= float(x) <= 1 for x in shown - {"–"})
    level = eventually(lambda: re.fullmatch(r"(-?\d+) dB", text(browser, "level")), timeout=10,
                       what="the audio level in dB")
    assert -60 <= int(level[1]) <= 0
    # the LED preview: the LED consumer's web:// device, relayed by the API
    eventually(lambda: text(browser, "led-mode") == f"{LED_DEVICE} · {LED_PIXELS} px", timeout=20,
               what=lambda: f"the LED preview of {LED_DEVICE} (shown {text(browser, 'led-mode')!r})")
    no_console_errors(browser)


def test_the_timeline_marks_the_transitions_the_intensity_daemon_publishes(stack, browser):
    open_live(browser, stack)
    since = f"{int(time.time() * 1000) + 1000}"      # the page is subscribed by then
    marked = ("build-up", "drop", "breakdown")

    def published() -> list[dict]:
        return [ev for _, f in stack.bus.redis.xrange(keys.stream("default", "intensity"), min=since)
                if (ev := json.loads(f[b"d"]))["type"] == "transition" and ev["kind"] in marked]

    def drawn() -> list[str]:
        return browser.execute_script("return Array.from(document.querySelectorAll('#timeline .mark'), (el) => el.title)")

    # the looped pop song has build-ups, drops and breakdowns: each one published is drawn, once
    eventually(lambda: {ev["kind"] for ev in published()} >= {"drop", "build-up"}
               and {ev["kind"] for ev in published()} <= set(drawn()), timeout=150, interval=0.5,
               what=lambda: f"marks of {[ev['kind'] for ev in published()]} on the timeline (drawn {drawn()})")
    starts = {(ev["kind"], ev["timestamp"]) for ev in published()}     # a build-up re-issued: one mark
    assert len(drawn()) >= len(starts), (drawn(), sorted(starts))
    no_console_errors(browser)


# -- the source picker ----------------------------------------------------------------------
def test_the_source_picker_switches_every_display_to_the_picked_source(stack, browser):
    open_live(browser, stack)
    picker = Select(browser.find_element(By.ID, "source-select"))
    listed = sorted(s["source"] for s in stack.http.get("/api/sources").json()["sources"])
    assert sorted(o.get_attribute("value") for o in picker.options) == listed == ["default", "second"]
    assert picker.first_selected_option.get_attribute("value") == "default"
    picker.select_by_visible_text("second")
    eventually(lambda: text(browser, "status") == "second · live", timeout=20,
               what=lambda: f"the dashboard on second (status {text(browser, 'status')!r})")
    eventually(lambda: abs(float(text(browser, "bpm")) - CLICK_BPM) < 3, timeout=20,
               what=lambda: f"the click's BPM (shown {text(browser, 'bpm')!r})")
    eventually(lambda: abs(float(text(browser, "bpm")) - stack.state("second")["bpm"]) < 3, timeout=20,
               what=lambda: f"the shown BPM {text(browser, 'bpm')!r} near the API's {stack.state('second')['bpm']}")
    Select(browser.find_element(By.ID, "source-select")).select_by_visible_text("default")
    eventually(lambda: abs(float(text(browser, "bpm")) - SONG_BPM) < 3, timeout=20,
               what=lambda: f"back on the song's BPM (shown {text(browser, 'bpm')!r})")
    no_console_errors(browser)


# -- live controls --------------------------------------------------------------------------
def test_live_controls_publish_control_events_the_led_consumer_applies(stack, browser):
    open_live(browser, stack)
    start, log_mark = newest_control_id(stack.bus), len(stack.led.stderr())

    def sent(field: str, expected) -> None:
        """Wait for the newest event of ``field`` to be ``expected``, and the page to name its entry."""
        def newest() -> str | None:
            events = [(i, ev[field]) for i, ev in controls_after(stack.bus, start) if ev.get(field) is not None]
            return events[-1][0] if events and events[-1][1] == expected else None

        entry = eventually(newest, timeout=10, what=lambda: f"a ControlEvent with {field}={expected!r} "
                                                         f"(events {controls_after(stack.bus, start)})")
        eventually(lambda: text(browser, "control-result") == f"sent {field} → {entry}", timeout=10,
                   what=lambda: f"the page saying it sent {field} (shows {text(browser, 'control-result')!r}; "
                                f"events {controls_after(stack.bus, start)})")

    # sensitivity: keys on the slider (End, then three steps left)
    slider = browser.find_element(By.ID, "sensitivity")
    slider.send_keys(Keys.END)
    sent("sensitivity", 1.0)
    slider.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    sent("sensitivity", 0.97)
    assert value(browser, "sensitivity") == "0.97" and text(browser, "sensitivity-out") == "0.97"
    # BPM override: nothing typed is refused in the page; a typed BPM is sent; clear sends 0
    before = len(controls_after(stack.bus, start))
    browser.find_element(By.ID, "bpm-apply").click()
    eventually(lambda: text(browser, "control-result") == "enter a BPM (30-300)", timeout=5, what="the refusal")
    assert "error" in browser.find_element(By.ID, "control-result").get_attribute("class")
    browser.find_element(By.ID, "bpm-override").send_keys("128.5")
    browser.find_element(By.ID, "bpm-apply").click()
    sent("bpm_override", 128.5)
    assert len(controls_after(stack.bus, start)) == before + 1        # the refused click sent nothing
    browser.find_element(By.ID, "bpm-clear").click()
    sent("bpm_override", 0)
    assert value(browser, "bpm-override") == ""
    # LED effects: off, then on again
    effects = browser.find_element(By.ID, "effects")
    effects.click()
    sent("effects_enabled", False)
    eventually(lambda: led_applied(stack, log_mark) and led_applied(stack, log_mark)[-1]["effects_enabled"] is False,
               timeout=10, what="the LED consumer turning effects off")
    effects.click()
    sent("effects_enabled", True)
    # LED offset: the slider dragged to the right of its middle (0 ms)
    offset = browser.find_element(By.ID, "led-offset")
    ActionChains(browser).click_and_hold(offset).move_by_offset(offset.size["width"] // 6, 0).release().perform()
    chosen = float(value(browser, "led-offset"))
    assert chosen > 0 and text(browser, "offset-out") == f"{chosen:g} ms"
    sent("led_offset_ms", chosen)
    # the LED consumer applied each one, in order (it logs every control event it applies)
    ours = controls_after(stack.bus, start)
    eventually(lambda: len(led_applied(stack, log_mark)) == len(ours), timeout=10,
               what=lambda: f"{len(ours)} controls applied by the LED consumer ({led_applied(stack, log_mark)})")
    last = led_applied(stack, log_mark)[-1]
    assert last["offset_ms"] == chosen and last["effects_enabled"] is True, last
    # a control another client sends shows in the page's controls
    r = stack.http.post("/api/sources/default/control",
                        json={"sensitivity": 0.25, "effects_enabled": False, "led_offset_ms": -40})
    assert r.status_code == 200, r.text
    eventually(lambda: (value(browser, "sensitivity"), text(browser, "sensitivity-out"),
                        effects.is_selected(), value(browser, "led-offset"), text(browser, "offset-out"))
               == ("0.25", "0.25", False, "-40", "-40 ms"), timeout=10, what="the other client's control shown")
    assert stack.http.post("/api/sources/default/control", json={"effects_enabled": True,
                                                                 "led_offset_ms": 0}).status_code == 200
    no_console_errors(browser)


# what a failed tap calibration shows: the errors kept, the skew and the prediction the taps were judged by
PAGE_TAP_STATE = ("return {errors: st.tapErrors, skew_ms: st.clockSkew, skews: st.skews.length,"
                  " next_beat: st.nextBeat, period: st.period}")


def test_tap_to_calibrate_and_apply_the_offset(stack, browser):
    open_live(browser, stack)
    assert text(browser, "tap-bpm") == "–" and not browser.find_element(By.ID, "tap-apply").is_enabled()
    # the space bar taps (outside inputs)
    ActionChains(browser).send_keys(Keys.SPACE).pause(0.3).send_keys(Keys.SPACE).pause(0.3) \
        .send_keys(Keys.SPACE).perform()
    eventually(lambda: re.fullmatch(r"\d+\.\d", text(browser, "tap-bpm")), timeout=5, what="a tapped tempo")
    # taps on the TAP button in time with the beats the processor predicts (same clock: one machine),
    # timed in the page: a WebDriver click's latency would be the test's jitter, not a listener's
    browser.refresh()
    eventually(lambda: text(browser, "status") == "default · live", timeout=30, what="live again")
    # the page learns the clock skew from the fastest of its recent beats' deliveries: tap once it has
    # a few (right after a reload, under load, the first deliveries can all be late by more than the
    # 30 % of a beat a tap may miss by)
    eventually(lambda: int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-beats") or 0) >= 8,
               timeout=30, what="eight beats on the reloaded page")
    beat = json.loads(stack.bus.redis.xrevrange(keys.stream("default", "beats"), count=1)[0][1][b"d"])
    browser.set_script_timeout(30)
    browser.execute_async_script("""
        const [next, period, n, done] = arguments, tap = document.getElementById('tap');
        let t = next * 1000;
        while (t < Date.now() + 300) t += period * 1000;
        const times = Array.from({length: n}, (_, k) => t + k * period * 1000);
        times.forEach((at) => setTimeout(() => tap.click(), at - Date.now()));
        setTimeout(done, times[n - 1] - Date.now() + 50);
    """, beat["next_beat_system_time"], 60.0 / beat["bpm"], 16)
    assert abs(float(text(browser, "tap-bpm")) - beat["bpm"]) < 10, text(browser, "tap-bpm")
    # a tap the machine delays (a late timer under load) is dropped, not averaged: 4 of 16 suffice
    tapped = eventually(lambda: re.fullmatch(r"(-?\d+) ms", text(browser, "tap-offset")), timeout=5,
                        what=lambda: f"a tapped offset (shows {text(browser, 'tap-offset')!r}; the page's state: "
                                     f"{browser.execute_script(PAGE_TAP_STATE)}, the beat tapped to: {beat})")
    offset_ms = int(tapped[1])
    assert abs(offset_ms) < 0.3 * 60000 / beat["bpm"]
    start, log_mark = newest_control_id(stack.bus), len(stack.led.stderr())
    apply = browser.find_element(By.ID, "tap-apply")
    assert apply.is_enabled()
    apply.click()
    assert value(browser, "led-offset") == str(offset_ms) and text(browser, "offset-out") == f"{offset_ms} ms"
    eventually(lambda: [ev["led_offset_ms"] for _, ev in controls_after(stack.bus, start)] == [offset_ms],
               timeout=10, what=f"a ControlEvent with led_offset_ms={offset_ms}")
    eventually(lambda: [d["offset_ms"] for d in led_applied(stack, log_mark)] == [offset_ms], timeout=10,
               what="the LED consumer applying the tapped offset")
    no_console_errors(browser)


# -- rhythm mode ----------------------------------------------------------------------------
def test_rhythm_mode_analyze_start_stop_and_one_trigger(stack, browser, tmp_path):
    open_live(browser, stack)

    def out() -> str:
        return text(browser, "rhythm-result")

    # analysis from typed metadata: the plan drawn is the API's plan for exactly those fields
    for field, typed in (("song-title", "Dashboard song"), ("song-duration", "60"), ("song-genre", "techno")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(typed)
    browser.find_element(By.CSS_SELECTOR, "#analyze button[type=submit]").click()
    expected = stack.http.post("/api/analyze-song", json={"title": "Dashboard song", "duration": 60,
                                                          "genre": "techno"}).json()
    eventually(lambda: out().startswith("metadata-heuristic"), timeout=10,
               what=lambda: f"the analysis (shows {out()!r})")
    assert out() == f"metadata-heuristic: {expected['tempo']:g} BPM, 4/4, {len(expected['sections'])} sections"
    assert [d.text for d in browser.find_elements(By.CSS_SELECTOR, "#plan div")] == \
        [s["label"] for s in expected["sections"]]
    # analysis from an audio file (it wins over the fields): 15 s of the song, tracked by the API
    clip = tmp_path / "song-clip.wav"
    sr = sf.info(stack.song).samplerate
    sf.write(clip, sf.read(stack.song, frames=15 * sr, always_2d=True)[0], sr)
    browser.find_element(By.ID, "song-file").send_keys(str(clip))
    browser.find_element(By.CSS_SELECTOR, "#analyze button[type=submit]").click()
    found = eventually(lambda: re.fullmatch(r"audio: ([\d.]+) BPM, (\d+)/4, (\d+) sections", out()), timeout=60,
                       what=lambda: f"the audio analysis (shows {out()!r})")
    assert abs(float(found[1]) - SONG_BPM) < 5, out()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#plan div")) == int(found[3])
    # start: the API runs rhythm mode for the typed time on the live source; triggers reach the generator
    stack.receiver.delete("/received")
    run_for = browser.find_element(By.ID, "rhythm-duration")
    run_for.clear()
    run_for.send_keys("30")
    browser.find_element(By.ID, "rhythm-start").click()
    eventually(lambda: out() == "rhythm mode: live on default", timeout=15, what=lambda: f"the start (shows {out()!r})")
    status = stack.http.get("/api/rhythm-mode").json()
    assert status["active"] and (status["mode"], status["source"]) == ("live", "default"), status
    assert status["ends_at"] - status["started_at"] == pytest.approx(30, abs=0.5)
    eventually(lambda: received(stack), timeout=15, what="triggers at the error generator")
    eventually(lambda: (m := re.fullmatch(r"live on default · (\d+) triggers", text(browser, "rhythm-status")))
               and int(m[1]) > 0, timeout=15,
               what=lambda: f"the run's status (shows {text(browser, 'rhythm-status')!r})")
    # stop
    browser.find_element(By.ID, "rhythm-stop").click()
    eventually(lambda: out().startswith("stopped: {"), timeout=15, what=lambda: f"the stop (shows {out()!r})")
    assert stack.http.get("/api/rhythm-mode").json()["active"] is False
    eventually(lambda: text(browser, "rhythm-status") == "idle", timeout=10, what="the status back to idle")
    # one manual trigger: the picked section's pattern, the typed beat, the live tempo of this source
    stack.receiver.delete("/received")
    Select(browser.find_element(By.ID, "trigger-section")).select_by_visible_text("bridge")
    beat_num = browser.find_element(By.ID, "trigger-beat")
    beat_num.clear()
    beat_num.send_keys("7")
    newest_beat = stack.bus.redis.xrevrange(BEATS, count=1)[0][0].decode()
    browser.find_element(By.ID, "trigger-fire").click()
    pattern = PatternBook().pattern_for("bridge")
    eventually(lambda: out() == f"trigger {pattern} → delivered (200)", timeout=15,
               what=lambda: f"the trigger (shows {out()!r})")
    (got,) = [r["body"] for r in received(stack) if r["body"] and r["body"]["beat"] == 7]
    assert (got["section"], got["error_type"]) == ("bridge", pattern)
    # the tempo of a beat the API saw while firing (the tracker's tempo moves from beat to beat)
    assert got["tempo"] in beat_bpms_since(stack.bus, newest_beat), (got["tempo"], beat_bpms_since(stack.bus, newest_beat))
    no_console_errors(browser)


# -- the API key form -----------------------------------------------------------------------
def test_the_key_form_asks_refuses_forgets_and_uses_a_key(stack, browser):
    browser.get(f"{stack.url}/?source=default")

    def stored() -> str | None:
        return browser.execute_script("return sessionStorage.getItem('beatbus.apiKey')")

    def message() -> str:
        return text(browser, "key-msg")

    def use_key(key: str) -> None:
        eventually(lambda: browser.find_element(By.ID, "key-form").is_displayed(), timeout=10, what="the key form")
        browser.find_element(By.ID, "key-input").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()

    eventually(lambda: browser.find_element(By.ID, "key-form").is_displayed(), timeout=10,
               what="the form after a 401")
    assert message() == "this API needs a key"
    wrong = "bb_nope_" + "x" * 43
    use_key(wrong)
    eventually(lambda: message() == "that API key was refused: enter another", timeout=10,
               what=lambda: f"the refusal of a wrong key (shows {message()!r})")
    assert stored() == wrong
    # forget: the refused key leaves the tab, and the API asks for one again
    browser.find_element(By.ID, "key-forget").click()
    eventually(lambda: message() == "this API needs a key", timeout=10,
               what=lambda: f"the form asking again (shows {message()!r})")
    assert stored() is None
    use_key(stack.token)
    eventually(lambda: text(browser, "status") == "default · live", timeout=30, what="live with the key")
    assert not browser.find_element(By.ID, "key-form").is_displayed() and stored() == stack.token
