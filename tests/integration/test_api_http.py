"""The HTTP API through a real uvicorn server on loopback: every endpoint, happy path and bad input."""
from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
import soundfile as sf
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from beatbus import keys
from beatbus.api.app import ApiLimits, create_app
from beatbus.api.server import ApiServer
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.trigger import load_trigger_config
from beatbus.lab.doubles.error_generator import ReferenceReceiver
from beatbus.schemas import BeatEvent, IntensityEvent, SectionEvent, TransitionEvent

from support.paths import BEATS_DIR
from support.procs import free_port

LIMITS = ApiLimits(body_bytes=16 * 1024, upload_bytes=1024 * 1024, upload_seconds=20.0)


@pytest.fixture(scope="module")
def receiver():
    with ReferenceReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def api_settings(broker):
    return load_settings({"redis_url": broker.url, "metrics_addr": "off", "heartbeat": 0.2, "lease_ttl": 1.0,
                          "block_ms": 100, "claim_idle_ms": 200}, env={})


@pytest.fixture(scope="module")
def server(broker, api_settings, receiver):
    bus = Bus.connect(broker.url, name="api-test")
    trigger = load_trigger_config({"url": receiver.url, "max_age": 5.0, "backoff_base": 0.005}, env={})
    app = create_app(bus, api_settings, trigger=trigger, limits=LIMITS)
    with ApiServer(app, port=free_port()) as srv:
        yield srv
    bus.close()


@pytest.fixture
def client(server, bus, receiver):
    """A client against the shared server, on a flushed broker and an empty, healthy receiver."""
    receiver.clear()
    receiver.set_fault(status=None)
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as c:
        yield c
        c.post("/api/stop-rhythm-mode")


def beat(source: str, i: int, bpm: float = 120.0, **kw) -> BeatEvent:
    now = time.time()
    return BeatEvent(source=source, timestamp=i * 60 / bpm, system_time=now - 0.03, is_downbeat=i % 4 == 0, bpm=bpm,
                     intensity=0.4, confidence=0.8, beat=i, beat_in_bar=i % 4 + 1, bar=i // 4, meter=4,
                     next_beat_time=(i + 1) * 60 / bpm, next_beat_system_time=now + 60 / bpm, emitted_at=now, **kw)


def live_source(bus, name: str) -> None:
    bus.heartbeat(name)


def detail(r: httpx.Response) -> str:
    return r.json()["detail"]


def wait_for(cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := cond()):
            return v
        time.sleep(0.02)
    return cond()


# -- health, dashboard, metrics ---------------------------------------------------------------
def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "healthy" and doc["service"] == "beatbus" and doc["fpga_enabled"] is False
    assert doc["backends"]["broker"] == "ok" and doc["backends"]["beat"] == "beatnet"
    assert doc["backends"]["error_generator"] == "circuit closed"


def test_dashboard_openapi_and_metrics(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="bpm"', 'id="metronome"', 'id="section"', 'id="timeline"', 'id="intensity-bar"',
                    'id="level-bar"', 'id="led-canvas"', 'id="controls"', 'id="tap"', 'id="rhythm-start"'):
        assert element in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/api/analyze-song", "/api/start-rhythm-mode", "/api/stop-rhythm-mode", "/api/beat-trigger",
            "/api/sources", "/api/sources/{source}", "/api/sources/{source}/control"} <= set(paths)
    assert client.get("/docs").status_code == 200
    m = client.get("/metrics")
    assert m.status_code == 200 and "beatbus_events_published_total" in m.text


# -- analyze-song ---------------------------------------------------------------------------------
def test_analyze_song_metadata_heuristic(client):
    r = client.post("/api/analyze-song", json={"title": "Song", "duration": 180, "tempo": 120})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["method"] == "metadata-heuristic" and plan["tempo"] == 120 and plan["meter"] == 4
    labels = [s["label"] for s in plan["sections"]]
    assert labels == ["intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"]
    assert plan["sections"][0]["start"] == 0 and plan["sections"][-1]["end"] == 180
    assert all(a["end"] == b["start"] for a, b in zip(plan["sections"], plan["sections"][1:]))
    assert {s["label"]: s["pattern"] for s in plan["sections"]}["bridge"] == "chaotic"
    assert sum(s["bars"] for s in plan["sections"]) == 90          # 180 s at 120 BPM in 4/4
    assert client.post("/api/analyze-song", json={"duration": 60, "genre": "Metal"}).json()["tempo"] == 140
    short = client.post("/api/analyze-song", json={"duration": 6, "tempo": 100}).json()
    assert [s["label"] for s in short["sections"]] == ["verse"] and short["sections"][0]["end"] == 6


@pytest.mark.parametrize("body, status, needle", [
    ({"title": "x", "duration": 2}, 422, "body.duration: Input should be greater than or equal to 5"),
    ({"audio_features": {"tempo": 500}}, 422, "body.audio_features.tempo"),
    ({"duration": 99999}, 422, "body.duration: Input should be less than or equal to 3600"),
    ({"duration": 60, "tempo": 10}, 422, "body.tempo"),
    ({"duration": 60, "meter": 40}, 422, "body.meter"),
    ({"duration": "long"}, 422, "body.duration"),
])
def test_analyze_song_bad_metadata(client, body, status, needle):
    r = client.post("/api/analyze-song", json=body)
    assert r.status_code == status and needle in detail(r), r.text


def test_analyze_song_bad_content(client):
    r = client.post("/api/analyze-song", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "body" in detail(r)
    r = client.post("/api/analyze-song", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "content-type 'text/plain'" in detail(r)


def test_analyze_song_audio_upload(client):
    data = (BEATS_DIR / "gtzan_disco_00000.flac").read_bytes()
    r = client.post("/api/analyze-song", content=data, headers={"content-type": "audio/flac", "x-filename": "disco"})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["method"] == "audio" and plan["title"] == "disco"
    assert plan["duration"] == pytest.approx(17.1, abs=0.05) and plan["beats"] >= 15
    assert 100 <= plan["tempo"] <= 135 and plan["sections"][-1]["end"] == pytest.approx(plan["duration"])


def test_analyze_song_audio_is_decoded_whole_from_the_first_beat(client):
    """An upload is decoded offline: every annotated beat from the first (0.25 s), where the causal
    tracker's first beat comes 6.5 s in and it finds 12 of the 31."""
    name = "gtzan_jazz_00002"
    annotated = np.loadtxt(BEATS_DIR / f"{name}.beats", ndmin=2)
    r = client.post("/api/analyze-song", content=(BEATS_DIR / f"{name}.flac").read_bytes(),
                    headers={"content-type": "audio/flac"})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert abs(plan["beats"] - len(annotated)) <= 2, plan
    assert plan["tempo"] == pytest.approx(60.0 / np.median(np.diff(annotated[:, 0])), rel=0.05)
    assert plan["meter"] == int(annotated[:, 1].max())


def _wav(seconds: float, sr: int = 8000, noise: bool = False) -> bytes:
    buf = io.BytesIO()
    x = np.random.default_rng(0).normal(0, 0.01, int(seconds * sr)) if noise else np.zeros(int(seconds * sr))
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_analyze_song_bad_uploads(client):
    r = client.post("/api/analyze-song", content=b"definitely not audio" * 50,
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415 and detail(r).startswith("file: not a decodable audio file")
    assert "beatbus-upload" not in detail(r)                  # no server paths in messages
    r = client.post("/api/analyze-song", content=b"", headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "file" in detail(r)
    r = client.post("/api/analyze-song", content=_wav(25.0), headers={"content-type": "audio/wav"})
    assert r.status_code == 413 and "longer than the limit of 20 s" in detail(r)        # checked before analysis
    r = client.post("/api/analyze-song", content=_wav(6.0), headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "too few to plan" in detail(r)                      # silence has no beats
    r = client.post("/api/analyze-song", content=b"\0" * (LIMITS.upload_bytes + 1),
                    headers={"content-type": "audio/wav"})
    assert r.status_code == 413


def test_body_size_limit_on_json_routes(client):
    big = {"section": "verse", "beat_num": 1, "source": "x" * 64, "pad": "y" * (LIMITS.body_bytes + 10)}
    r = client.post("/api/beat-trigger", content=orjson.dumps(big), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/analyze-song", content=orjson.dumps({"duration": 60, "title": "t" * (LIMITS.body_bytes)}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks():                      # no Content-Length: counted as it streams
        for _ in range(20):
            yield b" " * 1024

    r = client.post("/api/beat-trigger", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and detail(r) == f"request body is larger than the limit of {LIMITS.body_bytes} bytes"
    r = client.post("/api/sources/stage/control", content=b" " * (LIMITS.body_bytes + 1),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/json", r.text   # was plain text


@pytest.mark.parametrize("path", ["/api/beat-trigger", "/api/start-rhythm-mode", "/api/sources/stage/control",
                                  "/api/analyze-song"])
def test_malformed_json_is_said_one_way(client, bus, path):
    live_source(bus, "stage")
    r = client.post(path, content=b'{"section": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and detail(r) == "body: invalid JSON (Expecting value at position 12)", r.text
    r = client.post(path, content=b'\xff{}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and detail(r) == "body: invalid JSON (not UTF-8 text at position 0)", r.text


def test_openapi_documents_every_answer(client):
    """Item 12: one error body on every route, the real ranges, security only where keys exist."""
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "securitySchemes" not in doc["components"]   # open mode
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = {c: r["content"]["application/json"]["schema"] for c, r in op["responses"].items()
                     if c[0] in "45"}
            expect = {"422", "413"} if "requestBody" in op else set()
            expect |= {"401", "403", "429"} if path != "/health" else {"503"}
            expect |= {"404"} if "{" in path else set()
            assert expect <= set(codes), (method, path, sorted(codes))
            assert all(s == error for c, s in codes.items() if c not in ("502", "503")), (method, path, codes)
            assert "security" not in op
    bpm = schemas["ControlRequest"]["properties"]["bpm_override"]["anyOf"]
    assert {"type": "number", "enum": [0]} in bpm and {"type": "number", "minimum": 30.0, "maximum": 300.0} in bpm
    assert (schemas["SongPlan"]["properties"]["meter"]["minimum"], schemas["SongPlan"]["properties"]["meter"]["maximum"]) \
        == (2, 12)
    health = doc["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert health == {"$ref": "#/components/schemas/Health"}


# -- sources and controls --------------------------------------------------------------------------
def test_sources_state(client, bus):
    assert client.get("/api/sources").json() == {"sources": []}
    live_source(bus, "stage")
    for i in range(6):
        bus.publish(keys.stream("stage", "beats"), beat("stage", i), maxlen=100)
    now = time.time()
    bus.publish(keys.stream("stage", "sections"), SectionEvent(
        source="stage", start=1.0, system_time=now, emitted_at=now, label="chorus", confidence=0.8,
        status="tentative"), maxlen=100)
    bus.publish(keys.stream("stage", "intensity"), IntensityEvent(
        source="stage", timestamp=2.0, system_time=now, emitted_at=now, intensity=0.75, rms=0.1,
        loudness_lufs=-20, flux=1.0, centroid_hz=1000, bass=0.5, mids=0.5, highs=0.5), maxlen=100)
    listed = client.get("/api/sources").json()["sources"]
    assert [s["source"] for s in listed] == ["stage"]
    s = client.get("/api/sources/stage").json()
    assert s["live"] is True and s["bpm"] == 120 and s["beat"] == 5 and s["position"] == "2.2"
    assert s["section"] == "chorus" and s["intensity"] == 0.75 and s["level_db"] == -20.0
    assert s["lag"] == pytest.approx(0.03, abs=0.005) and 0 <= s["age"] < 5
    r = client.get("/api/sources/nobody")
    assert r.status_code == 404 and "'nobody' is unknown" in detail(r)
    r = client.get("/api/sources/bad name!")
    assert r.status_code == 422 and "path.source" in detail(r)


def test_section_history_is_the_current_run_with_relabels_and_no_hints(client, bus):
    """GET /api/sources/{source}/sections: what a page opened mid-song draws as the song so far."""
    live_source(bus, "stage")
    stream = keys.stream("stage", "sections")
    now = time.time()

    def section(label, start, status="confirmed", end=None, origin=now):
        bus.publish(stream, SectionEvent(source="stage", start=start, end=end, system_time=origin + start,
                                         emitted_at=origin + start, label=label, confidence=0.8, status=status),
                    maxlen=1000)

    section("verse", 0.0, origin=now - 100)    # an earlier run of the source: not this song
    section("chorus", 30.0, origin=now - 100)
    section("intro", 0.0)                 # the producer started again: its clock restarts at 0
    section("verse", 8.0, "tentative")    # a hint, withdrawn: never shown
    section("verse", 8.5)
    section("chorus", 20.0)
    section("bridge", 8.5, "revised", end=20.0)   # a relabel of a past section
    bus.redis.xadd(stream, {"d": b"{not an event"})
    got = client.get("/api/sources/stage/sections").json()
    assert got["source"] == "stage"
    assert [(s["label"], s["start"], s["end"], s["status"]) for s in got["sections"]] == [
        ("intro", 0.0, 8.5, "confirmed"), ("bridge", 8.5, 20.0, "revised"), ("chorus", 20.0, None, "confirmed")]
    assert got["sections"][2]["system_time"] == pytest.approx(now + 20.0)
    r = client.get("/api/sources/nobody/sections")
    assert r.status_code == 404 and "'nobody' is unknown" in detail(r)


def test_source_state_dead_letters_malformed_entries(client, bus):
    live_source(bus, "stage")
    beats = keys.stream("stage", "beats")
    bus.publish(beats, beat("stage", 3), maxlen=100)
    bad = bus.redis.xadd(beats, {"d": b"{not an event"}).decode()
    assert client.get("/api/sources/stage").json()["beat"] == 3          # the newest good beat
    dead = bus.redis.xrange(keys.dead_letter(beats))
    assert [(f[b"origin_id"].decode(), f[b"reason"]) for _, f in dead] == [(bad, b"malformed")]


def test_source_control_publishes_a_control_event(client, bus):
    live_source(bus, "stage")
    r = client.post("/api/sources/stage/control", json={"sensitivity": 0.7, "led_offset_ms": -40})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["stream"] == "bb:{stage}:control"
    entries = bus.redis.xrange(keys.stream("stage", "control"))
    assert len(entries) == 1 and entries[0][0].decode() == doc["id"]
    event = orjson.loads(entries[0][1][b"d"])
    assert event["type"] == "control" and event["source"] == "stage" and event["sensitivity"] == 0.7
    assert event["led_offset_ms"] == -40 and event["bpm_override"] is None and event["issued_at"] > 0
    r = client.post("/api/sources/stage/control", json={"bpm_override": 0, "effects_enabled": False})
    assert r.status_code == 200 and r.json()["event"]["bpm_override"] == 0


@pytest.mark.parametrize("path, body, status, needle", [
    ("/api/sources/stage/control", {"sensitivity": 2}, 422, "body.sensitivity"),
    ("/api/sources/stage/control", {}, 422, "give at least one of"),
    ("/api/sources/stage/control", {"bpm_override": 10}, 422, "bpm_override=10.0 must be 0 (clear) or 30-300"),
    ("/api/sources/stage/control", {"volume": 1}, 422, "body.volume"),
    ("/api/sources/stage/control", {"led_offset_ms": 5000}, 422, "body.led_offset_ms"),
    ("/api/sources/ghost/control", {"sensitivity": 0.5}, 404, "'ghost' is unknown"),
])
def test_source_control_bad_input(client, bus, path, body, status, needle):
    live_source(bus, "stage")
    r = client.post(path, json=body)
    assert r.status_code == status and needle in detail(r), r.text
    assert not bus.redis.exists(keys.stream("stage", "control"))


# -- manual trigger ----------------------------------------------------------------------------------
def test_beat_trigger_posts_one_trigger(client, receiver):
    r = client.post("/api/beat-trigger", json={"section": "chorus", "beat_num": 7, "tempo": 128})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["outcome"] == "delivered" and doc["status"] == 200 and doc["attempts"] == 1
    got = receiver.received()
    assert len(got) == 1 and got[0]["idempotency_key"] == doc["idempotency_key"]
    assert got[0]["body"] | {} == {**got[0]["body"], "trigger": "rhythm", "error_type": "business", "beat": 7,
                                   "section": "chorus", "tempo": 128.0}


def test_beat_trigger_failing_receiver_is_502(client, receiver):
    receiver.set_fault(status=503)
    r = client.post("/api/beat-trigger", json={"section": "verse", "beat_num": 1})
    assert r.status_code == 502 and r.json()["outcome"] == "failed" and r.json()["attempts"] == 4
    assert len(receiver.received()) == 4


@pytest.mark.parametrize("body, needle", [
    ({"section": "solo", "beat_num": 1}, "body.section"),
    ({"section": "verse", "beat_num": -1}, "body.beat_num"),
    ({"section": "verse", "beat_num": 1.5}, "body.beat_num"),
    ({"section": "verse", "beat_num": 1, "tempo": 0}, "body.tempo"),
    ({"section": "verse", "beat_num": 1, "url": "http://elsewhere"}, "body.url"),
])
def test_beat_trigger_bad_input(client, receiver, body, needle):
    r = client.post("/api/beat-trigger", json=body)
    assert r.status_code == 422 and needle in detail(r), r.text
    assert receiver.received() == []


# -- rhythm mode ---------------------------------------------------------------------------------------
def test_rhythm_mode_schedule_plays_the_plan(client, receiver):
    song = {"tempo": 240, "sections": [{"label": "verse", "start": 0, "end": 1}, {"label": "chorus", "start": 1, "end": 2}]}
    r = client.post("/api/start-rhythm-mode", json={"song_data": song, "duration": 2.0})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["active"] and doc["mode"] == "schedule" and doc["source"] == "rhythm-mode"
    assert "rhythm-mode" in [s["source"] for s in client.get("/api/sources").json()["sources"]]
    assert wait_for(lambda: not client.get("/api/rhythm-mode").json()["active"], timeout=8)   # ends by itself
    got = sorted((b["beat"], b["error_type"], b["section"]) for b in (x["body"] for x in receiver.received()))
    beats = {b for b, _, _ in got}
    assert beats == set(range(8))                              # 2 s at 4 beats/s
    assert [g for g in got if g[0] < 4] == [(b, "basic", "verse") for b in range(4)]
    assert [g for g in got if g[0] >= 4] == [(4, "business", "chorus"), (4, "business", "chorus"),
                                            (5, "business", "chorus"), (6, "business", "chorus"),
                                            (7, "business", "chorus")]
    done = client.get("/api/rhythm-mode").json()          # a finished run still reports what it did
    assert done["active"] is False and done["outcomes"] == {"delivered": 9}
    assert client.post("/api/stop-rhythm-mode").json()["active"] is False


def test_rhythm_mode_follows_a_live_source(client, bus, receiver):
    live_source(bus, "stage")
    song = {"tempo": 120, "sections": [{"label": "bridge", "start": 0, "end": 600}]}
    r = client.post("/api/start-rhythm-mode", json={"song_data": song, "duration": 30, "source": "stage"})
    assert r.status_code == 200 and r.json()["mode"] == "live" and r.json()["source"] == "stage"
    for i in range(3):
        bus.publish(keys.stream("stage", "beats"), beat("stage", i), maxlen=100)
    assert wait_for(lambda: {x["body"]["beat"] for x in receiver.received()} == {0, 1, 2})
    assert {x["body"]["error_type"] for x in receiver.received()} == {"chaotic"}     # the plan's bridge
    stopped = client.post("/api/stop-rhythm-mode").json()
    assert stopped["active"] is False and stopped["outcomes"]["delivered"] == len(receiver.received())
    assert client.get("/api/rhythm-mode").json() == {"active": False, "mode": None, "source": None,
                                                     "started_at": None, "ends_at": None, "outcomes": {}}


@pytest.mark.parametrize("body, status, needle", [
    ({"song_data": {"tempo": 120}, "duration": 0}, 422, "body.duration"),
    ({"song_data": {"audio_features": {"tempo": 500}}, "duration": 10}, 422, "body.song_data.audio_features.tempo"),
    ({"song_data": {"tempo": 120, "sections": [{"label": "verse", "start": 5, "end": 1}]}, "duration": 10}, 422,
     "end=1.0 must not be before start=5.0"),
    ({"song_data": {"tempo": 120}, "duration": 10, "source": "ghost"}, 409, "source 'ghost' is not live"),
])
def test_rhythm_mode_bad_input(client, body, status, needle):
    r = client.post("/api/start-rhythm-mode", json=body)
    assert r.status_code == status and needle in detail(r), r.text


def test_trigger_routes_without_an_error_generator_are_503(broker, api_settings):
    bus = Bus.connect(broker.url, name="api-test-2")
    app = create_app(bus, api_settings, trigger=load_trigger_config({}, env={}))
    with ApiServer(app, port=free_port()) as srv, httpx.Client(base_url=srv.url, trust_env=False) as c:
        r = c.post("/api/beat-trigger", json={"section": "verse", "beat_num": 1})
        assert r.status_code == 503 and "ERROR_GENERATOR_URL" in detail(r)
        r = c.post("/api/start-rhythm-mode", json={"song_data": {"tempo": 120}, "duration": 5})
        assert r.status_code == 503
        assert c.get("/health").json()["backends"]["error_generator"] == "not configured"
    bus.close()


# -- WebSocket events ---------------------------------------------------------------------------------
def test_websocket_streams_the_sources_events(client, server, bus):
    url = server.url.replace("http://", "ws://")
    with ws_connect(f"{url}/ws/stage", open_timeout=5) as ws:
        time.sleep(0.3)                                  # the feed starts reading at "now"
        bus.publish(keys.stream("stage", "beats"), beat("stage", 0), maxlen=100)
        now = time.time()
        bus.publish(keys.stream("stage", "sections"), SectionEvent(
            source="stage", start=0.0, system_time=now, emitted_at=now, label="intro", confidence=1.0,
            status="confirmed"), maxlen=100)
        bus.redis.xadd(keys.stream("stage", "beats"), {b"d": b"garbage"})      # skipped, not fatal
        bus.publish(keys.stream("stage", "beats"), beat("stage", 1), maxlen=100)
        # the intensity stage's stream carries levels and transitions (a drop); both reach clients
        bus.publish(keys.stream("stage", "intensity"), IntensityEvent(
            source="stage", timestamp=1.0, system_time=now, emitted_at=now, intensity=0.5, rms=0.1,
            loudness_lufs=-20.0, flux=0.1, centroid_hz=1000.0, bass=0.4, mids=0.3, highs=0.2), maxlen=100)
        bus.publish(keys.stream("stage", "intensity"), TransitionEvent(
            source="stage", kind="drop", timestamp=1.0, system_time=now, detected_time=1.2, emitted_at=now,
            confidence=0.8), maxlen=100)
        live_source(bus, "stage")
        assert client.post("/api/sources/stage/control", json={"effects_enabled": False}).status_code == 200
        got = [orjson.loads(ws.recv(timeout=5)) for _ in range(6)]
    assert sorted(e["type"] for e in got) == ["beat", "beat", "control", "intensity", "section", "transition"]
    beats = [e for e in got if e["type"] == "beat"]
    assert [b["beat"] for b in beats] == [0, 1] and beats[0]["bpm"] == 120
    assert [e["kind"] for e in got if e["type"] == "transition"] == ["drop"]
    # only the garbage was dead-lettered: an event type the feed did not know would be too
    assert bus.redis.xlen(keys.dead_letter(keys.stream("stage", "beats"))) == 1
    assert not bus.redis.exists(keys.dead_letter(keys.stream("stage", "intensity")))
    with pytest.raises(InvalidStatus) as err:
        ws_connect(f"{url}/ws/bad%20name", open_timeout=5)
    assert err.value.response.status_code == 422 and b"path.source" in err.value.response.body


def test_led_preview_streams_the_led_consumers_frames(client, server, bus, api_settings):
    """An LED consumer in this process (as in `beatbus run --led`), its outputs built from URLs by
    create_output(): the dashboard lists its devices and streams their frames, the web:// one from
    this process, the DDP one relayed through the broker byte for byte as it went to the strip."""
    from beatbus.consumers.led import HUB, build_led_service

    from support.led import UdpCapture, parse_ddp

    with UdpCapture() as cap:
        svc = build_led_service(bus, api_settings, outputs=["web://api-test-strip", f"ddp://127.0.0.1:{cap.port}"],
                                pixels=4, fps=30)
        stop = threading.Event()
        thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert svc.ready.wait(10)
            assert wait_for(lambda: {"api-test-strip", "ddp:127.0.0.1"}
                            <= set(client.get("/api/led/devices").json()["devices"]))
            url = server.url.replace("http://", "ws://")
            with ws_connect(f"{url}/ws/led/api-test-strip", open_timeout=5) as ws:
                web_hello = orjson.loads(ws.recv(timeout=5))
                web_frames = [ws.recv(timeout=5) for _ in range(10)]
            with ws_connect(f"{url}/ws/led/ddp:127.0.0.1", open_timeout=5) as ws:
                ddp_hello = orjson.loads(ws.recv(timeout=5))
                ddp_frames = [ws.recv(timeout=5) for _ in range(10)]
            time.sleep(0.2)
            sent = {parse_ddp(p)["data"] for _, p in cap.packets}
        finally:
            stop.set()
            thread.join(10)
            HUB.meta.pop("api-test-strip", None)      # the process-wide registry outlives the consumer
    assert svc.error is None
    assert web_hello == {"type": "hello", "device": "api-test-strip", "format": "rgb8", "pixels": 4, "fps": 30.0}
    assert all(isinstance(f, bytes) and len(f) == 12 for f in web_frames) and len(set(web_frames)) > 1
    assert ddp_hello["pixels"] == 4 and ddp_hello["output"] == "ddp"
    assert all(f in sent for f in ddp_frames) and len(set(ddp_frames)) > 1
    with pytest.raises(InvalidStatus) as err:
        ws_connect(f"{url}/ws/led/no-such-strip", open_timeout=5)
    assert err.value.response.status_code == 404 and b"no LED preview device 'no-such-strip'" in err.value.response.body
