"""Bad input through the real bus and the real daemons: fuzzed entries, oversized entries, broken
audio, wrong sample rates, a flooding producer. Nothing may crash a daemon; what is refused is
counted and dead-lettered; what is trimmed is counted. (The HTTP API is fuzzed by schemathesis in
tests/integration/test_api_schemathesis.py.)
"""
from __future__ import annotations

import threading
import time

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.led import build_led_service
from beatbus.consumers.terminal import TerminalConsumer
from beatbus.consumers.trigger import load_trigger_config
from beatbus.consumers.trigger.service import TriggerService
from beatbus.deploy.stream_metrics import StreamCollector
from beatbus.lab.doubles.error_generator import ReferenceReceiver
from beatbus.metrics import EVENTS_CONSUMED, FRAMES_DROPPED, MALFORMED
from beatbus.processors.beat import BeatProcessor
from beatbus.processors.beat.service import BeatService
from beatbus.processors.intensity.service import IntensityService
from beatbus.processors.structure.service import StructureService
from beatbus.producers import ClickSource
from beatbus.producers.service import Publisher
from beatbus.runtime import run_services
from beatbus.schemas import (
    AudioFrame,
    BeatEvent,
    IntensityEvent,
    SectionEvent,
    StreamEnd,
    encode,
    float_to_pcm,
    from_fields,
    to_fields,
)
from beatbus.schemas.events import EVENT_TYPES

from support.led import UdpCapture

SR, HOP = 22050, 441
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


def _tag(kind) -> str:
    return kind.__struct_config__.tag


@st.composite
def entries(draw):
    """Stream entry fields: random bytes, or a document of the right type tag with wrong-typed fields."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    shape = draw(st.sampled_from(["bytes", "doc", "no_d", "pcm"]))
    if shape == "bytes":
        fields = {b"d": draw(st.binary(max_size=300))}
    elif shape == "no_d":       # field names as writers use them (UTF-8); see the non-UTF-8 test below
        name = draw(st.text(min_size=1, max_size=8).filter(lambda k: k != "d")).encode()
        fields = {name: draw(st.binary(max_size=20))}
    else:
        names = list(kind.__struct_fields__)
        doc = {"type": _tag(kind), **draw(st.dictionaries(st.sampled_from(names), JSON, max_size=len(names)))}
        fields = {b"d": msgspec.json.encode(doc) if draw(st.booleans()) else repr(doc).encode()}
        if shape == "pcm":
            fields[b"pcm"] = draw(st.binary(max_size=64))
    return kind, fields


@pytest.fixture(scope="module")
def fuzz_bus(broker):
    bus = Bus.connect(broker.url, name="fuzz")
    yield bus
    bus.close()


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries())
def test_fuzzed_entries_through_the_bus_are_dead_lettered_never_raised(fuzz_bus, entry):
    """Every schema's decoder on what Redis hands back: a valid event, or None + counted + dead-lettered."""
    kind, fields = entry
    stream = keys.stream("fuzz", "beats")
    entry_id = fuzz_bus.redis.xadd(stream, fields, maxlen=50).decode()
    _, stored = fuzz_bus.redis.xrange(stream, entry_id, entry_id)[0]
    dead = keys.dead_letter(stream)
    before_dead = fuzz_bus.redis.xinfo_stream(dead)["entries-added"] if fuzz_bus.redis.exists(dead) else 0
    before = MALFORMED.labels("beats")._value.get()
    event = fuzz_bus.decode(stream, entry_id, stored, kind)          # must not raise
    if event is None:
        assert MALFORMED.labels("beats")._value.get() == before + 1
        info = fuzz_bus.redis.xinfo_stream(dead)
        assert info["entries-added"] == before_dead + 1
        assert info["last-entry"][1][b"origin_id"] == entry_id.encode()
    else:                                                             # hypothesis found a valid one: it round-trips
        assert isinstance(event, kind) and from_fields(to_fields(event), kind) == event


def test_an_entry_with_a_non_utf8_field_name_is_dead_lettered(bus):
    stream = keys.stream("fuzz", "audio")
    entry_id = bus.redis.xadd(stream, {b"\x80": b"x"}).decode()
    _, stored = bus.redis.xrange(stream)[0]
    assert bus.decode(stream, entry_id, stored, AudioFrame) is None
    assert bus.redis.xlen(keys.dead_letter(stream)) == 1


def _garbage(stream: str) -> list[dict]:
    huge = AudioFrame(source="g", seq=0, sample_index=0, wall_ns=time.time_ns(), sr=SR, n_samples=200_000,
                      pcm=b"\0" * 400_000)
    return [{b"d": b"{not json"}, {b"junk": b"1"}, {b"d": b'{"type":"beat","bpm":"fast"}'},
            {b"d": b'{"type":"beat","timestamp":NaN}'}, {b"d": b"x" * (1 << 20)},          # 1 MiB of garbage
            {**to_fields(huge), b"d": to_fields(huge)[b"d"]},                             # n_samples > 96000
            {b"d": encode(SectionEvent(source="g", start=1.0, system_time=1.0, emitted_at=1.0, label="verse",
                                       confidence=2.0, status="confirmed"))}]                # out of range


def test_every_daemon_survives_garbage_on_every_stream_it_reads(bus, settings):
    """Must not die: any daemon; must not be lost: the beats after the garbage. Garbage lands on
    the audio, beats, intensity, sections and control streams while the beat, intensity and
    structure processors, the trigger, LED and terminal consumers run on real-time clicks."""
    src = "default"
    with ReferenceReceiver() as rx, UdpCapture() as cap:
        cfg = load_trigger_config({"url": rx.url, "max_age": 5.0}, env={})
        services = [
            TerminalConsumer(bus, settings=settings, sources=[src], exit_on_end=True, out=open("/dev/null", "w")),
            TriggerService(bus, settings=settings, config=cfg, sources=[src]),
            build_led_service(bus, settings, outputs=[f"ddp://127.0.0.1:{cap.port}"], pixels=10, fps=30,
                              source=src),
            IntensityService(bus, settings=settings, sources=[src]),
            StructureService(bus, settings=settings, sources=[src]),
            BeatService(bus, settings=settings, make_processor=lambda: BeatProcessor(backend="dsp"), sources=[src]),
        ]
        producer = Publisher(bus, ClickSource(120, realtime=True, duration=7.0), settings=settings)
        result = {}
        runner = threading.Thread(target=lambda: result.update(rc=run_services([*services, producer],
                                                                               until=[producer], duration=40)))
        runner.start()
        time.sleep(2.5)
        injected = {}
        for kind in ("audio", "beats", "intensity", "sections", "control"):
            stream = keys.stream(src, kind)
            injected[stream] = [bus.redis.xadd(stream, f).decode() for f in _garbage(stream)]
        garbage_at = time.time()
        runner.join(60)
    assert not runner.is_alive() and result["rc"] == 0
    assert all(s.error is None for s in services), [(s.name, s.error) for s in services if s.error]
    # every entry is refused where it is read as that stream's schema; the LED consumer reads
    # only type "control" on the control stream (other stages' messages are not its business),
    # so there the four unreadable entries are refused and three well-formed ones skipped
    expected = {"audio": 7, "beats": 7, "sections": 7, "control": 4}
    for stream, ids in injected.items():
        kind = keys.parse(stream)[1]
        dead = {d[1][b"origin_id"].decode() for d in bus.redis.xrange(keys.dead_letter(stream))}
        refused = [i for i in ids if i in dead]
        if kind in expected:
            assert len(refused) == expected[kind], (stream, len(refused))
    garbage_ids = set(injected[keys.stream(src, "beats")])
    after = [e for i, f in bus.redis.xrange(keys.stream(src, "beats")) if i.decode() not in garbage_ids
             and isinstance(e := from_fields(f), BeatEvent) and e.emitted_at > garbage_at]
    assert len(after) >= 5 and all(abs(b.bpm - 120) < 3 for b in after[-3:])       # tracking went on
    assert any(r["arrived_at"] > garbage_at for r in rx.received())                  # triggers went on
    assert len(cap.packets) > 30                                                     # lights went on


def _frames(segments):
    """AudioFrames (dtype per segment) back to back, stamped as if captured live 20 ms apart."""
    t0 = time.time_ns() - 60 * 10 ** 9
    index, seq, out = 0, 0, []
    for samples, dtype in segments:
        for k in range(0, len(samples), HOP):
            chunk = samples[k:k + HOP]
            pcm = chunk.astype("<f4").tobytes() if dtype == "f32" else float_to_pcm(chunk)
            out.append(AudioFrame(source="bad", seq=seq, sample_index=index, wall_ns=t0 + index * 10 ** 9 // SR, sr=SR,
                                  n_samples=len(chunk), dtype=dtype, pcm=pcm))
            index += len(chunk)
            seq += 1
    return out, index


def _clicks(seconds: float) -> np.ndarray:
    return np.concatenate([c.samples for c in ClickSource(120, realtime=False, duration=seconds)])


def test_broken_audio_nan_inf_dc_clipping_and_wrong_rates_never_break_the_processors(bus, settings):
    """Must not be lost: valid events. NaN/inf (f32 frames), DC, full-scale clipping and frames at
    the wrong rate go through the beat and intensity processors: nothing they publish fails
    validation downstream, wrong-rate frames are dead-lettered, and tracking recovers afterwards."""
    rng = np.random.default_rng(0)
    nan_inf = rng.standard_normal(SR).astype(np.float32)
    nan_inf[::7], nan_inf[3::11], nan_inf[5::13] = np.nan, np.inf, -np.inf
    square = np.sign(np.sin(2 * np.pi * 2 * np.arange(SR) / SR)).astype(np.float32) * 4.0   # clipped at s16
    frames, total = _frames([(_clicks(4.0), "s16"), (nan_inf, "f32"), (np.full(SR, 0.9, np.float32), "f32"),
                             (square, "s16"), (_clicks(8.0), "s16")])
    stream = keys.stream("bad", "audio")
    beat = BeatService(bus, settings=settings, make_processor=lambda: BeatProcessor(backend="dsp"), sources=["bad"],
                       exit_when_ended=True)
    inten = IntensityService(bus, settings=settings, sources=["bad"], exit_when_ended=True)
    beat.setup(), inten.setup()
    wrong = 0
    for i, f in enumerate(frames):
        bus.publish(stream, f, maxlen=100000)
        if i % 50 == 25:                                   # a producer at 44.1 kHz slipping in
            bus.publish(stream, msgspec.structs.replace(f, sr=44100, n_samples=882, dtype="s16", pcm=b"\0" * 1764,
                                                        seq=10 ** 6 + i), maxlen=100000)
            wrong += 1
    bus.publish(stream, StreamEnd(source="bad", timestamp=total / SR), maxlen=100000)
    assert run_services([beat, inten], duration=90) == 0 and beat.error is None and inten.error is None
    dead = [d[1][b"reason"] for d in bus.redis.xrange(keys.dead_letter(stream))]
    assert dead.count(b"unsupported_rate") == 2 * wrong                    # each processor refused each one
    beats = [from_fields(f) for _, f in bus.redis.xrange(keys.stream("bad", "beats"))]       # validates
    assert isinstance(beats[-1], StreamEnd)
    late = [b for b in beats if isinstance(b, BeatEvent) and b.timestamp > total / SR - 4.0]
    assert len(late) >= 6 and all(abs(b.bpm - 120) < 3 for b in late), [round(b.bpm, 1) for b in late]
    inten_events = [from_fields(f) for _, f in bus.redis.xrange(keys.stream("bad", "intensity"))]
    assert sum(isinstance(e, IntensityEvent) for e in inten_events) > 50
    assert all(np.isfinite([e.intensity, e.rms, e.flux, e.centroid_hz]).all()
               for e in inten_events if isinstance(e, IntensityEvent))


def test_a_producer_flooding_faster_than_real_time_is_trimmed_and_counted(bus, broker):
    """Must not be lost silently: any frame. A producer publishes 30 s of audio at once into a
    stream capped at 200 entries while the processor is busy: the stream stays bounded, the
    exporter counts what MAXLEN trimmed, and every frame is either processed or counted as a gap
    by the processor."""
    s = load_settings({"redis_url": broker.url, "metrics_addr": "off", "maxlen_audio": 200, "block_ms": 100},
                      env={})
    proc = BeatService(bus, settings=s, make_processor=lambda: BeatProcessor(backend="dsp"), sources=["flood"],
                       exit_when_ended=True)
    pub = Publisher(bus, ClickSource(120, realtime=False, duration=30.0), settings=s, source="flood")
    pub.setup()
    proc.setup()
    stop = threading.Event()
    consumed0, gaps0 = EVENTS_CONSUMED.labels("audio")._value.get(), FRAMES_DROPPED.labels("gap")._value.get()
    pub.step(stop)                                        # the first frame: the processor knows where it is
    while EVENTS_CONSUMED.labels("audio")._value.get() == consumed0:
        proc.step(stop)
    while pub.step(stop) is not False:                    # then 30 s of audio in one burst
        pass
    pub.drain()
    stream = keys.stream("flood", "audio")
    length = bus.redis.xlen(stream)
    samples = {(m.name, m.labels.get("kind")): m.value for f in StreamCollector(bus).collect()
               for m in f.samples if m.labels.get("source") == "flood"}
    while proc.step(stop) is not False:
        pass
    proc.drain()
    frames = 30 * SR // HOP
    consumed = EVENTS_CONSUMED.labels("audio")._value.get() - consumed0 - 1          # minus the StreamEnd
    gaps = FRAMES_DROPPED.labels("gap")._value.get() - gaps0
    assert length <= 200 + 100                                       # MAXLEN ~: within one radix node
    assert samples[("beatbus_stream_trimmed_entries_total", "audio")] == frames + 1 - length
    assert gaps > 0 and consumed + gaps == frames, (consumed, gaps, frames)       # each frame accounted for
    assert isinstance(from_fields(bus.redis.xrevrange(keys.stream("flood", "beats"), count=1)[0][1]), StreamEnd)
    print(f"\nflood: {frames} frames at once into MAXLEN~200: {length} kept, "
          f"{frames + 1 - length} trimmed; processor saw {consumed:.0f}, counted {gaps:.0f} as gaps")
