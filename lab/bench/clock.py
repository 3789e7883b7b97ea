"""``beatbus bench clock [FILE...]``: the beat clock against a click track and annotated files.

Each run plays in real time through the real pipeline on an embedded broker: ``beatbus produce
click|file`` and ``beatbus process`` as daemons (their own processes, as deployed), the
:class:`~consumers.clock.service.ClockService` in the bench's process, with the OSC clock
sent to a UDP receiver on loopback (arrival times) and the MIDI clock to a
:class:`~consumers.clock.midi.RecordingSink` (the mido messages and their send times; no MIDI
port is opened, so it also runs where there is no ALSA sequencer). Output latency 0: a message
is due when its beat is.

Per output:

- interval error vs plan: each interval between consecutive ticks (MIDI clock) or beat messages
  (OSC) minus the interval the scheduler planned: what the send thread adds (std, p99 of |error|);
- interval error vs reference: each interval minus the reference beat interval / 24 (MIDI) or
  the reference beat interval (OSC), where the clock's tempo is within 10 % of the reference's
  (a tracker at half or double tempo is counted in ``tempo off``, not in the error);
- beat offset: each beat message (OSC) or beat tick (every 24th MIDI clock) minus the nearest
  reference beat, over those within +/-70 ms (``matched``): p50 (signed, + = late), p95 of |offset|.

The reference of the click is its own beats (``k * 60 / bpm`` after sample 0), of a file its
``.beats`` annotation; both mapped to wall time by the wall time of sample 0.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from beatbus.errors import ConfigError

from .udp import LoopbackUdp

__all__ = ["bench_clock", "measure_clock", "score_clock"]

MATCH_S = 0.07
TEMPO_MATCH = 0.10


class _UdpTimestamps(LoopbackUdp):
    """Loopback UDP receiver: ``(arrival wall time, OSC address, args)`` of every datagram."""

    name = "osc-receiver"

    def __init__(self):
        super().__init__()
        self.messages: list[tuple[float, str, list]] = []

    def on_packet(self, data: bytes, arrival: float) -> None:
        from pythonosc.osc_message import OscMessage

        msg = OscMessage(data)
        self.messages.append((arrival, msg.address, msg.params))


def _runs(times: np.ndarray, bounds: list[tuple[float, float]]) -> list[np.ndarray]:
    """``times`` split into the transport's runs (between a start and its stop)."""
    return [times[(times >= a) & (times <= b)] for a, b in bounds]


def _stats(errors_s: list[float]) -> dict:
    e = np.abs(np.asarray(errors_s, dtype=float)) * 1000.0
    if not len(e):
        return {"std_ms": None, "p99_ms": None}
    return {"std_ms": round(float(np.std(np.asarray(errors_s) * 1000.0)), 3), "p99_ms": round(float(np.percentile(e, 99)), 3)}


def score_clock(ref_wall: np.ndarray, sent: np.ndarray, planned: np.ndarray, *, per_beat: int,
                runs: list[tuple[float, float]]) -> dict:
    """Interval errors (vs plan, vs reference) and beat offsets of one output.

    Parameters
    ----------
    ref_wall : reference beat times (wall s)
    sent, planned : send times and planned send times of the ticks (MIDI) or beat messages (OSC), in order
    per_beat : 24 for MIDI clock ticks (every 24th is a beat), 1 for OSC beat messages
    runs : (start, stop) wall times of the transport's runs
    """
    ref_wall = np.sort(ref_wall)
    ibi = np.diff(ref_wall)
    vs_plan, vs_ref, off_tempo, total = [], [], 0, 0
    beat_times = []
    for (a, b) in runs:
        sel = (sent >= a - 1e-6) & (sent <= b + 1e-6)
        s, p = sent[sel], planned[sel]
        if len(s) < 2:
            continue
        beat_times += list(s[::per_beat])
        d, dp = np.diff(s), np.diff(p)
        vs_plan += list(d - dp)
        k = np.clip(np.searchsorted(ref_wall, s[1:]) - 1, 0, len(ibi) - 1)
        ref_d = ibi[k] / per_beat
        ok = np.abs(dp / ref_d - 1) <= TEMPO_MATCH
        vs_ref += list((d - ref_d)[ok])
        off_tempo += int((~ok).sum())
        total += len(d)
    bt = np.array(beat_times)
    offsets = []
    if len(bt) and len(ref_wall):
        near = ref_wall[np.clip(np.searchsorted(ref_wall, bt), 1, len(ref_wall) - 1) - 1]
        nxt = ref_wall[np.clip(np.searchsorted(ref_wall, bt), 0, len(ref_wall) - 1)]
        d = np.where(np.abs(bt - near) <= np.abs(bt - nxt), bt - near, bt - nxt)
        offsets = d[np.abs(d) <= MATCH_S] * 1000.0
    offsets = np.asarray(offsets)
    return {"intervals": total, "vs_plan": _stats(vs_plan), "vs_reference": _stats(vs_ref),
            "tempo_off_pct": round(100.0 * off_tempo / total, 1) if total else None,
            "beats": int(len(bt)), "matched_pct": round(100.0 * len(offsets) / len(bt), 1) if len(bt) else None,
            "offset_p50_ms": round(float(np.median(offsets)), 1) if len(offsets) else None,
            "offset_abs_p95_ms": round(float(np.percentile(np.abs(offsets), 95)), 1) if len(offsets) else None}


def _daemon(url: str, source: str, args: list[str], log: Path) -> subprocess.Popen:
    """A real ``beatbus`` daemon as a user starts it (its own process: no GIL shared with the clock)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k not in ("REDIS_URL", "NOTIFY_SOCKET")}
    env.update({"REDIS_URL": url, "BEATBUS_SOURCE": source, "BEATBUS_METRICS_ADDR": "off",
                "BEATBUS_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"})
    script = Path(sys.executable).with_name("beatbus")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "beatbus.cli"]
    with open(log, "wb") as out:
        return subprocess.Popen([*argv, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_clock(url: str, name: str, produce: list[str], reference: np.ndarray, seconds: float, *,
                  backend: str, index: int, progress=None) -> dict:
    """One run: ``beatbus produce PRODUCE...`` and ``beatbus process`` as daemons, the clock here (its MIDI
    to a recording sink); both outputs scored against ``reference`` (stream seconds)."""
    from beatbus import keys
    from beatbus.bus import Bus
    from beatbus.config import load_settings
    from beatbus.consumers.clock.config import ClockConfig
    from beatbus.consumers.clock.midi import RecordingSink
    from beatbus.consumers.clock.osc import OscSender, parse_target
    from beatbus.consumers.clock.service import ClockService
    from beatbus.schemas import AudioFrame, from_fields

    source = f"clockbench{index}"
    settings = load_settings({"redis_url": url, "metrics_addr": "off", "source": source, "block_ms": 100}, env={})
    receiver = _UdpTimestamps().start()
    sink = RecordingSink()
    bus = Bus.connect(url, name="clock-bench")
    stop = threading.Event()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="beatbus-bench-clock-") as tmp:
        try:
            clock = ClockService(bus, settings=settings, source=source, config=ClockConfig(),
                                 osc=OscSender([parse_target(f"127.0.0.1:{receiver.port}")]), midi=sink,
                                 exit_on_end=True, record=True)
            thread = threading.Thread(target=clock.run, args=(stop,), name="clock-service", daemon=True)
            thread.start()
            clock.ready.wait(10)
            procs.append(_daemon(url, source, ["process", "--backend", backend, "--sources", source],
                                 Path(tmp) / "process.log"))
            procs.append(_daemon(url, source, ["produce", *produce], Path(tmp) / "produce.log"))
            start = time.monotonic()
            while not clock.done.wait(0.5) and time.monotonic() - start < seconds + 60.0:
                for p in procs:
                    if p.poll() not in (None, 0):
                        log = Path(tmp) / f"{p.args[1]}.log"
                        raise RuntimeError(f"beatbus {' '.join(p.args[1:])} exited with {p.returncode}: "
                                           f"{log.read_text(errors='replace')[-800:] if log.exists() else ''}")
                if progress is not None:
                    progress(time.monotonic() - start)
            if clock.error is not None:
                raise clock.error
            _, fields = bus.redis.xrange(keys.stream(source, "audio"), count=1)[0]
            first = from_fields(fields)
            assert isinstance(first, AudioFrame) and first.sample_index == 0
            t0 = first.wall_ns / 1e9
        finally:
            stop.set()
            for p in reversed(procs):
                _stop(p)
            time.sleep(0.2)                      # the last datagrams on loopback
            receiver.stop()
            bus.close()
    trace = list(clock.runner.trace)
    ref_wall = t0 + np.asarray(reference, dtype=float)
    starts = [t for t, m in sink.messages if m.type == "start"]
    stops = [t for t, m in sink.messages if m.type == "stop"]
    runs = [(a, next((b for b in stops if b >= a), float("inf"))) for a in starts]
    midi = [(dl, s) for out, kind, dl, s in trace if out == "midi" and kind == "tick"]
    osc = [(dl, s) for out, kind, dl, s in trace if out == "osc" and kind == "beat"]
    arrivals = np.array([t for t, addr, _ in receiver.messages if addr == "/beatbus/beat"])
    rows = {}
    if midi:
        planned, sent = (np.array(x) for x in zip(*midi))
        rows["MIDI (recording sink)"] = score_clock(ref_wall, sent, planned, per_beat=24, runs=runs)
    if osc and len(arrivals) == len(osc):
        planned = np.array([dl for dl, _ in osc])
        rows["OSC (UDP loopback)"] = score_clock(ref_wall, arrivals, planned, per_beat=1, runs=runs)
    lateness = np.array([(s - dl) * 1000.0 for out, kind, dl, s in trace if out == "midi" and kind == "tick"])
    stats = clock.runner.scheduler.stats
    return {"run": name, "outputs": rows, "starts": len(starts), "resyncs": stats["resyncs"],
            "tempo_changes": stats["tempo_changes"], "beat_events": stats["beats"],
            "osc_sent": len(osc), "osc_received": int(len(arrivals)),
            "send_lateness_p50_ms": round(float(np.percentile(lateness, 50)), 3) if len(lateness) else None,
            "send_lateness_p99_ms": round(float(np.percentile(lateness, 99)), 3) if len(lateness) else None}


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def bench_clock(files: list[str], *, bpm: float = 120.0, click_seconds: float = 20.0, backend: str = "dsp",
                json_path: str | None = None) -> int:
    from beatbus.broker import EmbeddedBroker
    from beatbus.progress import Progress

    from .led import load_annotations

    paths = [Path(f) for f in files]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"audio file {p} not found")
        load_annotations(p)
    jobs = [(f"click {bpm:g} BPM", ["click", "--bpm", f"{bpm:g}", "--duration", f"{click_seconds:g}"],
             np.arange(0.0, click_seconds, 60.0 / bpm), click_seconds)]
    for p in paths:
        import soundfile

        jobs.append((p.stem, ["file", str(p.resolve())], load_annotations(p), float(soundfile.info(str(p)).duration)))
    total = sum(j[3] for j in jobs)
    results = []
    with EmbeddedBroker() as broker, Progress("bench clock", total, "s of audio") as bar:
        done = 0.0
        for i, (name, produce, reference, seconds) in enumerate(jobs):
            def progress(elapsed, done=done, name=name, seconds=seconds):
                bar.set(done + min(elapsed, seconds), note=name)
            row = measure_clock(broker.url, name, produce, reference, seconds, backend=backend, index=i,
                                progress=progress)
            done += seconds
            results.append(row)
            bar.clear()
            print(f"  {name}: {row['beat_events']} beat events, transport started {row['starts']}x, "
                  f"{row['resyncs']} resyncs, OSC {row['osc_received']}/{row['osc_sent']} received, MIDI send "
                  f"lateness p50 {_fmt(row['send_lateness_p50_ms'], 2)} / p99 {_fmt(row['send_lateness_p99_ms'], 2)} ms",
                  flush=True)
    print(f"\nBeat clock: {backend} backend, real time through the real pipeline, output latency 0, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}. Interval error: each tick (MIDI) or beat "
          "message (OSC) interval minus the planned one / minus the reference's (where the tempo matches within "
          "10 %); offsets of beats within +/-70 ms of a reference beat (+ = late)")
    print("| run | output | intervals | vs plan std / p99 ms | vs reference std / p99 ms | tempo off % "
          "| beats | matched % | offset p50 ms | abs offset p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for out, s in r["outputs"].items():
            print(f"| {r['run']} | {out} | {s['intervals']} | {_fmt(s['vs_plan']['std_ms'], 3)} / "
                  f"{_fmt(s['vs_plan']['p99_ms'], 3)} | {_fmt(s['vs_reference']['std_ms'], 2)} / "
                  f"{_fmt(s['vs_reference']['p99_ms'], 2)} | {_fmt(s['tempo_off_pct'])} | {s['beats']} | "
                  f"{_fmt(s['matched_pct'])} | {_fmt(s['offset_p50_ms'])} | {_fmt(s['offset_abs_p95_ms'])} |")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps({"runs": results}, option=orjson.OPT_INDENT_2))
    return 0
