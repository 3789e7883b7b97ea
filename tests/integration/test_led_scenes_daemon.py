"""The scenes effect in the real daemon, and ``beatbus bench scenes`` through the real CLI.

``beatbus consume led --effect scenes`` runs against a redis-server started here and sends DDP to a
loopback receiver; beats are published in real time as the beat processor does, then a confirmed
section boundary: the frames turn from the first scene's palette to the second's on the next
downbeat, not before.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from beatbus import keys
from beatbus.bus import Bus
from beatbus.schemas import BeatEvent, SectionEvent

from support.led import UdpCapture
from support.procs import beatbus_cmd, eventually, spawn, stop

PERIOD = 0.5            # 120 BPM, 4/4: a bar is 2 s
SCENES = ["scene_1=gradient", "palette_1=ice", "scene_2=gradient", "palette_2=fire",
          *[f"scene_{i}=none" for i in range(3, 7)], "crossfade_beats=0", "on_drops=false"]


def _beat(k: int, t: float) -> BeatEvent:
    return BeatEvent(source="default", timestamp=k * PERIOD, system_time=t, is_downbeat=k % 4 == 0, bpm=120.0,
                     intensity=0.5, confidence=0.9, beat=k, beat_in_bar=k % 4 + 1, bar=k // 4, meter=4,
                     next_beat_time=(k + 1) * PERIOD, next_beat_system_time=t + PERIOD, emitted_at=time.time())


def _palette(payload: bytes) -> str | None:
    """'ice' (blue as strong as red), 'fire' (hardly any blue) or None (dark) for one DDP frame."""
    px = np.frombuffer(payload[10:], dtype=np.uint8).reshape(-1, 3).astype(float)
    r, b = px[:, 0].mean(), px[:, 2].mean()
    if max(r, b) < 20:
        return None
    return "fire" if b < 0.3 * r else "ice"


def test_the_daemon_changes_scene_on_the_downbeat_after_a_confirmed_boundary(redis_server, tmp_path):
    bus = Bus.connect(redis_server.url, name="test")
    stop_beats = threading.Event()
    with UdpCapture() as cap:
        proc = spawn("consume", "led", "--output", f"ddp://127.0.0.1:{cap.port}", "--pixels", "10", "--fps", "60",
                     "--effect", "scenes", *[a for p in SCENES for a in ("--param", p)], "--redis-url", redis_server.url,
                     "--metrics-addr", "off", env={"BEATBUS_STATE_DIR": str(tmp_path)})
        try:
            eventually(lambda: cap.packets or proc.poll() is not None, what="the first frame (ambient)")
            assert proc.poll() is None, proc.communicate()[1]
            t0 = time.time() + 0.5

            def play():                      # every beat 80 ms after it, as the beat processor publishes
                k = 0
                while not stop_beats.is_set():
                    t = t0 + k * PERIOD
                    if stop_beats.wait(max(0.0, t + 0.08 - time.time())):
                        return
                    bus.publish(keys.stream("default", "beats"), _beat(k, t), maxlen=1000)
                    k += 1

            player = threading.Thread(target=play, daemon=True)
            player.start()
            eventually(lambda: any(_palette(p) == "ice" for _, p in cap.since(t0 + 1.0)), what="scene 1 (ice)")
            # the section that began on bar 1's downbeat is confirmed in bar 2: the scene changes on bar 3's
            boundary, confirmed_at = t0 + 2.0, t0 + 4.6
            time.sleep(max(0.0, confirmed_at - time.time()))
            bus.publish(keys.stream("default", "sections"), SectionEvent(
                source="default", start=2.0, system_time=boundary, emitted_at=time.time(), label="chorus",
                confidence=0.8, status="confirmed"), maxlen=1000)
            change = t0 + 6.0
            eventually(lambda: any(_palette(p) == "fire" for _, p in cap.since(change)), what="scene 2 (fire)")
        finally:
            stop_beats.set()
            rc, _out, err = stop(proc)
    assert rc == 0, err
    seen = [(t, _palette(p)) for t, p in cap.packets if t >= t0 + 1.0 and _palette(p)]
    first_fire = min(t for t, pal in seen if pal == "fire")
    assert abs(first_fire - change) < 0.05, (first_fire - t0, [(round(t - t0, 3), p) for t, p in seen][-40:])
    assert all(pal == "ice" for t, pal in seen if t < change - 0.05)
    assert all(pal == "fire" for t, pal in seen if change + 0.05 < t < change + 1.5)


@pytest.fixture(scope="module")
def song_dir(tmp_path_factory):
    """One short 4/4 synthetic song (about 25 s) rendered by the real CLI."""
    d = tmp_path_factory.mktemp("songs")
    r = beatbus_cmd("synth", "songs", str(d), "--count", "1", "--seed", "3", "--meters", "4", "--duration-range",
                    "20,30", "--format", "wav", timeout=300)
    assert r.returncode == 0, r.stderr
    return d


def test_bench_scenes_at_toy_size_through_the_cli(song_dir, tmp_path):
    out = tmp_path / "scenes.json"
    r = beatbus_cmd("bench", "scenes", str(song_dir), "--count", "1", "--every-bars", "4", "--json", str(out),
                    timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| mode | changes") and len(lines) == 4, r.stdout
    doc = json.loads(out.read_text())
    rows = {row["mode"]: row for row in doc["rows"]}
    assert set(rows) == {"sections", "sections + drops", "sections + drops + every 4 bars"}
    truth = json.loads(next(song_dir.glob("*.json")).read_text())
    drops = sum(t["kind"] == "drop" for t in truth["transitions"])
    for row in rows.values():
        assert row["changes"] > 0 and row["off_bar"] == 0, row
        assert row["boundaries"] == len(truth["sections"]) - 1 and row["drops"] == drops
        assert row["offset_p95_ms"] < 70                         # on the annotated bar line
    assert rows["sections"]["drop"] == 0 and rows["sections"]["phrase"] == 0
    assert rows["sections + drops + every 4 bars"]["phrase"] > 0
    # changing on the phrase grid is sooner after a boundary than waiting for its confirmation
    assert rows["sections + drops + every 4 bars"]["lag_p50_ms"] < rows["sections"]["lag_p50_ms"]


def test_bench_scenes_without_songs_says_how_to_make_them(tmp_path):
    r = beatbus_cmd("bench", "scenes", str(tmp_path), timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert f"no synthetic songs in {tmp_path}: render some with `beatbus synth songs" in r.stderr
