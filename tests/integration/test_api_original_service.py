"""Clients of the rhythm service beatbus replaces keep working (issue #15 item 16).

Each request is exactly an example of that service's documentation, sent to the real `beatbus api`
process on a real broker (redis-server, which the last test stops to see an unhealthy answer).
"""
from __future__ import annotations

import httpx
import pytest

from beatbus.lab.doubles.error_generator import ReferenceReceiver

from support.api import api_command
from support.procs import wait_for

PIXIES = {"name": "Where Is My Mind?", "artist": "Pixies",
          "audio_features": {"tempo": 115, "energy": 0.8, "danceability": 0.6}}
README_SONG = {"name": "Song Title", "artist": "Artist Name",
               "audio_features": {"tempo": 120, "energy": 0.7, "danceability": 0.6}}
RHYTHM_MODE = {"song_data": {"name": "Song", "audio_features": {"tempo": 120, "energy": 0.7, "danceability": 0.6}},
               "duration": 180}
BEAT_TRIGGER = {"section": "chorus", "beat_num": 1}


@pytest.fixture
def api(redis_server, tmp_path):
    with ReferenceReceiver() as rx:
        cmd, url = api_command(redis_server.url, rx.url, tmp_path / "api.log")
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            yield client, rx, redis_server
        rc = cmd.stop()
    assert rc == 0 and "Traceback" not in cmd.stderr(), cmd.stderr()


def test_health_answers_the_monitors_fields(api):
    client, _rx, _srv = api
    r = client.get("/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "healthy" and doc["service"] == "beatbus" and doc["fpga_enabled"] is False
    assert doc["backends"]["broker"] == "ok"


def test_analyze_song_takes_the_original_examples(api):
    client, _rx, _srv = api
    r = client.post("/api/analyze-song", json=PIXIES)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["success"] is True and doc["tempo"] == 115.0 and doc["beat_interval"] == pytest.approx(60 / 115, abs=1e-6)
    assert doc["title"] == "Where Is My Mind?" and doc["artist"] == "Pixies"
    parts = doc["structure"]
    assert parts[0]["start"] == 0 and {tuple(p) for p in parts} == {("start", "duration", "type")}
    assert sum(p["duration"] for p in parts) == pytest.approx(180, abs=0.01)     # no duration given: 3 minutes
    assert {p["type"] for p in parts} <= {"intro", "verse", "chorus", "bridge", "outro"}
    r = client.post("/api/analyze-song", json=README_SONG)
    assert r.status_code == 200 and (r.json()["tempo"], r.json()["beat_interval"]) == (120.0, 0.5), r.text


def test_rhythm_mode_and_beat_trigger_take_the_original_examples(api):
    client, rx, _srv = api
    r = client.post("/api/start-rhythm-mode", json=RHYTHM_MODE)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["success"] is True and doc["message"] and doc["active"] is True
    assert (doc["tempo"], doc["beat_interval"], doc["duration"]) == (120.0, 0.5, 180)
    assert wait_for(lambda: rx.received(), timeout=10), "rhythm mode posted no trigger"
    assert client.post("/api/stop-rhythm-mode").json()["active"] is False
    # the original's analyze-song answer, passed on as song_data, plays its structure
    plan = client.post("/api/analyze-song", json=README_SONG).json()
    original = {"success": True, "tempo": plan["tempo"], "beat_interval": plan["beat_interval"],
                "structure": [{"start": 0, "duration": 30, "type": "bridge"}]}
    rx.clear()
    r = client.post("/api/start-rhythm-mode", json={"song_data": original, "duration": 2})
    assert r.status_code == 200, r.text
    assert wait_for(lambda: rx.received(), timeout=10)
    assert {x["body"]["error_type"] for x in rx.received()} == {"chaotic"}          # the bridge's pattern
    client.post("/api/stop-rhythm-mode")
    rx.clear()
    r = client.post("/api/beat-trigger", json=BEAT_TRIGGER)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["success"], doc["triggered"], doc["error_type"], doc["section"], doc["beat"]) == \
        (True, True, "business", "chorus", 1)
    (got,) = rx.received()
    assert got["body"]["error_type"] == "business" and got["body"]["beat"] == 1


def test_health_without_a_broker_is_503_unhealthy(api):
    client, _rx, redis_server = api
    redis_server.stop()
    r = client.get("/health")
    assert r.status_code == 503
    doc = r.json()
    assert doc["status"] == "unhealthy" and doc["backends"]["broker"] == "down" and doc["service"] == "beatbus"
