"""LED benchmarks.

``beatbus bench led-timing FILE...``: each annotated file plays in real time through the
real pipeline (file producer -> broker -> beat processor -> LED consumer -> DDP on
loopback). A receiver timestamps each frame's first packet; a flash onset is a frame
whose mean pixel level (max of R, G, B) rises through 0.4. Onsets are mapped to stream
time (arrival - wall time of sample 0) and scored against the annotations with
mir_eval's F-measure at +/-35 and +/-70 ms (beats before 5 s trimmed on both sides,
mir_eval's convention); offsets are signed (positive = light late), over onsets matched
within +/-70 ms. The flash effect runs with ``downbeat_emphasis=0`` and
``intensity_amount=0`` so every flash is full-strength: timing, not style, is measured.

``beatbus bench led-render``: per effect, render + encode + send of N pixels at F fps on
synthetic 120 BPM beats: CPU share of one core (render thread's CPU time / wall time),
send lateness vs the deadline, and frame-to-frame jitter (change of lateness between
consecutive sends; the schedule itself is absolute).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import orjson

from beatbus.errors import ConfigError

from .udp import LoopbackUdp

__all__ = ["bench_led_timing", "bench_led_render", "DdpReceiver", "score_flashes", "load_annotations"]

FLASH_LEVEL = 0.4
TRIM_S = 5.0


class DdpReceiver(LoopbackUdp):
    """Loopback DDP receiver: reassembles frames and timestamps each frame's first packet."""

    name = "ddp-receiver"

    def __init__(self):
        super().__init__()
        self.frames: list[tuple[float, float]] = []     # (first packet arrival time, mean level)
        self._buf = bytearray()
        self._t0 = 0.0

    def on_packet(self, pkt: bytes, arrival: float) -> None:
        offset = int.from_bytes(pkt[4:8], "big")
        if offset == 0:
            self._buf, self._t0 = bytearray(), arrival
        self._buf += pkt[10:]
        if pkt[0] & 0x01:
            rgb = np.frombuffer(bytes(self._buf), dtype=np.uint8).reshape(-1, 3)
            self.frames.append((self._t0, float(rgb.max(axis=1).mean()) / 255.0))

    def onsets(self, level: float = FLASH_LEVEL) -> np.ndarray:
        """Arrival times of frames whose level rises through ``level``."""
        out, prev = [], 1.0
        for t, v in self.frames:
            if v >= level > prev:
                out.append(t)
            prev = v
        return np.array(out)


def load_annotations(audio: Path) -> np.ndarray:
    path = audio.with_suffix(".beats")
    if not path.exists():
        raise ConfigError(f"{audio}: no beat annotation {path.name} beside it")
    return np.array([float(line.split()[0]) for line in path.read_text().splitlines() if line.strip()])


def score_flashes(reference: np.ndarray, flashes: np.ndarray) -> dict:
    """F35, F70 (mir_eval, 5 s trim) and signed offsets of matched flashes (ms)."""
    import mir_eval

    ref = mir_eval.beat.trim_beats(np.asarray(reference, dtype=float), TRIM_S)
    est = mir_eval.beat.trim_beats(np.sort(np.asarray(flashes, dtype=float)), TRIM_S)
    f35 = mir_eval.beat.f_measure(ref, est, f_measure_threshold=0.035)
    f70 = mir_eval.beat.f_measure(ref, est, f_measure_threshold=0.07)
    offs = []
    if len(est):
        for b in ref:
            d = est[np.argmin(np.abs(est - b))] - b
            if abs(d) <= 0.07:
                offs.append(d * 1000.0)
    offs = np.array(offs)
    return {"F35": round(float(f35), 3), "F70": round(float(f70), 3),
            "mean_offset_ms": round(float(offs.mean()), 1) if len(offs) else None,
            "p95_abs_offset_ms": round(float(np.percentile(np.abs(offs), 95)), 1) if len(offs) else None}


def _run_file(url: str, path: Path, index: int, *, backend: str, effect: str, fps: float) -> dict:
    from beatbus import keys
    from beatbus.bus import Bus
    from beatbus.config import load_settings
    from beatbus.consumers.led.service import LedService, plan_led
    from beatbus.processors.beat import BeatProcessor
    from beatbus.processors.beat.service import BeatService
    from beatbus.producers import FileSource
    from beatbus.producers.service import Publisher
    from beatbus.runtime import run_services
    from beatbus.schemas import BeatEvent, from_fields

    reference = load_annotations(path)
    source = f"ledbench{index}"
    settings = load_settings({"redis_url": url, "metrics_addr": "off", "source": source, "backend": backend,
                              "block_ms": 100}, env={})
    receiver = DdpReceiver().start()
    bus = Bus.connect(url, name="led-bench")
    try:
        plan = plan_led(settings, outputs=[f"ddp://127.0.0.1:{receiver.port}"], effect=effect, pixels=60, fps=fps,
                        effect_config={"downbeat_emphasis": 0, "intensity_amount": 0}, check=False)
        led = LedService(bus, settings=settings, plan=plan, record=True)
        processor = BeatService(bus, settings=settings, sources=[source],
                                make_processor=lambda: BeatProcessor(backend=backend, sr=settings.sr))
        audio = FileSource(path, sr=settings.sr, hop=settings.hop, realtime=True)
        producer = Publisher(bus, audio, settings=settings)
        run_services([led, processor, producer], until=[producer])
        t0 = audio.start_wall_ns / 1e9
        beats = [from_fields(f, BeatEvent) for _, f in bus.redis.xrange(keys.stream(source, "beats"))
                 if b"beat" in f.get(b"d", b"")[:40]]
    finally:
        receiver.stop()
        bus.close()
    flashes = receiver.onsets() - t0
    row = {"file": path.name, **score_flashes(reference, flashes)}
    claimed = np.array([b.timestamp for b in beats])
    row["tracker_F70"] = score_flashes(reference, claimed)["F70"] if len(claimed) else 0.0
    row["detection_delay_ms"] = round(float(np.mean([(b.emitted_at - b.system_time) * 1000 for b in beats])), 1) \
        if beats else None
    row["flashes"], row["beats"] = int(len(flashes)), int(len(reference))
    late = np.array([(sent - due) * 1e3 for due, sent, _ in led.runners[0].trace])
    row["send_lateness_p99_ms"] = round(float(np.percentile(late, 99)), 2) if len(late) else None
    return row


def _machine() -> str:
    import os

    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def bench_led_timing(files: list[str], *, backend: str = "dsp", effect: str = "beat_flash", fps: float = 60.0,
                     json_path: str | None = None) -> int:
    from beatbus.broker import EmbeddedBroker

    paths = [Path(f) for f in files]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"audio file {p} not found")
        load_annotations(p)
    rows = []
    with EmbeddedBroker() as broker:
        for i, p in enumerate(paths):
            rows.append(_run_file(broker.url, p, i, backend=backend, effect=effect, fps=fps))
            print(f"  {p.name}: F70 {rows[-1]['F70']:.3f}", flush=True)
    keys_ = ("F35", "F70", "mean_offset_ms", "p95_abs_offset_ms")
    mean = {}
    for k in keys_:
        vals = [r[k] for r in rows if r[k] is not None]
        mean[k] = round(float(np.mean(vals)), 3 if k.startswith("F") else 1) if vals else None
    print(f"\nLED timing: {backend} backend, effect {effect}, {fps:g} fps, DDP on loopback, output latency 0, "
          f"offset 0; mir_eval F (5 s trim); offsets of flashes within +/-70 ms (+ = light late); {_machine()}")
    print("| file | F35 | F70 | mean offset ms | p95 abs offset ms | tracker F70 (claimed times) "
          "| detection delay ms | send lateness p99 ms | flashes | beats |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {_fmt(r['F35'], 3)} | {_fmt(r['F70'], 3)} | {_fmt(r['mean_offset_ms'])} | "
              f"{_fmt(r['p95_abs_offset_ms'])} | {_fmt(r['tracker_F70'], 3)} | {_fmt(r['detection_delay_ms'])} | "
              f"{_fmt(r['send_lateness_p99_ms'])} | {r['flashes']} | {r['beats']} |")
    print(f"| **mean** | {_fmt(mean['F35'], 3)} | {_fmt(mean['F70'], 3)} | {_fmt(mean['mean_offset_ms'])} | "
          f"{_fmt(mean['p95_abs_offset_ms'])} | | | | | |")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps({"files": rows, "mean": mean}, option=orjson.OPT_INDENT_2))
    return 0


def _feed_beats(state, stop: threading.Event, bpm: float = 120.0) -> None:
    """Synthetic beats: one BeatEvent per period, reported 80 ms late like the real tracker."""
    from beatbus.schemas import BeatEvent

    period, i = 60.0 / bpm, 0
    start = time.time()
    while not stop.is_set():
        t = start + i * period
        wait = t + 0.08 - time.time()
        if wait > 0 and stop.wait(wait):
            return
        state.apply(BeatEvent(source="bench", timestamp=i * period, system_time=t, is_downbeat=i % 4 == 0,
                              bpm=bpm, intensity=0.7, confidence=0.9, beat=i, beat_in_bar=i % 4 + 1,
                              bar=i // 4, meter=4, next_beat_time=(i + 1) * period,
                              next_beat_system_time=t + period, emitted_at=time.time()))
        i += 1


def bench_led_render(*, pixels: int = 1000, fps: float = 60.0, seconds: float = 5.0,
                     effects: list[str] | None = None, json_path: str | None = None) -> int:
    import sys

    from beatbus.consumers.led.config import DeviceConfig, LedConfig, resolve_devices
    from beatbus.consumers.led.effects import load_effects
    from beatbus.consumers.led.render import DeviceRunner
    from beatbus.consumers.led.service import SWITCH_INTERVAL_S
    from beatbus.consumers.led.state import LedState
    from beatbus.consumers.led.timing import LightTiming

    sys.setswitchinterval(SWITCH_INTERVAL_S)          # as the LED service runs
    names = effects or sorted(load_effects())
    rows = []
    for name in names:
        receiver = DdpReceiver().start()
        device = resolve_devices(LedConfig(effect=name, pixels=pixels, fps=fps, devices=[
            DeviceConfig(output=f"ddp://127.0.0.1:{receiver.port}")]))[0]
        state = LedState(silence_timeout_s=60, coast_s=60)
        stop = threading.Event()
        feeder = threading.Thread(target=_feed_beats, args=(state, stop), daemon=True)
        feeder.start()
        runner = DeviceRunner(device, state, LightTiming(), record=True)
        # pure render + encode cost, in a tight loop
        n, t_start = 300, time.perf_counter()
        for k in range(n):
            runner.render(time.time() + k / fps)
        per_frame_us = (time.perf_counter() - t_start) / n * 1e6
        runner = DeviceRunner(device, state, LightTiming(), record=True).start()
        t0 = time.monotonic()
        time.sleep(seconds)
        runner.stop()
        elapsed = time.monotonic() - t0
        stop.set()
        receiver.stop()
        trace = list(runner.trace)
        late = np.array([(s - d) * 1e3 for d, s, _ in trace])
        # frame-to-frame jitter: change of lateness between consecutive frames
        jitter = np.abs(np.diff(late)) if len(late) > 2 else np.array([0.0])
        rows.append({"effect": name, "pixels": pixels, "fps": fps,
                     "render_encode_us": round(per_frame_us, 1),
                     "cpu_pct_one_core": round(100.0 * runner.stats["cpu_s"] / elapsed, 2),
                     "frames_per_s": round(len(trace) / elapsed, 1), "beat_frames": runner.stats["beat_frames"],
                     "lateness_p50_ms": round(float(np.percentile(late, 50)), 3),
                     "lateness_p99_ms": round(float(np.percentile(late, 99)), 3),
                     "jitter_p99_ms": round(float(np.percentile(jitter, 99)), 3),
                     "skipped": runner.stats["skipped"]})
    print(f"LED render benchmark: {pixels} pixels, {fps:g} fps, DDP on loopback, {seconds:g} s per effect, "
          f"synthetic 120 BPM beats; CPU = render thread CPU time / wall time (one core = 100 %); "
          f"{_machine()}")
    print("| effect | render+encode us/frame | CPU % of a core | frames/s | beat frames | lateness p50 ms "
          "| lateness p99 ms | frame-to-frame jitter p99 ms | skipped |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['effect']} | {r['render_encode_us']} | {r['cpu_pct_one_core']} | {r['frames_per_s']} | "
              f"{r['beat_frames']} | {r['lateness_p50_ms']} | {r['lateness_p99_ms']} | "
              f"{r['jitter_p99_ms']} | {r['skipped']} |")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps({"results": rows}, option=orjson.OPT_INDENT_2))
    return 0
