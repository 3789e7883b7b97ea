"""Timing: the beat grid, flashes fired at predicted times, fallbacks, tap calibration."""
import math
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from beatbus.consumers.led.config import DeviceConfig, LedConfig, resolve_devices
from beatbus.consumers.led.effects import create_effect
from beatbus.consumers.led.render import DeviceRunner, PixelMap, clock_offset
from beatbus.consumers.led.state import LedState
from beatbus.consumers.led.timing import LightTiming, OnsetGate, TapCalibrator, display_time, next_wake, send_deadline
from beatbus.schemas import BeatEvent, IntensityEvent, SectionEvent, StreamEnd

from support.led import UdpCapture


def beat(t: float, *, index: int = 10, bpm: float = 120.0, nxt: float | None = None, in_bar: int = 3,
         bar: int = 2, confidence: float = 0.9, intensity: float | None = 0.5) -> BeatEvent:
    period = 60.0 / bpm if bpm else 0.5
    return BeatEvent(source="s", timestamp=50.0, system_time=t, is_downbeat=in_bar == 1, bpm=bpm,
                     intensity=intensity, confidence=confidence, beat=index, beat_in_bar=in_bar, bar=bar, meter=4,
                     next_beat_time=50.0 + period, next_beat_system_time=nxt if nxt is not None else t + period,
                     emitted_at=t + 0.08)


def levels(i=0.5, bass=0.2, mids=0.3, highs=0.4):
    return IntensityEvent(source="s", timestamp=1.0, system_time=1.0, emitted_at=1.0, intensity=i, rms=0.1,
                          loudness_lufs=-20.0, flux=0.1, centroid_hz=1000.0, bass=bass, mids=mids, highs=highs)


def _metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_grid_interpolates_from_the_last_beat_and_extrapolates_predictions():
    now = time.time()
    st = LedState(clock=lambda: now)
    assert st.grid(now) is None and st.context(now, 5).has_beat is False and st.context(now, 5).ambient == 1.0
    assert st.apply(beat(now - 0.1, nxt=now + 0.42))              # next beat predicted 0.52 s after this one
    g = st.grid(now)
    assert (g.index, g.onset, g.next_onset, g.beat_in_bar, g.bar) == (10, now - 0.1, now + 0.42, 3, 2)
    c = st.context(now + 0.16, 5)
    assert c.beat == 10 and c.phase == pytest.approx(0.5) and c.bar_phase == pytest.approx(2.5 / 4)
    g = st.grid(now + 0.5)                                         # past the prediction: the next beat
    assert (g.index, g.onset, g.beat_in_bar, g.bar) == (11, now + 0.42, 4, 2)
    g = st.grid(now + 1.3)                                         # then one period (60/bpm) per beat
    assert (g.index, g.onset, g.beat_in_bar, g.bar) == (12, pytest.approx(now + 0.92), 1, 3)
    g = st.grid(now - 0.7)                                         # before the anchor, backwards
    assert (g.index, g.onset, g.beat_in_bar) == (8, pytest.approx(now - 1.1), 1)
    assert st.nearest_beat(now + 0.3) == (pytest.approx(now + 0.42), 0.5)


def test_impossible_events_are_ignored_and_counted():
    now = time.time()
    st = LedState(clock=lambda: now)
    before = _metric("beatbus_led_events_ignored_total", reason="bad_bpm")
    assert not st.apply(beat(now, bpm=0.0))
    assert _metric("beatbus_led_events_ignored_total", reason="bad_bpm") == before + 1
    assert not st.apply(beat(now, intensity=math.nan))
    assert not st.apply(levels(i=math.nan)) and not st.apply(levels(bass=1.5))
    assert not st.apply(beat(now - 60))                             # a minute old: stale
    assert st.ignored == 5 and st.anchor is None and st.levels is None
    assert st.apply(beat(now)) and not st.apply(beat(now - 0.5))    # out of order
    assert st.apply(beat(now + 0.5, nxt=now + 0.2))                 # impossible prediction: tempo used instead
    assert st.anchor.next_time == pytest.approx(now + 1.0)
    assert st.apply(levels(0.8, 0.7, 0.6, 0.5)) and st.apply(SectionEvent(
        source="s", start=1.0, system_time=now, emitted_at=now, label="chorus", confidence=0.9, status="confirmed"))
    c = st.context(now + 0.6, 3)
    assert (c.intensity, c.bass, c.mids, c.highs, c.section) == (0.8, 0.7, 0.6, 0.5, "chorus")


def test_onset_gate_flashes_predicted_beats_only_and_never_twice():
    gate = OnsetGate(late_limit_s=0.06)
    assert gate.flash_age(100.0, 100.5, t=100.1, period=0.5) is None       # learnt after the fact: no flash
    assert gate.flash_age(100.5, 101.0, t=100.5, period=0.5) == 0.0        # seen coming: flashes at onset
    assert gate.flash_age(100.55, 101.05, t=100.6, period=0.5) == pytest.approx(0.1)  # corrected: same flash
    assert gate.flash_age(101.05, 101.55, t=101.15, period=0.5) is None    # first frame 100 ms late: skipped
    assert gate.flash_age(101.55, 102.05, t=101.57, period=0.5) == pytest.approx(0.0)
    assert gate.flash_age(101.8, 102.3, t=101.9, period=0.5) is None       # a jump of 250 ms: not that beat


def test_flashes_continue_when_the_tracker_emits_fewer_beats_than_the_grid():
    """The tracker's indices count emitted beats; when it emits only every 4th beat they lag the grid."""
    now = time.time()
    clock = [now]
    st = LedState(smooth_beats=0, clock=lambda: clock[0])
    gate = OnsetGate()
    flashes = []
    for k in range(3):                                   # beats at now + 2k, reported 80 ms late, index k
        t_beat = now + 2.0 * k
        for t in np.arange(t_beat - 2.0 + 0.08, t_beat + 0.08, 1 / 60):
            clock[0] = t
            if st.anchor is not None and st.context(t, 1, gate).flash_age == 0.0:
                flashes.append(t)
        st.apply(beat(t_beat, index=k))
    # after the first report every grid beat (every 0.5 s) flashed once, within a frame of its onset
    expected = now + np.arange(0.5, 4.01, 0.5)
    assert len(flashes) == len(expected)
    assert np.allclose(flashes, expected, atol=1 / 60)


def test_scheduling_helpers():
    assert next_wake(10.0, 9.99, now=9.98) == (9.99, True)
    assert next_wake(10.0, 10.01, now=9.98) == (10.0, False)
    assert next_wake(10.0, 9.979, now=9.98) == (9.98, True)        # just missed: at once
    assert next_wake(10.0, 9.97, now=9.98) == (10.0, False)        # long past: the regular frame draws it
    assert send_deadline(display_time(5.0, 0.03, 0.01), 0.03, 0.01) == pytest.approx(5.0)
    assert display_time(5.0, 0.03, 0.01) == pytest.approx(5.02)


def _device(port: int, **kw) -> object:
    return resolve_devices(LedConfig(effect="beat_flash", pixels=10, devices=[
        DeviceConfig(output=f"ddp://127.0.0.1:{port}", **kw)],
        effect_config={"intensity_amount": 0, "downbeat_emphasis": 0}))[0]


def _bright(packets, start=0.0):
    return [t for t, p in packets if p[10:].count(0) < len(p[10:]) // 2 and t > start]


def test_flashes_fire_at_predicted_beats_compensated_for_latency_and_offset():
    now = time.time()
    st = LedState()
    st.apply(beat(now - 0.1, nxt=now + 0.6))      # the processor's prediction: next beat in 0.6 s
    pred = [now + 0.6, now + 1.1]
    with UdpCapture() as plain, UdpCapture() as slow:
        # 5 fps: regular frames are 200 ms apart, only scheduled beat frames can land on the beat
        r1 = DeviceRunner(_device(plain.port, fps=5), st, LightTiming(), record=True).start()
        r2 = DeviceRunner(_device(slow.port, fps=5, output_latency_ms=150), st, LightTiming(offset_s=0.05),
                          record=True).start()
        time.sleep(1.3)
        r1.stop()
        r2.stop()
        got1, got2 = _bright(plain.packets), _bright(slow.packets)
    wall_minus_mono = clock_offset()     # read as the runner reads it
    for runner, shift in ((r1, 0.0), (r2, -0.15 + 0.05)):
        beats = [due + wall_minus_mono for due, _, is_beat in runner.trace if is_beat]
        assert len(beats) >= 2
        assert beats[0] == pytest.approx(pred[0] + shift, abs=0.003)   # scheduled exactly on the prediction
        assert beats[1] == pytest.approx(pred[1] + shift, abs=0.003)
    # the flash's packet arrives then (loose: a shared machine)
    assert got1 and abs(got1[0] - pred[0]) < 0.05
    assert got2 and abs(got2[0] - (pred[0] - 0.1)) < 0.05


def test_fallback_to_ambient_when_beats_stop_coast_when_the_processor_is_gone():
    now = time.time()
    st = LedState(silence_timeout_s=1.0, coast_s=10.0, fade_s=0.5, clock=lambda: now)
    st.apply(beat(now))
    assert st.ambient_ratio(now + 0.5) == 0.0
    assert st.ambient_ratio(now + 1.25) == pytest.approx(0.5)            # fading
    assert st.ambient_ratio(now + 2.0) == 1.0                            # no beat for 2 s: ambient
    st.set_processor_alive(False)                                        # processor gone: coast on the tempo
    assert st.ambient_ratio(now + 5.0) == 0.0 and st.ambient_ratio(now + 11.0) == 1.0
    c = st.context(now + 5.0, 4)                                         # still beats at 120 BPM
    assert c.has_beat and c.beat == 20 and c.phase == pytest.approx(0.0)
    st.apply(StreamEnd(source="s", timestamp=10.0))                      # the source ended: ambient at once
    assert st.ambient_ratio(now + 0.25) == pytest.approx(0.5) and st.ambient_ratio(now + 0.6) == 1.0
    st.apply(beat(now + 1.0, index=11))                                  # music again
    assert st.ambient_ratio(now + 1.2) == 0.0

    device = _device(9, fps=30)                                          # render only, nothing sent
    runner = DeviceRunner(device, st, LightTiming(), ambient="ambient")
    amb = create_effect("ambient", 10)
    t = now + 30.0
    frame, ctx = runner.render(t)
    assert ctx.ambient == 1.0 and frame == PixelMap(device).frame(amb.render(ctx))


def test_calibration_converges_on_a_known_offset_from_synthetic_taps():
    now = time.time()
    st = LedState(clock=lambda: now)
    st.apply(beat(now, bpm=120.0))
    rng = np.random.default_rng(7)
    timing = LightTiming(offset_s=0.0, calibrator=TapCalibrator(min_taps=6, window=16))
    learned = []
    for k in range(1, 17):
        tap = now + k * 0.5 + 0.045 + rng.normal(0, 0.008)
        if k in (5, 11):
            tap += 0.2                                     # distracted taps, 200 ms off: rejected
        learned.append(timing.tap(tap, st.nearest_beat(tap)))
    assert timing.calibrator.rejected == 2
    assert learned[4] is None                              # not before min_taps agree
    assert timing.offset_s == pytest.approx(0.045, abs=0.006)
    assert _metric("beatbus_led_offset_seconds") == pytest.approx(timing.offset_s)
    # taps all over the place teach nothing
    noisy = TapCalibrator(min_taps=6)
    for k in range(1, 17):
        tap = now + k * 0.5 + rng.uniform(-0.14, 0.14)
        noisy.tap(tap, st.nearest_beat(tap))
    assert noisy.offset_s is None
    assert TapCalibrator().tap(now, None) is None          # no beat grid yet


def test_steady_beats_are_smoothed_and_a_tempo_change_falls_back_to_the_tracker():
    now = time.time()
    raw, smooth = LedState(smooth_beats=0, clock=lambda: now), LedState(smooth_beats=8, clock=lambda: now)
    jitter = [0.01, -0.01] * 5                                   # 20 ms frame quantisation, alternating
    for k, j in enumerate(jitter):
        t = now - 5 + 0.5 * k + j
        for st in (raw, smooth):
            st.apply(beat(t, index=k, nxt=t + 0.5))
    truth = now - 5 + 0.5 * len(jitter)
    assert abs(raw.anchor.next_time - truth) == pytest.approx(0.01, abs=1e-6)
    assert abs(smooth.anchor.next_time - truth) < 0.005
    # the tempo jumps to 150 BPM: the fit disagrees with the tracker, whose prediction is used
    t = truth + 0.4
    smooth.apply(beat(t, index=len(jitter), bpm=150.0, nxt=t + 0.4))
    assert smooth.anchor.next_time == pytest.approx(t + 0.4) and smooth.anchor.period == pytest.approx(0.4)
