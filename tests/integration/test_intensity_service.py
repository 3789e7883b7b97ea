"""The intensity daemon through a real broker: rate, values, transitions, beats side stream, bad input."""
import time

import numpy as np
import pytest

from beatbus import keys
from beatbus.errors import ConfigError
from beatbus.processors.intensity.events import IntensityEntry, TransitionEvent
from beatbus.processors.intensity.service import IntensityService
from beatbus.producers import ClickSource, FileSource
from beatbus.producers.service import Publisher
from beatbus.runtime import run_services
from beatbus.schemas import AudioFrame, BeatEvent, IntensityEvent, StreamEnd, codec, float_to_pcm

from support.procs import beatbus_cmd
from support.synth_cache import load_truth, song


def _read(bus, source):
    return [codec.from_fields(f, IntensityEntry) for _, f in bus.redis.xrange(keys.stream(source, "intensity"))]


def test_intensity_events_at_the_configured_rate(bus, settings):
    svc = IntensityService(bus, settings=settings, sources=["default"], rate=10.0, exit_when_ended=True)
    producer = Publisher(bus, ClickSource(120, realtime=False, duration=6.0), settings=settings)
    assert run_services([svc, producer], until=[svc], duration=60) == 0
    evs = _read(bus, "default")
    assert isinstance(evs[-1], StreamEnd) and evs[-1].timestamp == pytest.approx(6.0, abs=0.03)
    inten = [e for e in evs if isinstance(e, IntensityEvent)]
    assert 59 <= len(inten) <= 61                           # 10 per second of audio
    ts = np.array([e.timestamp for e in inten])
    assert np.all(np.diff(ts) > 0) and np.allclose(np.diff(ts[1:-1]), 0.1, atol=0.021)
    assert all(0 <= e.intensity <= 1 and e.rms >= 0 and e.flux >= 0 for e in inten)
    clicks = [e for e in inten if e.timestamp > 3 and e.rms > 0.01]    # intervals holding a click
    assert len(clicks) >= 5
    assert all(900 < e.centroid_hz < 3000 for e in clicks)  # 1-1.5 kHz bursts
    assert all(abs(e.bass + e.mids + e.highs - 1) < 1e-6 for e in clicks)
    # wall times follow the frames' clock (here a fast replay, so ahead of the emission times)
    assert all(abs((e.system_time - inten[0].system_time) - (e.timestamp - inten[0].timestamp)) < 1e-3 for e in inten)


def test_transitions_of_a_song_and_tempo_changes_from_the_beats_stream(bus, settings, tmp_path_factory):
    files = song(tmp_path_factory, "pop")
    truth = load_truth(files)
    svc = IntensityService(bus, settings=settings, sources=["song"], exit_when_ended=True)
    svc.setup()                                             # owns "song" and follows its beats stream
    beats_key = keys.stream("song", "beats")
    now = time.time()
    for k in range(40):                                     # a beat tracker's events: 150 -> 170 BPM
        bpm = 150.0 if k < 20 else 170.0
        bus.publish(beats_key, BeatEvent(source="song", timestamp=k * 0.4, system_time=now, is_downbeat=k % 4 == 0,
                                         bpm=bpm, confidence=0.9, beat=k, beat_in_bar=k % 4 + 1, bar=k // 4, meter=4,
                                         next_beat_time=k * 0.4 + 0.4, next_beat_system_time=now, emitted_at=now),
                    maxlen=1000)
    producer = Publisher(bus, FileSource(files.audio, realtime=False), settings=settings, source="song")
    assert run_services([svc, producer], until=[svc], duration=90) == 0
    evs = _read(bus, "song")
    trans = [e for e in evs if isinstance(e, TransitionEvent)]
    tempo = [e for e in trans if e.kind == "tempo-change"]
    assert len(tempo) == 1 and tempo[0].bpm_from == pytest.approx(150) and tempo[0].bpm_to == pytest.approx(170)
    drops = [t["time"] for t in truth["transitions"] if t["kind"] == "drop"]
    found = [e for e in trans if e.kind == "drop"]
    # every drop of the song (measured 3 of 3; README: drop recall 0.96 over 20 songs)
    assert sum(any(abs(e.timestamp - d) < 1.0 for e in found) for d in drops) == len(drops) >= 1
    assert all(0 <= e.confidence <= 1 and e.detected_time >= e.timestamp - 1e-6 for e in trans
               if e.kind != "build-up" or e.predicted_time is None)


def test_a_stream_joined_mid_song_keeps_stream_time_and_bad_entries_are_dead_lettered(bus, settings):
    audio_key = keys.stream("late", "audio")
    svc = IntensityService(bus, settings=settings, sources=["late"], rate=20.0, exit_when_ended=True)
    svc.setup()
    bus.redis.xadd(audio_key, {b"d": b"{not json"})
    t = np.arange(441) / 22050
    start = 22050 * 100                                    # the stream started 100 s before we joined
    for k in range(150):
        x = (0.3 * np.sin(2 * np.pi * 1000 * (t + k * 0.02))).astype(np.float32)
        bus.publish(audio_key, AudioFrame(source="late", seq=k, sample_index=start + 441 * k, wall_ns=time.time_ns(),
                                          sr=22050, n_samples=441, pcm=float_to_pcm(x)), maxlen=1000)
    bus.publish(audio_key, AudioFrame(source="late", seq=999, sample_index=start + 441 * 150, wall_ns=time.time_ns(),
                                      sr=44100, n_samples=441, pcm=float_to_pcm(np.zeros(441))), maxlen=1000)
    bus.publish(audio_key, StreamEnd(source="late", timestamp=103.0), maxlen=1000)
    assert run_services([svc], duration=30) == 0 and svc.error is None
    evs = _read(bus, "late")
    inten = [e for e in evs if isinstance(e, IntensityEvent)]
    assert len(inten) == 60 and 100.0 < inten[0].timestamp < 100.1 and inten[-1].timestamp == pytest.approx(103.0)
    dead = bus.redis.xrange(keys.dead_letter(audio_key))
    assert [d[1][b"reason"] for d in dead] == [b"malformed", b"unsupported_rate"]
    assert isinstance(evs[-1], StreamEnd)


def test_rate_is_validated(bus, settings):
    for rate in (0, -1, 100, float("nan")):
        with pytest.raises(ConfigError, match="rate"):
            IntensityService(bus, settings=settings, rate=rate)


def test_cli_bench_prints_a_cost_table(tmp_path):
    out = tmp_path / "bench.json"
    r = beatbus_cmd("intensity", "bench", "--streams", "2", "--seconds", "2", "--json", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "features+detector" in r.stdout and "p50 ms" in r.stdout and out.exists()
    r = beatbus_cmd("intensity", "run", "--sources", "x", env={"REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert r.returncode == 2 and "cannot reach broker" in r.stderr and "Traceback" not in r.stderr
