"""The harmony daemon as users run it: `beatbus produce file` -> `beatbus process` -> `beatbus harmony run`,
real processes against a real broker, its KeyEvents and ChordEvents read from outside with redis-py;
and `beatbus eval harmony` as a process."""
import time

import orjson
import pytest
import redis

from beatbus import keys
from beatbus.lab.eval.harmony import majmin
from beatbus.lab.synth import chord_truth
from beatbus.processors.harmony.chords import PITCH_NAMES
from beatbus.processors.harmony.events import ChordEvent, HarmonyEntry, KeyEvent
from beatbus.processors.harmony.online import OnlineHarmony
from beatbus.processors.harmony.service import HarmonyService
from beatbus.runtime import run_services
from beatbus.schemas import AudioFrame, BeatEvent, StreamEnd, codec, float_to_pcm

from support.daemons import Daemon, daemon_env
from support.harmony import beat_rows, progression, synth_chords
from support.procs import beatbus_cmd, eventually
from support.synth_cache import PLANS, song

# `beatbus eval harmony` on 20 held-out synthetic songs with the dsp tracker's beats: majmin 0.86
# (README, Benchmarks); this short song 0.85. The floor leaves room for a loaded machine's timing.
MAJMIN_FLOOR = 0.6


def _entries(r: redis.Redis, key: str) -> list[dict]:
    return [orjson.loads(fields[b"d"]) for _, fields in r.xrange(key)]


def test_live_key_and_chords_of_a_song_through_the_real_daemons(broker, tmp_path_factory, tmp_path):
    files = song(tmp_path_factory, "harmony")
    env = daemon_env(REDIS_URL=broker.url, BEATBUS_METRICS_ADDR="off")
    harmony = Daemon("harmony", ["harmony", "run", "--sources", "tune"], env=env, workdir=tmp_path).start()
    beats = Daemon("processor", ["process", "--sources", "tune", "--backend", "dsp"], env=env, workdir=tmp_path).start()
    started = [harmony, beats]
    r = redis.Redis.from_url(broker.url)
    try:
        eventually(lambda: all(d.poll_ready() or not d.alive() for d in started), 120, "the daemons' READY=1")
        assert all(d.alive() for d in started), [d.stderr()[-800:] for d in started]
        producer = Daemon("producer", ["produce", "file", str(files.audio), "--source", "tune"], env=env,
                          workdir=tmp_path).start()
        started.append(producer)
        # the song plays in real time (30 s); the harmony stream ends after the audio's end
        eventually(lambda: (e := _entries(r, "bb:{tune}:harmony")) and e[-1]["type"] == "stream_end", 120,
                   lambda: f"the harmony stream's end: {[d.describe() for d in started]} {harmony.stderr()[-800:]}")
    finally:
        for d in started:
            d.stop()
    assert harmony.stop_problem is None, (harmony.stop_problem, harmony.stderr()[-800:])
    events = _entries(r, "bb:{tune}:harmony")
    keys_ = [e for e in events if e["type"] == "key"]
    chords = [e for e in events if e["type"] == "chord"]
    assert {e["type"] for e in events} == {"key", "chord", "stream_end"} and events[-1]["type"] == "stream_end"
    # the key: D major, found within the first bars and held (at most a first guess before it)
    assert (keys_[-1]["tonic"], keys_[-1]["mode"]) == (2, "major") and len(keys_) <= 2, keys_
    assert keys_[-1]["detected_time"] < 12.0 and 0 < keys_[-1]["confidence"] <= 1
    # the chords: majmin accuracy of the timeline the events describe
    truth = chord_truth(PLANS["harmony"], seed=7)
    end = truth[-1][1]
    labels = [(e["timestamp"], "N" if e["quality"] == "N" else f"{PITCH_NAMES[e['root']]}:{e['quality']}")
              for e in chords]
    score = majmin(truth, labels, end)
    assert score >= MAJMIN_FLOOR, (score, labels)
    # only changes: no two events in a row name the same chord; a bounded rate
    assert all(a[1] != b[1] for a, b in zip(labels, labels[1:]))
    minutes = events[-1]["timestamp"] / 60
    assert len(chords) <= OnlineHarmony.CHORD_EVENTS_PER_MIN * minutes + OnlineHarmony.CHORD_BURST
    # chords begin on the beat grid and say when the next change is due, ahead of them
    on_beats = [e for e in chords if e["beat"] is not None]
    assert len(on_beats) >= len(chords) - 3
    for e in on_beats:
        assert e["detected_time"] >= e["timestamp"] and e["system_time"] <= e["emitted_at"] + 1.0
        if e["next_change_time"] is not None:
            assert 1 <= e["next_change_beats"] <= 16 and e["next_change_time"] > e["timestamp"]
            assert e["next_change_system_time"] - e["system_time"] == pytest.approx(
                e["next_change_time"] - e["timestamp"], abs=1e-3)
    assert sum(e["next_change_time"] is not None for e in on_beats) >= len(on_beats) - 2
    # the stream's lease and checkpoint are the harmony role's
    assert r.get("bb:{tune}:ckpt:harmony") is not None


def test_eval_harmony_prints_its_table_and_refuses_an_empty_folder(tmp_path_factory, tmp_path):
    files = song(tmp_path_factory, "harmony")
    t0 = time.monotonic()
    out = tmp_path / "eval.json"
    proc = beatbus_cmd("eval", "harmony", str(files.meta), "--beats", "tracker", "--json", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = [ln for ln in lines if ln.startswith("| song |")]
    assert head and "majmin" in head[0] and "right bar" in head[0]
    row = [ln for ln in lines if ln.startswith("| harmony |")][0].split("|")
    assert row[2].strip() == "D major" and row[3].strip() == "D major"
    doc = orjson.loads(out.read_bytes())
    assert doc["n_songs"] == 1 and doc["mean"]["majmin"] >= MAJMIN_FLOOR and doc["mean"]["key_final"] == 1.0
    assert time.monotonic() - t0 < 60
    empty = beatbus_cmd("eval", "harmony", str(tmp_path / "nothing"), timeout=60)
    assert empty.returncode == 2 and "no such folder" in empty.stderr and "Traceback" not in empty.stderr
    bad = beatbus_cmd("harmony", "eval", str(tmp_path), "--limit", "0", timeout=60)
    assert bad.returncode == 2 and "--limit" in bad.stderr and "Traceback" not in bad.stderr
    down = beatbus_cmd("harmony", "run", "--sources", "x", env={"REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert down.returncode == 2 and "cannot reach broker" in down.stderr and "Traceback" not in down.stderr


def test_a_stream_joined_mid_song_keeps_stream_time_and_bar_numbers(bus, settings):
    """In process: the service's clocks (stream time of a join 100 s in, wall times) and the beats it follows."""
    bars = [c for _ in range(3) for c in progression(9, True)]            # A minor: Am F Dm Em, 2 s bars
    y = synth_chords(bars, 2.0, seed=4)
    svc = HarmonyService(bus, settings=settings, sources=["late"], exit_when_ended=True)
    svc.setup()
    audio, beats_key = keys.stream("late", "audio"), keys.stream("late", "beats")
    start, block = 100 * 22050, 2205                                      # the stream began 100 s before
    wall0 = time.time_ns()
    for k, a in enumerate(range(0, len(y), block)):
        x = y[a:a + block]
        bus.publish(audio, AudioFrame(source="late", seq=k, sample_index=start + a, wall_ns=wall0 + a * 10**9 // 22050,
                                      sr=22050, n_samples=len(x), pcm=float_to_pcm(x)), maxlen=10_000)
        now = time.time()
        for b in beat_rows(len(bars) * 4 + 1, 0.5, start=100.0, first=200):
            if a / 22050 <= b["time"] - 100.0 < (a + block) / 22050:       # each beat after its audio, as live
                bus.publish(beats_key, BeatEvent(
                    source="late", timestamp=b["time"], system_time=now, is_downbeat=b["beat_in_bar"] == 1,
                    bpm=b["bpm"], confidence=0.9, beat=b["beat"], beat_in_bar=b["beat_in_bar"], bar=b["bar"],
                    meter=4, next_beat_time=b["time"] + 0.5, next_beat_system_time=now, emitted_at=now), maxlen=10_000)
    bus.publish(audio, StreamEnd(source="late", timestamp=100.0 + len(y) / 22050), maxlen=10_000)
    assert run_services([svc], duration=60) == 0 and svc.error is None
    evs = [codec.from_fields(f, HarmonyEntry) for _, f in bus.redis.xrange(keys.stream("late", "harmony"))]
    assert isinstance(evs[-1], StreamEnd)
    key = [e for e in evs if isinstance(e, KeyEvent)]
    chords = [e for e in evs if isinstance(e, ChordEvent)]
    assert (key[-1].tonic, key[-1].mode) == (9, "minor") and key[-1].timestamp >= 100.0
    assert [(e.root, e.quality) for e in chords] == [(r % 12, "min" if m else "maj") for r, m in bars]
    for k, e in enumerate(chords):
        assert e.timestamp == pytest.approx(100.0 + 2.0 * k, abs=1e-6) and e.beat == 200 + 4 * k
        assert e.bar == 50 + k and e.beat_in_bar == 1 and e.next_change_beats == 4
        assert e.next_change_time == pytest.approx(e.timestamp + 2.0, abs=1e-6)
        # wall times follow the frames' clock: the audio's wall time of that stream time
        assert e.system_time == pytest.approx(wall0 / 1e9 + 2.0 * k, abs=1e-3)
        assert e.next_change_system_time - e.system_time == pytest.approx(2.0, abs=1e-3)
