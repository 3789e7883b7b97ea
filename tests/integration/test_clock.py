"""The beat clock as a user runs it (issue #20 item 5): real redis-server, the real click producer, beat
processor and ``beatbus clock run`` as processes, OSC received by python-osc's own server on loopback.

This machine has no ALSA sequencer (no ``/dev/snd``): ``--midi`` must be one line and exit 2, and the
OSC clock must run without it. The MIDI message stream is tested in ``tests/unit/test_clock_schedule.py``.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import orjson
import pytest

from beatbus import keys
from beatbus.bus import Bus
from beatbus.schemas import AudioFrame, SectionEvent, from_fields

from support.daemons import Daemon, daemon_env
from support.procs import beatbus_cmd, eventually

ALSA_SEQ = "/dev/snd/seq"


class OscReceiver:
    """python-osc's blocking UDP server on a loopback port, on a thread: ``(arrival wall time, address, args)``."""

    def __init__(self):
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import BlockingOSCUDPServer

        self.messages: list[tuple[float, str, tuple]] = []
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.messages.append((time.time(), address, args)))
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), d)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> OscReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of(self, address: str) -> list[tuple[float, tuple]]:
        return [(t, args) for t, a, args in list(self.messages) if a == address]


def test_clock_sends_osc_beats_bars_on_the_click_and_stops_at_its_end(redis_server, tmp_path):
    env = daemon_env(REDIS_URL=redis_server.url, BEATBUS_METRICS_ADDR="off", BEATBUS_SOURCE="clk")
    with OscReceiver() as rx:
        clock = Daemon("clock", ["clock", "run", "--osc", f"127.0.0.1:{rx.port}", "--exit-on-end"], env=env,
                       workdir=tmp_path).start()
        processor = Daemon("process", ["process", "--backend", "dsp", "--sources", "clk"], env=env,
                           workdir=tmp_path)
        producer = Daemon("produce", ["produce", "click", "--bpm", "120", "--duration", "16"], env=env,
                          workdir=tmp_path)
        started = [clock]
        try:
            eventually(lambda: clock.poll_ready() or not clock.alive(), 60, "the clock to be ready")
            assert clock.alive(), clock.stderr()
            started += [processor.start()]
            eventually(lambda: processor.poll_ready() or not processor.alive(), 90, "the processor to be ready")
            started += [producer.start()]
            eventually(lambda: len(rx.of("/beatbus/beat")) >= 12 or not clock.alive(), 60,
                       lambda: f"12 beat messages; got {len(rx.of('/beatbus/beat'))}: {clock.stderr()[-800:]}")
            eventually(lambda: rx.of("/beatbus/stop") or not clock.alive(), 30, "/beatbus/stop at the click's end")
            eventually(lambda: not clock.alive(), 15, "the clock to exit at the end of the stream (--exit-on-end)")
            assert clock.proc.returncode == 0, clock.stderr()
        finally:
            for d in reversed(started):
                d.stop()
    assert "Traceback" not in clock.stderr() and "clock of bb:{clk}:beats -> OSC 127.0.0.1:" in clock.stderr()

    beats, bars = rx.of("/beatbus/beat"), rx.of("/beatbus/bar")
    start, stop = rx.of("/beatbus/start"), rx.of("/beatbus/stop")
    assert len(start) == 1 and len(stop) == 1 and start[0][0] <= beats[0][0] and stop[0][0] >= beats[-1][0]
    # /beatbus/beat i:beat i:beat_in_bar f:bpm f:confidence, every 0.5 s
    numbers = [a[0] for _, a in beats]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert all(a[2] == pytest.approx(120.0, abs=2.0) and 0.0 <= a[3] <= 1.0 for _, a in beats)
    arrivals = np.array([t for t, _ in beats])
    assert np.median(np.diff(arrivals)) == pytest.approx(0.5, abs=0.01)
    # a bar message on every downbeat (beat in bar 1), every 4 beats, the first one with the start
    downbeats = [t for t, a in beats if a[1] == 1]
    assert [a[1] for _, a in beats[:5]] == [1, 2, 3, 4, 1] and len(bars) == len(downbeats)
    assert all(a[1] == 4 for _, a in bars) and np.diff([a[0] for _, a in bars]).tolist() == [1] * (len(bars) - 1)
    assert np.abs(np.array([t for t, _ in bars]) - np.array(downbeats)).max() < 0.02
    assert rx.of("/beatbus/tempo") and rx.of("/beatbus/tempo")[0][1][0] == pytest.approx(120.0, abs=2.0)

    # timing against the click's own beats: sample 0's wall time + k * 0.5 s
    check = Bus.connect(redis_server.url)
    try:
        _, fields = check.redis.xrange(keys.stream("clk", "audio"), count=1)[0]
    finally:
        check.close()
    first = from_fields(fields)
    assert isinstance(first, AudioFrame) and first.sample_index == 0
    t0 = first.wall_ns / 1e9
    offsets = (arrivals - t0 + 0.25) % 0.5 - 0.25          # to the nearest click beat, signed (+ = late)
    assert np.percentile(np.abs(offsets), 50) < 0.040, np.round(offsets * 1000, 1)


def test_osc_section_follows_the_playing_confirmed_section_only(redis_server, tmp_path):
    """The structure daemon's stream as it really runs: tentative sections, a section confirmed after it
    closed, a relabel of a past section. Only the playing (open, confirmed) section's label changes are
    sent, as the trigger's patterns follow confirmed sections only."""
    env = daemon_env(REDIS_URL=redis_server.url, BEATBUS_METRICS_ADDR="off", BEATBUS_SOURCE="sec")
    stream = keys.stream("sec", keys.StreamKind.SECTIONS)

    def section(start, label, status, end=None):
        now = time.time()
        return SectionEvent(source="sec", start=start, end=end, system_time=now, emitted_at=now, label=label,
                            confidence=0.5, status=status)

    sequence = [
        section(0.0, "unknown", "tentative"),
        section(0.0, "intro", "confirmed"),                 # sent: intro plays
        section(10.3, "chorus", "tentative"),               # may vanish: not sent
        section(0.0, "intro", "confirmed", end=10.3),       # the intro closing: the past
        section(10.3, "verse", "confirmed"),                # sent: verse plays
        section(0.0, "outro", "revised", end=10.3),         # a relabel of the past: not sent
        section(10.3, "chorus", "revised"),                 # the playing section relabelled: sent
        section(10.3, "chorus", "confirmed"),               # the same label again: nothing new
    ]
    with OscReceiver() as rx:
        clock = Daemon("clock", ["clock", "run", "--osc", f"127.0.0.1:{rx.port}"], env=env, workdir=tmp_path).start()
        try:
            eventually(lambda: clock.poll_ready() or not clock.alive(), 60, "the clock to be ready")
            bus = Bus.connect(redis_server.url)
            try:
                for ev in sequence:
                    bus.publish(stream, ev, maxlen=100)
            finally:
                bus.close()
            eventually(lambda: len(rx.of("/beatbus/section")) >= 3 or not clock.alive(), 20, "three section messages")
            time.sleep(0.5)                                  # nothing else may follow
        finally:
            clock.stop()
    assert [a[0] for _, a in rx.of("/beatbus/section")] == ["intro", "verse", "chorus"], rx.messages


def test_midi_without_an_alsa_sequencer_is_one_line_and_exit_2():
    r = beatbus_cmd("clock", "run", "--midi", "beatbus clock", "--osc", "127.0.0.1:9000",
                    env={"REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    if os.path.exists(ALSA_SEQ):       # a machine with the sequencer opens the port; then the broker is what fails
        assert r.returncode == 2 and "cannot reach broker" in r.stderr, r.stderr
        return
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr                   # no ALSA lib noise, no traceback
    assert lines[0].startswith("beatbus: error: MIDI port 'beatbus clock': no ALSA sequencer on this machine") \
        and ALSA_SEQ in lines[0] and "snd-seq" in lines[0], lines[0]


@pytest.mark.parametrize("args, needle", [
    ([], "the clock goes nowhere: give --osc HOST:PORT"),
    (["--osc", "127.0.0.1"], "must be HOST:PORT"),
    (["--osc", "127.0.0.1:99999"], "port 99999 is not 1-65535"),
    (["--osc", "127.0.0.1:9000", "--output-latency-ms", "-3"], "output_latency_ms"),
    (["--osc", "127.0.0.1:9000"], "cannot reach broker"),
])
def test_clock_user_errors_are_one_line(args, needle):
    r = beatbus_cmd("clock", "run", *args, env={"REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("beatbus: error: ") and needle in last, r.stderr
    assert "Traceback" not in r.stderr


def test_latency_ms_is_the_old_spelling_of_output_latency_ms():
    """One name per concept: the LED consumer's ``--output-latency-ms`` (``--latency-ms`` works and says so)."""
    r = beatbus_cmd("clock", "run", "--osc", "127.0.0.1:9000", "--latency-ms", "20",
                    env={"REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert r.returncode == 2 and "cannot reach broker" in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if "deprecated" in ln] == \
        ["beatbus: warning: --latency-ms is deprecated; use --output-latency-ms"]


def test_bench_clock_prints_jitter_and_offsets_of_both_outputs(tmp_path):
    out = tmp_path / "clock.json"
    r = beatbus_cmd("bench", "clock", "--click-seconds", "10", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| run | output | intervals | vs plan std / p99 ms |" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| click 120 BPM |")]
    assert [ln.split(" | ")[1] for ln in rows] == ["MIDI (recording sink)", "OSC (UDP loopback)"], r.stdout
    run = orjson.loads(out.read_bytes())["runs"][0]
    midi, osc = run["outputs"]["MIDI (recording sink)"], run["outputs"]["OSC (UDP loopback)"]
    assert midi["intervals"] >= 24 * 3 and osc["beats"] >= 3 and run["osc_received"] == run["osc_sent"]
    assert midi["tempo_off_pct"] == 0.0 and abs(osc["offset_p50_ms"]) < 40
