"""Many streams in one batch (processors.beat.BeatBatch) and in the processor daemon."""
from __future__ import annotations

import time

import numpy as np
import pytest

from beatbus import keys
from beatbus.processors.beat import BeatBatch, BeatProcessor
from beatbus.processors.beat.service import BeatService
from beatbus.producers import ClickSource, click_times
from beatbus.schemas import AudioFrame, BeatEvent, StreamEnd, float_to_pcm, from_fields

SR = 22050
CHUNK = 441


def clicks(bpm: float, meter: int, seconds: float) -> np.ndarray:
    return np.concatenate([c.samples for c in ClickSource(bpm, realtime=False, duration=seconds, meter=meter)])


def fields(beats) -> list[tuple]:
    return [(b.beat_in_bar, b.meter, b.is_downbeat, b.decided_at) for b in beats]


@pytest.mark.parametrize("backend", ["dsp", "beatnet"])
def test_batch_matches_separate_processors(backend: str) -> None:
    """Streams of different tempi, lengths and start times give the same beats batched as alone."""
    if backend == "beatnet":
        pytest.importorskip("torch")
    signals = {"a": clicks(120, 4, 9.0), "b": clicks(90, 3, 7.0), "c": clicks(150, 4, 9.0)}
    alone = {}
    for key, y in signals.items():
        proc = BeatProcessor(backend=backend)
        alone[key] = [b for i in range(0, y.size, CHUNK) for b in proc.process(y[i : i + CHUNK])]
    batch = BeatBatch(backend=backend)
    got = {key: [] for key in signals}
    late_start = 100  # stream "c" joins two seconds in (its stream time starts at its first chunk)
    batch.add("a")
    batch.add("b")
    for t in range(late_start + 9 * SR // CHUNK + 1):
        if t == late_start:
            batch.add("c")
        chunks = {}
        for key, y in signals.items():
            i = (t - late_start if key == "c" else t) * CHUNK
            if key in batch and 0 <= i < y.size:
                chunks[key] = y[i : i + CHUNK]
        if "b" in batch and t * CHUNK >= signals["b"].size:
            batch.remove("b")  # a source going away mid-run
        for key, beats in batch.process(chunks).items():
            got[key].extend(beats)
    for key in signals:
        assert len(got[key]) == len(alone[key]) > 5, key
        assert fields(got[key]) == fields(alone[key]), key
        # float32 kernels for different batch sizes differ in the last bits only
        np.testing.assert_allclose([b.time for b in got[key]], [b.time for b in alone[key]], atol=1e-6)
        np.testing.assert_allclose([b.bpm for b in got[key]], [b.bpm for b in alone[key]], rtol=1e-5)
    assert "b" not in batch and len(batch) == 2


def test_batch_groups_different_backends_and_uneven_chunks() -> None:
    pytest.importorskip("torch")
    y = clicks(120, 4, 8.0)
    batch = BeatBatch()
    batch.add("dsp", BeatProcessor(backend="dsp"))
    batch.add("net", BeatProcessor(backend="beatnet"))
    ref = BeatProcessor(backend="dsp")
    got, want = [], []
    rng = np.random.default_rng(0)
    i = 0
    while i < y.size:
        n = int(rng.integers(1, 3 * CHUNK))  # 0, 1, 2 or more frames per call
        out = batch.process({"dsp": y[i : i + n], "net": y[i : i + n]})
        got.extend(out["dsp"])
        want.extend(ref.process(y[i : i + n]))
        i += n
    assert fields(got) == fields(want) and len(got) > 10
    assert batch["net"].backend == "beatnet"


def test_batch_rejects_unknown_and_duplicate_streams() -> None:
    batch = BeatBatch(backend="dsp")
    batch.add("a")
    with pytest.raises(ValueError, match="already"):
        batch.add("a")
    with pytest.raises(KeyError, match="not in the batch"):
        batch.process({"zzz": np.zeros(CHUNK, dtype=np.float32)})
    with pytest.raises(ValueError, match="not both"):
        BeatBatch(lambda: BeatProcessor(), backend="dsp")
    assert batch.remove("nope") is None


def _publish_clicks(bus, source: str, bpm: float, meter: int, start: float, end: float, seq0: int = 0) -> int:
    """AudioFrames for the click track's samples [start, end) s, as a producer publishes them."""
    stream = keys.stream(source, keys.StreamKind.AUDIO)
    pipe = bus.redis.pipeline(transaction=False)
    src = ClickSource(bpm, realtime=False, duration=end, meter=meter, start_wall_ns=time.time_ns())
    seq = seq0
    for chunk in src:
        if chunk.sample_index < int(start * SR):
            continue
        frame = AudioFrame(source=source, seq=seq, sample_index=chunk.sample_index, wall_ns=chunk.wall_ns,
                           sr=SR, n_samples=len(chunk.samples), pcm=float_to_pcm(chunk.samples))
        bus.publish(stream, frame, maxlen=100000, pipeline=pipe)
        seq += 1
    pipe.execute()
    return seq


def test_service_tracks_many_sources_in_one_batch(bus, settings) -> None:
    """Two sources through the real broker, one joining mid-stream: beats in stream time, each
    source at its own tempo and meter."""
    # source "a" has been running for 3 s before the processor starts (it goes live from there)
    seq_a = _publish_clicks(bus, "a", 120, 4, 0.0, 3.0)
    service = BeatService(bus, settings=settings, make_processor=lambda: BeatProcessor(backend="dsp"),
                          sources=["a", "b"], exit_when_ended=True)
    service.setup()
    assert set(service.owned) == {"a", "b"} and len(service.batch) == 2
    _publish_clicks(bus, "a", 120, 4, 3.0, 15.0, seq_a)
    _publish_clicks(bus, "b", 90, 3, 0.0, 12.0)
    for name, end in (("a", 15.0), ("b", 12.0)):
        bus.publish(keys.stream(name, keys.StreamKind.AUDIO), StreamEnd(source=name, timestamp=end), maxlen=100000)
    import threading

    stop = threading.Event()
    deadline = time.monotonic() + 120
    while service.step(stop) and time.monotonic() < deadline:
        pass
    service.drain()
    assert len(service.batch) == 0
    for name, bpm, meter, start, end in (("a", 120, 4, 3.0, 15.0), ("b", 90, 3, 0.0, 12.0)):
        events = [from_fields(f) for _, f in bus.redis.xrange(keys.stream(name, keys.StreamKind.BEATS))]
        assert isinstance(events[-1], StreamEnd)
        beats = [e for e in events if isinstance(e, BeatEvent)]
        truth = click_times(bpm, end, meter)
        times = np.array([t for t, _ in truth])
        assert min(b.timestamp for b in beats) > start, "beat times are stream times, not processor times"
        late = [b for b in beats if b.timestamp > start + 6.0]
        assert len(late) >= (end - start - 6.5) * bpm / 60
        for b in late:
            k = int(np.argmin(np.abs(times - b.timestamp)))
            assert abs(times[k] - b.timestamp) <= 0.02
            assert abs(b.bpm - bpm) < 0.02 * bpm
            assert (b.beat_in_bar, b.meter) == (truth[k][1], meter)
