"""Adaptive quality through a real broker: the real BeatService degrades a source beatnet -> small -> dsp
-> dsp-4/4.

Overload is forced with the documented ``adaptive_high_load`` setting set so low that any load
counts. The audio (a 120 BPM click) is published in 5 s bursts, the next one once the processor
has changed level, so that each level tracks whole seconds of audio whatever the machine's load.
"""
import threading
import time

import numpy as np
from prometheus_client import REGISTRY

from beatbus import keys
from beatbus.processors.beat.cli import make_processor
from beatbus.processors.beat.service import BeatService
from beatbus.producers import ClickSource, click_times
from beatbus.runtime import run_services
from beatbus.schemas import AudioFrame, BeatEvent, StreamEnd, float_to_pcm, from_fields

from support.procs import eventually

SR, HOP, BURST_S = 22050, 441, 5.0


def _level():
    return REGISTRY.get_sample_value("beatbus_quality_level", {"source": "default", "role": "beat"})


def _publish_burst(bus, click, first: int, t0_ns: int) -> int:
    """BURST_S seconds of clicks from sample ``first``, as 20 ms frames; returns the next sample."""
    stream, pipe = keys.stream("default", "audio"), bus.pipeline()
    n = int(BURST_S * SR)
    y = click.render(first, n).astype(np.float32)
    for i in range(0, n, HOP):
        index = first + i
        bus.publish(stream, AudioFrame(source="default", seq=index // HOP, sample_index=index,
                                       wall_ns=t0_ns + index * 10**9 // SR, sr=SR, n_samples=HOP,
                                       pcm=float_to_pcm(y[i:i + HOP])), maxlen=10000, pipeline=pipe)
    pipe.execute()
    return first + n


def test_overloaded_processor_degrades_a_source_step_by_step_keeping_beat_numbers_and_stream_clock(bus, settings):
    import msgspec

    s = msgspec.structs.replace(settings, backend="beatnet", adaptive=True, adaptive_high_load=1e-6)
    svc = BeatService(bus, settings=s, make_processor=make_processor(s), sources=["default"], exit_when_ended=True)
    runner = threading.Thread(target=run_services, args=([svc],), kwargs={"until": [svc], "duration": 120})
    runner.start()
    try:
        eventually(lambda: "default" in svc.owned, what="source adopted")
        assert _level() == 0
        assert bus.redis.hget(keys.quality("default"), "beat") == b"full"       # level 0, whatever the backend
        click, t0, index = ClickSource(120, realtime=False), time.time_ns(), 0
        for level in (1, 2, 3):
            index = _publish_burst(bus, click, index, t0)
            eventually(lambda lv=level: _level() == lv, timeout=40, what=lambda lv=level: f"level {lv}, gauge {_level()}")
        index = _publish_burst(bus, click, index, t0)
        bus.publish(keys.stream("default", "audio"), StreamEnd(source="default", timestamp=index / SR),
                    maxlen=10000)
    finally:
        runner.join(timeout=60)
    assert not runner.is_alive()
    assert bus.redis.hget(keys.quality("default"), "beat") == b"dsp-4/4"

    beats = [e for e in (from_fields(f) for _, f in bus.redis.xrange(keys.stream("default", "beats")))
             if isinstance(e, BeatEvent)]
    backends = [b.backend for b in beats]
    runs = [x for i, x in enumerate(backends) if i == 0 or backends[i - 1] != x]
    # the first step may come before beatnet locked (any load is overload here, and a loaded machine
    # makes the first burst slow): then no beat carries beatnet; the steps after it are the point
    assert runs in (["beatnet", "small", "dsp"], ["small", "dsp"]), backends
    assert [b.beat for b in beats] == list(range(len(beats)))            # numbering carries on
    assert all(b.timestamp < 4 * BURST_S + 0.05 for b in beats)
    truth = np.array([t for t, _ in click_times(120, 21.0, 4)])
    assert max(np.min(np.abs(truth - b.timestamp)) for b in beats) < 0.03   # on the stream clock
    gaps = np.diff([b.timestamp for b in beats])
    assert np.all(np.abs(gaps / 0.5 - np.round(gaps / 0.5)) < 0.08) and gaps.min() > 0.45, gaps
    assert gaps.max() < 3.01, gaps                                         # a short re-lock at each switch
    # dsp-4/4 is the dsp backend tracking one meter: the same backend on its beats, one restart among them
    for name, restarts in (("small", 0), ("dsp", 1)):
        same = np.array([b.timestamp for b in beats if b.backend == name])
        steps = np.diff(same)
        assert len(same) >= 6 and np.sum(steps > 0.75) <= restarts, (name, same)
        assert np.allclose(steps[steps <= 0.75], 0.5, atol=0.04), (name, same)
