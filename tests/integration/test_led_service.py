"""The LED daemon against a real broker and real sockets: beats in, flashes out on the predicted beats."""
import collections
import threading
import time

import pytest

from beatbus import keys
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.led import HUB, build_led_service
from beatbus.consumers.led.render import clock_offset
from beatbus.schemas import BeatEvent, StreamEnd

from support.led import TcpCapture, UdpCapture
from support.procs import eventually, free_port

FLASH = {"intensity_amount": 0, "downbeat_emphasis": 0}


def _beat(k: int, t: float, bpm: float = 120.0) -> BeatEvent:
    p = 60.0 / bpm if bpm else 0.5
    return BeatEvent(source="default", timestamp=k * p, system_time=t, is_downbeat=k % 4 == 0, bpm=bpm,
                     intensity=0.5, confidence=0.9, beat=k, beat_in_bar=k % 4 + 1, bar=k // 4, meter=4,
                     next_beat_time=(k + 1) * p, next_beat_system_time=t + p, emitted_at=time.time())


def _start(svc):
    stop = threading.Event()
    thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    thread.start()
    assert svc.ready.wait(5)
    return stop, thread


def _onsets(packets):
    """Arrival times of DDP frames that turn bright."""
    out, prev = [], False
    for t, p in packets:
        lit = max(p[10:]) > 100
        if lit and not prev:
            out.append(t)
        prev = lit
    return out


def _play_beats(bus, beats, delay=0.08):
    """Publish each beat ``delay`` after it happened, as the beat processor does."""
    stream = keys.stream("default", "beats")
    for k, t in beats:
        time.sleep(max(0.0, t + delay - time.time()))
        bus.publish(stream, _beat(k, t), maxlen=1000)


def test_flashes_follow_predicted_beats_from_the_bus_and_bad_entries_are_survived(bus, settings):
    stream = keys.stream("default", "beats")
    with UdpCapture() as cap:
        svc = build_led_service(bus, settings, outputs=[f"ddp://127.0.0.1:{cap.port}", "web://svc-test"],
                                pixels=10, fps=30, effect_config=FLASH, exit_on_end=True)
        svc.runners[0].trace = collections.deque()                       # record frame deadlines
        stop, thread = _start(svc)
        t0 = time.time() + 0.3
        beats = [(k, t0 + 0.5 * k) for k in range(5)]
        bus.redis.xadd(stream, {"d": b"{not json"})                      # malformed: dead-lettered
        bus.publish(stream, _beat(99, time.time(), bpm=0.0), maxlen=1000)  # impossible tempo: ignored
        _play_beats(bus, beats)
        time.sleep(0.15)
        latest = HUB.latest("svc-test")                                   # while the device is live
        bus.publish(stream, StreamEnd(source="default", timestamp=3.0), maxlen=1000)
        thread.join(5)
        onsets = _onsets(cap.packets)
    assert svc.done.is_set() and svc.error is None                        # exit_on_end after StreamEnd
    assert svc.state.ignored == 1 and bus.redis.xlen(keys.dead_letter(stream)) == 1
    # beat 0 is only known 80 ms after it happened: no late flash; beats 1-4 were predicted and flash on time
    assert not [o for o in onsets if abs(o - t0) < 0.05]
    wall_minus_mono = clock_offset()     # read as the runner reads it
    beat_frames = [due + wall_minus_mono for due, _, is_beat in svc.runners[0].trace if is_beat]
    for k in range(1, 5):
        assert min(abs(b - (t0 + 0.5 * k)) for b in beat_frames) < 0.002                 # scheduled on it
        assert min(abs(o - (t0 + 0.5 * k)) for o in onsets) < 0.05, (k, [round(o - t0, 3) for o in onsets])
    assert latest is not None and len(latest[1]) == 30                   # web preview feed got frames too
    assert "svc-test" not in HUB.names() and HUB.latest("svc-test") is None  # closed: no longer listed


def test_a_failing_output_is_retried_without_stalling_the_others(bus, settings):
    port = free_port()
    with UdpCapture() as cap:
        svc = build_led_service(bus, settings, outputs=[f"ddp://127.0.0.1:{cap.port}", f"opc://127.0.0.1:{port}"],
                                pixels=10, fps=30, check=False)
        stop, thread = _start(svc)
        ddp, opc = svc.runners
        # refused, retried with backoff, while DDP keeps sending (more than half a second at 30 fps)
        eventually(lambda: opc.stats["errors"] >= 1 and len(cap.packets) > 15,
                   what="the refused OPC output to be retried while DDP keeps sending")
        with TcpCapture(port) as srv:
            data = srv.wait_for(14 * 3, timeout=8)                       # the OPC peer appears: reconnects
        stop.set()
        thread.join(5)
        times = [t for t, _ in cap.packets]
    assert len(data) >= 42 and data[:4] == bytes([0, 0, 0, 30])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) > 15 and max(gaps) < 0.25                          # DDP never stalled meanwhile


def test_lights_keep_the_beat_through_a_broker_outage(redis_server):
    settings = load_settings({"redis_url": redis_server.url, "metrics_addr": "off", "block_ms": 100}, env={})
    bus = Bus.connect(redis_server.url)
    with UdpCapture() as cap:
        svc = build_led_service(bus, settings, outputs=[f"ddp://127.0.0.1:{cap.port}"], pixels=10, fps=30,
                                effect_config=FLASH)
        stop, thread = _start(svc)
        t0 = time.time() + 0.2
        _play_beats(bus, [(0, t0), (1, t0 + 0.5)])
        redis_server.stop()                                              # the broker dies after beat 1
        time.sleep(t0 + 2.2 - time.time())
        onsets = _onsets(cap.packets)
        stop.set()
        thread.join(5)
    assert svc.error is None
    for k in (2, 3, 4):                                                  # coasting on the last tempo
        assert min(abs(o - (t0 + 0.5 * k)) for o in onsets) < 0.05, (k, [round(o - t0, 3) for o in onsets])


def test_tap_calibration_through_the_service(bus, settings):
    svc = build_led_service(bus, settings, outputs=["web://tap-test"], pixels=4)
    now = time.time()
    svc.state.apply(_beat(0, now))
    for k in range(1, 9):
        learned = svc.tap(now + 0.5 * k + 0.03)          # the user hears the beats 30 ms after capture
    assert learned == pytest.approx(0.03, abs=1e-6) and svc.timing.offset_s == learned


def test_cli_daemon_drives_ddp_until_the_stream_ends(broker, bus):
    import os
    import subprocess
    import sys

    from support.paths import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
    with UdpCapture() as cap:
        proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "consume", "led", "--output",
                                 f"ddp://127.0.0.1:{cap.port}", "--pixels", "20", "--fps", "30", "--exit-on-end",
                                 "--redis-url", broker.url, "--metrics-addr", "off", "--param", "intensity_amount=0"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not cap.packets and time.monotonic() < deadline:     # lights on (ambient) = reader ready
                time.sleep(0.05)
            time.sleep(0.3)
            t0 = time.time() + 0.2
            _play_beats(bus, [(k, t0 + 0.5 * k) for k in range(3)])
            time.sleep(0.6)
            bus.publish(keys.stream("default", "beats"), StreamEnd(source="default", timestamp=2.0), maxlen=1000)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        onsets = _onsets(cap.packets)
    assert proc.returncode == 0, err
    assert len(cap.packets[-1][1]) == 70 and max(cap.packets[-1][1][10:]) == 0   # lights off at exit
    for k in (1, 2, 3):
        assert min(abs(o - (t0 + 0.5 * k)) for o in onsets) < 0.05, (k, [round(o - t0, 3) for o in onsets])


def test_control_events_from_the_api_set_offset_sensitivity_and_effects(bus, settings):
    import orjson

    control = keys.stream("default", "control")
    svc = build_led_service(bus, settings, outputs=["web://ctl-test"], pixels=4)
    stop, thread = _start(svc)
    try:
        now = time.time()
        bus.publish(keys.stream("default", "beats"), _beat(0, now), maxlen=100)
        msg = {"type": "control", "v": 1, "source": "default", "led_offset_ms": 25.0, "sensitivity": 0.3,
               "bpm_override": 100.0, "issued_at": now}
        bus.redis.xadd(control, {"d": orjson.dumps(msg)})
        bus.redis.xadd(control, {"d": orjson.dumps({"type": "other_stage", "x": 1})})      # not for us
        bus.redis.xadd(control, {"d": orjson.dumps({**msg, "led_offset_ms": 5000.0})})     # out of range
        deadline = time.monotonic() + 3
        while svc.timing.offset_s != 0.025 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.timing.offset_s == 0.025 and svc.runners[0].effect.config["beat_sensitivity"] == 0.3
        assert svc.state.ambient_ratio(time.time()) == 0.0
        bus.redis.xadd(control, {"d": orjson.dumps({"type": "control", "source": "default",
                                                    "effects_enabled": False, "issued_at": now})})
        deadline = time.monotonic() + 3
        while svc.state.effects_enabled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.state.ambient_ratio(time.time()) == 1.0                    # effects off: ambient
        time.sleep(0.1)
        assert bus.redis.xlen(keys.dead_letter(control)) == 1 and svc.timing.offset_s == 0.025
    finally:
        stop.set()
        thread.join(5)


def test_a_render_thread_that_dies_stops_the_daemon_with_one_line_naming_the_device(bus, settings):
    import struct

    from beatbus.consumers.led.outputs import Output
    from beatbus.consumers.led.render import RenderThreadDied
    from beatbus.consumers.led.service import LedService, plan_led
    from beatbus.errors import BeatbusError
    from beatbus.runtime import run_services

    class Buggy(Output):                   # a bug, not an I/O error: the loop cannot go on
        def send(self, frame):
            raise struct.error("argument for 's' must be a bytes object")

    plan = plan_led(settings, outputs=["web://buggy"], pixels=4)
    svc = LedService(bus, settings=settings, plan=plan, outputs={"buggy": Buggy(plan.devices[0].spec, 4)})
    t0 = time.monotonic()
    with pytest.raises(RenderThreadDied) as err:
        run_services([svc], duration=10)
    assert time.monotonic() - t0 < 5                                     # not a silent run to the end
    assert str(err.value) == ("LED device buggy (web://buggy): render thread died: "
                              "error: argument for 's' must be a bytes object")
    assert isinstance(err.value, BeatbusError)     # the CLI prints `beatbus: error: ...` and exits 2
