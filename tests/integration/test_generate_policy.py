"""The stream side of generation: policy decisions, conditioning from a real broker, the consumer daemon."""
from __future__ import annotations

import threading
import time

import msgspec
import numpy as np
import pytest

from beatbus import keys
from beatbus.bus import Lease
from beatbus.consumers.generate.conditioning import capture_audio, snapshot
from beatbus.consumers.generate.jobqueue import GenerationQueue
from beatbus.consumers.generate.policy import GenerationPolicy
from beatbus.consumers.generate.service import GenerationService
from beatbus.consumers.generate.spec import GenerationJob
from beatbus.schemas import AudioFrame, BeatEvent, ChordEvent, IntensityEvent, KeyEvent, SectionEvent, float_to_pcm

from support.generate import build_models, context, gen_config, gen_settings, offering, tone, work_burst

SR = 22050
HOP = 2205


def beat(source: str, i: int, *, bpm: float = 120.0, meter: int = 4, intensity: float | None = 0.5) -> BeatEvent:
    now = time.time()
    return BeatEvent(source=source, timestamp=i * 60 / bpm, system_time=now, is_downbeat=i % meter == 0, bpm=bpm,
                     intensity=intensity, confidence=0.9, beat=i, beat_in_bar=i % meter + 1, bar=i // meter,
                     meter=meter, next_beat_time=(i + 1) * 60 / bpm, next_beat_system_time=now + 60 / bpm,
                     emitted_at=now)


def section(source: str, label: str, status: str, start: float) -> SectionEvent:
    now = time.time()
    return SectionEvent(source=source, start=start, system_time=now, emitted_at=now, label=label, confidence=0.8,
                        status=status)


def level(source: str, value: float) -> IntensityEvent:
    now = time.time()
    return IntensityEvent(source=source, timestamp=1.0, system_time=now, emitted_at=now, intensity=value, rms=0.1,
                          loudness_lufs=-20.0, flux=0.1, centroid_hz=1000.0, bass=0.3, mids=0.3, highs=0.3)


def publish_audio(bus, source: str, x: np.ndarray, *, start_index: int = 0) -> None:
    stream = keys.stream(source, keys.StreamKind.AUDIO)
    for seq, i in enumerate(range(0, len(x) - HOP + 1, HOP)):
        chunk = x[i:i + HOP]
        bus.publish(stream, AudioFrame(source=source, seq=seq, sample_index=start_index + i, wall_ns=time.time_ns(),
                                       sr=SR, n_samples=len(chunk), pcm=float_to_pcm(chunk)), maxlen=10000)


def a_minor(seconds: float) -> np.ndarray:
    triads = [(57, 60, 64), (62, 65, 69), (52, 56, 59), (57, 60, 64)]
    per = seconds / len(triads)
    return np.concatenate([tone(per, SR, freqs=[440 * 2 ** ((m - 69) / 12) for m in t]) for t in triads])


# -- policy (no I/O) ---------------------------------------------------------------------------
def test_section_policy_fires_once_per_confirmed_chorus_or_bridge():
    p = GenerationPolicy(mode="section", labels=["chorus", "bridge"])
    assert p.on_section(section("s", "chorus", "tentative", 30.0)) is None
    t = p.on_section(section("s", "chorus", "confirmed", 30.0))
    assert (t.source, t.reason, t.detail, t.at) == ("s", "section", "chorus", 30.0)
    assert p.on_section(section("s", "chorus", "confirmed", 30.0)) is None           # same section again
    assert p.on_section(section("s", "verse", "confirmed", 50.0)) is None
    assert p.on_section(section("s", "bridge", "revised", 50.0)).detail == "bridge"  # revised into a bridge
    assert p.on_section(section("t", "chorus", "confirmed", 30.0)) is not None       # other source, own state
    assert GenerationPolicy(mode="bars").on_section(section("s", "chorus", "confirmed", 1.0)) is None


def test_bars_policy_fires_on_downbeats_of_every_nth_bar():
    p = GenerationPolicy(mode="bars", every_bars=4)
    fired = [t.detail for i in range(70) if (t := p.on_beat(beat("s", i)))]
    assert fired == ["4", "8", "12", "16"]
    assert p.on_beat(beat("s", 64)) is None                                            # bar 16 already fired
    api = GenerationPolicy(mode="api", every_bars=1)
    assert not [t for i in range(40) if (t := api.on_beat(beat("s", i)))]
    with pytest.raises(ValueError):
        GenerationPolicy(mode="sometimes")


def test_policy_tracks_conditioning_and_prefers_the_intensity_stream():
    p = GenerationPolicy(mode="api")
    p.on_beat(beat("s", 0, bpm=96.0, meter=3, intensity=0.2))
    assert p.conditioning("s").intensity == 0.2
    p.on_intensity(level("s", 0.85))
    p.on_beat(beat("s", 1, bpm=97.0, meter=3, intensity=0.1))
    p.on_section(section("s", "verse", "tentative", 3.0))
    c = p.conditioning("s")
    assert (c.tempo, c.meter, c.intensity, c.section, c.source) == (97.0, 3, 0.85, "verse", "s")
    assert c.key is None
    now = time.time()
    p.on_key(KeyEvent(source="s", timestamp=1.0, system_time=now, detected_time=2.0, emitted_at=now, tonic=7,
                      mode="major", confidence=0.6))
    assert (p.conditioning("s").key, p.conditioning("s").key_confidence) == ("G major", 0.6)   # the live key


# -- conditioning from the broker ------------------------------------------------------------------
def test_snapshot_and_capture_read_the_live_streams(bus):
    assert snapshot(bus, "quiet").tempo is None
    assert capture_audio(bus, "quiet", 3.0)[1] == 0
    for i in range(8):
        bus.publish(keys.stream("live", "beats"), beat("live", i, bpm=128.0), maxlen=1000)
    bus.publish(keys.stream("live", "sections"), section("live", "chorus", "confirmed", 2.0), maxlen=1000)
    bus.publish(keys.stream("live", "intensity"), level("live", 0.7), maxlen=1000)
    bus.redis.xadd(keys.stream("live", "beats"), {b"d": b'{"type":"beat","bpm":"fast"}'})    # malformed, newest
    now = time.time()
    bus.publish(keys.stream("live", "harmony"), KeyEvent(source="live", timestamp=1.0, system_time=now,
                                                         detected_time=2.0, emitted_at=now, tonic=9, mode="minor",
                                                         confidence=0.8), maxlen=1000)
    for k in range(20):                     # chords published since: the key is older than the newest entries
        bus.publish(keys.stream("live", "harmony"), ChordEvent(
            source="live", timestamp=2.0 + k, system_time=now, detected_time=2.0 + k, emitted_at=now, root=9,
            quality="min", confidence=0.7, beat=k, bar=k, beat_in_bar=1), maxlen=1000)
    c = snapshot(bus, "live")
    assert (c.tempo, c.meter, c.section, c.intensity) == (128.0, 4, "chorus", 0.7)
    assert (c.key, c.key_confidence) == ("A minor", 0.8)       # the harmony stage's live key
    assert bus.redis.xlen(keys.dead_letter(keys.stream("live", "beats"))) == 1
    ramp = np.linspace(-0.5, 0.5, 6 * SR).astype(np.float32)
    publish_audio(bus, "live", ramp)
    x, sr = capture_audio(bus, "live", 2.5, batch=7)          # several XREVRANGE pages
    assert sr == SR and len(x) == int(2.5 * SR)
    assert np.allclose(x, ramp[len(ramp) - len(x):], atol=1e-4)   # the newest audio, in order


# -- the consumer daemon ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def offered(bus, broker, models, tmp_path):
    """A live worker offering every model (the service queues only what a live worker can run)."""
    with offering(context(bus, broker, gen_config(tmp_path / "offering", models)), bus) as worker:
        yield worker


def _run(service):
    stop = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), daemon=True)
    t.start()
    assert service.ready.wait(10)
    return stop, t


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_service_queues_one_job_per_source_with_stream_conditioning(bus, broker, models, tmp_path, offered):
    cfg = gen_config(tmp_path / "state", models, policy="section", duration=5.0)
    ctx = context(bus, broker, cfg)
    queue = GenerationQueue(bus.redis, cfg, store=ctx.store)
    services = [GenerationService(bus, settings=gen_settings(broker), config=cfg, sources=["band"]) for _ in range(2)]
    running = [_run(s) for s in services]
    try:
        publish_audio(bus, "band", a_minor(6.0))
        for i in range(8):
            bus.publish(keys.stream("band", "beats"), beat("band", i, bpm=126.0), maxlen=1000)
        bus.publish(keys.stream("band", "intensity"), level("band", 0.9), maxlen=1000)
        bus.redis.xadd(keys.stream("band", "sections"), {b"d": b"not json"})          # dead-lettered, no crash
        bus.publish(keys.stream("band", "sections"), section("band", "chorus", "tentative", 4.0), maxlen=1000)
        bus.publish(keys.stream("band", "sections"), section("band", "chorus", "confirmed", 4.0), maxlen=1000)
        assert _wait(lambda: sum(len(s.queued) for s in services) == 1)
        time.sleep(0.3)
        queued = [q for s in services for q in s.queued]
        assert len(queued) == 1                           # two instances, one owner: queued once
        source, job_id = queued[0]
        job = queue.fetch(job_id)
        spec = msgspec.json.decode(job.args[0], type=GenerationJob)
        req = spec.request
        assert (req.source, req.section, req.tempo, req.intensity, spec.reason) == ("band", "chorus", 126.0, 0.9,
                                                                                    "section")
        assert req.key == "A minor" and req.prompt == "intense chorus, 126 bpm, A minor"
        captured, sr = ctx.store.load_upload(spec.audio_id)          # the last seconds of the stream
        assert sr == SR and abs(len(captured) / sr - 4.0) < 0.11
        assert Lease(bus, keys.generation_inflight("band"), job_id, 1).holder() == job_id

        # a second trigger while the job is in flight is skipped
        bus.publish(keys.stream("band", "sections"), section("band", "bridge", "confirmed", 20.0), maxlen=1000)
        time.sleep(0.5)
        assert sum(len(s.queued) for s in services) == 1
        assert all(s.error is None for s in services)

        assert work_burst(ctx, bus)
        assert queue.status(job_id)["status"] == "finished"
        assert Lease(bus, keys.generation_inflight("band"), job_id, 1).holder() is None     # released by the job
        bus.publish(keys.stream("band", "sections"), section("band", "chorus", "confirmed", 40.0), maxlen=1000)
        assert _wait(lambda: sum(len(s.queued) for s in services) == 2)
    finally:
        for stop, t in running:
            stop.set()
            t.join(5)
    assert bus.redis.xlen(keys.dead_letter(keys.stream("band", "sections"))) >= 1


def test_in_flight_lease_of_an_ended_job_is_taken_over(bus, broker, models, tmp_path, offered):
    """A holder whose job already ended (its worker died, say) never blocks the source."""
    cfg = gen_config(tmp_path / "state", models, policy="bars", every_bars=2, kind="lstm")
    queue = GenerationQueue(bus.redis, cfg)
    assert Lease(bus, keys.generation_inflight("solo"), "g-gone", 600).acquire()         # holder job does not exist
    svc = GenerationService(bus, settings=gen_settings(broker), config=cfg, sources=["solo"], queue=queue)
    stop, t = _run(svc)
    try:
        for i in range(12):
            bus.publish(keys.stream("solo", "beats"), beat("solo", i, bpm=100.0), maxlen=1000)
        assert _wait(lambda: len(svc.queued) == 1)
        spec = msgspec.json.decode(queue.fetch(svc.queued[0][1]).args[0], type=GenerationJob)
        assert spec.request.backend == "lstm" and spec.reason == "bars" and spec.audio_id is None
        assert spec.bars == 4 and spec.request.duration == pytest.approx(9.6)   # 10 s asked, whole bars at 100 BPM
    finally:
        stop.set()
        t.join(5)


def test_events_of_several_streams_are_judged_in_publication_order(bus, broker, models, tmp_path, offered):
    """One XREAD returns beats, sections and intensity grouped by stream; the section must still see
    the intensity published before it."""
    cfg = gen_config(tmp_path / "state", models, policy="section", capture_seconds=0.0)
    svc = GenerationService(bus, settings=gen_settings(broker), config=cfg, sources=["one"])
    svc.setup()
    for i in range(4):
        bus.publish(keys.stream("one", "beats"), beat("one", i, bpm=100.0, intensity=0.1), maxlen=1000)
    bus.publish(keys.stream("one", "intensity"), level("one", 0.95), maxlen=1000)
    bus.publish(keys.stream("one", "sections"), section("one", "chorus", "confirmed", 1.0), maxlen=1000)
    bus.publish(keys.stream("one", "beats"), beat("one", 4, bpm=100.0, intensity=0.1), maxlen=1000)
    svc.step(threading.Event())                                  # one read: every entry in one batch
    (source, job_id), = svc.queued
    spec = msgspec.json.decode(GenerationQueue(bus.redis, cfg).fetch(job_id).args[0], type=GenerationJob)
    assert spec.request.intensity == 0.95 and spec.request.prompt == "intense chorus, 100 bpm"


def test_service_queues_nothing_while_no_live_worker_can_run_the_kind(bus, broker, models, tmp_path, caplog):
    """A job no worker can run would wait forever holding the source: skipped, said once, resumed once."""
    cfg = gen_config(tmp_path / "state", models, policy="bars", every_bars=1, kind="lstm")
    svc = GenerationService(bus, settings=gen_settings(broker), config=cfg, sources=["quiet"])
    svc.setup()
    caplog.set_level("INFO", logger="beatbus.generate.service")
    with offering(context(bus, broker, cfg), bus, kinds=("musicgen",)):        # a worker, but not for lstm
        for i in range(12):
            bus.publish(keys.stream("quiet", "beats"), beat("quiet", i, bpm=100.0), maxlen=1000)
        svc.step(threading.Event())
    assert svc.queued == [] and GenerationQueue(bus.redis, cfg).queue.count == 0
    paused = [r for r in caplog.records if r.getMessage().startswith("generation paused")]
    assert len(paused) == 1 and "no live worker can run lstm" in paused[0].error     # once, not per bar
    with offering(context(bus, broker, cfg), bus, kinds=("lstm",)):
        for i in range(12, 20):
            bus.publish(keys.stream("quiet", "beats"), beat("quiet", i, bpm=100.0), maxlen=1000)
        svc.step(threading.Event())
    assert len(svc.queued) == 1
    assert [r.getMessage() for r in caplog.records].count("generation resumed: a live worker can run it") == 1
